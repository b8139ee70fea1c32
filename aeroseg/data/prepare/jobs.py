"""Running per-image jobs in a worker pool with a progress bar and ``--skip-bad`` handling."""
from __future__ import annotations

import multiprocessing
import os
from functools import partial
from typing import Callable, Iterable, Sequence

from tqdm import tqdm

from .constants import SPLITS
from .errors import PrepareError
from .output import ImageResult, output_dir, remove_temp_files
from .summary import Summary


def default_workers() -> int:
    """Default ``--workers``: the CPU count, at most 8 (large scenes need RAM)."""
    return max(1, min(8, os.cpu_count() or 1))


def _guarded_call(function: Callable, job: object):
    """Run ``function(job)``; return a :class:`PrepareError` instead of raising it."""
    try:
        return function(job)
    except PrepareError as err:
        return err


def run_jobs(function: Callable[[object], ImageResult], jobs: Sequence[object], *,
             workers: int, skip_bad: bool, summary: Summary, desc: str) -> None:
    """Run ``function`` on every job with a progress bar and fold results into ``summary``.

    ``workers`` <= 1 runs in this process; otherwise a process pool is used
    (``function`` and the jobs must be picklable module-level objects). A
    :class:`PrepareError` from a job is re-raised (stopping the pool) unless
    ``skip_bad``, in which case it is recorded in ``summary`` and the run goes on.
    """
    if not jobs:
        return
    call = partial(_guarded_call, function)
    try:
        with tqdm(total=len(jobs), desc=desc, unit="image", dynamic_ncols=True) as bar:
            if workers <= 1:
                _collect(map(call, jobs), bar, skip_bad, summary)
            else:
                with multiprocessing.get_context().Pool(min(workers, len(jobs))) as pool:
                    _collect(pool.imap_unordered(call, jobs), bar, skip_bad, summary)
    finally:
        # A pool stopped on an error may have killed a worker mid-write.
        for split in SPLITS:
            for kind in ("images", "labels"):
                remove_temp_files(output_dir(summary.dst, split, kind))


def _collect(results: Iterable, bar: tqdm, skip_bad: bool, summary: Summary) -> None:
    """Consume job results: add them to ``summary``, skip or raise failures."""
    for result in results:
        bar.update(1)
        if isinstance(result, PrepareError):
            if not skip_bad:
                raise result
            summary.skip(result)
        else:
            summary.add(result)


def handle_problems(problems: Sequence[PrepareError], skip_bad: bool, summary: Summary) -> None:
    """Input problems found while listing files: raise the first, or skip them all."""
    problems = sorted(problems, key=str)
    if problems and not skip_bad:
        raise problems[0]
    for problem in problems:
        summary.skip(problem)
