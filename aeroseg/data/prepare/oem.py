#!/usr/bin/env python
"""Convert the OpenEarthMap release (without xBD) into AerOSeg's tiled layout.

Input (``--src OpenEarthMap_wo_xBD``)::

    <region>/images/<name>.tif   GeoTIFF, RGB uint8 (about 1024x1024)
    <region>/labels/<name>.tif   GeoTIFF, 1 band uint8: 0 unknown, 1..8 classes
    train.txt, val.txt           file names (<name>.tif), one per line

Output (``--dst OUT``)::

    OUT/{train,val}/images/<name>_y00000_x00256.png   RGB tile
    OUT/{train,val}/labels/<name>_y00000_x00256.png   uint8 tile: 0..7, 255 = ignore

GeoTIFFs are read with rasterio (GDAL), which handles the compression, internal
tiling/striping and band layouts found in GeoTIFFs that general-purpose image
readers may reject or misread. Label values 1..8 become 0..7 (``OEM_CLASSES``),
0 becomes 255 and any other value is an error. Tiling follows the same edge
policy as ``prepare_isaid.py`` (last tile shifted back to the border).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..datasets.builtin_meta import OEM_CLASSES, OEM_UNSEEN
from .cli import tiled_release_parser, wrap_list
from .constants import SPLITS
from .errors import PrepareError, describe_input_error
from .flow import convert, make_main
from .output import ImageResult, write_tiles
from .reading import check_same_size, remap_label_values
from .summary import Summary

try:  # reported as a one-line error by prepare() when missing
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError
except ImportError:  # pragma: no cover - depends on the environment
    rasterio = None


DESCRIPTION = f"""\
Convert OpenEarthMap (the release without the xBD subset) into 256x256 tiles.

SRC holds one folder per region with images/<name>.tif and labels/<name>.tif,
plus train.txt and val.txt listing the file names of each split (test.txt is
ignored: its labels are not public). GeoTIFFs are read with rasterio.

Labels: value v in 1..8 becomes class index v-1, in this order:
{wrap_list(f"{i} {n}" for i, n in enumerate(OEM_CLASSES))}.
Value 0 (unknown) becomes 255 (ignore); any other value is an error.

Tiling: tiles start every --stride pixels; the last tile of each row/column is
shifted back to end at the image border, so every tile is full-size (a
1000x1000 image gives 4x4 tiles at offsets 0, 256, 512, 744). Images smaller
than a tile are padded at the bottom/right (image black, label 255). Tiles
without any labelled pixel are dropped and counted unless --keep-empty. Tiles
are named <name>_y<row>_x<col>.png (pixel offsets).

Re-running is safe: names are deterministic and files are replaced atomically.
A missing/malformed input (a listed file that is absent, an unreadable GeoTIFF,
a label of another size, an unknown label value) stops the run with
'error: <file>: <problem>' and exit code 2, unless --skip-bad (then it is
skipped and counted).

Unseen classes (zero-shot split):
{wrap_list(OEM_UNSEEN)}.
"""


@dataclass(frozen=True)
class OemJob:
    """One OpenEarthMap image with its label, and where/how to tile it."""

    split: str
    image: str
    label: str
    dst: str
    tile: int
    stride: int
    keep_empty: bool


# --------------------------------------------------------------------------- #
# Reading GeoTIFFs
# --------------------------------------------------------------------------- #


def _read_bands(path: Path, bands: Optional[Sequence[int]], min_bands: int) -> np.ndarray:
    """Read ``bands`` (1-based; all when None) of a GeoTIFF as ``(bands, H, W)``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as dataset:
                if dataset.count < min_bands:
                    raise PrepareError(path, f"expected at least {min_bands} band(s), "
                                             f"found {dataset.count}")
                return dataset.read(list(bands) if bands else None)
    except PrepareError:
        raise
    except (RasterioError, OSError) as exc:
        raise PrepareError(path, f"cannot read GeoTIFF ({describe_input_error(exc)})") from None


def read_geotiff_rgb(path: Path) -> np.ndarray:
    """First three bands of an 8-bit GeoTIFF as an ``(H, W, 3)`` uint8 array."""
    bands = _read_bands(path, (1, 2, 3), min_bands=3)
    if bands.dtype != np.uint8:
        raise PrepareError(path, f"expected 8-bit RGB bands, got data type {bands.dtype}")
    return np.ascontiguousarray(bands.transpose(1, 2, 0))


def read_geotiff_label(path: Path) -> np.ndarray:
    """First band of a label GeoTIFF, mapped to class indices (uint8, 255 = ignore)."""
    raw = _read_bands(path, (1,), min_bands=1)[0]
    return remap_label_values(raw, len(OEM_CLASSES), path)


# --------------------------------------------------------------------------- #
# Finding inputs
# --------------------------------------------------------------------------- #


def check_source(src: Path) -> None:
    """Raise :class:`PrepareError` unless ``src`` looks like the OpenEarthMap root."""
    if not src.is_dir():
        raise PrepareError(src, "not a folder (expected the OpenEarthMap root with "
                                "<region>/images/, <region>/labels/, train.txt, val.txt)")
    for split in SPLITS:
        if not (src / f"{split}.txt").is_file():
            raise PrepareError(src / f"{split}.txt", "missing split list (expected the "
                                                     "OpenEarthMap root folder)")


def index_files(src: Path, kind: str) -> Tuple[Dict[str, Path], List[PrepareError]]:
    """Map file name to path for every ``src/<region>/<kind>/*.tif``."""
    found: Dict[str, Path] = {}
    problems: List[PrepareError] = []
    for path in sorted(src.glob(f"*/{kind}/*.tif")):
        if path.name in found:
            problems.append(PrepareError(path, f"file name also used by {found[path.name]}"))
        else:
            found[path.name] = path
    return found, problems


def read_split_list(path: Path) -> List[str]:
    """File names listed in ``train.txt``/``val.txt`` (blank lines and ``#`` ignored)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PrepareError(path, f"cannot read split list ({describe_input_error(exc)})") from None
    names = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        name = Path(entry).name
        names.append(name if name.lower().endswith(".tif") else f"{name}.tif")
    return names


def find_pairs(src: Path, split: str, images: Dict[str, Path], labels: Dict[str, Path]
               ) -> Tuple[List[Tuple[Path, Path]], List[PrepareError]]:
    """Image/label paths of every file listed in ``src/<split>.txt``."""
    list_path = src / f"{split}.txt"
    names = sorted(set(read_split_list(list_path)))
    if not names:
        raise PrepareError(list_path, "lists no files")
    pairs, problems = [], []
    for name in names:
        if name not in images:
            problems.append(PrepareError(src / "*" / "images" / name,
                                         f"listed in {list_path.name} but not found"))
        elif name not in labels:
            problems.append(PrepareError(images[name], f"no label {name} in a "
                                                       f"<region>/labels/ folder"))
        else:
            pairs.append((images[name], labels[name]))
    return pairs, problems


# --------------------------------------------------------------------------- #
# Processing one image
# --------------------------------------------------------------------------- #


def process_image(job: OemJob) -> ImageResult:
    """Read one GeoTIFF pair, map labels and write the tiles."""
    image = read_geotiff_rgb(Path(job.image))
    label = read_geotiff_label(Path(job.label))
    check_same_size(image, label, Path(job.label))
    result = ImageResult(split=job.split, source=job.image)
    return write_tiles(image, label, dst=Path(job.dst), split=job.split,
                       stem=Path(job.image).stem, tile=job.tile, stride=job.stride,
                       keep_empty=job.keep_empty, result=result)


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    return tiled_release_parser("prepare_oem.py", DESCRIPTION, "OpenEarthMap root (e.g. OpenEarthMap_wo_xBD)",
                                "$AEROSEG_DATASETS/oem")


def prepare(args: argparse.Namespace) -> Summary:
    """Convert the release described by ``args``; return the summary."""
    if rasterio is None:
        raise PrepareError("rasterio", "not installed; run 'pip install rasterio'")
    check_source(args.src)
    summary = Summary("OpenEarthMap", OEM_CLASSES, args.dst)
    images, problems = index_files(args.src, "images")
    labels, label_problems = index_files(args.src, "labels")
    problems.extend(label_problems)
    jobs = []
    for split in args.splits:
        pairs, split_problems = find_pairs(args.src, split, images, labels)
        problems.extend(split_problems)
        jobs.extend(OemJob(split, str(image), str(label), str(args.dst), args.tile_size,
                           args.stride or args.tile_size, args.keep_empty)
                    for image, label in pairs)
    options = {"tile_size": args.tile_size, "stride": args.stride or args.tile_size, "keep_empty": args.keep_empty}
    return convert(args, dataset="oem", summary=summary, classes=OEM_CLASSES, jobs=jobs, problems=problems,
                   process_image=process_image, source=str(args.src.resolve()), options=options, splits=args.splits)


main = make_main(build_parser, prepare)


if __name__ == "__main__":
    sys.exit(main())
