"""Ctrl-C: one line saying where the run stopped and how to continue it (no traceback)."""
import os
from typing import Optional

from ..utils.errors import AerOSegError

__all__ = ["Interrupted", "interruption_message"]


class Interrupted(AerOSegError):
    """The run was stopped by Ctrl-C (SIGINT); the message says where and how to continue."""


def _last_checkpoint(output_dir: str) -> Optional[str]:
    tag = os.path.join(output_dir, "last_checkpoint")
    try:
        with open(tag) as f:
            name = f.read().strip()
    except OSError:
        return None
    return name if name and os.path.isfile(os.path.join(output_dir, name)) else None


def interruption_message(cfg, iteration: Optional[int] = None, max_iter: Optional[int] = None,
                         evaluating: bool = False) -> str:
    """Where a run of ``cfg`` stopped (``iteration``: the one running, 0-based) and how to go on."""
    output_dir = cfg.OUTPUT_DIR
    if evaluating:
        return (f"stopped during the evaluation of {', '.join(cfg.DATASETS.TEST)}; results are written only when "
                f"an evaluation completes, so run the same command again")
    where = f"stopped at iteration {iteration + 1} of {max_iter}" if iteration is not None and max_iter else "stopped"
    last = _last_checkpoint(output_dir) if output_dir else None
    if last is None:
        return (f"{where}, before the first checkpoint (SOLVER.CHECKPOINT_PERIOD {cfg.SOLVER.CHECKPOINT_PERIOD}): "
                f"nothing to resume, run the same command again")
    return (f"{where}; {os.path.join(output_dir, last)} is the last checkpoint: continue it by running the same "
            f"command with --resume")
