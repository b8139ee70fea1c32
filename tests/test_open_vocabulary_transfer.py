"""Open-vocabulary transfer: the demo segments classes it never saw in segmentation training.

The demo's CLIP is pretrained on captioned synthetic aerial crops whose captions name water and
cars (:mod:`aeroseg.modeling.backbone.clip_pretraining`); segmentation training sees only
building, road, tree and low vegetation. Water and car are then segmented through the image-text
alignment alone, which a randomly initialised CLIP does not have. A bug that cuts the text path
(evaluation text embeddings out of label order, a rotation that is not undone, ...) brings the
unseen classes back to the random CLIP's level, and this test fails.

The pretrained checkpoint is built once per test session (the default recipe, about 30 s on
2 cores) and shared by the tests that need it.
"""
import json

import pytest

from aeroseg.modeling.backbone.clip_backbone import _to_dict
from aeroseg.modeling.backbone.clip_pretraining import synthetic_aerial_clip
from conftest import DEMO_CONFIG, run_train_net, tiny_cfg

# Half the demo's 300 iterations: the unseen classes are already far from the random CLIP's
# level (measured: u-mIoU 60-70 pretrained against 1-5 random at this length).
ITERATIONS = "150"


@pytest.fixture(scope="session")
def pretrained_datasets(tmp_path_factory):
    """An $AEROSEG_DATASETS folder holding the demo's pretrained CLIP (the dataset is generated on use)."""
    root = tmp_path_factory.mktemp("pretrained_datasets")
    cfg = tiny_cfg()
    cfg.merge_from_file(str(DEMO_CONFIG))
    synthetic_aerial_clip(cfg.MODEL.CLIP.NAME, _to_dict(cfg.MODEL.CLIP.ARCH_OVERRIDES), root=str(root), progress=False)
    return root


def train_demo(out, datasets, monkeypatch, *opts):
    """The demo for ITERATIONS iterations; {class: IoU} and the s/u/h means of its evaluation."""
    monkeypatch.setenv("AEROSEG_DATASETS", str(datasets))
    assert run_train_net(out, "SOLVER.MAX_ITER", ITERATIONS, "SOLVER.CHECKPOINT_PERIOD", "1000", *opts,
                         config=DEMO_CONFIG) == 0
    with open(out / "inference" / "synthetic_aerial_val" / "sem_seg_results.json") as f:
        results = json.load(f)
    scores = {row["class"]: row["IoU"] for row in results["per_class"]}
    scores.update({k: results["metrics"][k] for k in ("s-mIoU", "u-mIoU", "h-mIoU")})
    return scores


@pytest.fixture(scope="module")
def random_clip_scores(pretrained_datasets, tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        return train_demo(tmp_path_factory.mktemp("random_clip"), pretrained_datasets, monkeypatch,
                          "MODEL.CLIP.PRETRAINED", "")


def test_unseen_classes_are_segmented_through_the_pretrained_clip(pretrained_datasets, random_clip_scores,
                                                                   tmp_path, monkeypatch):
    pretrained = train_demo(tmp_path, pretrained_datasets, monkeypatch)
    random = random_clip_scores
    # The control: without pretrained alignment the unseen classes stay near chance.
    assert random["u-mIoU"] < 15, random
    # With it, both unseen classes are found, far above the control.
    assert pretrained["water"] > 50 and pretrained["car"] > 30, pretrained
    assert pretrained["u-mIoU"] > random["u-mIoU"] + 35, (pretrained, random)
    assert pretrained["h-mIoU"] > 50, pretrained
