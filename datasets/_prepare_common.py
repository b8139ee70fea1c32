"""Shared helpers for the ``datasets/prepare_*.py`` conversion scripts.

The three prepare scripts (iSAID, DLRSD, OpenEarthMap) all turn an official
release into the processed layout read by AerOSeg::

    OUT/{train,val}/images/<stem>.png   lossless RGB PNG
    OUT/{train,val}/labels/<stem>.png   single-channel uint8 PNG,
                                        class index 0..K-1, 255 = ignore

This module holds what they share:

* the class names, seen/unseen splits and the iSAID colour palette (the single
  place these live until they move into the ``aeroseg`` package);
* the tiling policy (:func:`tile_origins`, :func:`iter_tiles`) and the tile
  writer (:func:`write_tiles`);
* atomic file writing (:func:`write_png_atomic`, :func:`write_text_atomic`);
* the error type (:class:`PrepareError`) whose ``str`` is the one-line
  ``<file>: <problem>`` message printed as ``error: ...`` with exit code 2;
* the worker pool with a tqdm progress bar and ``--skip-bad`` handling
  (:func:`run_jobs`), and the end-of-run :class:`Summary`;
* :func:`run_cli`, the ``main()`` skeleton every script uses;
* the output manifest (:func:`begin_output`, :func:`finish_output`): ``OUT/manifest.json`` lists
  the split, seed, source, options and files of the run and is written last, atomically, so a
  folder without it is incomplete; a re-run with other settings is refused (``--overwrite``
  rebuilds the folder) so train and val never mix files of two runs.

It is a private helper of the scripts (hence the leading underscore) and is
imported by putting this folder on ``sys.path``. The class lists come from the installed
``aeroseg`` package (``aeroseg.data.datasets.builtin_meta``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

# DOTA scenes reach ~20,000 x 20,000 pixels, above Pillow's decompression-bomb
# guard. The inputs are the user's own dataset files, so the guard is lifted.
Image.MAX_IMAGE_PIXELS = None

# --------------------------------------------------------------------------- #
# Dataset constants (docs/DESIGN.md, "Datasets"). Keep them here, in one place.
# --------------------------------------------------------------------------- #

TILE_SIZE = 256
IGNORE_INDEX = 255
SPLITS = ("train", "val")

# Class orders, the iSAID palette and the unseen splits live in the package (one source of
# truth shared with dataset registration); the scripts need `pip install -e .` first.
from aeroseg.utils.io import atomic_write, is_temp_name  # noqa: E402
from aeroseg.utils.io import write_text_atomic as io_write_text_atomic  # noqa: E402
from aeroseg.data.datasets.manifest import (  # noqa: E402
    IN_PROGRESS_NAME,
    MANIFEST_NAME,
    make_manifest,
    mark_in_progress,
    write_manifest,
)
from aeroseg.data.datasets.builtin_meta import (  # noqa: E402, F401 (re-exported to the prepare_*.py scripts)
    DLRSD_CLASSES,
    DLRSD_UNSEEN,
    ISAID_CLASSES,
    ISAID_PALETTE,
    ISAID_UNSEEN,
    OEM_CLASSES,
    OEM_UNSEEN,
)

ISAID_BACKGROUND = (0, 0, 0)


def seen_classes(classes: Sequence[str], unseen: Sequence[str]) -> Tuple[str, ...]:
    """Return the classes of ``classes`` that are not in ``unseen``, in order."""
    return tuple(name for name in classes if name not in unseen)


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #


class PrepareError(Exception):
    """A missing or malformed input. ``str(err)`` is ``"<file>: <problem>"``.

    The scripts print it as ``error: <file>: <problem>`` and exit with code 2,
    or count and skip the input when ``--skip-bad`` is given. The message is
    always a single line.
    """

    def __init__(self, path: object, problem: str):
        super().__init__(str(path), str(problem))
        self.path = str(path)
        self.problem = " ".join(str(problem).split())

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def describe_exception(exc: BaseException) -> str:
    """One-line description of a reader exception, for :class:`PrepareError`."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------- #
# Reading
# --------------------------------------------------------------------------- #


def read_index_label(path: Path) -> np.ndarray:
    """Read a single-channel label image (palette, grayscale or 16-bit PNG/TIFF) with Pillow.

    Returns the stored values (palette indices for palette images) as an
    integer array ``(H, W)``. Colour images are rejected: a class-index label
    must have one channel.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                raise PrepareError(path, f"expected a single-channel (palette or grayscale) "
                                         f"label image, got mode {img.mode}")
            return np.asarray(img)
    except PrepareError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise PrepareError(path, f"cannot read label ({describe_exception(exc)})") from None


def read_rgb_image(path: Path) -> np.ndarray:
    """Read an image file with Pillow as an ``(H, W, 3)`` uint8 RGB array.

    Grayscale, palette and RGBA files are converted to RGB.
    Raises :class:`PrepareError` when the file is missing or unreadable.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise PrepareError(path, f"expected an 8-bit image, got mode {img.mode}")
            return np.asarray(img.convert("RGB"))
    except PrepareError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three
        raise PrepareError(path, f"cannot read image ({describe_exception(exc)})") from None


def check_same_size(image: np.ndarray, label: np.ndarray, label_path: Path) -> None:
    """Raise :class:`PrepareError` unless ``label`` has the height/width of ``image``."""
    if image.shape[:2] != label.shape[:2]:
        raise PrepareError(
            label_path,
            f"label size {label.shape[1]}x{label.shape[0]} (WxH) differs from "
            f"image size {image.shape[1]}x{image.shape[0]}",
        )


def remap_label_values(raw: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """Map raw label values ``1..num_classes`` to ``0..num_classes-1`` and ``0`` to 255.

    Any other value is an error (:class:`PrepareError` naming the values).
    Returns a uint8 array of the same shape.
    """
    if raw.dtype.kind not in "ui":
        raise PrepareError(path, f"expected integer label values, got data type {raw.dtype}")
    values = np.unique(raw)
    bad = [int(v) for v in values if v < 0 or v > num_classes]
    if bad:
        shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        raise PrepareError(
            path, f"unknown label value(s) {shown} (expected 0 = unlabelled or 1..{num_classes})"
        )
    lut = np.arange(-1, 255, dtype=np.int64).astype(np.uint8)  # v -> v - 1 (0 -> 255)
    return lut[raw.astype(np.intp)]


def fit_to_size(array: np.ndarray, height: int, width: int, fill: int) -> np.ndarray:
    """Crop or pad ``array`` (HxW or HxWxC) to exactly ``height`` x ``width``.

    Anchored at the top-left corner: extra rows/columns at the bottom/right are
    cut off, missing ones are appended at the bottom/right filled with ``fill``.
    """
    out = array[:height, :width]
    pad_h, pad_w = height - out.shape[0], width - out.shape[1]
    if pad_h or pad_w:
        pad = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (out.ndim - 2)
        out = np.pad(out, pad, mode="constant", constant_values=fill)
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------- #
# Tiling policy
# --------------------------------------------------------------------------- #


def tile_origins(length: int, tile: int, stride: int) -> List[int]:
    """Start offsets of the tiles covering ``0..length`` along one axis.

    Tiles start every ``stride`` pixels; the last tile is shifted back so that it
    ends exactly at the border (it then overlaps its neighbour), so every tile is
    full-size and every pixel is covered. Axes shorter than ``tile`` give ``[0]``
    (the caller pads the image first).

    >>> tile_origins(1000, 256, 256)
    [0, 256, 512, 744]
    >>> tile_origins(512, 256, 256)
    [0, 256]
    """
    if tile <= 0 or stride <= 0:
        raise ValueError("tile and stride must be positive")
    if length <= tile:
        return [0]
    origins = list(range(0, length - tile + 1, stride))
    if origins[-1] != length - tile:
        origins.append(length - tile)
    return origins


def pad_to_tile(image: np.ndarray, label: np.ndarray,
                tile: int) -> Tuple[np.ndarray, np.ndarray, bool]:
    """Pad image (black) and label (255) at the bottom/right to at least ``tile`` per side.

    Returns ``(image, label, padded)``.
    """
    height, width = label.shape[:2]
    if height >= tile and width >= tile:
        return image, label, False
    new_h, new_w = max(height, tile), max(width, tile)
    return (fit_to_size(image, new_h, new_w, 0),
            fit_to_size(label, new_h, new_w, IGNORE_INDEX), True)


def iter_tiles(image: np.ndarray, label: np.ndarray, tile: int,
               stride: int) -> Iterator[Tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield ``(y, x, image_tile, label_tile)`` over the grid of :func:`tile_origins`.

    ``image`` and ``label`` must already be at least ``tile`` pixels per side.
    """
    height, width = label.shape[:2]
    for y in tile_origins(height, tile, stride):
        for x in tile_origins(width, tile, stride):
            yield (y, x,
                   np.ascontiguousarray(image[y:y + tile, x:x + tile]),
                   np.ascontiguousarray(label[y:y + tile, x:x + tile]))


def tile_stem(stem: str, y: int, x: int) -> str:
    """Deterministic file stem of the tile at pixel offset ``(y, x)`` of ``stem``."""
    return f"{stem}_y{y:05d}_x{x:05d}"


def has_labelled_pixel(label: np.ndarray) -> bool:
    """True when ``label`` contains at least one pixel that is not ignore (255)."""
    return bool((label != IGNORE_INDEX).any())


def class_histogram(label: np.ndarray) -> np.ndarray:
    """Pixel count of every value 0..255 in a uint8 label (length-256 int64 array)."""
    return np.bincount(label.ravel(), minlength=256).astype(np.int64)


# --------------------------------------------------------------------------- #
# Atomic writing
# --------------------------------------------------------------------------- #

def write_png_atomic(array: np.ndarray, path: Path) -> None:
    """Write a uint8 HxW (grayscale) or HxWx3 (RGB) array as a PNG, atomically (:mod:`aeroseg.utils.io`)."""
    if array.dtype != np.uint8:
        raise TypeError(f"expected uint8, got {array.dtype}")
    img = Image.fromarray(np.ascontiguousarray(array))
    with atomic_write(path, "wb") as handle:
        img.save(handle, format="PNG")


def write_text_atomic(text: str, path: Path) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    io_write_text_atomic(path, text)


def remove_temp_files(folder: Path) -> int:
    """Delete leftover temporary files (:func:`aeroseg.utils.io.is_temp_name`) of an interrupted run."""
    removed = 0
    if folder.is_dir():
        for leftover in folder.iterdir():
            if is_temp_name(leftover.name):
                leftover.unlink(missing_ok=True)
                removed += 1
    return removed


# --------------------------------------------------------------------------- #
# Output layout
# --------------------------------------------------------------------------- #


def output_dir(dst: Path, split: str, kind: str) -> Path:
    """``dst/<split>/<kind>`` with ``kind`` one of ``images``, ``labels``."""
    return Path(dst) / split / kind


def prepare_output_dirs(dst: Path, splits: Iterable[str] = SPLITS) -> None:
    """Create ``dst/<split>/{images,labels}`` and drop temp files of earlier runs."""
    for split in splits:
        for kind in ("images", "labels"):
            folder = output_dir(dst, split, kind)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PrepareError(folder, "cannot create output folder "
                                           f"({describe_exception(exc)})") from None
            remove_temp_files(folder)


def write_tile_pair(dst: Path, split: str, name: str, image: np.ndarray, label: np.ndarray) -> None:
    """Write ``images/<name>.png`` (RGB) and ``labels/<name>.png`` (uint8) of one split."""
    write_png_atomic(image, output_dir(dst, split, "images") / f"{name}.png")
    write_png_atomic(label, output_dir(dst, split, "labels") / f"{name}.png")


# --------------------------------------------------------------------------- #
# Per-image results
# --------------------------------------------------------------------------- #


@dataclass
class ImageResult:
    """What processing one source image produced (returned by worker processes)."""

    split: str
    source: str
    tiles: List[str] = field(default_factory=list)        # stems written
    dropped_empty: int = 0                                # tiles without labels, not written
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    unknown: Dict[str, int] = field(default_factory=dict)  # unknown colour -> pixels
    notes: List[str] = field(default_factory=list)        # e.g. "padded", "cropped"


def write_tiles(image: np.ndarray, label: np.ndarray, *, dst: Path, split: str, stem: str,
                tile: int = TILE_SIZE, stride: int = TILE_SIZE, keep_empty: bool = False,
                result: Optional[ImageResult] = None) -> ImageResult:
    """Cut ``image``/``label`` into ``tile`` x ``tile`` tiles and write them.

    Edge policy (see :func:`tile_origins`): the last tile of a row/column is
    shifted back to end at the border; images smaller than ``tile`` are padded at
    the bottom/right (image black, label 255). Tiles whose label is entirely 255
    are dropped (counted in ``dropped_empty``) unless ``keep_empty``.
    """
    result = result or ImageResult(split=split, source=stem)
    image, label, padded = pad_to_tile(image, label, tile)
    if padded:
        result.notes.append("padded")
    for y, x, image_tile, label_tile in iter_tiles(image, label, tile, stride):
        if not keep_empty and not has_labelled_pixel(label_tile):
            result.dropped_empty += 1
            continue
        name = tile_stem(stem, y, x)
        write_tile_pair(dst, split, name, image_tile, label_tile)
        result.tiles.append(name)
        result.pixels += class_histogram(label_tile)
    return result


# --------------------------------------------------------------------------- #
# Summary
# --------------------------------------------------------------------------- #


class Summary:
    """Accumulates :class:`ImageResult` objects and prints the end-of-run report."""

    def __init__(self, title: str, class_names: Sequence[str], dst: Path,
                 unknown_label: str = "unknown colours (written as 255)"):
        self.title = title
        self.class_names = tuple(class_names)
        self.dst = Path(dst)
        self.unknown_label = unknown_label
        self.images: Counter = Counter()
        self.tiles: Counter = Counter()
        self.dropped: Counter = Counter()
        self.notes: Counter = Counter()
        self.unknown: Counter = Counter()
        self.pixels: Dict[str, np.ndarray] = {}
        self.written: Dict[str, set] = {}
        self.skipped: List[str] = []

    def add(self, result: ImageResult) -> None:
        """Fold one image's result into the totals."""
        split = result.split
        self.images[split] += 1
        self.tiles[split] += len(result.tiles)
        self.dropped[split] += result.dropped_empty
        self.pixels.setdefault(split, np.zeros(256, np.int64))
        self.pixels[split] += result.pixels
        self.written.setdefault(split, set()).update(result.tiles)
        self.unknown.update(result.unknown)
        self.notes.update((split, note) for note in result.notes)

    def skip(self, error: PrepareError) -> None:
        """Record an input skipped because of ``--skip-bad``."""
        self.skipped.append(str(error))

    def leftover_files(self) -> Dict[str, int]:
        """Count ``*.png`` files in the output folders that this run did not write.

        They come from an earlier run with other options or inputs; they are
        reported, never deleted.
        """
        leftovers = {}
        for split in sorted(self.written):
            for kind in ("images", "labels"):
                folder = output_dir(self.dst, split, kind)
                extra = [p for p in folder.glob("*.png") if p.stem not in self.written[split]]
                if extra:
                    leftovers[f"{split}/{kind}"] = len(extra)
        return leftovers

    def format(self) -> str:
        """The report as text: tiles per split, pixels per class, problems."""
        splits = [s for s in SPLITS if s in self.images] + sorted(
            s for s in self.images if s not in SPLITS)
        lines = [f"{self.title}: wrote tiles to {self.dst}"]
        lines.append(f"  {'split':<7}{'images':>9}{'tiles':>10}{'dropped empty':>15}")
        for split in splits:
            lines.append(f"  {split:<7}{self.images[split]:>9,}{self.tiles[split]:>10,}"
                         f"{self.dropped[split]:>15,}")
        lines.append("  pixels per class in the written label tiles:")
        header = "".join(f"{s:>16}" for s in splits)
        lines.append(f"  {'idx':>4} {'class':<20}{header}")
        rows = [(str(i), name, i) for i, name in enumerate(self.class_names)]
        rows.append(("255", "(ignore)", IGNORE_INDEX))
        for idx_text, name, idx in rows:
            counts = "".join(f"{int(self.pixels[s][idx]):>16,}" for s in splits)
            lines.append(f"  {idx_text:>4} {name:<20}{counts}")
        for (split, note), count in sorted(self.notes.items()):
            lines.append(f"  {split}: {count:,} image(s) {note}")
        if self.unknown:
            total = sum(self.unknown.values())
            lines.append(f"  {self.unknown_label}: {total:,} pixels in "
                         f"{len(self.unknown)} value(s); most frequent:")
            for key, count in self.unknown.most_common(10):
                lines.append(f"    {key}: {count:,}")
        for where, count in self.leftover_files().items():
            lines.append(f"  note: {count:,} file(s) in {self.dst / where} were not written by "
                         f"this run (left from an earlier run with other options?)")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} bad input(s) (--skip-bad):")
            lines.extend(f"    {message}" for message in sorted(self.skipped))
        return "\n".join(lines)


# --------------------------------------------------------------------------- #
# Running jobs
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# Manifest: completion marker and run identity
# --------------------------------------------------------------------------- #


def _read_json(path: Path) -> Optional[dict]:
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _identity_of(record: dict) -> dict:
    return {key: record.get(key) for key in ("dataset", "source", "seed", "options")}


def _differences(old: dict, new: dict) -> str:
    parts = []
    for key in ("dataset", "source", "seed"):
        if old.get(key) != new.get(key):
            parts.append(f"{key} {old.get(key)!r} -> {new.get(key)!r}")
    old_options, new_options = old.get("options") or {}, new.get("options") or {}
    for key in sorted(set(old_options) | set(new_options)):
        if old_options.get(key) != new_options.get(key):
            parts.append(f"{key} {old_options.get(key)!r} -> {new_options.get(key)!r}")
    return ", ".join(parts)


def begin_output(dst: Path, identity: dict, overwrite: bool, what: str) -> Optional[dict]:
    """Claim ``dst`` for a run with ``identity`` (dataset, source, seed, options).

    A folder written (completely, or interrupted) by a run with another identity is refused
    unless ``overwrite``, which deletes its split folders' PNGs first. Then the manifest is
    removed and ``.prepare_in_progress`` (holding ``identity``) written, so an interrupted run
    leaves a folder that loads as incomplete. Returns the previous manifest of the same identity
    (its other splits are kept in the new manifest), or None.
    """
    import json
    import shutil

    dst = Path(dst)
    previous = _read_json(dst / MANIFEST_NAME) or _read_json(dst / IN_PROGRESS_NAME)
    if previous is not None and _identity_of(previous) != identity:
        if not overwrite:
            which = MANIFEST_NAME if (dst / MANIFEST_NAME).exists() else IN_PROGRESS_NAME
            changed = _differences(previous, identity)
            raise PrepareError(dst / which, f"written by a run with other settings ({changed}); "
                                            f"mixing the files of two runs can put an image in train and val "
                                            f"or stale tiles in a split: use another --dst, or --overwrite to "
                                            f"rebuild this folder")
        for split in SPLITS:
            if (dst / split).is_dir():
                shutil.rmtree(dst / split)
        for name in ("train.txt", "val.txt"):
            (dst / name).unlink(missing_ok=True)
        previous = None
    keep = _read_json(dst / MANIFEST_NAME) if previous is not None else None
    dst.mkdir(parents=True, exist_ok=True)
    mark_in_progress(str(dst), what)
    write_text_atomic(json.dumps(identity, sort_keys=True) + "\n", dst / IN_PROGRESS_NAME)
    return keep


def finish_output(dst: Path, identity: dict, summary: "Summary", tool: str, classes: Sequence[str],
                  splits: Sequence[str], previous: Optional[dict]) -> Path:
    """Write ``dst/manifest.json`` (last, atomically): the files this run wrote per split, plus
    the splits a previous run with the same identity wrote and this one did not redo."""
    files: Dict[str, List[str]] = {}
    for split in SPLITS:
        if split in splits:
            files[split] = sorted(summary.written.get(split, set()))
        elif previous is not None and split in previous.get("splits", {}):
            files[split] = list(previous["splits"][split]["files"])
    try:
        manifest = make_manifest(identity["dataset"], files, tool=tool, source=identity["source"],
                                 seed=identity["seed"], options=identity["options"], classes=classes)
    except ValueError as exc:
        raise PrepareError(dst, str(exc)) from None
    manifest["skipped_inputs"] = len(summary.skipped)
    return Path(write_manifest(str(dst), manifest))


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
