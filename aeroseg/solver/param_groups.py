"""Optimizer parameter groups: per-part learning rates and weight decay (paper Sec. 4.2)."""
from typing import Dict, List

import torch
from torch import nn

__all__ = ["get_param_groups", "build_optimizer"]

_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.InstanceNorm2d)
# Parameters that act as embeddings (positions, tokens, class tokens, relative biases): no decay.
_EMBEDDING_NAMES = ("positional_embedding", "class_embedding", "pos_embed", "rel_pos_h", "rel_pos_w",
                    "relative_position_bias_table", "token_embedding", "logit_scale", "logit_bias")


def _part(name: str) -> str:
    if name.startswith("clip_backbone."):
        return "clip"
    if name.startswith("guidance_encoder."):
        return "guidance"
    return "head"


def get_param_groups(model: nn.Module, cfg) -> List[Dict]:
    """One group per (part, weight decay) with the learning rates of the paper.

    * CLIP's trainable parameters (q/v projections): ``BASE_LR * SOLVER.CLIP_MULTIPLIER``
      (2e-4 x 0.01 = 2e-6);
    * the guidance encoder, when fine-tuned: ``BASE_LR * SOLVER.GUIDANCE_MULTIPLIER``;
    * everything else: ``BASE_LR``.
    Norm parameters get ``WEIGHT_DECAY_NORM``, embeddings 0, biases ``WEIGHT_DECAY_BIAS`` (if
    set), the rest ``WEIGHT_DECAY``. Frozen parameters are left out.
    """
    s = cfg.SOLVER
    lr = {"clip": s.BASE_LR * s.CLIP_MULTIPLIER, "guidance": s.BASE_LR * s.GUIDANCE_MULTIPLIER, "head": s.BASE_LR}
    norm_params = {id(p) for m in model.modules() if isinstance(m, _NORM_TYPES) for p in m.parameters(recurse=False)}
    bias_decay = s.WEIGHT_DECAY if s.WEIGHT_DECAY_BIAS is None else s.WEIGHT_DECAY_BIAS
    groups: Dict[tuple, Dict] = {}
    seen = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if id(param) in norm_params:
            decay = s.WEIGHT_DECAY_NORM
        elif any(key in name for key in _EMBEDDING_NAMES) or name.endswith(".embedding.weight"):
            decay = 0.0
        elif name.endswith("bias") or (".original" in name and "in_proj_bias" in name):
            decay = bias_decay
        else:
            decay = s.WEIGHT_DECAY
        part = _part(name)
        key = (part, decay)
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "lr": lr[part], "initial_lr": lr[part],
                           "weight_decay": decay, "name": f"{part}/wd={decay:g}"}
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return list(groups.values())


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (paper) or SGD over :func:`get_param_groups`."""
    from ..utils.errors import ConfigError

    groups = get_param_groups(model, cfg)
    if not groups:
        raise ConfigError("the model has no trainable parameters (check MODEL.CLIP.FINETUNE / MODEL.SAM.FROZEN)")
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "ADAMW":
        return torch.optim.AdamW(groups, lr=cfg.SOLVER.BASE_LR, betas=(0.9, 0.999),
                                 weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    if name == "SGD":
        return torch.optim.SGD(groups, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
                               nesterov=cfg.SOLVER.NESTEROV, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    raise ConfigError(f"SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r}: expected 'ADAMW' or 'SGD'")
