#!/usr/bin/env python
"""Convert the official iSAID release into AerOSeg's tiled layout.

Input (``--src RAW``)::

    RAW/train/...  DOTA images  P0000.png  and iSAID semantic masks
    RAW/val/...    P0000_instance_color_RGB.png, anywhere below each split folder
                   (the official archives unpack to images/ and Semantic_masks/images/)

Output (``--dst OUT``)::

    OUT/{train,val}/images/P0000_y00000_x00256.png   RGB tile
    OUT/{train,val}/labels/P0000_y00000_x00256.png   uint8 tile: 0..14, 255 = ignore

Every mask colour is mapped exactly to its class index using ``ISAID_PALETTE``
(15 classes); background (0, 0, 0) and any colour not in the palette become 255.
Unknown colours are counted and listed in the summary (the released masks are
drawn without anti-aliasing, so there should be none).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..datasets.builtin_meta import ISAID_CLASSES, ISAID_PALETTE, ISAID_UNSEEN
from .cli import tiled_release_parser, wrap_list
from .constants import IGNORE_INDEX, ISAID_BACKGROUND
from .errors import PrepareError
from .flow import convert, make_main
from .output import ImageResult, write_tiles
from .reading import check_same_size, read_rgb_image
from .summary import Summary

IMAGE_PATTERN = re.compile(r"^(P\d+)\.png$")
MASK_PATTERN = re.compile(r"^(P\d+)_instance_color_RGB\.png$")
MASK_SUFFIX = "_instance_color_RGB.png"

DESCRIPTION = f"""\
Convert the iSAID semantic segmentation release into 256x256 tiles.

RAW must contain train/ and val/; below each, the DOTA images P*.png and the
iSAID semantic masks P*{MASK_SUFFIX} are found recursively (the official
archives unpack to <split>/images/ and <split>/Semantic_masks/images/). Other
files (e.g. *_instance_id_RGB.png) are ignored.

Labels: mask colours map exactly to class indices 0..14 in this order:
{wrap_list(f"{i} {n}" for i, n in enumerate(ISAID_CLASSES))}.
Background (0,0,0) and colours outside the palette become 255 (ignore); unknown
colours are counted and reported in the summary.

Tiling: tiles start every --stride pixels; the last tile of each row/column is
shifted back to end at the image border, so every tile is full-size (and may
overlap its neighbour). Images smaller than a tile are padded at the bottom/right
(image black, label 255). Tiles without any labelled pixel are dropped and counted
unless --keep-empty. Tiles are named <image>_y<row>_x<col>.png (pixel offsets).

Re-running is safe: names are deterministic and files are replaced atomically.
A missing/malformed input stops the run with 'error: <file>: <problem>' and exit
code 2, unless --skip-bad (then it is skipped and counted).

Unseen classes (zero-shot split):
{wrap_list(ISAID_UNSEEN)}.
"""


@dataclass(frozen=True)
class IsaidJob:
    """One DOTA image with its semantic mask, and where/how to tile it."""

    split: str
    image: str
    mask: str
    dst: str
    tile: int
    stride: int
    keep_empty: bool


# --------------------------------------------------------------------------- #
# Colour mask -> class index
# --------------------------------------------------------------------------- #


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack an ``(..., 3)`` uint8 array into 24-bit integers ``r << 16 | g << 8 | b``."""
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


@lru_cache(maxsize=1)
def _colour_lookup() -> np.ndarray:
    """Table from packed 24-bit colour to class index (255 for all other colours)."""
    lut = np.full(1 << 24, IGNORE_INDEX, dtype=np.uint8)
    for index, colour in enumerate(ISAID_PALETTE):
        lut[_pack_rgb(np.array(colour, np.uint8))] = index
    return lut


def colour_mask_to_index(rgb: np.ndarray,
                         chunk_rows: int = 1024) -> Tuple[np.ndarray, Dict[str, int]]:
    """Convert an iSAID colour mask ``(H, W, 3)`` to class indices ``(H, W)`` uint8.

    Palette colours become 0..14, background and unknown colours 255. Returns
    ``(label, unknown)`` where ``unknown`` maps ``"(r, g, b)"`` of every colour
    that is neither in the palette nor background to its pixel count. Works in
    row chunks to bound memory on very large scenes.
    """
    lut = _colour_lookup()
    background = int(_pack_rgb(np.array(ISAID_BACKGROUND, np.uint8)))
    label = np.empty(rgb.shape[:2], dtype=np.uint8)
    unknown: Dict[str, int] = {}
    for start in range(0, rgb.shape[0], chunk_rows):
        keys = _pack_rgb(rgb[start:start + chunk_rows])
        chunk = lut[keys]
        label[start:start + chunk_rows] = chunk
        stray = keys[(chunk == IGNORE_INDEX) & (keys != background)]
        if stray.size:
            for key, count in zip(*np.unique(stray, return_counts=True)):
                colour = f"({key >> 16}, {(key >> 8) & 255}, {key & 255})"
                unknown[colour] = unknown.get(colour, 0) + int(count)
    return label, unknown


# --------------------------------------------------------------------------- #
# Finding inputs
# --------------------------------------------------------------------------- #


def _index_files(split_dir: Path, pattern: re.Pattern,
                 problems: List[PrepareError]) -> Dict[str, Path]:
    """Map image id (``P0000``) to the file below ``split_dir`` matching ``pattern``."""
    found: Dict[str, Path] = {}
    for path in sorted(split_dir.rglob("P*.png")):
        match = pattern.match(path.name)
        if not match:
            continue
        key = match.group(1)
        if key in found:
            problems.append(PrepareError(path, f"duplicate of {found[key]}"))
            continue
        found[key] = path
    return found


def find_pairs(split_dir: Path) -> Tuple[List[Tuple[Path, Path]], List[PrepareError]]:
    """Pair every DOTA image below ``split_dir`` with its semantic mask.

    Returns ``(pairs, problems)``: images without a mask and masks without an
    image are problems (skipped with ``--skip-bad``).
    """
    problems: List[PrepareError] = []
    images = _index_files(split_dir, IMAGE_PATTERN, problems)
    masks = _index_files(split_dir, MASK_PATTERN, problems)
    pairs = []
    for key in sorted(images):
        if key in masks:
            pairs.append((images[key], masks[key]))
        else:
            problems.append(PrepareError(
                images[key], f"no semantic mask {key}{MASK_SUFFIX} found below {split_dir}"))
    for key in sorted(set(masks) - set(images)):
        problems.append(PrepareError(masks[key],
                                     f"no DOTA image {key}.png found below {split_dir}"))
    return pairs, problems


def check_source(src: Path, splits: Sequence[str]) -> None:
    """Raise :class:`PrepareError` unless ``src`` holds the expected split folders."""
    if not src.is_dir():
        raise PrepareError(src, "not a folder (expected the iSAID root with train/ and val/)")
    for split in splits:
        split_dir = src / split
        if not split_dir.is_dir():
            raise PrepareError(split_dir, f"missing split folder (expected {src}/{{train,val}}/)")
        if not any(IMAGE_PATTERN.match(p.name) for p in split_dir.rglob("P*.png")):
            raise PrepareError(split_dir, "no DOTA images P*.png found below this folder")


# --------------------------------------------------------------------------- #
# Processing one image
# --------------------------------------------------------------------------- #


def process_image(job: IsaidJob) -> ImageResult:
    """Read one image and mask, convert colours to indices and write the tiles."""
    image = read_rgb_image(Path(job.image))
    colours = read_rgb_image(Path(job.mask))
    check_same_size(image, colours, Path(job.mask))
    label, unknown = colour_mask_to_index(colours)
    del colours
    result = ImageResult(split=job.split, source=job.image, unknown=unknown)
    return write_tiles(image, label, dst=Path(job.dst), split=job.split,
                       stem=Path(job.image).stem, tile=job.tile, stride=job.stride,
                       keep_empty=job.keep_empty, result=result)


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    return tiled_release_parser("prepare_isaid.py", DESCRIPTION, "iSAID root holding train/ and val/",
                                "$AEROSEG_DATASETS/isaid")


def prepare(args: argparse.Namespace) -> Summary:
    """Convert the release described by ``args``; return the summary."""
    check_source(args.src, args.splits)
    summary = Summary("iSAID", ISAID_CLASSES, args.dst)
    jobs, problems = [], []
    for split in args.splits:
        pairs, split_problems = find_pairs(args.src / split)
        problems.extend(split_problems)
        jobs.extend(IsaidJob(split, str(image), str(mask), str(args.dst), args.tile_size,
                             args.stride or args.tile_size, args.keep_empty)
                    for image, mask in pairs)
    options = {"tile_size": args.tile_size, "stride": args.stride or args.tile_size, "keep_empty": args.keep_empty}
    return convert(args, dataset="isaid", summary=summary, classes=ISAID_CLASSES, jobs=jobs, problems=problems,
                   process_image=process_image, source=str(args.src.resolve()), options=options, splits=args.splits)


main = make_main(build_parser, prepare)


if __name__ == "__main__":
    sys.exit(main())
