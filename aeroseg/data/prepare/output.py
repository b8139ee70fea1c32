"""The processed layout on disk: output folders, atomic tile writes, per-image results."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np
from PIL import Image

from ...utils.io import atomic_write, is_temp_name
from ...utils.io import write_text_atomic as io_write_text_atomic
from .constants import SPLITS, TILE_SIZE
from .errors import PrepareError
from .errors import describe_input_error as _describe
from .tiling import class_histogram, has_labelled_pixel, iter_tiles, pad_to_tile, tile_stem


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
                                           f"({_describe(exc)})") from None
            remove_temp_files(folder)


def write_tile_pair(dst: Path, split: str, name: str, image: np.ndarray, label: np.ndarray) -> None:
    """Write ``images/<name>.png`` (RGB) and ``labels/<name>.png`` (uint8) of one split."""
    write_png_atomic(image, output_dir(dst, split, "images") / f"{name}.png")
    write_png_atomic(label, output_dir(dst, split, "labels") / f"{name}.png")


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
