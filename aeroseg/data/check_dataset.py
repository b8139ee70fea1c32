#!/usr/bin/env python
"""Audit a prepared dataset folder before training on it.

    python tools/check_dataset.py dlrsd                      # $AEROSEG_DATASETS/dlrsd, DLRSD classes
    python tools/check_dataset.py isaid_val                  # one split of a registered dataset
    python tools/check_dataset.py /data/mycity --classes /data/mycity/classes.txt

Checks every file of ``ROOT/<split>/{images,labels}``: completeness (``manifest.json`` present and
consistent, no interrupted prepare run, every listed file present, files not in the manifest),
images and labels that cannot be read, image/label pairs of different sizes, labels that are not
single-channel, label values that are neither a class index nor 255 (ignore), samples in more
than one split, and what training refuses by the same functions: an image present with two
extensions, an image without label or a label without image, an empty split
(``pair_split_files``) and class names that differ only in case or spaces
(``aeroseg.utils.names.check_unique_names``). Prints the pixels of every class per split. Exit
code 0 when nothing is wrong, 1 when a problem was found, 2 for a bad command line.
"""
import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from aeroseg.data import DatasetCatalog, MetadataCatalog, read_class_file
from aeroseg.data.datasets import BUILTIN_DATASETS, datasets_root
from aeroseg.data.datasets.manifest import IN_PROGRESS_NAME, MANIFEST_NAME, read_manifest
from aeroseg.data.datasets.sem_seg_folder import (IMAGE_EXTENSIONS, SPLITS, duplicate_image_problem,
                                                   image_files_by_stem, pair_split_files)
from aeroseg.utils.errors import AerOSegError, DatasetError
from aeroseg.utils.names import check_unique_names
from aeroseg.utils.labels import invalid_label_mask

IGNORE = 255
Image.MAX_IMAGE_PIXELS = None  # the user's own files


class Audit:
    """Problems (make the exit code non-zero) and notes (informational) of one dataset."""

    def __init__(self, limit: int = 20):
        self.problems: List[str] = []
        self.notes: List[str] = []
        self.limit = limit

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def note(self, text: str) -> None:
        self.notes.append(text)


def _resolve(target: str, classes_file: Optional[str]):
    """(root folder, splits to check or None for all, class names or None, whether a manifest is required)."""
    classes = read_class_file(classes_file) if classes_file else None
    if os.path.isdir(target):
        return target, None, classes, False
    base, _, split = target.rpartition("_")
    if target in BUILTIN_DATASETS or (split in SPLITS and base in BUILTIN_DATASETS):
        name = target if target in BUILTIN_DATASETS else base
        return (os.path.join(datasets_root(), name), None if target == name else [split],
                classes or BUILTIN_DATASETS[name][0], True)
    if target in DatasetCatalog:
        meta = MetadataCatalog.get(target)
        split_dir = Path(os.path.expandvars(meta.get("image_root", ""))).parent
        if target.startswith("synthetic_aerial"):
            DatasetCatalog.get(target)  # generated on first use
        return str(split_dir.parent), [split_dir.name], classes or meta.get("stuff_classes"), False
    raise AerOSegError(f"{target} is neither a folder nor a registered dataset (built-in: "
                       f"{', '.join(BUILTIN_DATASETS)}, or NAME_train / NAME_val)")


def _stems(folder: str, extensions: Sequence[str]) -> Dict[str, str]:
    if not os.path.isdir(folder):
        return {}
    return {Path(n).stem: n for n in sorted(os.listdir(folder)) if n.lower().endswith(tuple(extensions))}


def _open(path: str):
    """(array or None, error text)."""
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img), ""
    except Exception as exc:  # PIL raises many kinds
        return None, f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def audit(root: str, splits: Optional[List[str]], classes: Optional[List[str]], require_manifest: bool,
          out=None) -> Audit:
    """Check ``root``; print the report to ``out`` (default: the current ``sys.stdout``); returns the :class:`Audit`."""
    out = sys.stdout if out is None else out
    report = Audit()
    if not os.path.isdir(root):
        report.problem(f"{root}: dataset folder does not exist")
        return report
    manifest = None
    try:
        manifest = read_manifest(root)
    except AerOSegError as exc:
        report.problem(str(exc))
    if manifest is None and not os.path.exists(os.path.join(root, IN_PROGRESS_NAME)):
        text = f"{root}: no {MANIFEST_NAME} (completeness unknown)"
        (report.problem if require_manifest else report.note)(
            text + ("; re-run its prepare script" if require_manifest else ""))
    if classes is None and manifest and manifest.get("classes"):
        classes = list(manifest["classes"])
        try:  # the rule training applies to class lists
            check_unique_names(classes, f"{os.path.join(root, MANIFEST_NAME)} classes", error=DatasetError)
        except DatasetError as exc:
            report.problem(str(exc))
    present = [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]
    splits = splits or (list(manifest["splits"]) if manifest else present)
    if not splits:
        report.problem(f"{root}: no split folders ({', '.join(SPLITS)})")
    num_classes = len(classes) if classes else None
    if num_classes is None:
        report.note("no class list (--classes or the manifest's): label values are not range-checked")
    owner: Dict[str, str] = {}
    pixels: Dict[str, np.ndarray] = {}
    counts: Dict[str, int] = {}
    for split in splits:
        image_dir, label_dir = os.path.join(root, split, "images"), os.path.join(root, split, "labels")
        images, labels = _stems(image_dir, IMAGE_EXTENSIONS), _stems(label_dir, (".png",))
        folders = os.path.isdir(image_dir) and os.path.isdir(label_dir)
        if not folders:
            report.problem(f"{os.path.join(root, split)}: missing images/ or labels/ folder")
        listed = set(manifest["splits"].get(split, {}).get("files", [])) if manifest else None
        if folders and listed is None:  # pairing by file stem: the rule training applies
            pairs, problems = pair_split_files(image_dir, label_dir)
            for problem in problems:
                report.problem(problem)
            images = {stem: image for stem, (image, _) in pairs.items()}
            labels = {stem: label for stem, (_, label) in pairs.items()}
        elif folders:  # a manifest names stem.png; another file of the same stem is ambiguous
            for stem, names in image_files_by_stem(image_dir).items():
                if len(names) > 1 and stem in listed:
                    report.problem(duplicate_image_problem(image_dir, stem, names))
            if not listed:
                report.problem(f"{os.path.join(root, MANIFEST_NAME)} lists no samples for split {split}")
        if listed is not None:
            for stem in sorted(listed - set(images))[:report.limit]:
                report.problem(f"{os.path.join(image_dir, stem + '.png')}: listed in {MANIFEST_NAME} but missing")
            for stem in sorted(listed - set(labels))[:report.limit]:
                report.problem(f"{os.path.join(label_dir, stem + '.png')}: listed in {MANIFEST_NAME} but missing")
            extra = sorted(set(images) - listed)
            if extra:
                report.note(f"{image_dir}: {len(extra)} file(s) not in {MANIFEST_NAME} (not used), e.g. {extra[0]}")
        stems = sorted(listed) if listed is not None else sorted(set(images) | set(labels))
        hist = np.zeros(256 if num_classes is None or num_classes < 256 else num_classes + 1, np.int64)
        bad_values: Dict[int, int] = defaultdict(int)
        for stem in stems:
            if stem in owner and owner[stem] != split:
                report.problem(f"{stem}: in both {owner[stem]} and {split} (train/val overlap)")
            owner[stem] = split
            if stem not in images or stem not in labels:  # (reported by pair_split_files or above)
                continue
            image, why = _open(os.path.join(image_dir, images[stem]))
            if image is None:
                report.problem(f"{os.path.join(image_dir, images[stem])}: unreadable image ({why})")
            label, why = _open(os.path.join(label_dir, labels[stem]))
            label_path = os.path.join(label_dir, labels[stem])
            if label is None:
                report.problem(f"{label_path}: unreadable label ({why})")
                continue
            if label.ndim != 2:
                report.problem(f"{label_path}: label is not single-channel (shape {label.shape})")
                continue
            if image is not None and image.shape[:2] != label.shape:
                report.problem(f"{label_path}: size {label.shape[1]}x{label.shape[0]} differs from its image "
                               f"{image.shape[1]}x{image.shape[0]}")
            values = np.bincount(label.ravel().astype(np.int64), minlength=hist.size)
            hist += values[:hist.size]
            if num_classes is not None:
                present = np.flatnonzero(values)
                bad = present[invalid_label_mask(present, num_classes, IGNORE)].tolist()
                for v in bad:
                    bad_values[int(v)] += int(values[v])
                if bad:
                    report.problem(f"{label_path}: label value(s) {', '.join(map(str, bad[:8]))} are not class "
                                   f"indices (0..{num_classes - 1}) nor {IGNORE}")
        pixels[split], counts[split] = hist, len(stems)
    _print_report(root, splits, classes, pixels, counts, report, out)
    return report


def _print_report(root, splits, classes, pixels, counts, report: Audit, out) -> None:
    print(f"dataset {root}", file=out)
    print("  " + "  ".join(f"{s}: {counts.get(s, 0):,} samples" for s in splits), file=out)
    if pixels:
        print(f"  {'idx':>4} {'class':<22}" + "".join(f"{s:>14}" for s in splits), file=out)
        size = max(len(h) for h in pixels.values())
        rows = range(len(classes)) if classes else [i for i in range(size) if i != IGNORE and
                                                  any(pixels[s][i] for s in splits if s in pixels)]
        for i in list(rows) + [IGNORE]:
            name = "(ignore)" if i == IGNORE else (classes[i] if classes else "?")
            print(f"  {i:>4} {name:<22}" + "".join(f"{int(pixels[s][i]) if s in pixels else 0:>14,}"
                                                  for s in splits), file=out)
    for note in report.notes:
        print(f"  note: {note}", file=out)
    shown = report.problems[:report.limit]
    for problem in shown:
        print(f"  problem: {problem}", file=out)
    if len(report.problems) > len(shown):
        print(f"  ... and {len(report.problems) - len(shown)} more problem(s)", file=out)
    print(f"{len(report.problems)} problem(s) found" if report.problems else "OK: no problem found", file=out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="NAME_OR_FOLDER",
                        help="a dataset folder, a built-in name (isaid, dlrsd, oem), or a registered NAME_<split>")
    parser.add_argument("--classes", default=None, help="class-list file (one name per line) for a plain folder")
    args = parser.parse_args(argv)
    try:
        root, splits, classes, require_manifest = _resolve(args.target, args.classes)
    except AerOSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = audit(root, splits, classes, require_manifest)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
