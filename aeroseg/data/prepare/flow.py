"""The conversion flow every dataset shares, and the ``main`` built around it.

A converter finds its inputs and turns them into jobs (one per raw image); from there on the three
datasets do the same: report the input problems (or skip them with ``--skip-bad``), claim the
output folder for this run (:func:`.run_identity.begin_output`), create the folders, run the jobs
in the worker pool, and write the manifest last (:func:`.run_identity.finish_output`).
"""
from __future__ import annotations

import argparse
from typing import Callable, Optional, Sequence

from .cli import run_cli
from .constants import SPLITS
from .jobs import handle_problems, run_jobs
from .output import ImageResult, prepare_output_dirs
from .run_identity import begin_output, finish_output
from .summary import Summary


def convert(args: argparse.Namespace, *, dataset: str, summary: Summary, classes: Sequence[str],
            jobs: Sequence[object], problems: Sequence[object], process_image: Callable[[object], ImageResult],
            source: object, options: dict, seed: Optional[int] = None, splits: Sequence[str] = SPLITS,
            before_jobs: Optional[Callable[[], None]] = None) -> Summary:
    """Run ``jobs`` into ``args.dst`` for ``dataset`` (``"isaid"``, ``"dlrsd"``, ``"oem"``).

    ``source``, ``seed`` and ``options`` identify the run (a folder written by a run with other
    values is refused unless ``--overwrite``); ``before_jobs`` writes extra files once the folder
    is claimed (DLRSD's split lists).
    """
    handle_problems(problems, args.skip_bad, summary)
    identity = {"dataset": dataset, "source": source, "seed": seed, "options": options}
    previous = begin_output(args.dst, identity, args.overwrite, f"prepare_{dataset}.py")
    prepare_output_dirs(args.dst, splits)
    if before_jobs is not None:
        before_jobs()
    run_jobs(process_image, jobs, workers=args.workers, skip_bad=args.skip_bad, summary=summary,
             desc=summary.title)
    finish_output(args.dst, identity, summary, f"datasets/prepare_{dataset}.py", classes, splits, previous)
    return summary


def make_main(build_parser: Callable[[], argparse.ArgumentParser],
              prepare: Callable[[argparse.Namespace], Summary]) -> Callable[[Optional[Sequence[str]]], int]:
    """A converter's ``main(argv=None) -> exit code`` (0 ok, 2 bad input)."""
    def main(argv: Optional[Sequence[str]] = None) -> int:
        args = build_parser().parse_args(argv)
        return run_cli(lambda: prepare(args))

    main.__doc__ = "Entry point; returns the exit code (0 ok, 2 bad input)."
    return main
