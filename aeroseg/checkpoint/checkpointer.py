"""Checkpoints in fvcore's (= detectron2's) format, loaded safely and saved atomically.

A checkpoint is ``{"model": state_dict, "optimizer": ..., "scheduler": ..., "iteration": int}``
so files written here load in detectron2's ``DetectionCheckpointer`` and vice versa.
"""
import errno
import glob
import logging
import os
import shutil
import zipfile
from typing import Any, Dict, Iterable, List, Optional

import torch
from fvcore.common.checkpoint import Checkpointer

from ..utils.errors import CheckpointError, describe_exception, one_line
from ..utils.io import atomic_write, write_text_atomic
from .state_dict_io import describe_mismatch

__all__ = ["AerOSegCheckpointer", "check_state_dict_compatible", "periodic_checkpoint_name"]

logger = logging.getLogger("aeroseg")


def periodic_checkpoint_name(iteration: int, period: int, max_iter: int) -> Optional[str]:
    """The checkpoint both engines save after ``iteration`` (0-based), or None.

    ``model_final`` after the last iteration, else ``model_<iteration:07d>`` every ``period``
    iterations (``period`` 0: only the final one). This is fvcore's ``PeriodicCheckpointer``
    schedule and naming except at the end, where fvcore also writes ``model_<max_iter-1>`` when
    ``max_iter`` is a multiple of ``period`` (a second copy of the final weights), and it cannot
    take ``period`` 0; runs keep the files they wrote before.
    """
    if iteration == max_iter - 1:
        return "model_final"
    if period > 0 and (iteration + 1) % period == 0:
        return f"model_{iteration:07d}"
    return None


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
      (e.g. ``("head.back_projection.",)`` when evaluating with another training vocabulary size);
    * ``save`` writes to a temporary file and renames it, so an interrupted save never leaves a
      truncated checkpoint or ``last_checkpoint`` pointing to one.
    """

    def __init__(self, model, save_dir: str = "", *, ignore_prefixes: Iterable[str] = (), **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.ignore_prefixes = tuple(ignore_prefixes)
        self._current_path: Optional[str] = None
        self._resume_path: Optional[str] = None

    # ------------------------------------------------------------------ which checkpoint to resume
    def checkpoint_files(self) -> List[str]:
        """``model_*.pth`` of ``save_dir``, newest first (``model_final`` before the numbered ones)."""
        def order(path):
            stem = os.path.basename(path)[len("model_"):-len(".pth")]
            return (1, 0) if stem == "final" else (0, int(stem)) if stem.isdigit() else (-1, 0)

        paths = glob.glob(os.path.join(glob.escape(self.save_dir), "model_*.pth")) if self.save_dir else []
        return sorted(paths, key=order, reverse=True)

    def find_resume_checkpoint(self) -> Optional[str]:
        """The checkpoint ``--resume`` continues: the one ``last_checkpoint`` names, else (with a
        warning) the newest complete ``model_*.pth``. None when ``save_dir`` holds no checkpoint;
        :class:`CheckpointError` when it holds some but none is complete (nothing is overwritten).
        """
        if self._resume_path is not None:
            return self._resume_path
        tag = os.path.join(self.save_dir, "last_checkpoint")
        why = f"{tag} does not exist"
        if os.path.isfile(tag):
            with open(tag) as f:
                name = f.read().strip()
            if name and os.path.isfile(os.path.join(self.save_dir, name)):
                self._resume_path = os.path.join(self.save_dir, name)
                return self._resume_path
            why = f"{tag} is empty" if not name else f"{tag} names {name}, which does not exist"
        candidates = self.checkpoint_files()
        if not candidates:
            if os.path.isfile(tag):
                raise CheckpointError(f"cannot resume: {why} and {self.save_dir} holds no model_*.pth")
            return None
        for path in candidates:
            if _is_complete_checkpoint(path):
                logger.warning("Resuming: %s (no last_checkpoint to follow); continuing from the newest "
                                    "complete checkpoint %s", why, path)
                self._resume_path = path
                return path
        shown = ", ".join(os.path.basename(p) for p in candidates[:3])
        raise CheckpointError(f"cannot resume: {why} and {self.save_dir} holds checkpoints ({shown}) but none of "
                              f"them is complete; move them away or start without --resume")

    def has_checkpoint(self) -> bool:
        return bool(self.save_dir) and self.find_resume_checkpoint() is not None

    def get_checkpoint_file(self) -> str:
        return self.find_resume_checkpoint() or ""

    def load(self, path: str, checkpointables=None) -> Dict[str, Any]:
        if not path:
            return super().load(path, checkpointables)
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint {path} does not exist")
        self._current_path = path
        return super().load(path, checkpointables)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if os.path.getsize(filename) == 0:
            raise CheckpointError(f"checkpoint {filename} is empty (0 bytes): an interrupted copy, download or "
                                  f"save? Use another file")
        try:
            data = torch.load(filename, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"checkpoint {filename} could not be read: {describe_exception(exc)}") from None
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
        # A model whose module tree changed between versions renames old keys (AerOSeg.upgrade_state_dict).
        upgrade = getattr(self.model, "upgrade_state_dict", None)
        if callable(upgrade):
            state = upgrade(state)
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
        try:
            _atomic_torch_save(data, path)
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(_save_failure(exc, path, self.save_dir)) from None
        self.logger.info("Saved checkpoint to %s", path)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        write_text_atomic(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename, durable=True)


def _is_complete_checkpoint(path: str) -> bool:
    """A cheap completeness test: torch's zip format keeps its directory at the end of the file,
    so a truncated or half-written checkpoint does not open as a zip file."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("data.pkl") for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _free_bytes(path: str) -> Optional[int]:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _save_failure(exc: BaseException, path: str, save_dir: str) -> str:
    """One line: why saving ``path`` failed (disk full is named even when torch hides ENOSPC)."""
    reason = describe_exception(exc)
    free = _free_bytes(save_dir)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or (free is not None and free < 64 * 2 ** 20):
        reason = f"the disk is full ({free // 2 ** 20 if free is not None else '?'} MB free; {reason})"
    tag = os.path.join(save_dir, "last_checkpoint")
    kept = ""
    if os.path.isfile(tag):
        with open(tag) as f:
            kept = f" {f.read().strip()} (named in last_checkpoint) is intact;"
    return one_line(f"could not save checkpoint {path}: {reason};{kept} free disk space or choose another "
                    f"OUTPUT_DIR, then --resume")


def _atomic_torch_save(obj: Any, path: str) -> None:
    with atomic_write(path, "wb", durable=True) as f:
        torch.save(obj, f)
