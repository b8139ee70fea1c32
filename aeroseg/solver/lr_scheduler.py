"""Iteration-based learning-rate schedules built from fvcore's parameter schedulers."""
from typing import List

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
    PolynomialDecayParamScheduler,
)

__all__ = ["LRMultiplierScheduler", "build_lr_scheduler", "build_param_scheduler"]


def build_param_scheduler(cfg) -> ParamScheduler:
    """Multiplier of every group's initial lr as a function of training progress in [0, 1)."""
    from ..utils.errors import ConfigError

    s = cfg.SOLVER
    name = s.LR_SCHEDULER_NAME
    if name == "WarmupCosineLR":
        end = s.BASE_LR_END / s.BASE_LR if s.BASE_LR > 0 else 0.0
        main = CosineParamScheduler(1.0, end)
    elif name == "WarmupPolyLR":
        main = PolynomialDecayParamScheduler(1.0, s.POLY_LR_POWER)
    elif name == "WarmupMultiStepLR":
        steps = [x for x in s.STEPS if x <= s.MAX_ITER]
        main = MultiStepParamScheduler([s.GAMMA ** k for k in range(len(steps) + 1)],
                                       milestones=steps, num_updates=s.MAX_ITER)
    elif name == "WarmupConstantLR":
        main = ConstantParamScheduler(1.0)
    else:
        raise ConfigError(f"SOLVER.LR_SCHEDULER_NAME={name!r}: expected WarmupCosineLR, WarmupPolyLR, "
                          f"WarmupMultiStepLR or WarmupConstantLR")
    warmup = min(s.WARMUP_ITERS / max(s.MAX_ITER, 1), 1.0)
    if warmup <= 0:
        return main
    if s.WARMUP_METHOD == "linear":
        start = LinearParamScheduler(s.WARMUP_FACTOR, main(warmup))
    elif s.WARMUP_METHOD == "constant":
        start = ConstantParamScheduler(s.WARMUP_FACTOR)
    else:
        raise ConfigError(f"SOLVER.WARMUP_METHOD={s.WARMUP_METHOD!r}: expected 'linear' or 'constant'")
    # "fixed" keeps the main schedule's clock, so warmup only replaces its first part.
    return CompositeParamScheduler([start, main], lengths=[warmup, 1 - warmup], interval_scaling=["rescaled", "fixed"])


class LRMultiplierScheduler(torch.optim.lr_scheduler.LRScheduler):
    """lr of group g at iteration i = initial_lr_g * multiplier(i / max_iter)."""

    def __init__(self, optimizer: torch.optim.Optimizer, multiplier: ParamScheduler, max_iter: int,
                 last_epoch: int = -1):
        self._multiplier = multiplier
        self._max_iter = max(int(max_iter), 1)
        super().__init__(optimizer, last_epoch)

    def state_dict(self):
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def get_lr(self) -> List[float]:
        factor = self._multiplier(min(self.last_epoch / self._max_iter, 1.0 - 1e-9))
        return [base * factor for base in self.base_lrs]


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> LRMultiplierScheduler:
    return LRMultiplierScheduler(optimizer, build_param_scheduler(cfg), cfg.SOLVER.MAX_ITER)
