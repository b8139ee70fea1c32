"""Samplers: an infinite shuffled stream for training and an ordered shard for inference."""
import itertools
from typing import Iterator, Optional, Tuple

import torch
from torch.utils.data import Sampler

from ..utils import comm

__all__ = ["InfiniteTrainingSampler", "InferenceSampler"]


class InfiniteTrainingSampler(Sampler):
    """Endless ``(position, index)`` pairs: a new seeded permutation of ``range(size)`` per pass.

    ``position`` counts samples in the global stream (all processes together); rank r takes the
    positions r, r + world_size, ... so processes see disjoint samples. Starting at ``start``
    (= iteration x global batch when resuming) continues the stream exactly where it stopped.
    The position also seeds the sample's augmentation (see :class:`~aeroseg.data.build.MappedDataset`).
    """

    def __init__(self, size: int, shuffle: bool = True, seed: Optional[int] = None,
                 rank: Optional[int] = None, world_size: Optional[int] = None, start: int = 0):
        if size <= 0:
            raise ValueError(f"the training set is empty (size {size})")
        self.size, self.shuffle = size, shuffle
        self.seed = int(seed) if seed is not None and seed >= 0 else int(torch.randint(2 ** 31, ()).item())
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size
        self.start = int(start)

    def _infinite(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed)
        while True:
            yield from (torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)).tolist()

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        stream = enumerate(self._infinite())
        return itertools.islice(stream, self.start + self.rank, None, self.world_size)


class InferenceSampler(Sampler):
    """Every index exactly once, in order; rank r takes the r-th contiguous shard."""

    def __init__(self, size: int, rank: Optional[int] = None, world_size: Optional[int] = None):
        rank = comm.get_rank() if rank is None else rank
        world_size = comm.get_world_size() if world_size is None else world_size
        per, extra = divmod(size, world_size)
        begin = rank * per + min(rank, extra)
        self.indices = range(begin, begin + per + (1 if rank < extra else 0))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)
