"""Process-group helpers that also work when torch.distributed is not initialised."""
import torch.distributed as dist

__all__ = ["all_gather_object", "broadcast_object", "get_world_size", "get_rank", "is_main_process", "synchronize"]


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    if get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process (``[obj]`` without a process group)."""
    if get_world_size() == 1:
        return [obj]
    gathered = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every process (``obj`` itself without a process group)."""
    if get_world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]
