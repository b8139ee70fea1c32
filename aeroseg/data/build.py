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
    """Dataset dicts through a mapper. Keys are indices, or ``(position, index)`` pairs from
    :class:`InfiniteTrainingSampler`: then the mapper gets ``rng`` seeded by (seed, position)."""

    def __init__(self, dicts: List[dict], mapper: Callable[..., dict], seed: int = 0):
        self.dicts, self.mapper, self.seed = dicts, mapper, seed

    def __len__(self):
        return len(self.dicts)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            position, index = key
            return self.mapper(self.dicts[index], rng=np.random.default_rng([self.seed, position]))
        return self.mapper(self.dicts[key])


def get_dataset_dicts(names) -> List[dict]:
    dicts = []
    for name in names:
        dicts.extend(DatasetCatalog.get(name))
    return dicts


def _worker_init(worker_id: int) -> None:
    # Augmentations use their own per-sample generator; seed the global RNGs of each worker
    # too (from torch's per-worker seed) for any user mapper that relies on them.
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def _trivial_collate(batch):
    return batch


def build_train_loader(cfg, mapper: Optional[Callable] = None, seed: Optional[int] = None,
                       start_iter: int = 0) -> DataLoader:
    """Endless loader of lists of ``IMS_PER_BATCH / world_size`` mapped dicts.

    ``start_iter``: the first iteration it feeds (resuming), so that iteration i always gets the
    same samples and augmentations.
    """
    world = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by the "
                         f"number of processes ({world})")
    dicts = get_dataset_dicts(cfg.DATASETS.TRAIN)
    sampler = InfiniteTrainingSampler(len(dicts), seed=cfg.SEED if seed is None else seed,
                                      start=start_iter * cfg.SOLVER.IMS_PER_BATCH)
    dataset = MappedDataset(dicts, mapper or SemSegDatasetMapper(cfg, is_train=True), seed=sampler.seed)
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
