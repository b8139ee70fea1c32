"""Every key a run reads is checked before anything is built or written (aeroseg/config/validation.py)."""
import pytest

from aeroseg.config.loading import load_config
from aeroseg.config.validation import RULES, validate_config
from aeroseg.utils.errors import ConfigError
from conftest import REPO, TINY_CONFIG
from conftest import error_line as _error
from conftest import run_train_net as _run

pytestmark = pytest.mark.usefixtures("datasets_env")


def _cfg(*opts):
    return load_config(str(TINY_CONFIG), list(opts))


# (overrides, purpose, text the one-line error must contain)
BAD = [
    (("SOLVER.MAX_ITER", "0"), "train", "SOLVER.MAX_ITER=0: expected an integer >= 1"),
    (("SOLVER.MAX_ITER", "-1"), "train", "SOLVER.MAX_ITER=-1"),
    (("SOLVER.IMS_PER_BATCH", "0"), "train", "SOLVER.IMS_PER_BATCH=0"),
    (("SOLVER.IMS_PER_BATCH", "0"), "benchmark", "SOLVER.IMS_PER_BATCH=0"),
    (("SOLVER.BASE_LR", "-0.001"), "train", "SOLVER.BASE_LR=-0.001: expected a finite number >= 0"),
    (("SOLVER.BASE_LR", "1e999"), "train", "SOLVER.BASE_LR=inf"),
    (("SOLVER.WEIGHT_DECAY", "-1.0"), "train", "SOLVER.WEIGHT_DECAY"),
    (("SOLVER.MOMENTUM", "1.5"), "train", "SOLVER.MOMENTUM"),
    (("SOLVER.WARMUP_ITERS", "-5"), "train", "SOLVER.WARMUP_ITERS"),
    (("SOLVER.CHECKPOINT_PERIOD", "-1"), "train", "SOLVER.CHECKPOINT_PERIOD"),
    (("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0.0"), "train", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE"),
    (("SOLVER.OPTIMIZER", "'LAMB'"), "train", "SOLVER.OPTIMIZER='LAMB'"),
    (("SOLVER.LR_SCHEDULER_NAME", "'WarmupStepWithFixedGammaLR'"), "train", "SOLVER.LR_SCHEDULER_NAME"),
    (("SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR", "SOLVER.STEPS", "(30, 10)"), "train", "SOLVER.STEPS"),
    (("SOLVER.WEIGHT_DECAY_BIAS", "-1.0"), "train", "SOLVER.WEIGHT_DECAY_BIAS"),
    (("SOLVER.BIAS_LR_FACTOR", "2.0"), "train", "SOLVER.BIAS_LR_FACTOR"),
    (("SOLVER.REFERENCE_WORLD_SIZE", "8"), "train", "SOLVER.REFERENCE_WORLD_SIZE=8 with 1 process"),
    (("INPUT.CROP.SIZE", "[0, 0]"), "train", "INPUT.CROP.SIZE=[0, 0]"),
    (("INPUT.CROP.SIZE", "[0.9, 0.9]"), "train", "INPUT.CROP.SIZE=[0.9, 0.9]"),
    (("INPUT.CROP.SIZE", "[64]"), "benchmark", "INPUT.CROP.SIZE=[64]"),
    (("INPUT.CROP.TYPE", "relative_range"), "train", "INPUT.CROP.TYPE='relative_range'"),
    (("INPUT.FORMAT", "BGR"), "eval", "INPUT.FORMAT='BGR': expected 'RGB'"),
    (("INPUT.MIN_SIZE_TRAIN", "(0,)"), "train", "INPUT.MIN_SIZE_TRAIN"),
    (("INPUT.MIN_SIZE_TRAIN", "(64, 32)", "INPUT.MIN_SIZE_TRAIN_SAMPLING", "range"), "train", "INPUT.MIN_SIZE_TRAIN"),
    (("INPUT.MIN_SIZE_TEST", "-1"), "eval", "INPUT.MIN_SIZE_TEST=-1"),
    (("INPUT.RANDOM_FLIP", "diagonal"), "train", "INPUT.RANDOM_FLIP='diagonal'"),
    (("DATALOADER.NUM_WORKERS", "-1"), "train", "DATALOADER.NUM_WORKERS=-1: expected an integer >= 0"),
    (("DATALOADER.NUM_WORKERS", "-1"), "eval", "DATALOADER.NUM_WORKERS=-1"),
    (("DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler"), "train", "DATALOADER.SAMPLER_TRAIN"),
    (("DATALOADER.ASPECT_RATIO_GROUPING", "True"), "train", "DATALOADER.ASPECT_RATIO_GROUPING"),
    (("DATALOADER.OUT_OF_RANGE_LABELS", "clip"), "eval", "DATALOADER.OUT_OF_RANGE_LABELS='clip'"),
    (("DATASETS.TEST", "()"), "eval", "DATASETS.TEST is empty: --eval-only needs"),
    (("DATASETS.TRAIN", "()"), "train", "DATASETS.TRAIN is empty"),
    (("TEST.IMS_PER_BATCH", "0"), "eval", "TEST.IMS_PER_BATCH=0"),
    (("TEST.EVAL_PERIOD", "-1"), "train", "TEST.EVAL_PERIOD=-1"),
    (("TEST.AUG.ENABLED", "True"), "eval", "TEST.AUG.ENABLED=True"),
    (("MODEL.DEVICE", "gpu"), "predict", "MODEL.DEVICE='gpu'"),
    (("MODEL.WEIGHTS", "/nonexistent/model.pth"), "predict", "checkpoint /nonexistent/model.pth does not exist"),
    (("MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "300"), "train", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE=300"),
    (("MODEL.AEROSEG.FEATURE_DIM", "0"), "predict", "MODEL.AEROSEG.FEATURE_DIM=0"),
    (("MODEL.AEROSEG.MLP_RATIO", "-2.0"), "benchmark", "MODEL.AEROSEG.MLP_RATIO"),
    (("MODEL.AEROSEG.BCE_WEIGHT", "-1.0"), "train", "MODEL.AEROSEG.BCE_WEIGHT"),
    (("MODEL.CLIP.PROMPT_TEMPLATES", "['an aerial image']"), "predict", "MODEL.CLIP.PROMPT_TEMPLATES"),
    (("MODEL.CLIP.PIXEL_STD", "[1.0, 0.0, 1.0]"), "predict", "MODEL.CLIP.PIXEL_STD"),
    (("MODEL.SAM.TAP_LAYERS", "[1, 2]"), "predict", "MODEL.SAM.TAP_LAYERS"),
    (("MODEL.SAM.CHECKPOINT", "/nonexistent/sam.pth"), "eval", "MODEL.SAM.CHECKPOINT: /nonexistent/sam.pth"),
    (("CPU_ALLOCATOR", "tcmalloc"), "benchmark", "CPU_ALLOCATOR='tcmalloc'"),
    (("OUTPUT_DIR", "''"), "train", "OUTPUT_DIR=''"),
    # the model's own rules, raised by its builders on the meta device before anything is built
    (("MODEL.SAM.VARIANT", "vit_q"), "train", "MODEL.SAM.VARIANT='vit_q'"),
    (("MODEL.AEROSEG.DECODER_GUIDANCE_TAPS", "[0, 5]"), "predict", "MODEL.AEROSEG.DECODER_GUIDANCE_TAPS"),
    (("MODEL.CLIP.ROTATIONS", "[0, 45]"), "benchmark", "MODEL.CLIP.ROTATIONS"),
    (("MODEL.META_ARCHITECTURE", "Nope"), "eval", "MODEL.META_ARCHITECTURE='Nope'"),
    (("MODEL.AEROSEG.BACK_PROJECTION_TARGET", "LIDAR"), "train", "MODEL.AEROSEG.BACK_PROJECTION_TARGET"),
]


@pytest.mark.parametrize("opts, purpose, expected", BAD, ids=[f"{p}:{' '.join(o)}" for o, p, _ in BAD])
def test_bad_values_are_one_line_errors_naming_key_and_value(opts, purpose, expected):
    cfg = _cfg(*opts)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, purpose)
    message = str(info.value)
    assert expected in message and "\n" not in message, message


def test_combinations_with_the_world_size():
    cfg = _cfg("SOLVER.IMS_PER_BATCH", "3")
    with pytest.raises(ConfigError, match="SOLVER.IMS_PER_BATCH=3: expected a multiple of the number of processes"):
        validate_config(cfg, "train", world_size=2)
    validate_config(_cfg("SOLVER.IMS_PER_BATCH", "4"), "train", world_size=2)
    # REFERENCE_WORLD_SIZE equal to the world size is detectron2's no-op: accepted
    validate_config(_cfg("SOLVER.REFERENCE_WORLD_SIZE", "2"), "train", world_size=2)
    with pytest.raises(ConfigError, match="REFERENCE_WORLD_SIZE=2 with 1 process"):
        validate_config(_cfg("SOLVER.REFERENCE_WORLD_SIZE", "2"), "train", world_size=1)


def test_good_configs_pass_for_every_purpose():
    for purpose in ("train", "eval", "predict", "benchmark"):
        validate_config(_cfg(), purpose)
    # what a purpose does not read is not checked: predict ignores the solver
    validate_config(_cfg("SOLVER.MAX_ITER", "0", "DATASETS.TEST", "()"), "predict")
    # --resume: MODEL.WEIGHTS is superseded by the checkpoint, so a moved weights file is fine
    validate_config(_cfg("MODEL.WEIGHTS", "/moved/away.pth"), "train", resume=True)
    # 0 keeps the native test size; gradient norms may be infinite (max norm)
    validate_config(_cfg("INPUT.MIN_SIZE_TEST", "0", "SOLVER.CLIP_GRADIENTS.NORM_TYPE", "1e999"), "eval")


@pytest.mark.parametrize("config", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")
                                          if "Base-" not in p.name))
def test_every_shipped_config_is_valid(config):
    if "sam2" in config:
        pytest.importorskip("sam2")
    # weights are downloaded by users (MODEL_ZOO.md): not part of what is checked here
    cfg = load_config(str(REPO / config), ["MODEL.SAM.CHECKPOINT", "", "MODEL.SAM2.CHECKPOINT", "",
                                           "MODEL.DEVICE", "cpu"])
    validate_config(cfg, "train")
    validate_config(cfg, "benchmark")


def test_every_rule_names_a_key_of_the_config():
    cfg = _cfg()
    for key, _, _ in RULES:
        node = cfg
        for part in key.split("."):
            node = node[part]  # KeyError: a rule for a key that does not exist checks nothing


def test_a_refused_run_creates_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    for opts in (("SOLVER.MAX_ITER", "0"), ("INPUT.CROP.SIZE", "[0, 0]"), ("SOLVER.BASE_LR", "-1.0"),
                 ("MODEL.SAM.VARIANT", "vit_q")):
        assert _run(out, *opts) == 2
        assert opts[0] in _error(capsys)
        assert not out.exists()
    assert _run(out, "DATASETS.TEST", "()", flags=("--eval-only",)) == 2
    assert "DATASETS.TEST is empty" in _error(capsys) and not out.exists()
    assert _run(out, "SOLVER.MAX_ITER", flags=()) == 2  # an odd override list
    assert "KEY VALUE pairs" in _error(capsys) and not out.exists()


def test_command_line_numbers_are_checked(tmp_path, capsys):
    for flags, text in ((("--num-gpus", "0"), "--num-gpus 0"), (("--num-machines", "0"), "--num-machines 0"),
                        (("--resume", "--overwrite"), "--overwrite"), (("--allow-config-changes",), "--resume")):
        assert _run(tmp_path / "x", flags=flags) == 2
        assert text in _error(capsys)
    assert not (tmp_path / "x").exists()


def test_training_vocabulary_longer_than_the_class_padding_is_refused_before_the_run():
    cfg = _cfg("MODEL.AEROSEG.CLASS_PAD_LEN", "3")  # the synthetic training set has 4 seen classes
    with pytest.raises(ConfigError, match="CLASS_PAD_LEN=3: the training vocabulary has 4 classes"):
        validate_config(cfg, "train")
    validate_config(cfg, "predict")  # inference keeps the top 3 classes per image
