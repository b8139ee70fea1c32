"""Checkpoints in fvcore's (= detectron2's) format, loaded safely and saved atomically.

A checkpoint is ``{"model": state_dict, "optimizer": ..., "scheduler": ..., "iteration": int}``
so files written here load in detectron2's ``DetectionCheckpointer`` and vice versa.
"""
import os
from typing import Any, Dict, Iterable, Optional

import torch
from fvcore.common.checkpoint import Checkpointer

from ..utils.errors import CheckpointError, one_line
from .state_dict_io import describe_mismatch

__all__ = ["AerOSegCheckpointer", "check_state_dict_compatible"]


def check_state_dict_compatible(
    model_state: Dict[str, torch.Tensor],
    file_state: Dict[str, torch.Tensor],
    path: str,
    ignore_prefixes: Iterable[str] = (),
) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``file_state`` fits ``model_state``."""
    problems = describe_mismatch(model_state, file_state, ignore_prefixes)
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match the model built from this config: "
                              f"{problems} -- was it trained with a different config?")


class AerOSegCheckpointer(Checkpointer):
    """fvcore ``Checkpointer`` with safe loading, strict matching and atomic saving.

    * files are read with ``torch.load(weights_only=True)``: no arbitrary code is unpickled;
    * a missing, unreadable or mismatching file raises :class:`CheckpointError` (one line)
      instead of loading half a model with warnings; keys under ``ignore_prefixes`` may differ
      (e.g. ``("back_projection.",)`` when evaluating with another training vocabulary size);
    * ``save`` writes to a temporary file and renames it, so an interrupted save never leaves a
      truncated checkpoint or ``last_checkpoint`` pointing to one.
    """

    def __init__(self, model, save_dir: str = "", *, ignore_prefixes: Iterable[str] = (), **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.ignore_prefixes = tuple(ignore_prefixes)
        self._current_path: Optional[str] = None

    def load(self, path: str, checkpointables=None) -> Dict[str, Any]:
        if not path:
            return super().load(path, checkpointables)
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint {path} does not exist")
        self._current_path = path
        return super().load(path, checkpointables)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        try:
            data = torch.load(filename, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"checkpoint {filename} could not be read: {one_line(exc, 200)}") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"checkpoint {filename} holds a {type(data).__name__}, expected a dict")
        if "model" not in data:
            if all(isinstance(v, torch.Tensor) for v in data.values()):
                data = {"model": data}  # a bare state dict
            else:
                raise CheckpointError(f"checkpoint {filename} has no 'model' entry (keys: {sorted(data)[:5]})")
        return data

    def _load_model(self, checkpoint: Any):
        state = checkpoint["model"]
        if any(k.startswith("module.") for k in state):
            state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
            checkpoint["model"] = state
        check_state_dict_compatible(
            self.model.state_dict(), state, self._current_path or "<checkpoint>", self.ignore_prefixes
        )
        if self.ignore_prefixes:
            model_state = self.model.state_dict()
            checkpoint["model"] = {
                k: v for k, v in state.items()
                if not (k.startswith(self.ignore_prefixes)
                        and (k not in model_state or tuple(model_state[k].shape) != tuple(v.shape)))
            }
        return super()._load_model(checkpoint)

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        os.makedirs(self.save_dir, exist_ok=True)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        _atomic_torch_save(data, path)
        self.logger.info("Saved checkpoint to %s", path)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(last_filename_basename)
        os.replace(tmp, path)


def _atomic_torch_save(obj: Any, path: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
