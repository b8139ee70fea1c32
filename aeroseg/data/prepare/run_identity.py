"""Which run wrote an output folder: refusing to mix two runs, and the manifest written last."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..datasets.manifest import IN_PROGRESS_NAME, MANIFEST_NAME, make_manifest, mark_in_progress, write_manifest
from .constants import SPLITS
from .errors import PrepareError
from .output import write_text_atomic
from .summary import Summary


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
