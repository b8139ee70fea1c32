"""The training step both engines run, and the DDP wrapper both build.

detectron2 splits a trainer into the loop with its hooks and the step
(``SimpleTrainer`` / ``AMPTrainer.run_step``). AerOSeg keeps that split: :class:`TrainingStep` is
the one implementation of an update (autocast in the AMP dtype with a GradScaler for fp16, the
non-finite loss check, backward, gradient clipping, the optimizer step, and the loss values
averaged over processes), and both AerOSeg's own loop (:class:`~aeroseg.engine.Trainer`) and the
detectron2 engine (``Detectron2Trainer``) call it, so the same config gives the same weights on
either.
"""
from contextlib import nullcontext
from typing import Dict

import torch
from torch.nn.parallel import DistributedDataParallel

from ..utils import comm
from ..utils.errors import ConfigError

__all__ = ["TrainingStep", "amp_dtype", "build_ddp_model"]

CLIP_TYPES = ("value", "norm", "full_model")


def amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the device supports it (CPU, Ampere+ GPUs), else fp16 with a GradScaler."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def build_ddp_model(model: torch.nn.Module, cfg) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel when several processes train, else ``model``.

    ``find_unused_parameters`` only with ``MODEL.CLIP.FINETUNE full``, where CLIP's ``logit_scale``
    and other parameters get no gradient.
    """
    if comm.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=cfg.MODEL.CLIP.FINETUNE == "full",
    )


class TrainingStep:
    """One optimisation step: ``step(batch) -> {loss name: value averaged over processes, "total_loss"}``.

    Args:
        model: the module called on the batch (DDP-wrapped where several processes train); it
            returns a dict of losses.
        optimizer: the optimizer whose parameter groups are clipped and stepped.
        device: where the model runs (selects the AMP dtype).
        amp: autocast the forward (``SOLVER.AMP.ENABLED``); fp16 also scales the loss.
        clip_type, clip_value, norm_type: ``SOLVER.CLIP_GRADIENTS`` (``clip_type`` None: off).
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, device: torch.device,
                 amp: bool = False, clip_type=None, clip_value: float = 0.0, norm_type: float = 2.0):
        if clip_type is not None and clip_type not in CLIP_TYPES:
            raise ConfigError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE={clip_type!r}: expected value, norm or full_model")
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self.amp = bool(amp)
        self.amp_dtype = amp_dtype(device)
        self.grad_scaler = torch.amp.GradScaler(device.type, enabled=self.amp and self.amp_dtype == torch.float16)
        self.clip_type, self.clip_value, self.norm_type = clip_type, clip_value, norm_type

    @classmethod
    def from_config(cls, cfg, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> dict:
        """Constructor arguments from ``SOLVER.AMP`` and ``SOLVER.CLIP_GRADIENTS``."""
        c = cfg.SOLVER.CLIP_GRADIENTS
        return {"model": model, "optimizer": optimizer, "device": device, "amp": cfg.SOLVER.AMP.ENABLED,
                "clip_type": c.CLIP_TYPE if c.ENABLED else None, "clip_value": c.CLIP_VALUE,
                "norm_type": c.NORM_TYPE}

    def clip_gradients(self) -> None:
        """Clip the (unscaled) gradients of every parameter of the optimizer, as configured."""
        if self.clip_type is None:
            return
        if self.grad_scaler.is_enabled():
            self.grad_scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if self.clip_type == "value":
            torch.nn.utils.clip_grad_value_(params, self.clip_value)
        elif self.clip_type == "norm":  # detectron2: the norm of each parameter separately
            for p in params:
                torch.nn.utils.clip_grad_norm_([p], self.clip_value, self.norm_type)
        else:  # "full_model": one norm over all parameters (Mask2Former / CAT-Seg)
            torch.nn.utils.clip_grad_norm_(params, self.clip_value, self.norm_type)

    def __call__(self, batch) -> Dict[str, float]:
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp else nullcontext()
        with autocast:
            losses = self.model(batch)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"the training loss became {total.item()} ({ {k: v.item() for k, v in losses.items()} }); "
                f"lower SOLVER.BASE_LR or enable SOLVER.CLIP_GRADIENTS")
        self.optimizer.zero_grad(set_to_none=True)
        self.grad_scaler.scale(total).backward()
        self.clip_gradients()
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        values = torch.stack([v.detach().float() for v in losses.values()] + [total.detach().float()])
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(values)
            values /= comm.get_world_size()
        return dict(zip(list(losses) + ["total_loss"], values.tolist()))
