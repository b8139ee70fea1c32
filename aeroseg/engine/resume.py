"""What ``--resume`` needs from a checkpoint to continue a run exactly, on either engine.

Both engines (the own loop and detectron2's ``DefaultTrainer``, see docs/ENGINES.md) write the
same file: ``{"model", "optimizer", "scheduler", ["grad_scaler"], "iteration", "rng"}``. The
iteration gives the data position (the sampler restarts at ``iteration x IMS_PER_BATCH``),
"rng" the Python / NumPy / torch random states of rank 0 and "rng_all_ranks" those of every
process (each restores its own). A file without one of these (weights only, or one
written by plain detectron2, whose ``DefaultTrainer`` nests the optimizer under "trainer") would
silently restart the optimizer, the schedule or the data stream, so it is refused instead.
"""
import logging
import os
from typing import Iterable

import torch

from ..utils import comm
from ..utils.errors import CheckpointError

__all__ = ["check_resumable", "resume_or_load"]

logger = logging.getLogger("aeroseg")


def _top_level_keys(path: str) -> list:
    try:  # memory-mapped: the tensors are not read, only the dict's structure
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a legacy (non-zip) file cannot be memory-mapped
        data = torch.load(path, map_location="cpu", weights_only=True)
    return list(data) if isinstance(data, dict) else []


def check_resumable(path: str, checkpointables: Iterable[str]) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``path`` holds a whole training state.

    ``checkpointables``: the names of the states the resuming trainer restores besides the
    model ("optimizer", "scheduler", and "grad_scaler" with fp16 mixed precision).
    """
    try:
        keys = _top_level_keys(path)
    except Exception:  # unreadable: the checkpointer's own load reports it with its reason
        return
    hint = f"start a new run from its weights with MODEL.WEIGHTS {path} and without --resume"
    if "trainer" in keys and "optimizer" not in keys:
        raise CheckpointError(
            f"--resume: checkpoint {path} was written by detectron2's own DefaultTrainer (optimizer and "
            f"schedule nested under 'trainer', no data position or RNG state), so the run cannot "
            f"continue exactly; {hint}")
    missing = [k for k in ("iteration", "rng", *checkpointables) if k not in keys]
    if missing:
        raise CheckpointError(
            f"--resume: checkpoint {path} has no {', '.join(repr(k) for k in missing)} (it holds "
            f"{', '.join(repr(k) for k in keys) or 'nothing'}), so the run cannot continue exactly; {hint}")


def resume_or_load(checkpointer, cfg, resume: bool) -> int:
    """What both engines do before training; returns the iteration to start at.

    ``resume`` and a checkpoint in ``OUTPUT_DIR`` (``last_checkpoint``, or the newest complete
    one): check that it holds a whole training state, restore it (model, optimizer, scheduler,
    [grad scaler], RNG) and continue after its iteration. Otherwise start at 0, loading only the
    model from ``MODEL.WEIGHTS`` if set (and warn that existing checkpoints will be replaced).
    """
    from ..checkpoint import AerOSegCheckpointer
    from .defaults import restore_rng_state

    if resume and checkpointer.has_checkpoint():
        path = checkpointer.get_checkpoint_file()
        check_resumable(path, checkpointer.checkpointables)  # refuse rather than restart silently
        extra = checkpointer.load(path)
        start_iter = int(extra.get("iteration", -1)) + 1
        restore_rng_state(extra)  # this process' RNG states (every rank's are saved)
        logger.info("Resumed from %s at iteration %d", path, start_iter)
        return start_iter
    existing = checkpointer.checkpoint_files()
    if existing and comm.is_main_process():
        logger.warning("%s already holds %d checkpoint(s) (e.g. %s): this new run from iteration 0 "
                       "replaces them as it saves (use --resume to continue instead)",
                       cfg.OUTPUT_DIR, len(existing), os.path.basename(existing[0]))
    if cfg.MODEL.WEIGHTS:
        AerOSegCheckpointer(checkpointer.model).load(cfg.MODEL.WEIGHTS, checkpointables=[])
        logger.info("Loaded model weights from %s", cfg.MODEL.WEIGHTS)
    return 0
