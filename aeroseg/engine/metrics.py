"""Training metrics: a console line, ``metrics.json`` (JSON lines) and tensorboard."""
import datetime
import json
import logging
import os
from collections import defaultdict, deque
from typing import Dict, Optional

from ..utils.io import write_text_atomic

__all__ = ["MetricsWriter"]

logger = logging.getLogger("aeroseg")


class MetricsWriter:
    """Collects scalars every iteration; every ``period`` iterations writes their medians.

    Only the main process writes files (``output_dir``/metrics.json and tensorboard events).
    A run that starts at ``start_iter`` (a resume) first drops the records of iterations
    ``>= start_iter`` that an interrupted earlier run wrote, so no iteration appears twice.
    """

    def __init__(self, output_dir: Optional[str], max_iter: int, period: int = 20, enabled: bool = True,
                 tensorboard: bool = True, start_iter: int = 0):
        self.max_iter, self.period, self.enabled = max_iter, max(1, period), enabled
        self._history: Dict[str, deque] = defaultdict(lambda: deque(maxlen=self.period))
        self._json = None
        self._tb = None
        if enabled and output_dir:
            os.makedirs(output_dir, exist_ok=True)
            path = os.path.join(output_dir, "metrics.json")
            _drop_records_from(path, start_iter)
            self._json = open(path, "a")
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    # purge_step: tensorboard hides the events of iterations >= start_iter of earlier runs
                    self._tb = SummaryWriter(output_dir, purge_step=start_iter)
                except ImportError:  # tensorboard is a dependency, but do not die for a log
                    logger.warning("tensorboard is not installed: no event files are written")

    def put(self, iteration: int, time_per_iter: Optional[float] = None, **scalars: float) -> None:
        for key, value in scalars.items():
            self._history[key].append(float(value))
        if time_per_iter is not None:
            self._history["time"].append(time_per_iter)
        if (iteration + 1) % self.period == 0 or iteration == self.max_iter - 1:
            self._write(iteration)

    def _median(self, key: str) -> float:
        values = sorted(self._history[key])
        return values[len(values) // 2]

    def _write(self, iteration: int) -> None:
        if not self.enabled:
            return
        record = {k: self._median(k) for k in self._history if self._history[k]}
        record["iteration"] = iteration
        losses = "  ".join(f"{k}: {v:.4g}" for k, v in record.items() if k.startswith("loss") or k == "total_loss")
        eta = ""
        if "time" in record:
            seconds = record["time"] * (self.max_iter - iteration - 1)
            eta = f"eta: {datetime.timedelta(seconds=int(seconds))}  time/iter: {record['time']:.4f}s  "
        lr = f"lr: {record['lr']:.3g}" if "lr" in record else ""
        logger.info("iter: %d/%d  %s%s  %s", iteration + 1, self.max_iter, eta, losses, lr)
        self.write_scalars(iteration, {k: v for k, v in record.items() if k != "iteration"})

    def write_scalars(self, iteration: int, scalars: Dict[str, float]) -> None:
        """Write ``scalars`` (e.g. evaluation results) as one record."""
        if not self.enabled:
            return
        if self._json is not None:
            self._json.write(json.dumps(dict(scalars, iteration=iteration)) + "\n")
            self._json.flush()
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, iteration)
            self._tb.flush()

    def close(self) -> None:
        if self._json is not None:
            self._json.close()
        if self._tb is not None:
            self._tb.close()


def _drop_records_from(path: str, start_iter: int) -> None:
    """Rewrite the JSON-lines file ``path`` (atomically) without records of iterations >= ``start_iter``."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if int(json.loads(line).get("iteration", -1)) >= start_iter:
                continue
        except (ValueError, AttributeError, TypeError):  # a torn last line of a killed run
            continue
        kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) == len(lines):
        return
    write_text_atomic(path, "".join(kept))
    logger.info("metrics.json: dropped %d record(s) of iterations >= %d written by the interrupted run",
                len(lines) - len(kept), start_iter)
