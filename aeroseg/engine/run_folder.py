"""An ``OUTPUT_DIR`` belongs to one run: its ``config.yaml`` says which, and no other run mixes in.

A run writes checkpoints (``model_*.pth``, ``last_checkpoint``), evaluation results
(``inference/<dataset>/``), ``metrics.json``, tensorboard events, ``log.txt`` and ``config.yaml``,
the record of the config that produced them. :func:`claim_run_folder` is called (by the main
process, holding the folder's lock) before anything in the folder is written, and decides:

* an unused folder (no checkpoints, no results): the run starts there;
* ``--overwrite``: the outputs of the earlier run are deleted (only the files a run writes,
  listed above) and the run starts in a clean folder;
* a training run without ``--resume`` into a used folder: refused in one line (``--resume``,
  another ``OUTPUT_DIR`` or ``--overwrite``), so an old run's checkpoints can never be revived
  under a new config;
* ``--resume``: the config is compared with the recorded one. Keys that change the trained
  weights (everything but :data:`HARMLESS_KEYS`) must be equal: a difference is refused in one
  line naming the keys. A difference in harmless keys (evaluation, periods, workers, device) is
  refused too unless ``--allow-config-changes``; the record is then updated;
* ``--eval-only`` into a used folder: only that run's own weights (``--resume`` or a
  ``MODEL.WEIGHTS`` inside the folder, or for a folder of evaluations the same ``MODEL.WEIGHTS``)
  with the same model keys may be evaluated there; the record is left as it is.

``SEED < 0`` draws a seed; it is written into the record, and ``--resume`` reuses it, so a resumed
run with a drawn seed continues exactly (:func:`resolve_seed`).
"""
import fnmatch
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import List, Optional

from ..utils.errors import OutputDirError, one_line

__all__ = ["HARMLESS_KEYS", "RECORD_NAME", "RunClaim", "claim_run_folder", "config_differences",
           "run_outputs", "resolve_seed"]

logger = logging.getLogger("aeroseg")

RECORD_NAME = "config.yaml"
# Patterns (fnmatch, of top-level names) of what a run writes into OUTPUT_DIR.
RUN_OUTPUT_PATTERNS = ("model_*.pth", "last_checkpoint", "inference", "metrics.json", "events.out.tfevents.*",
                       "log.txt", "log.txt.rank*", RECORD_NAME, ".model_*.pth.tmp.*")
# Outputs that make a folder "used" by a run: checkpoints and evaluation results.
_USED_PATTERNS = ("model_*.pth", "last_checkpoint", "inference")

# Keys (or prefixes ending in ".") whose value does not change the trained weights.
HARMLESS_KEYS = (
    "TEST.", "DATASETS.TEST", "SOLVER.CHECKPOINT_PERIOD", "DATALOADER.NUM_WORKERS", "CPU_ALLOCATOR",
    "MODEL.COMPILE", "MODEL.COMPILE_BACKEND", "CUDNN_BENCHMARK", "VIS_PERIOD", "MODEL.DEVICE",
    "INPUT.MIN_SIZE_TEST", "INPUT.MAX_SIZE_TEST", "MODEL.WEIGHTS",
)
# Keys that do not define the model being evaluated (--eval-only compares only the others under MODEL.).
_EVAL_IGNORED = ("MODEL.WEIGHTS", "MODEL.DEVICE", "MODEL.COMPILE", "MODEL.COMPILE_BACKEND")


@dataclass
class RunClaim:
    """What :func:`claim_run_folder` decided."""

    recorded: Optional[dict] = None  # the folder's recorded config (flattened), if it holds a run
    write_record: bool = True  # write config.yaml (False: --eval-only in a training run's folder)
    removed: List[str] = field(default_factory=list)  # outputs deleted by --overwrite
    accepted_changes: List[str] = field(default_factory=list)  # harmless keys accepted by --allow-config-changes


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def run_outputs(output_dir: str, used_only: bool = False) -> List[str]:
    """Names in ``output_dir`` that a run wrote (``used_only``: checkpoints and results only)."""
    if not os.path.isdir(output_dir):
        return []
    patterns = _USED_PATTERNS if used_only else RUN_OUTPUT_PATTERNS
    names = []
    for name in sorted(os.listdir(output_dir)):
        if not _matches(name, patterns):
            continue
        path = os.path.join(output_dir, name)
        if name == "inference" and (not os.path.isdir(path) or not any(files for _, _, files in os.walk(path))):
            continue  # an empty inference/ holds no results
        names.append(name)
    return names


def flatten(node, prefix: str = "") -> dict:
    """{"A.B": value} for every leaf of a (nested) config or dict."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _is_harmless(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in HARMLESS_KEYS)


def _normalise(value):
    return [_normalise(v) for v in value] if isinstance(value, (list, tuple)) else value


def config_differences(recorded: dict, current: dict) -> List[str]:
    """Keys of both whose values differ. A key only one side has (a key added by a newer version, or
    detectron2's keys when it is installed on one side only) cannot be compared and is skipped; a
    SEED < 0 now means "the recorded seed", so it differs from none; OUTPUT_DIR is the folder itself
    (which may have been moved)."""
    diffs = []
    for key in sorted(set(recorded) & set(current)):
        if key == "OUTPUT_DIR":  # this folder, under whatever path it is reached now
            continue
        if key == "SEED" and isinstance(current[key], int) and current[key] < 0:
            continue
        if _normalise(recorded[key]) != _normalise(current[key]):
            diffs.append(key)
    return diffs


def _show(keys: List[str], recorded: dict, current: dict, limit: int = 5) -> str:
    parts = [f"{k} {recorded.get(k)!r} -> {current.get(k)!r}" for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return one_line("; ".join(parts), 300) + more


def read_record(output_dir: str) -> Optional[dict]:
    """The flattened config recorded in ``output_dir/config.yaml`` (None if absent)."""
    import yaml

    path = os.path.join(output_dir, RECORD_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise OutputDirError(f"{path} (the record of the run in this folder) cannot be read ({one_line(exc, 150)}): "
                             f"choose another OUTPUT_DIR, or pass --overwrite to start again there") from None
    if not isinstance(data, dict):
        raise OutputDirError(f"{path} (the record of the run in this folder) is not a config: choose another "
                             f"OUTPUT_DIR, or pass --overwrite to start again there")
    return flatten(data)


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def clear_run_outputs(output_dir: str) -> List[str]:
    """Delete what a run wrote into ``output_dir`` (nothing else); returns the names removed."""
    removed = run_outputs(output_dir)
    for name in removed:
        path = os.path.join(output_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    return removed


def claim_run_folder(cfg, *, resume: bool = False, eval_only: bool = False, overwrite: bool = False,
                     allow_changes: bool = False) -> RunClaim:
    """Check that this run may write into ``cfg.OUTPUT_DIR`` (see the module docstring).

    Raises a one-line :class:`OutputDirError` when it may not; nothing in the folder has been
    written or changed then. With ``overwrite`` the earlier run's outputs are deleted first.
    """
    output_dir = cfg.OUTPUT_DIR
    used = run_outputs(output_dir, used_only=True)
    if overwrite:
        return RunClaim(removed=clear_run_outputs(output_dir))
    if not used:  # a fresh start; with --resume, the recorded seed of a run stopped before its first checkpoint
        try:
            return RunClaim(recorded=read_record(output_dir) if resume else None)
        except OutputDirError:
            return RunClaim()
    recorded = read_record(output_dir)
    shown = ", ".join(used[:3])
    if not resume and not eval_only:
        raise OutputDirError(
            f"OUTPUT_DIR {output_dir} holds another run ({shown}): continue it with --resume, choose another "
            f"OUTPUT_DIR, or pass --overwrite to delete its outputs and start again")
    if recorded is None:
        raise OutputDirError(
            f"OUTPUT_DIR {output_dir} holds a run ({shown}) without its {RECORD_NAME}, so nothing shows which "
            f"config it ran: choose another OUTPUT_DIR, or pass --overwrite to delete its outputs")
    current = flatten(cfg)
    if eval_only:
        return _claim_for_evaluation(cfg, recorded, current, resume, used)
    diffs = config_differences(recorded, current)
    changing = [k for k in diffs if not _is_harmless(k)]
    if changing:
        raise OutputDirError(
            f"--resume: the config differs from the run in {output_dir} in keys that change the result "
            f"({_show(changing, recorded, current)}): resume with its config ({os.path.join(output_dir, RECORD_NAME)}),"
            f" or start a new run in another OUTPUT_DIR")
    if diffs and not allow_changes:
        raise OutputDirError(
            f"--resume: the config differs from the run in {output_dir} ({_show(diffs, recorded, current)}); these "
            f"keys do not change the trained weights: pass --allow-config-changes to accept them, or resume with "
            f"its config")
    return RunClaim(recorded=recorded, accepted_changes=diffs)


def _claim_for_evaluation(cfg, recorded: dict, current: dict, resume: bool, used: List[str]) -> RunClaim:
    output_dir = cfg.OUTPUT_DIR
    trained_here = any(_matches(n, ("model_*.pth", "last_checkpoint")) for n in used)
    weights = cfg.MODEL.WEIGHTS
    if trained_here:
        own = resume or (weights and os.path.isfile(weights) and _inside(weights, output_dir))
        if not own:
            raise OutputDirError(
                f"--eval-only: OUTPUT_DIR {output_dir} holds a training run, and MODEL.WEIGHTS "
                f"{weights or '(empty)'} is not one of its checkpoints, so its results would stand for that run: "
                f"evaluate into another OUTPUT_DIR (or pass --overwrite to delete that run)")
    model_keys = [k for k in config_differences(recorded, current)
                  if k.startswith("MODEL.") and k not in _EVAL_IGNORED]
    if not trained_here and recorded.get("MODEL.WEIGHTS") != weights:
        model_keys.insert(0, "MODEL.WEIGHTS")
    if model_keys:
        raise OutputDirError(
            f"--eval-only: the model differs from the one whose results are in {output_dir} "
            f"({_show(model_keys, recorded, current)}): evaluate into another OUTPUT_DIR, or pass --overwrite "
            f"to delete those results")
    return RunClaim(recorded=recorded, write_record=not trained_here)


def resolve_seed(cfg, claim: Optional[RunClaim]) -> int:
    """The run's seed: ``cfg.SEED`` if >= 0, else the recorded one of the run being resumed, else drawn."""
    if cfg.SEED >= 0:
        return int(cfg.SEED)
    recorded = claim.recorded.get("SEED") if claim is not None and claim.recorded else None
    if isinstance(recorded, int) and recorded >= 0:
        return recorded
    from .defaults import draw_seed

    return draw_seed()
