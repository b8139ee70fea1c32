"""Reading weight files safely and describing how a state dict misses a model, in one line."""
import os
from typing import Dict, Iterable, Optional

import torch

from ..utils.errors import CheckpointError, one_line

__all__ = ["read_state_dict", "describe_mismatch"]


def read_state_dict(path: str, what: str, config_key: str = "") -> Dict[str, torch.Tensor]:
    """Tensors of a ``.pt``/``.pth`` (``torch.load(weights_only=True)``) or ``.safetensors`` file.

    A ``{"model": {...}}`` wrapper (SAM 2 / fvcore files) is unwrapped. ``what`` names the file
    in errors ("SAM checkpoint"), ``config_key`` the key that pointed to it.
    """
    if not os.path.isfile(path):
        where = f" ({config_key})" if config_key else ""
        raise CheckpointError(f"{what} {path} does not exist{where}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{what} {path} could not be read: {one_line(exc, 200)}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{what} {path} is not a state dict of tensors")
    return state


def describe_mismatch(model_state: Dict[str, torch.Tensor], file_state: Dict[str, torch.Tensor],
                      ignore_prefixes: Iterable[str] = ()) -> Optional[str]:
    """None if ``file_state`` fits ``model_state`` (keys and shapes), else what differs."""
    ignore = tuple(ignore_prefixes)
    keep = lambda k: not (ignore and k.startswith(ignore))  # noqa: E731
    missing = sorted(k for k in model_state if k not in file_state and keep(k))
    unexpected = sorted(k for k in file_state if k not in model_state and keep(k))
    wrong = sorted(k for k in file_state if k in model_state and keep(k)
                   and tuple(file_state[k].shape) != tuple(model_state[k].shape))
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(file_state[k].shape)} vs "
                     f"model {tuple(model_state[k].shape)})")
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    return "; ".join(parts) or None
