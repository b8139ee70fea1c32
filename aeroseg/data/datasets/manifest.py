"""``manifest.json``: what a prepared dataset folder holds, written last so it marks completion.

A dataset folder laid out as ``ROOT/<split>/{images,labels}/<stem>.png`` is *complete* when
``ROOT/manifest.json`` exists and agrees with itself. The prepare scripts (and the synthetic
dataset generator) write::

    {"format": "aeroseg-dataset", "version": 1, "dataset": "dlrsd", "tool": "datasets/prepare_dlrsd.py",
     "source": {...}, "seed": 0, "options": {...}, "classes": [...],
     "splits": {"train": {"count": 1680, "files": [stem, ...]}, "val": {...}},
     "checksum": sha256 of the lines "<split>/<stem>" (splits in order, stems sorted)}

A run first writes ``ROOT/.prepare_in_progress`` (and removes an older manifest), then the files,
then the manifest atomically, then removes the marker: an interrupted run leaves the marker and
no manifest, and loading the folder fails with a one-line error telling to re-run the script.
Train and val never share a stem: :func:`make_manifest` refuses such a list.
"""
import hashlib
import json
import os
from typing import Dict, List, Optional, Sequence

from ...utils.errors import DatasetError
from ...utils.io import write_text_atomic

__all__ = [
    "IN_PROGRESS_NAME",
    "MANIFEST_NAME",
    "files_checksum",
    "make_manifest",
    "mark_in_progress",
    "read_manifest",
    "split_stems",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"
IN_PROGRESS_NAME = ".prepare_in_progress"
FORMAT = "aeroseg-dataset"
VERSION = 1


def files_checksum(splits: Dict[str, Sequence[str]]) -> str:
    """sha256 (hex) of ``"<split>/<stem>\\n"`` over the splits in the given order, stems sorted."""
    digest = hashlib.sha256()
    for split, stems in splits.items():
        for stem in sorted(stems):
            digest.update(f"{split}/{stem}\n".encode("utf-8"))
    return digest.hexdigest()


def _overlap(splits: Dict[str, Sequence[str]]) -> Optional[str]:
    owner: Dict[str, str] = {}
    for split, stems in splits.items():
        for stem in stems:
            if stem in owner and owner[stem] != split:
                return f"{stem} is in both {owner[stem]} and {split}"
            owner[stem] = split
    return None


def make_manifest(dataset: str, splits: Dict[str, Sequence[str]], *, tool: str, source=None, seed=None,
                  options=None, classes: Sequence[str] = ()) -> dict:
    """The manifest of ``splits`` (``{split: [stem, ...]}``); ValueError if two splits share a stem."""
    problem = _overlap(splits)
    if problem:
        raise ValueError(f"dataset {dataset}: splits overlap ({problem})")
    return {
        "format": FORMAT, "version": VERSION, "dataset": dataset, "tool": tool, "source": source, "seed": seed,
        "options": options or {}, "classes": list(classes),
        "splits": {split: {"count": len(stems), "files": sorted(stems)} for split, stems in splits.items()},
        "checksum": files_checksum(splits),
    }


def _write_atomic(path: str, text: str) -> None:
    write_text_atomic(path, text, durable=True)


def mark_in_progress(root: str, what: str = "") -> None:
    """Start (re)writing ``root``: drop its manifest, leave a marker until :func:`write_manifest`."""
    os.makedirs(root, exist_ok=True)
    _write_atomic(os.path.join(root, IN_PROGRESS_NAME), (what or "a prepare run") + " started writing here\n")
    manifest = os.path.join(root, MANIFEST_NAME)
    if os.path.exists(manifest):
        os.remove(manifest)


def write_manifest(root: str, manifest: dict) -> str:
    """Write ``root/manifest.json`` atomically (last step of a run) and remove the marker."""
    path = os.path.join(root, MANIFEST_NAME)
    _write_atomic(path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    marker = os.path.join(root, IN_PROGRESS_NAME)
    if os.path.exists(marker):
        os.remove(marker)
    return path


def read_manifest(root: str, rerun_hint: str = "") -> Optional[dict]:
    """``root``'s manifest, checked; None when the folder has none (and no in-progress marker).

    Raises :class:`DatasetError` (one line, with ``rerun_hint``) for an interrupted run, an
    unreadable manifest, one whose file list does not match its checksum, or overlapping splits.
    """
    again = f"; re-run: {rerun_hint}" if rerun_hint else "; re-run the script that prepared it"
    if os.path.exists(os.path.join(root, IN_PROGRESS_NAME)):
        raise DatasetError(f"dataset folder {root} is incomplete (a prepare run was interrupted or failed: "
                           f"{IN_PROGRESS_NAME} is present){again}")
    path = os.path.join(root, MANIFEST_NAME)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        splits = {s: list(v["files"]) for s, v in manifest["splits"].items()}
        counts = {s: int(v["count"]) for s, v in manifest["splits"].items()}
        checksum = manifest["checksum"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path} is unreadable or malformed ({type(exc).__name__}: {exc}){again}") from None
    if files_checksum(splits) != checksum or any(len(splits[s]) != counts[s] for s in splits):
        raise DatasetError(f"{path}: its file list does not match its checksum/counts (edited or "
                           f"truncated){again}")
    problem = _overlap(splits)
    if problem:
        raise DatasetError(f"{path}: train/val overlap ({problem}){again}")
    return manifest


def split_stems(manifest: dict, split: str) -> List[str]:
    """The stems of ``split`` (empty when the manifest has no such split)."""
    return list(manifest["splits"].get(split, {}).get("files", []))
