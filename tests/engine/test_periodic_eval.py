"""Periodic evaluation inside training (TEST.EVAL_PERIOD > 0) must not disturb training: the steps
after it see the training vocabulary and train mode again, and the final weights are bit-identical
to a run without periodic evaluation."""
import json
import os

import uuid

import pytest
import torch

from aeroseg.data import DatasetCatalog, MetadataCatalog
from aeroseg.data.datasets.synthetic import register_synthetic_dataset
from aeroseg.engine import Trainer
from conftest import TINY_CONFIG

from aeroseg.engine import train_net

COMMON = ("SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0", "SEED", "0",
          "SOLVER.AMP.ENABLED", "False", "MODEL.DEVICE", "cpu")


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """A small synthetic dataset (8 training, 4 validation tiles) keeps the two runs fast."""
    name = f"periodic_{uuid.uuid4().hex[:8]}"
    train, val = register_synthetic_dataset(name, root=str(tmp_path_factory.mktemp("periodic")), num_train=8, num_val=4)
    yield train, val
    for split in (train, val):
        DatasetCatalog.remove(split)
        MetadataCatalog.remove(split)


def _run(out, dataset, *opts):
    train, val = dataset
    return train_net.run(["--config-file", str(TINY_CONFIG), "OUTPUT_DIR", str(out), *COMMON,
                          "DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{val}',)", *opts])


def test_periodic_evaluation_restores_training_and_changes_no_weight(tmp_path, monkeypatch, small_dataset):
    steps = []
    original = Trainer.run_step

    def recording_run_step(self, batch):
        model = self.model
        steps.append({
            "vocabulary": model.vocabulary,
            "training": model.training,
            "head_training": all(m.training for m in model.head.decoder.modules()),
            "clip_training": model.clip_backbone.training,
        })
        return original(self, batch)

    monkeypatch.setattr(Trainer, "run_step", recording_run_step)
    assert _run(tmp_path / "periodic", small_dataset, "TEST.EVAL_PERIOD", "2") == 0
    seen = MetadataCatalog.get(small_dataset[0]).seen_classes
    assert len(seen) < len(MetadataCatalog.get(small_dataset[1]).stuff_classes)  # eval uses more classes
    assert len(steps) == 3
    for i, step in enumerate(steps):  # step 2 follows the evaluation after step 1
        assert step == {"vocabulary": seen, "training": True, "head_training": True, "clip_training": True}, i
    records = [json.loads(line) for line in (tmp_path / "periodic" / "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in records if "sem_seg/h-mIoU" in r] == [1, 2]  # periodic + final

    monkeypatch.setattr(Trainer, "run_step", original)
    assert _run(tmp_path / "plain", small_dataset, "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()") == 0
    periodic = torch.load(os.path.join(tmp_path, "periodic", "model_final.pth"), weights_only=True)["model"]
    plain = torch.load(os.path.join(tmp_path, "plain", "model_final.pth"), weights_only=True)["model"]
    assert periodic.keys() == plain.keys()
    differing = [k for k in plain if not torch.equal(periodic[k], plain[k])]
    assert not differing, f"periodic evaluation changed the training: {differing[:5]}"
