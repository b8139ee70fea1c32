"""Every config key a run reads, checked once, before anything is built or written.

:func:`validate_config` is called by ``train_net`` (training and ``--eval-only``), ``predict`` and
``benchmark`` right after the config is merged. It checks

* each key's type and range (``SOLVER.MAX_ITER`` >= 1, ``SOLVER.BASE_LR`` finite and >= 0,
  ``INPUT.CROP.SIZE`` two positive pixel sizes, ...), for the keys the given *purpose* reads;
* combinations (an empty ``DATASETS.TEST`` with ``--eval-only``, ``SOLVER.IMS_PER_BATCH`` not
  divisible by the number of processes, ``WarmupMultiStepLR`` steps, ...);
* detectron2 keys AerOSeg does not implement: they must keep the value that means what AerOSeg
  does (``INPUT.FORMAT`` "RGB", ``TEST.AUG.ENABLED`` False, ``SOLVER.REFERENCE_WORLD_SIZE`` 0 or
  the world size, ...), so a setting is never silently ignored;
* the model's own rules (choices, architecture combinations), by building the model on the
  ``meta`` device (no memory, no weights read: well under a second), so the builders stay the one
  owner of those rules and their one-line errors come before the run writes anything.

The first problem found is raised as a one-line :class:`ConfigError` naming the key, the value
and what is expected.
"""
import logging
import math
import os
from typing import Callable, List, Optional, Sequence

from ..utils.errors import AerOSegError, ConfigError

__all__ = ["PURPOSES", "validate_config", "weightless_config"]

logger = logging.getLogger(__name__)

# train: a training run; eval: --eval-only; predict: aeroseg-predict; benchmark: tools/benchmark.py.
PURPOSES = ("train", "eval", "predict", "benchmark")
_ALL = PURPOSES
_RUNS = ("train", "eval")
_TRAINS = ("train", "benchmark")
_BUILDS = ("train", "eval", "predict", "benchmark")

# Config keys naming weight files: cleared for a weightless build (benchmark, dry build).
_WEIGHT_KEYS = (("CLIP", "PRETRAINED"), ("SAM", "CHECKPOINT"), ("SAM2", "CHECKPOINT"))

LR_SCHEDULERS = ("WarmupCosineLR", "WarmupPolyLR", "WarmupMultiStepLR", "WarmupConstantLR")
OPTIMIZERS = ("ADAMW", "SGD")


# ----------------------------------------------------------------------------- value checks
# A check returns None when the value is fine, else the text "expected ..." completes.
Check = Callable[[object], Optional[str]]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: Optional[int] = None, hi: Optional[int] = None) -> Check:
    def check(v):
        if _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi):
            return None
        if lo is not None and hi is not None:
            return f"an integer in {lo}..{hi}"
        return f"an integer >= {lo}" if lo is not None else "an integer"
    return check


def number(lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
           allow_inf: bool = False) -> Check:
    def check(v):
        ok = (_is_number(v) or (allow_inf and v == math.inf and not isinstance(v, bool))) and \
            (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or v <= hi)
        if ok:
            return None
        bound = "" if lo is None else f" {'>' if lo_open else '>='} {lo:g}"
        bound += "" if hi is None else f"{' and' if bound else ''} <= {hi:g}"
        return f"a finite number{bound}"
    return check


def boolean() -> Check:
    return lambda v: None if isinstance(v, bool) else "True or False"


def choice(*options) -> Check:
    return lambda v: None if v in options else "one of " + ", ".join(repr(o) for o in options)


def equals(value, why: str) -> Check:
    return lambda v: None if v == value else f"{value!r} ({why})"


def text(nonempty: bool = True) -> Check:
    def check(v):
        if isinstance(v, str) and (v.strip() or not nonempty):
            return None
        return "a non-empty string" if nonempty else "a string"
    return check


def sequence(item: Check, length: Optional[int] = None, min_length: int = 0, what: str = "") -> Check:
    def check(v):
        if isinstance(v, (list, tuple)) and (length is None or len(v) == length) and len(v) >= min_length \
                and all(item(x) is None for x in v):
            return None
        count = f"{length} " if length is not None else ("one or more " if min_length else "a list of ")
        return f"{count}{what or 'values'}"
    return check


def _positive_int_list(length=None, what="positive integers") -> Check:
    return sequence(integer(1), length=length, min_length=1, what=what)


def _rgb_stats(positive: bool) -> Check:
    return sequence(number(0, lo_open=positive), length=3,
                    what="positive numbers (R, G, B)" if positive else "finite numbers (R, G, B)")


# (key, check, purposes that read the key)
RULES = [
    ("OUTPUT_DIR", text(), _RUNS),
    ("SEED", integer(), _ALL),
    ("CUDNN_BENCHMARK", boolean(), _ALL),
    ("CPU_ALLOCATOR", choice("retain", "system"), _ALL),
    ("MODEL.META_ARCHITECTURE", text(), _BUILDS),
    ("MODEL.DEVICE", text(), _ALL),
    ("MODEL.WEIGHTS", text(nonempty=False), _ALL),
    ("MODEL.COMPILE", boolean(), _BUILDS),
    ("MODEL.COMPILE_BACKEND", text(), _BUILDS),
    ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", integer(0), _BUILDS),
    ("MODEL.SEM_SEG_HEAD.IGNORE_VALUE", integer(0, 255), _ALL),
    ("MODEL.CLIP.NAME", text(), _BUILDS),
    ("MODEL.CLIP.PRETRAINED", text(nonempty=False), _BUILDS),
    ("MODEL.CLIP.IMAGE_SIZE", integer(1), _BUILDS),
    ("MODEL.CLIP.PIXEL_MEAN", _rgb_stats(False), _BUILDS),
    ("MODEL.CLIP.PIXEL_STD", _rgb_stats(True), _BUILDS),
    ("MODEL.CLIP.PROMPT_TEMPLATES", sequence(lambda t: None if isinstance(t, str) and "{}" in t else "x",
                                             min_length=1, what='prompt templates, each containing "{}"'), _BUILDS),
    ("MODEL.CLIP.GUIDANCE_LAYERS", sequence(integer(0), what="block indices >= 0"), _BUILDS),
    ("MODEL.SAM.INPUT_SIZE", integer(1), _BUILDS),
    ("MODEL.SAM.TAP_LAYERS", _positive_int_list(3, "three block numbers >= 1"), _BUILDS),
    ("MODEL.SAM.FROZEN", boolean(), _BUILDS),
    ("MODEL.SAM.USE_NECK", boolean(), _BUILDS),
    ("MODEL.SAM.PIXEL_MEAN", _rgb_stats(False), _BUILDS),
    ("MODEL.SAM.PIXEL_STD", _rgb_stats(True), _BUILDS),
    ("MODEL.SAM2.INPUT_SIZE", integer(1), _BUILDS),
    ("MODEL.SAM2.FROZEN", boolean(), _BUILDS),
    ("MODEL.SAM2.PIXEL_MEAN", _rgb_stats(False), _BUILDS),
    ("MODEL.SAM2.PIXEL_STD", _rgb_stats(True), _BUILDS),
    ("MODEL.AEROSEG.VOCABULARY", sequence(text(), what="class names"), _ALL),
    ("MODEL.AEROSEG.FEATURE_DIM", integer(1), _BUILDS),
    ("MODEL.AEROSEG.CORRELATION_KERNEL", integer(1), _BUILDS),
    ("MODEL.AEROSEG.NUM_REFINEMENT_BLOCKS", integer(0), _BUILDS),
    ("MODEL.AEROSEG.SPATIAL_GUIDANCE_DIM", integer(1), _BUILDS),
    ("MODEL.AEROSEG.TEXT_GUIDANCE_DIM", integer(1), _BUILDS),
    ("MODEL.AEROSEG.SPATIAL_NUM_HEADS", integer(1), _BUILDS),
    ("MODEL.AEROSEG.WINDOW_SIZE", integer(1), _BUILDS),
    ("MODEL.AEROSEG.CLASS_NUM_HEADS", integer(1), _BUILDS),
    ("MODEL.AEROSEG.MLP_RATIO", number(0, lo_open=True), _BUILDS),
    ("MODEL.AEROSEG.CLASS_POOLING_SIZE", _positive_int_list(2, "two pool sizes >= 1"), _BUILDS),
    ("MODEL.AEROSEG.CLASS_PAD_LEN", integer(0), _BUILDS),
    ("MODEL.AEROSEG.SPATIAL_GUIDANCE_NORM", boolean(), _BUILDS),
    ("MODEL.AEROSEG.SPATIAL_RELATIVE_POSITION_BIAS", boolean(), _BUILDS),
    ("MODEL.AEROSEG.DECODER_DIMS", _positive_int_list(what="channel counts >= 1"), _BUILDS),
    ("MODEL.AEROSEG.DECODER_GUIDANCE_DIMS", _positive_int_list(what="channel counts >= 1"), _BUILDS),
    ("MODEL.AEROSEG.BACK_PROJECTION_HIDDEN_DIM", integer(1), _BUILDS),
    ("MODEL.AEROSEG.BCE_WEIGHT", number(0), _BUILDS),
    ("MODEL.AEROSEG.SEM_WEIGHT", number(0), _BUILDS),
    ("INPUT.FORMAT", equals("RGB", "AerOSeg reads images as RGB, CLIP and SAM take RGB"), _ALL),
    ("INPUT.MIN_SIZE_TRAIN", _positive_int_list(what="short-side sizes >= 1"), ("train",)),
    ("INPUT.MIN_SIZE_TRAIN_SAMPLING", choice("choice", "range"), ("train",)),
    ("INPUT.MAX_SIZE_TRAIN", integer(0), ("train",)),
    ("INPUT.MIN_SIZE_TEST", integer(0), ("train", "eval", "predict")),
    ("INPUT.MAX_SIZE_TEST", integer(0), ("train", "eval")),
    ("INPUT.RANDOM_FLIP", choice("none", "horizontal", "vertical", "both"), ("train",)),
    ("INPUT.CROP.ENABLED", boolean(), _ALL),
    ("INPUT.RANDOM_ROTATE_90", boolean(), ("train",)),
    ("INPUT.COLOR_AUG_SSD", boolean(), ("train",)),
    ("DATASETS.TRAIN", sequence(text(), what="dataset names"), _ALL),
    ("DATASETS.TEST", sequence(text(), what="dataset names"), _RUNS),
    ("DATALOADER.NUM_WORKERS", integer(0), _RUNS),
    ("DATALOADER.ASPECT_RATIO_GROUPING", equals(False, "AerOSeg's loader does not group images by aspect "
                                                      "ratio"), ("train",)),
    ("DATALOADER.SAMPLER_TRAIN", equals("TrainingSampler", "the only training sampler AerOSeg has"), ("train",)),
    ("DATALOADER.REPEAT_THRESHOLD", equals(0.0, "repeat-factor sampling is not implemented"), ("train",)),
    ("DATALOADER.SKIP_BAD_SAMPLES", boolean(), ("train",)),
    ("DATALOADER.OUT_OF_RANGE_LABELS", choice("error", "ignore"), _RUNS),
    ("SOLVER.LR_SCHEDULER_NAME", choice(*LR_SCHEDULERS), ("train",)),
    ("SOLVER.MAX_ITER", integer(1), ("train",)),
    ("SOLVER.BASE_LR", number(0), _TRAINS),
    ("SOLVER.BASE_LR_END", number(0), ("train",)),
    ("SOLVER.MOMENTUM", number(0, 1), _TRAINS),
    ("SOLVER.NESTEROV", boolean(), _TRAINS),
    ("SOLVER.WEIGHT_DECAY", number(0), _TRAINS),
    ("SOLVER.WEIGHT_DECAY_NORM", number(0), _TRAINS),
    ("SOLVER.GAMMA", number(0, lo_open=True), ("train",)),
    ("SOLVER.WARMUP_FACTOR", number(0, 1), ("train",)),
    ("SOLVER.WARMUP_ITERS", integer(0), ("train",)),
    ("SOLVER.WARMUP_METHOD", choice("linear", "constant"), ("train",)),
    ("SOLVER.CHECKPOINT_PERIOD", integer(0), ("train",)),
    ("SOLVER.IMS_PER_BATCH", integer(1), _TRAINS),
    ("SOLVER.BIAS_LR_FACTOR", equals(1.0, "AerOSeg's parameter groups give biases the lr of their part"), ("train",)),
    ("SOLVER.CLIP_GRADIENTS.ENABLED", boolean(), _TRAINS),
    ("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", choice("value", "norm", "full_model"), _TRAINS),
    ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", number(0, lo_open=True), _TRAINS),
    ("SOLVER.CLIP_GRADIENTS.NORM_TYPE", number(0, lo_open=True, allow_inf=True), _TRAINS),
    ("SOLVER.AMP.ENABLED", boolean(), _ALL),
    ("SOLVER.CLIP_MULTIPLIER", number(0), _TRAINS),
    ("SOLVER.GUIDANCE_MULTIPLIER", number(0), _TRAINS),
    ("SOLVER.OPTIMIZER", choice(*OPTIMIZERS), _TRAINS),
    ("SOLVER.POLY_LR_POWER", number(0, lo_open=True), ("train",)),
    ("TEST.EVAL_PERIOD", integer(0), ("train",)),
    ("TEST.IMS_PER_BATCH", integer(1), _RUNS),
    ("TEST.AUG.ENABLED", equals(False, "test-time augmentation is not implemented"), _RUNS),
    ("TEST.EXPECTED_RESULTS", equals([], "results are not verified against expectations"), _RUNS),
]


def _get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _fail(key: str, value, expected: str) -> ConfigError:
    return ConfigError(f"{key}={value!r}: expected {expected}")


# ----------------------------------------------------------------------------- combinations
def _check_combinations(cfg, purpose: str, world_size: int, resume: bool, here: bool = True) -> None:
    if purpose == "train" and not cfg.DATASETS.TRAIN:
        raise ConfigError("DATASETS.TRAIN is empty: name the dataset(s) to train on, e.g. "
                          "DATASETS.TRAIN \"('synthetic_aerial_train',)\"")
    if purpose == "eval" and not cfg.DATASETS.TEST:
        raise ConfigError("DATASETS.TEST is empty: --eval-only needs the dataset(s) to evaluate on, e.g. "
                          "DATASETS.TEST \"('synthetic_aerial_val',)\"")
    _check_device(cfg, purpose, here)
    _check_crop(cfg, purpose)
    if purpose == "train":
        sizes = list(cfg.INPUT.MIN_SIZE_TRAIN)
        if cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "range" and (len(sizes) != 2 or sizes[0] > sizes[1]):
            raise _fail("INPUT.MIN_SIZE_TRAIN", sizes, "[min, max] with min <= max (INPUT.MIN_SIZE_TRAIN_SAMPLING "
                        "'range')")
        if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
            steps = list(cfg.SOLVER.STEPS)
            if not all(_is_int(s) and s >= 1 for s in steps) or steps != sorted(set(steps)):
                raise _fail("SOLVER.STEPS", steps, "increasing iteration numbers >= 1 (WarmupMultiStepLR)")
        bias_wd = cfg.SOLVER.WEIGHT_DECAY_BIAS
        if bias_wd is not None and number(0)(bias_wd) is not None:
            raise _fail("SOLVER.WEIGHT_DECAY_BIAS", bias_wd, "None (= SOLVER.WEIGHT_DECAY) or a finite number >= 0")
    if purpose in _TRAINS:
        _check_world_size(cfg, purpose, world_size)
    _check_weight_files(cfg, purpose, resume)


def _check_device(cfg, purpose: str, here: bool = True) -> None:
    device = str(cfg.MODEL.DEVICE)
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise _fail("MODEL.DEVICE", cfg.MODEL.DEVICE, "'cpu', 'cuda' or 'cuda:N'")
    if kind == "cuda" and purpose in _RUNS and here:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"MODEL.DEVICE={device!r} but no CUDA device is available; set MODEL.DEVICE cpu "
                              f"(or use a machine with a GPU)")


def _check_crop(cfg, purpose: str) -> None:
    crop = cfg.INPUT.CROP
    # predict and benchmark take their window / image size from the crop when it is enabled
    if not crop.ENABLED and purpose != "benchmark":
        return
    size = list(crop.SIZE)
    if len(size) != 2 or not all(_is_number(s) and s >= 1 and float(s).is_integer() for s in size):
        raise _fail("INPUT.CROP.SIZE", size, "[height, width] in pixels, both >= 1 (INPUT.CROP.TYPE 'absolute')")
    if crop.ENABLED and crop.TYPE != "absolute":
        raise _fail("INPUT.CROP.TYPE", crop.TYPE, "'absolute' (AerOSeg crops INPUT.CROP.SIZE pixels; "
                    "detectron2's relative crop types are not implemented)")


def _check_world_size(cfg, purpose: str, world_size: int) -> None:
    batch = cfg.SOLVER.IMS_PER_BATCH
    if purpose == "train" and batch % world_size:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH={batch}: expected a multiple of the number of processes "
                          f"({world_size}); it is the global batch, split evenly over them")
    reference = cfg.SOLVER.REFERENCE_WORLD_SIZE
    if not _is_int(reference) or reference < 0:
        raise _fail("SOLVER.REFERENCE_WORLD_SIZE", reference, "an integer >= 0")
    if reference not in (0, world_size):
        raise ConfigError(
            f"SOLVER.REFERENCE_WORLD_SIZE={reference} with {world_size} process(es): AerOSeg does not rescale the "
            f"schedule for another world size (SOLVER.IMS_PER_BATCH is the global batch, so a config trains the "
            f"same on any number of processes); set it to 0, or scale IMS_PER_BATCH, BASE_LR and MAX_ITER "
            f"yourself (docs/DESIGN.md)")


def _check_weight_files(cfg, purpose: str, resume: bool) -> None:
    weights = cfg.MODEL.WEIGHTS
    if weights and purpose in ("train", "eval", "predict") and not resume and "://" not in weights:
        if not os.path.isfile(weights):
            raise ConfigError(f"MODEL.WEIGHTS: checkpoint {weights} does not exist")
    if purpose == "benchmark":  # benchmarks run random weights
        return
    encoder = cfg.MODEL.GUIDANCE.ENCODER
    node = {"SAM": "SAM", "SAM2": "SAM2"}.get(encoder)
    if node and cfg.MODEL[node].CHECKPOINT and not os.path.isfile(cfg.MODEL[node].CHECKPOINT):
        raise ConfigError(f"MODEL.{node}.CHECKPOINT: {cfg.MODEL[node].CHECKPOINT} does not exist (download it, "
                          f"see MODEL_ZOO.md, or set MODEL.{node}.CHECKPOINT \"\" for random weights)")


def _check_training_vocabulary(cfg) -> None:
    """Training needs every class through the head: at most MODEL.AEROSEG.CLASS_PAD_LEN of them."""
    from ..data.vocabulary import training_vocabulary

    names = training_vocabulary(cfg.DATASETS.TRAIN) or list(cfg.MODEL.AEROSEG.VOCABULARY)
    pad = cfg.MODEL.AEROSEG.CLASS_PAD_LEN
    if 0 < pad < len(names):
        raise ConfigError(f"MODEL.AEROSEG.CLASS_PAD_LEN={pad}: the training vocabulary has {len(names)} classes; "
                          f"expected 0 (no padding) or at least {len(names)} (inference may use longer "
                          f"vocabularies: the top {pad} classes per image by CLIP score are segmented)")


# ----------------------------------------------------------------------------- the model's own rules
def weightless_config(cfg, device: Optional[str] = None):
    """A copy of ``cfg`` with every weight source cleared (random init) and ``MODEL.DEVICE`` set."""
    cfg = cfg.clone()
    cfg.defrost()
    for node, key in _WEIGHT_KEYS:
        if node in cfg.MODEL and key in cfg.MODEL[node]:
            cfg.MODEL[node][key] = ""
    if "WEIGHTS" in cfg.MODEL:
        cfg.MODEL.WEIGHTS = ""
    if device is not None:
        cfg.MODEL.DEVICE = device
    return cfg


def _check_model_builds(cfg) -> None:
    """Build the model on the meta device: the builders raise their one-line ConfigErrors here.

    Anything else a meta build raises is left to the real build (it may be meta-specific).
    """
    import torch

    from ..modeling import build_model

    dry = weightless_config(cfg, device="cpu")
    dry.MODEL.COMPILE = False
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # e.g. open_clip's "no pretrained weights" for the cleared weights
    try:
        with torch.device("meta"):
            build_model(dry)
    except AerOSegError:
        raise
    except Exception as exc:  # noqa: BLE001 - the real build reports it
        logger.debug("meta build of the config failed (%s); left to the real build", exc)
    finally:
        logging.disable(previous)


# ----------------------------------------------------------------------------- entry point
def validate_config(cfg, purpose: str, *, world_size: int = 1, resume: bool = False,
                    build_check: bool = True, here: bool = True) -> None:
    """Raise a one-line :class:`ConfigError` for the first key of ``cfg`` that ``purpose`` cannot use.

    ``purpose``: one of :data:`PURPOSES`. ``world_size``: the number of training processes.
    ``resume``: MODEL.WEIGHTS need not exist (the run continues from OUTPUT_DIR's checkpoint).
    ``build_check``: also build the model on the meta device (its builders' rules); needs the
    config's datasets registered (the training vocabulary comes from them). ``here``: the run
    runs on this machine (False for a submitted job: MODEL.DEVICE cuda needs no local GPU).
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose={purpose!r}: expected one of {PURPOSES}")
    for key, check, purposes in RULES:
        if purpose not in purposes:
            continue
        try:
            value = _get(cfg, key)
        except KeyError:
            continue  # a key of detectron2's that this config does not have
        expected = check(value)
        if expected is not None:
            raise _fail(key, value, expected)
    _check_combinations(cfg, purpose, world_size, resume, here)
    from ..utils.names import check_unique_names

    check_unique_names(cfg.MODEL.AEROSEG.VOCABULARY, "MODEL.AEROSEG.VOCABULARY")
    if build_check and purpose in _BUILDS:
        if purpose in _RUNS:  # the training vocabulary the model is built with comes from the datasets
            from ..data.check import check_dataset_names

            check_dataset_names(cfg, train=purpose == "train")
        if purpose == "train":
            _check_training_vocabulary(cfg)
        _check_model_builds(cfg)


def check_positive_args(args, names: Sequence[str], minimum: int = 1) -> None:
    """Command-line numbers: ``--x`` must be >= ``minimum`` when given (one-line ConfigError)."""
    for name in names:
        value = getattr(args, name.replace("-", "_"), None)
        if value is not None and value < minimum:
            raise ConfigError(f"--{name} {value}: expected a number >= {minimum}")


def describe_keys(keys: List[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
