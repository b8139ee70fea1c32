import re

import pytest

from aeroseg.config import REMOTE_SENSING_TEMPLATES, get_cfg
from aeroseg.config import aeroseg_config as aeroseg_config_module
from conftest import BASE_CONFIG, TINY_CONFIG, tiny_cfg


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
    assert cfg.MODEL.META_ARCHITECTURE == "AerOSeg"


def test_paper_defaults():
    cfg = get_cfg()
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
