import re
import subprocess
import sys

import pytest
import yaml

from aeroseg.config import REMOTE_SENSING_TEMPLATES, add_aeroseg_config, get_cfg
from aeroseg.config import aeroseg_config as aeroseg_config_module
from aeroseg.compat.config_defaults import _C as STANDARD_KEYS
from conftest import BASE_CONFIG, REPO, TINY_CONFIG, tiny_cfg
from conftest import config_leaves as _leaves



def test_standard_detectron2_keys_present():
    cfg = get_cfg()
    for key in ["MODEL.META_ARCHITECTURE", "MODEL.WEIGHTS", "MODEL.DEVICE", "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
                "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "INPUT.MIN_SIZE_TRAIN", "INPUT.CROP.SIZE", "DATASETS.TRAIN",
                "DATASETS.TEST", "DATALOADER.NUM_WORKERS", "SOLVER.BASE_LR", "SOLVER.MAX_ITER",
                "SOLVER.IMS_PER_BATCH", "SOLVER.CHECKPOINT_PERIOD", "SOLVER.AMP.ENABLED",
                "SOLVER.CLIP_GRADIENTS.ENABLED", "TEST.EVAL_PERIOD", "OUTPUT_DIR", "SEED"]:
        node = cfg
        for part in key.split("."):
            assert part in node, f"missing {key}"
            node = node[part]


def test_add_aeroseg_config_only_adds_keys():
    # Mask2Former / CAT-Seg convention: add_*_config adds the project's keys and leaves
    # detectron2's values alone; the project's values of detectron2's keys are in its base YAML.
    cfg = STANDARD_KEYS.clone()
    before = _leaves(cfg)
    add_aeroseg_config(cfg)
    after = _leaves(cfg)
    changed = {k: (v, after[k]) for k, v in before.items() if after[k] != v}
    assert not changed, f"add_aeroseg_config changed detectron2 defaults: {changed}"
    assert len(after) - len(before) > 40 and "MODEL.AEROSEG.FEATURE_DIM" in after
    # without a config file the model is detectron2's default one, as in detectron2
    assert get_cfg().MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and get_cfg().INPUT.FORMAT == "BGR"


def test_base_yaml_sets_aerosegs_values_of_detectron2_keys():
    cfg = get_cfg()
    cfg.merge_from_file(str(BASE_CONFIG))
    assert cfg.MODEL.META_ARCHITECTURE == "AerOSeg" and cfg.INPUT.FORMAT == "RGB"
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 0 and cfg.MODEL.PIXEL_STD == [58.395, 57.120, 57.375]
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.WARMUP_ITERS) == (2e-4, 4, 0)
    assert (cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE, cfg.INPUT.MAX_SIZE_TRAIN) == ("absolute", [256, 256], 1024)


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")
                                        if p.name != "Base-AerOSeg.yaml"))
def test_every_config_inherits_base_aeroseg(path):
    chain, current = [], REPO / path
    while True:
        chain.append(current.relative_to(REPO).as_posix())
        base = (yaml.safe_load(current.read_text()) or {}).get("_BASE_")
        if not base:
            break
        current = (current.parent / base).resolve()
    assert chain[-1] == "configs/Base-AerOSeg.yaml", f"{path} does not inherit Base-AerOSeg.yaml: {chain}"


def test_import_aeroseg_registers_and_exports():
    # A fresh interpreter: `import aeroseg` alone must register the model and the datasets.
    # The registries are looked up in sys.modules so that the check itself imports nothing.
    code = ("import sys\n"
            "import aeroseg\n"
            "from aeroseg import add_aeroseg_config\n"
            "registry = sys.modules['aeroseg.modeling.build'].META_ARCH_REGISTRY\n"
            "assert registry.get('AerOSeg') is aeroseg.AerOSeg\n"
            "names = set(sys.modules['aeroseg.compat'].DatasetCatalog.list())\n"
            "assert {'isaid_train', 'isaid_val', 'synthetic_aerial_train'} <= names, names\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_paper_defaults():
    cfg = get_cfg()
    cfg.merge_from_file(str(BASE_CONFIG))
    assert cfg.MODEL.CLIP.NAME == "ViT-B-16" and cfg.MODEL.CLIP.IMAGE_SIZE == 384
    assert cfg.MODEL.CLIP.ROTATIONS == [0, 90, 180, 270]
    assert cfg.MODEL.CLIP.PROMPT_TEMPLATES == REMOTE_SENSING_TEMPLATES
    assert cfg.MODEL.CLIP.FINETUNE == "attention_qv"
    assert cfg.MODEL.SAM.VARIANT == "vit_l" and cfg.MODEL.SAM.TAP_LAYERS == [8, 16, 24] and cfg.MODEL.SAM.FROZEN
    assert cfg.MODEL.AEROSEG.NUM_REFINEMENT_BLOCKS == 2
    assert cfg.MODEL.AEROSEG.BACK_PROJECTION_TARGET == "SAM"
    assert cfg.SOLVER.BASE_LR * cfg.SOLVER.CLIP_MULTIPLIER == pytest.approx(2e-6)


def test_every_aeroseg_key_has_a_one_line_comment():
    source = open(aeroseg_config_module.__file__).read().splitlines()
    assignments = [line for line in source if re.match(r"\s+cfg\.[A-Z_.]+ = ", line)]
    assert len(assignments) > 40
    missing = [line.strip() for line in assignments
               if "#" not in line and not line.strip().endswith("CN()")
               and "#" not in source[source.index(line) - 1]]
    assert not missing, f"keys without a comment: {missing}"


def test_base_inheritance_and_opts():
    cfg = tiny_cfg("MODEL.AEROSEG.FEATURE_DIM", "24", "SOLVER.MAX_ITER", "7")
    assert cfg.MODEL.CLIP.IMAGE_SIZE == 64  # from tiny_cpu.yaml
    assert cfg.MODEL.CLIP.PROMPT_TEMPLATES == REMOTE_SENSING_TEMPLATES  # inherited from Base
    assert cfg.SOLVER.CLIP_MULTIPLIER == 0.01  # inherited from Base
    assert cfg.MODEL.AEROSEG.FEATURE_DIM == 24 and cfg.SOLVER.MAX_ITER == 7  # command-line opts
    assert cfg.MODEL.CLIP.ARCH_OVERRIDES.vision_cfg.layers == 2


def test_unknown_key_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{TINY_CONFIG}"\nMODEL:\n  AEROSEG:\n    FEATUR_DIM: 3\n')
    cfg = get_cfg()
    with pytest.raises(KeyError, match="FEATUR_DIM"):
        cfg.merge_from_file(str(bad))


def test_base_config_file_parses():
    cfg = get_cfg()
    cfg.merge_from_file(str(BASE_CONFIG))
    assert cfg.SOLVER.IMS_PER_BATCH == 4 and cfg.SOLVER.OPTIMIZER == "ADAMW"


def test_a_config_without_base_aeroseg_is_told_to_inherit_it(tmp_path):
    from aeroseg.modeling import build_model
    from aeroseg.utils.errors import ConfigError

    own = tmp_path / "mine.yaml"
    own.write_text("MODEL:\n  DEVICE: cpu\nSOLVER:\n  MAX_ITER: 10\n")  # forgot _BASE_
    cfg = get_cfg()
    cfg.merge_from_file(str(own))
    with pytest.raises(ConfigError, match=r"'GeneralizedRCNN' is detectron2's default, not set by the config: "
                                          r"start it with _BASE_: pointing at configs/Base-AerOSeg.yaml"):
        build_model(cfg)
