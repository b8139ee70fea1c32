"""Data loaders: infinite shuffled training batches and ordered batch-1 evaluation."""
import random
from typing import Callable, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..utils import comm
from .catalog import DatasetCatalog
from .dataset_mapper import SemSegDatasetMapper
from .samplers import InferenceSampler, InfiniteTrainingSampler

__all__ = ["MappedDataset", "build_train_loader", "build_test_loader", "get_dataset_dicts"]


class MappedDataset(Dataset):
    def __init__(self, dicts: List[dict], mapper: Callable[[dict], dict]):
        self.dicts, self.mapper = dicts, mapper

    def __len__(self):
        return len(self.dicts)

    def __getitem__(self, i):
        return self.mapper(self.dicts[i])


def get_dataset_dicts(names) -> List[dict]:
    dicts = []
    for name in names:
        dicts.extend(DatasetCatalog.get(name))
    return dicts


def _worker_init(worker_id: int) -> None:
    # torch gives each worker the seed base_seed + worker_id (base_seed drawn from the main
    # process' torch RNG, itself seeded by SEED); extend it to NumPy and random, which the
    # augmentations use.
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def _trivial_collate(batch):
    return batch


def build_train_loader(cfg, mapper: Optional[Callable] = None, seed: Optional[int] = None) -> DataLoader:
    """Endless loader of lists of ``IMS_PER_BATCH / world_size`` mapped dicts."""
    world = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by the "
                         f"number of processes ({world})")
    dicts = get_dataset_dicts(cfg.DATASETS.TRAIN)
    dataset = MappedDataset(dicts, mapper or SemSegDatasetMapper(cfg, is_train=True))
    sampler = InfiniteTrainingSampler(len(dataset), seed=cfg.SEED if seed is None else seed)
    generator = torch.Generator().manual_seed(sampler.seed + comm.get_rank())
    return DataLoader(dataset, batch_size=cfg.SOLVER.IMS_PER_BATCH // world, sampler=sampler,
                      num_workers=cfg.DATALOADER.NUM_WORKERS, collate_fn=_trivial_collate,
                      worker_init_fn=_worker_init, generator=generator, drop_last=True,
                      persistent_workers=cfg.DATALOADER.NUM_WORKERS > 0)


def build_test_loader(cfg, dataset_name: str, mapper: Optional[Callable] = None) -> DataLoader:
    """Batch-1 loader over this process' shard of ``dataset_name``, in order."""
    dicts = get_dataset_dicts([dataset_name])
    dataset = MappedDataset(dicts, mapper or SemSegDatasetMapper(cfg, is_train=False, dataset_name=dataset_name))
    return DataLoader(dataset, batch_size=1, sampler=InferenceSampler(len(dataset)),
                      num_workers=cfg.DATALOADER.NUM_WORKERS, collate_fn=_trivial_collate)
