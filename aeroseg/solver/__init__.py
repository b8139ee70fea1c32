from .lr_scheduler import LRMultiplierScheduler, build_lr_scheduler, build_param_scheduler
from .param_groups import build_optimizer, get_param_groups

__all__ = [
    "LRMultiplierScheduler", "build_lr_scheduler", "build_optimizer", "build_param_scheduler", "get_param_groups",
]
