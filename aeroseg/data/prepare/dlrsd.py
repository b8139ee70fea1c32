#!/usr/bin/env python
"""Convert DLRSD (labels) + UC Merced Land Use (images) into AerOSeg's layout.

Input::

    --images UCMerced_LandUse/Images   <class>/<name>.tif   256x256 RGB (a few are smaller/larger)
    --labels DLRSD/Labels              <class>/<name>.png   palette/grayscale PNG, values 1..17

Output (``--dst OUT``)::

    OUT/{train,val}/images/<name>.png   RGB, 256x256
    OUT/{train,val}/labels/<name>.png   uint8, 0..16, 255 = ignore
    OUT/train.txt, OUT/val.txt          the split: one <name> per line, sorted

Label values 1..17 become class indices 0..16 (``DLRSD_CLASSES`` order) and 0
becomes 255; any other value is an error. The split is a deterministic 80/20
split of the UC Merced images, stratified by scene folder and driven by
``--seed``. Each image is one 256x256 sample (no tiling); an image/label pair of
another size (some UC Merced images are e.g. 256x253) is padded at the
bottom/right (image black, label 255) or cropped there to 256x256.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ..datasets.builtin_meta import DLRSD_CLASSES, DLRSD_UNSEEN
from .cli import HelpFormatter, add_common_arguments, wrap_list
from .constants import IGNORE_INDEX, SPLITS, TILE_SIZE
from .errors import PrepareError
from .flow import convert, make_main
from .output import ImageResult, write_text_atomic, write_tile_pair
from .reading import check_same_size, fit_to_size, read_index_label, read_rgb_image, remap_label_values
from .summary import Summary
from .tiling import class_histogram

IMAGE_SUFFIXES = (".tif", ".tiff")
LABEL_SUFFIX = ".png"

DESCRIPTION = f"""\
Convert DLRSD (dense labels for UC Merced Land Use) into 256x256 PNG samples.

--images is the UC Merced 'Images' folder (<class>/<name>.tif), --labels the
DLRSD 'Labels' folder (<class>/<name>.png, palette or grayscale, values 1..17).
Every image needs a label with the same folder and name.

Labels: value v in 1..17 becomes class index v-1, in this order:
{wrap_list(f"{i} {n}" for i, n in enumerate(DLRSD_CLASSES))}.
Value 0 becomes 255 (ignore); any other value is an error.

Split: deterministic 80/20 (see --val-fraction) per scene folder, shuffled with
--seed; the result is written to OUT/train.txt and OUT/val.txt (one image name
per line), so it can be inspected and reproduced. Re-running with the same seed
gives the same split and the same files.

Size: each image is one 256x256 sample. An image and its label must have the
same size; when it is not 256x256 (a few UC Merced images are e.g. 256x253) both
are padded at the bottom/right (image black, label 255) or cropped there to
256x256. Padded/cropped images are counted in the summary.

Errors: a missing/malformed input stops the run with 'error: <file>: <problem>'
and exit code 2, unless --skip-bad (then it is skipped and counted).

Unseen classes (zero-shot split):
{wrap_list(DLRSD_UNSEEN)}.
"""


@dataclass(frozen=True)
class DlrsdJob:
    """One UC Merced image with its DLRSD label, and its split."""

    split: str
    name: str
    image: str
    label: str
    dst: str
    size: int


# --------------------------------------------------------------------------- #
# Finding inputs and splitting
# --------------------------------------------------------------------------- #


def check_folder(path: Path, what: str) -> None:
    """Raise :class:`PrepareError` unless ``path`` is a folder with class sub-folders."""
    if not path.is_dir():
        raise PrepareError(path, f"not a folder (expected the {what} folder with one "
                                 f"sub-folder per scene class)")
    if not any(child.is_dir() for child in path.iterdir()):
        raise PrepareError(path, f"no class sub-folders found (expected the {what} folder)")


def find_images(images_dir: Path) -> Tuple[Dict[str, List[Path]], List[PrepareError]]:
    """List UC Merced images per scene folder: ``{class: [paths sorted by name]}``.

    Image names must be unique across folders (they become the output names).
    """
    per_class: Dict[str, List[Path]] = {}
    seen: Dict[str, Path] = {}
    problems: List[PrepareError] = []
    for class_dir in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        paths = sorted(p for p in class_dir.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        kept = []
        for path in paths:
            if path.stem in seen:
                problems.append(PrepareError(path, f"image name also used by {seen[path.stem]}"))
                continue
            seen[path.stem] = path
            kept.append(path)
        if kept:
            per_class[class_dir.name] = kept
    if not per_class:
        raise PrepareError(images_dir, "no .tif images found in its class sub-folders")
    return per_class, problems


def split_images(per_class: Dict[str, List[Path]], val_fraction: float,
                 seed: int) -> Dict[str, List[Path]]:
    """Deterministic stratified split: ``{"train": [...], "val": [...]}``.

    Within each scene folder (in sorted order) the sorted images are shuffled by
    one ``random.Random(seed)`` and the first ``round(n * val_fraction)`` go to
    val. Both lists are returned sorted by name.
    """
    rng = random.Random(seed)
    split: Dict[str, List[Path]] = {"train": [], "val": []}
    for class_name in sorted(per_class):
        paths = list(per_class[class_name])
        rng.shuffle(paths)
        n_val = int(round(len(paths) * val_fraction))
        split["val"].extend(paths[:n_val])
        split["train"].extend(paths[n_val:])
    return {name: sorted(paths, key=lambda p: p.stem) for name, paths in split.items()}


def find_label(labels_dir: Path, image: Path) -> Path:
    """The DLRSD label of ``image``: ``labels_dir/<class>/<name>.png``."""
    label = labels_dir / image.parent.name / f"{image.stem}{LABEL_SUFFIX}"
    if not label.is_file():
        raise PrepareError(image, f"no DLRSD label {label}")
    return label


def orphan_labels(labels_dir: Path, images: Sequence[Path]) -> List[PrepareError]:
    """Label files that have no UC Merced image (reported as problems)."""
    expected = {(p.parent.name, p.stem) for p in images}
    return [PrepareError(path, "label without a matching UC Merced image")
            for path in sorted(labels_dir.glob(f"*/*{LABEL_SUFFIX}"))
            if (path.parent.name, path.stem) not in expected]


def write_split_lists(dst: Path, split: Dict[str, List[Path]]) -> None:
    """Write ``dst/train.txt`` and ``dst/val.txt`` (image names, one per line)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        write_text_atomic("".join(f"{p.stem}\n" for p in split[name]), dst / f"{name}.txt")


# --------------------------------------------------------------------------- #
# Processing one image
# --------------------------------------------------------------------------- #


def process_image(job: DlrsdJob) -> ImageResult:
    """Read one image/label pair, map labels, fit to 256x256 and write it."""
    image = read_rgb_image(Path(job.image))
    raw = read_index_label(Path(job.label))
    check_same_size(image, raw, Path(job.label))
    label = remap_label_values(raw, len(DLRSD_CLASSES), Path(job.label))
    result = ImageResult(split=job.split, source=job.image)
    height, width = label.shape
    if height < job.size or width < job.size:
        result.notes.append(f"padded to {job.size}x{job.size}")
    if height > job.size or width > job.size:
        result.notes.append(f"cropped to {job.size}x{job.size}")
    image = fit_to_size(image, job.size, job.size, 0)
    label = fit_to_size(label, job.size, job.size, IGNORE_INDEX)
    write_tile_pair(Path(job.dst), job.split, job.name, image, label)
    result.tiles.append(job.name)
    result.pixels += class_histogram(label)
    return result


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="prepare_dlrsd.py", description=DESCRIPTION,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--images", type=Path, required=True,
                        help="UC Merced 'Images' folder (<class>/<name>.tif)")
    parser.add_argument("--labels", type=Path, required=True,
                        help="DLRSD 'Labels' folder (<class>/<name>.png)")
    parser.add_argument("--dst", type=Path, required=True,
                        help="output folder, e.g. $AEROSEG_DATASETS/dlrsd")
    parser.add_argument("--val-fraction", type=fraction, default=0.2,
                        help="share of each scene folder that goes to val")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split shuffle")
    add_common_arguments(parser)
    return parser


def prepare(args: argparse.Namespace) -> Summary:
    """Convert the release described by ``args``; return the summary."""
    check_folder(args.images, "UC Merced 'Images'")
    check_folder(args.labels, "DLRSD 'Labels'")
    summary = Summary("DLRSD", DLRSD_CLASSES, args.dst)
    per_class, problems = find_images(args.images)
    split = split_images(per_class, args.val_fraction, args.seed)
    jobs = []
    for split_name in SPLITS:
        for image in split[split_name]:
            try:
                label = find_label(args.labels, image)
            except PrepareError as err:
                problems.append(err)
                continue
            jobs.append(DlrsdJob(split_name, image.stem, str(image), str(label),
                                 str(args.dst), TILE_SIZE))
    problems.extend(orphan_labels(args.labels, split["train"] + split["val"]))
    source = {"images": str(args.images.resolve()), "labels": str(args.labels.resolve())}
    return convert(args, dataset="dlrsd", summary=summary, classes=DLRSD_CLASSES, jobs=jobs, problems=problems,
                   process_image=process_image, source=source, seed=args.seed,
                   options={"val_fraction": args.val_fraction, "size": TILE_SIZE},
                   before_jobs=lambda: write_split_lists(args.dst, split))


main = make_main(build_parser, prepare)


if __name__ == "__main__":
    sys.exit(main())
