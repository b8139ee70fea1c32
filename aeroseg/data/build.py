"""Data loaders: infinite shuffled training batches and ordered (batched) evaluation."""
import random
from typing import Callable, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ..utils import comm
from ..utils.errors import AerOSegError, ConfigError
from .datasets.sem_seg_folder import DatasetError
from ..compat import DatasetCatalog
from .dataset_mapper import SemSegDatasetMapper
from .samplers import InferenceSampler, InfiniteTrainingSampler

__all__ = ["MappedDataset", "build_train_loader", "build_test_loader", "get_dataset_dicts"]


class _SampleFailure:
    """A user error (:class:`AerOSegError`) raised while mapping a sample in a loader worker.

    Returned instead of raised, so that the main process re-raises the *same* one-line error
    (torch would wrap it in a multi-line "Caught ... in DataLoader worker process" traceback).
    """

    def __init__(self, exc: AerOSegError):
        self.exc_type, self.message = type(exc), str(exc)

    def reraise(self):
        try:
            exc = self.exc_type(self.message)
        except Exception:  # an error class with another signature
            exc = AerOSegError(self.message)
        raise exc from None


class MappedDataset(Dataset):
    """Dataset dicts through a mapper. Keys are indices, or ``(position, index)`` pairs from
    :class:`InfiniteTrainingSampler`: then the mapper gets ``rng`` seeded by (seed, position).

    ``skip_bad``: a sample whose files cannot be read (any :class:`AerOSegError`) is replaced by
    the next readable one (deterministically) and its error is listed in the returned dict under
    ``"skipped_bad_samples"``; otherwise the error is raised (in the main process, see
    :class:`_ReraisingDataLoader`).
    """

    def __init__(self, dicts: List[dict], mapper: Callable[..., dict], seed: int = 0, skip_bad: bool = False):
        self.dicts, self.mapper, self.seed, self.skip_bad = dicts, mapper, seed, skip_bad

    def __len__(self):
        return len(self.dicts)

    def _map(self, index: int, position: Optional[int]) -> dict:
        if position is None:
            return self.mapper(self.dicts[index])
        return self.mapper(self.dicts[index], rng=np.random.default_rng([self.seed, position]))

    def __getitem__(self, key):
        position, index = key if isinstance(key, tuple) else (None, key)
        try:
            if not self.skip_bad:
                return self._map(index, position)
            skipped = []
            for offset in range(len(self.dicts)):
                try:
                    out = self._map((index + offset) % len(self.dicts), position)
                except AerOSegError as exc:
                    skipped.append(str(exc))
                    continue
                if skipped:
                    out["skipped_bad_samples"] = skipped
                return out
            raise DatasetError(f"every sample is unreadable (DATALOADER.SKIP_BAD_SAMPLES), e.g. {skipped[0]}")
        except AerOSegError as exc:
            if get_worker_info() is not None:
                return _SampleFailure(exc)
            raise


class _ReraisingDataLoader(DataLoader):
    """A DataLoader whose workers' user errors are raised in the main process as they were."""

    def __iter__(self):
        for batch in super().__iter__():
            for item in batch:
                if isinstance(item, _SampleFailure):
                    item.reraise()
            yield batch


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
        raise ConfigError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by the "
                         f"number of processes ({world})")
    dicts = get_dataset_dicts(cfg.DATASETS.TRAIN)
    sampler = InfiniteTrainingSampler(len(dicts), seed=cfg.SEED if seed is None else seed,
                                      start=start_iter * cfg.SOLVER.IMS_PER_BATCH)
    dataset = MappedDataset(dicts, mapper or SemSegDatasetMapper(cfg, is_train=True), seed=sampler.seed,
                            skip_bad=bool(cfg.DATALOADER.SKIP_BAD_SAMPLES))
    generator = torch.Generator().manual_seed(sampler.seed + comm.get_rank())
    return _ReraisingDataLoader(dataset, batch_size=cfg.SOLVER.IMS_PER_BATCH // world, sampler=sampler,
                      num_workers=cfg.DATALOADER.NUM_WORKERS, collate_fn=_trivial_collate,
                      worker_init_fn=_worker_init, generator=generator, drop_last=True,
                      persistent_workers=cfg.DATALOADER.NUM_WORKERS > 0)


def build_test_loader(cfg, dataset_name: str, mapper: Optional[Callable] = None) -> DataLoader:
    """Loader of lists of ``TEST.IMS_PER_BATCH`` mapped dicts over this process' shard, in order.

    Batching evaluation images only changes speed: the model treats every image of a batch
    independently. Memory is pinned when the model runs on CUDA (faster host-to-device copies).
    """
    ims_per_batch = int(cfg.TEST.IMS_PER_BATCH)
    if ims_per_batch < 1:
        raise ValueError(f"TEST.IMS_PER_BATCH={cfg.TEST.IMS_PER_BATCH}: expected a positive number of images")
    dicts = get_dataset_dicts([dataset_name])
    dataset = MappedDataset(dicts, mapper or SemSegDatasetMapper(cfg, is_train=False, dataset_name=dataset_name))
    return _ReraisingDataLoader(dataset, batch_size=ims_per_batch, sampler=InferenceSampler(len(dataset)),
                                num_workers=cfg.DATALOADER.NUM_WORKERS, collate_fn=_trivial_collate,
                                pin_memory=str(cfg.MODEL.DEVICE).startswith("cuda") and torch.cuda.is_available())
