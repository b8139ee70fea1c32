"""Process-group helpers that also work when torch.distributed is not initialised."""
import torch.distributed as dist

__all__ = ["get_world_size", "get_rank", "is_main_process", "synchronize"]


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    if get_world_size() > 1:
        dist.barrier()
