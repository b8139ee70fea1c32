"""Command-line helpers shared by the conversion scripts (argument types, options, ``main``)."""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Callable, Iterable

from .constants import SPLITS, TILE_SIZE
from .errors import PrepareError
from .jobs import default_workers
from .summary import Summary


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks; shows meaningful defaults of options."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" not in text and action.default not in (None, False)
                and action.default is not argparse.SUPPRESS and action.option_strings):
            text += " (default: %(default)s)"
        return text


def wrap_list(items: Iterable[str], indent: str = "  ", width: int = 79) -> str:
    """Comma-separated ``items`` wrapped to ``width`` columns for help texts."""
    return textwrap.fill(", ".join(items), width=width, initial_indent=indent,
                         subsequent_indent=indent)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--workers``, ``--skip-bad`` and ``--overwrite``, shared by all prepare scripts."""
    parser.add_argument(
        "--overwrite", action="store_true",
        help="rebuild --dst when it holds the output of a run with other settings (source, seed, "
             "options); without it such a run is refused")
    parser.add_argument(
        "--workers", type=non_negative_int, default=default_workers(),
        help="worker processes; 0 or 1 runs everything in this process "
             "(default: the number of CPUs, at most 8; here %(default)s)")
    parser.add_argument(
        "--skip-bad", action="store_true",
        help="skip (and count in the summary) missing or malformed inputs instead of "
             "stopping at the first one with exit code 2")


def add_tiling_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tile-size``, ``--stride`` and ``--keep-empty`` for the tiling scripts."""
    parser.add_argument("--tile-size", type=positive_int, default=TILE_SIZE,
                        help="tile side in pixels")
    parser.add_argument("--stride", type=positive_int, default=None,
                        help="distance between tile origins (default: the tile size, "
                             "i.e. no overlap except at the right/bottom edges)")
    parser.add_argument("--keep-empty", action="store_true",
                        help="also write tiles whose label has no labelled pixel "
                             "(all 255); by default they are dropped and counted")


def run_cli(body: Callable[[], Summary]) -> int:
    """Run a script's ``body``; print its summary, or ``error: <file>: <problem>``.

    Returns the exit code: 0 on success, 2 on a :class:`PrepareError`
    (printed as one line on stderr, no traceback), 130 on Ctrl-C.
    """
    try:
        summary = body()
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(summary.format())
    return 0


def tiled_release_parser(prog: str, description: str, src_help: str, dst_example: str) -> argparse.ArgumentParser:
    """The command line of a converter that tiles a release with train/ and val/ scenes (iSAID, OEM)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    parser.add_argument("--src", type=Path, required=True, help=src_help)
    parser.add_argument("--dst", type=Path, required=True, help=f"output folder, e.g. {dst_example}")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS),
                        help="which splits to convert")
    add_tiling_arguments(parser)
    add_common_arguments(parser)
    return parser
