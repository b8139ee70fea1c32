"""The open-vocabulary evaluator (docs/DESIGN.md, "Metrics") against hand-computed confusion matrices."""
import json
import logging
import math
import os
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from aeroseg.data import MetadataCatalog
from aeroseg.evaluation import (
    DatasetEvaluator,
    EvaluationError,
    OpenVocabSemSegEvaluator,
    build_evaluator,
    inference_on_dataset,
    metrics_from_confusion_matrix,
)
from aeroseg.compat import detectron2_available

CLASSES = ["a", "b", "c", "d", "e", "f"]
SEEN = ["a", "b", "c", "f"]
UNSEEN = ["d", "e"]
K = len(CLASSES)
IGNORE = 255

# The main hand-worked case (one 3x4 image). 255 = ignore; the two ignore pixels are predicted
# as a / c and must not count.
LABEL = [[0, 0, 1, 1],
         [0, 2, 255, 1],
         [3, 3, 3, 255]]
PRED = [[0, 1, 1, 1],
        [0, 4, 0, 1],
        [3, 3, 0, 2]]
# Valid (gt, pred) pairs: (a,a) x2, (a,b), (b,b) x3, (c,e), (d,d) x2, (d,a).
CONF = [[2, 1, 0, 0, 0, 0],   # gt a
        [0, 3, 0, 0, 0, 0],   # gt b
        [0, 0, 0, 0, 1, 0],   # gt c
        [1, 0, 0, 2, 0, 0],   # gt d
        [0, 0, 0, 0, 0, 0],   # gt e: never in the ground truth, predicted once -> IoU 0
        [0, 0, 0, 0, 0, 0]]   # gt f: in neither ground truth nor prediction -> NaN, skipped
# IoU = TP / (GT + PRED - TP):
#   a 2/(3+3-2) = 1/2   b 3/(3+4-3) = 3/4   c 0/(1+0-0) = 0   d 2/(3+2-2) = 2/3   e 0/(0+1) = 0   f NaN
IOU = {"a": 1 / 2, "b": 3 / 4, "c": 0.0, "d": 2 / 3, "e": 0.0, "f": float("nan")}
# Accuracy = TP / GT: a 2/3, b 1, c 0, d 2/3, e and f NaN (no ground truth).
ACC = {"a": 2 / 3, "b": 1.0, "c": 0.0, "d": 2 / 3, "e": float("nan"), "f": float("nan")}
M_IOU = (1 / 2 + 3 / 4 + 0 + 2 / 3 + 0) / 5          # f skipped
S_IOU = (1 / 2 + 3 / 4 + 0) / 3                      # a, b, c (f skipped) = 5/12
U_IOU = (2 / 3 + 0) / 2                              # d, e = 1/3
H_IOU = 2 * (5 / 12) * (1 / 3) / (5 / 12 + 1 / 3)    # = 10/27
P_ACC = (2 + 3 + 0 + 2) / 10
M_ACC = (2 / 3 + 1 + 0 + 2 / 3) / 4                  # = 7/12
FW_IOU = 0.3 * (1 / 2) + 0.3 * (3 / 4) + 0.1 * 0 + 0.3 * (2 / 3)  # GT frequencies 3,3,1,3 of 10


@pytest.fixture
def dataset():
    """A throw-away dataset name in MetadataCatalog, removed afterwards."""
    name = f"_test_eval_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(stuff_classes=list(CLASSES), seen_classes=list(SEEN),
                                  unseen_classes=list(UNSEEN), ignore_label=IGNORE,
                                  evaluator_type="sem_seg_open_vocab")
    yield name
    MetadataCatalog.remove(name)


def scores_for(pred) -> torch.Tensor:
    """(K, H, W) scores whose argmax is ``pred``."""
    pred = torch.as_tensor(pred)
    return torch.nn.functional.one_hot(pred, K).permute(2, 0, 1).float()


def sample(label, pred, **extra):
    return ({"sem_seg": torch.as_tensor(label, dtype=torch.long), **extra},
            {"sem_seg": scores_for(pred)})


def approx(x):
    return pytest.approx(x, abs=1e-9)


def check_main_case(res):
    assert list(res)[:7] == ["mIoU", "s-mIoU", "u-mIoU", "h-mIoU", "fwIoU", "pACC", "mACC"]
    assert res["mIoU"] == approx(100 * M_IOU)
    assert res["s-mIoU"] == approx(100 * S_IOU)
    assert res["u-mIoU"] == approx(100 * U_IOU)
    assert res["h-mIoU"] == approx(100 * H_IOU)
    assert res["h-mIoU"] == approx(100 * 10 / 27)
    assert res["fwIoU"] == approx(100 * FW_IOU)
    assert res["pACC"] == approx(100 * P_ACC)
    assert res["mACC"] == approx(100 * 7 / 12)
    for name in CLASSES:
        for prefix, table in (("IoU", IOU), ("ACC", ACC)):
            if math.isnan(table[name]):
                assert math.isnan(res[f"{prefix}-{name}"]), (prefix, name)
            else:
                assert res[f"{prefix}-{name}"] == approx(100 * table[name]), (prefix, name)
    assert set(res) == {"mIoU", "s-mIoU", "u-mIoU", "h-mIoU", "fwIoU", "pACC", "mACC",
                        *(f"IoU-{c}" for c in CLASSES), *(f"ACC-{c}" for c in CLASSES)}


def test_hand_computed_metrics(dataset):
    ev = OpenVocabSemSegEvaluator(dataset, distributed=False)
    assert isinstance(ev, DatasetEvaluator)
    ev.reset()
    inp, out = sample(LABEL, PRED)
    ev.process([inp], [out])
    assert ev._conf.tolist() == CONF
    results = ev.evaluate()
    assert list(results) == ["sem_seg"]
    check_main_case(results["sem_seg"])


def test_metrics_function_matches_hand_values():
    m = metrics_from_confusion_matrix(np.array(CONF), CLASSES, SEEN, UNSEEN)
    assert m["summary"]["h-mIoU"] == approx(100 * H_IOU)
    assert m["gt_pixels"].tolist() == [3, 3, 1, 3, 0, 0]
    assert m["pred_pixels"].tolist() == [3, 4, 0, 2, 1, 0]
    assert m["notes"] == []


def test_several_process_calls_accumulate(dataset):
    """The main case cut into three images over two process() calls gives the same matrix."""
    label, pred = np.array(LABEL), np.array(PRED)
    ev = OpenVocabSemSegEvaluator(dataset, distributed=False)
    ev.reset()
    a = sample(label[:, :2], pred[:, :2])
    b = sample(label[:, 2:3], pred[:, 2:3])
    c = sample(label[:, 3:], pred[:, 3:])
    ev.process([a[0], b[0]], [a[1], b[1]])
    ev.process([c[0]], [c[1]])
    assert ev._conf.tolist() == CONF
    check_main_case(ev.evaluate()["sem_seg"])


def test_reset_clears_state(dataset):
    ev = OpenVocabSemSegEvaluator(dataset, distributed=False)
    ev.reset()
    inp, out = sample([[0, 0], [1, 1]], [[1, 1], [0, 0]])
    ev.process([inp], [out])
    ev.reset()
    assert ev._conf.sum() == 0
    inp, out = sample(LABEL, PRED)
    ev.process([inp], [out])
    assert ev._conf.tolist() == CONF
    check_main_case(ev.evaluate()["sem_seg"])


def test_h_miou_is_zero_when_one_side_is_zero(dataset):
    # d and e (unseen) are always wrong; a and b (seen) are perfect.
    #   conf: a->a 2, b->b 1, d->a 1, e->b 1
    #   IoU a = 2/(2+3-2) = 2/3, b = 1/(1+2-1) = 1/2, d = 0, e = 0 (c, f absent: NaN)
    #   s = (2/3 + 1/2)/2 = 7/12, u = 0 -> h = 2*s*0/(s+0) = 0
    res = _evaluate(dataset, [[0, 0, 1, 3, 4]], [[0, 0, 1, 0, 1]])
    assert res["s-mIoU"] == approx(100 * 7 / 12)
    assert res["u-mIoU"] == approx(0.0)
    assert res["h-mIoU"] == approx(0.0)
    assert res["mIoU"] == approx(100 * (2 / 3 + 1 / 2) / 4)


def test_h_miou_is_zero_when_both_sides_are_zero(dataset):
    # a <-> d swapped: every IoU is 0, s + u = 0 -> h = 0 (no division by zero).
    res = _evaluate(dataset, [[0, 3, 0, 3]], [[3, 0, 3, 0]])
    assert res["s-mIoU"] == approx(0.0) and res["u-mIoU"] == approx(0.0)
    assert res["h-mIoU"] == approx(0.0)
    assert res["pACC"] == approx(0.0) and res["mACC"] == approx(0.0)


def test_no_unseen_classes_gives_nan_and_says_so(dataset, caplog, tmp_path):
    ev = OpenVocabSemSegEvaluator(dataset, output_dir=str(tmp_path), distributed=False, unseen_classes=[])
    assert ev.seen_classes == CLASSES and ev.unseen_classes == []
    inp, out = sample(LABEL, PRED)
    ev.process([inp], [out])
    with caplog.at_level(logging.INFO, logger="aeroseg.evaluation"):
        res = ev.evaluate()["sem_seg"]
    assert math.isnan(res["u-mIoU"]) and math.isnan(res["h-mIoU"])
    assert res["s-mIoU"] == approx(100 * M_IOU)  # every class is seen now
    assert "no unseen classes" in caplog.text
    saved = json.loads((tmp_path / "sem_seg_results.json").read_text())
    assert saved["metrics"]["u-mIoU"] is None and saved["metrics"]["h-mIoU"] is None
    assert any("no unseen classes" in note for note in saved["notes"])


def test_split_override(dataset):
    # Only the seen side given: the unseen side is every other class.
    ev = OpenVocabSemSegEvaluator(dataset, distributed=False, seen_classes=["a", "d"])
    assert ev.unseen_classes == ["b", "c", "e", "f"]
    inp, out = sample(LABEL, PRED)
    ev.process([inp], [out])
    res = ev.evaluate()["sem_seg"]
    s, u = (1 / 2 + 2 / 3) / 2, (3 / 4 + 0 + 0) / 3  # f is NaN and skipped
    assert res["s-mIoU"] == approx(100 * s) and res["u-mIoU"] == approx(100 * u)
    assert res["h-mIoU"] == approx(100 * 2 * s * u / (s + u))
    with pytest.raises(EvaluationError, match="not among"):
        OpenVocabSemSegEvaluator(dataset, unseen_classes=["zebra"])
    with pytest.raises(EvaluationError, match="both seen and unseen"):
        OpenVocabSemSegEvaluator(dataset, seen_classes=["a"], unseen_classes=["a"])


def test_prediction_is_resized_bilinearly_to_the_label(dataset):
    # Scores at 1x2, label at 1x4. Bilinear (align_corners=False) samples the scores at
    # x = -0.25, 0.25, 0.75, 1.25:  class a: 1, 0.825, 0.475, 0.3;  class b: 0, 0.125, 0.375, 0.5
    # -> prediction a, a, a, b (nearest-neighbour resizing would give a, a, b, b).
    scores = torch.full((K, 1, 2), -1.0)
    scores[0, 0] = torch.tensor([1.0, 0.3])
    scores[1, 0] = torch.tensor([0.0, 0.5])
    ev = OpenVocabSemSegEvaluator(dataset, distributed=False)
    ev.process([{"sem_seg": torch.tensor([[0, 0, 1, 1]])}], [{"sem_seg": scores}])
    expected = np.zeros((K, K), dtype=np.int64)
    expected[0, 0], expected[1, 0], expected[1, 1] = 2, 1, 1
    assert ev._conf.numpy().tolist() == expected.tolist()
    # Evaluation is at the label's resolution: a larger prediction is resized down to it too.
    ev.reset()
    big = scores_for(torch.tensor(PRED).repeat_interleave(2, 0).repeat_interleave(2, 1))
    ev.process([{"sem_seg": torch.tensor(LABEL)}], [{"sem_seg": big}])
    assert ev._conf.tolist() == CONF


def test_label_read_from_file(dataset, tmp_path):
    path = tmp_path / "label.png"
    Image.fromarray(np.array(LABEL, dtype=np.uint8)).save(path)
    ev = OpenVocabSemSegEvaluator(dataset, distributed=False)
    ev.process([{"sem_seg_file_name": str(path), "height": 3, "width": 4}], [{"sem_seg": scores_for(PRED)}])
    assert ev._conf.tolist() == CONF


def test_out_of_range_label_raises(dataset):
    ev = OpenVocabSemSegEvaluator(dataset, distributed=False)
    bad = [[0, 1], [7, 255]]
    with pytest.raises(ValueError) as info:
        ev.process([{"sem_seg": torch.tensor(bad), "file_name": "tile_042.png"}],
                   [{"sem_seg": scores_for([[0, 1], [1, 0]])}])
    assert isinstance(info.value, EvaluationError)
    message = str(info.value)
    assert "\n" not in message and "tile_042.png" in message and "7" in message
    with pytest.raises(EvaluationError, match="-1"):
        ev.process([{"sem_seg": torch.tensor([[-1]])}], [{"sem_seg": scores_for([[0]])}])
    with pytest.raises(EvaluationError, match=r"\(6, H, W\)"):
        ev.process([{"sem_seg": torch.tensor([[0]])}], [{"sem_seg": torch.zeros(3, 1, 1)}])


def test_json_results_file(dataset, tmp_path, caplog):
    out_dir = tmp_path / "inference" / dataset
    ev = OpenVocabSemSegEvaluator(dataset, output_dir=str(out_dir), distributed=False)
    inp, out = sample(LABEL, PRED)
    ev.process([inp], [out])
    with caplog.at_level(logging.INFO, logger="aeroseg.evaluation"):
        ev.evaluate()
    assert sorted(os.listdir(out_dir)) == ["sem_seg_results.json"]  # no temp file left behind
    saved = json.loads((out_dir / "sem_seg_results.json").read_text())
    assert saved["dataset"] == dataset and saved["num_images"] == 1
    assert saved["classes"] == CLASSES and saved["seen_classes"] == SEEN and saved["unseen_classes"] == UNSEEN
    assert saved["confusion_matrix"]["matrix"] == CONF
    assert list(saved["metrics"]) == ["mIoU", "s-mIoU", "u-mIoU", "h-mIoU", "fwIoU", "pACC", "mACC"]
    assert saved["metrics"]["h-mIoU"] == approx(100 * H_IOU)
    assert saved["metrics"]["pACC"] == approx(100 * P_ACC)
    rows = {row["class"]: row for row in saved["per_class"]}
    assert [row["class"] for row in saved["per_class"]] == CLASSES
    assert rows["a"] == {"class": "a", "split": "seen", "IoU": approx(50.0), "ACC": approx(100 * 2 / 3),
                         "gt_pixels": 3, "pred_pixels": 3}
    assert rows["e"] == {"class": "e", "split": "unseen", "IoU": 0.0, "ACC": None,
                         "gt_pixels": 0, "pred_pixels": 1}
    assert rows["f"]["IoU"] is None and rows["f"]["split"] == "seen"
    # the readable table: one row per class marked seen / unseen, and the summary line
    assert "| d " in caplog.text and "unseen" in caplog.text and "h-mIoU 37.04" in caplog.text


def test_build_evaluator(dataset, tmp_path):
    ev = build_evaluator(None, dataset, output_dir=str(tmp_path))
    assert isinstance(ev, OpenVocabSemSegEvaluator) and ev.output_dir == str(tmp_path)
    other = f"_test_eval_other_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(other).set(stuff_classes=["x"], evaluator_type="coco")
    try:
        with pytest.raises(EvaluationError, match="coco"):
            build_evaluator(None, other)
    finally:
        MetadataCatalog.remove(other)


def test_detectron2_base_class():
    pytest.importorskip("detectron2.evaluation")
    if not detectron2_available():
        pytest.skip("detectron2 is present but not usable")
    import detectron2.evaluation as d2_eval

    assert issubclass(OpenVocabSemSegEvaluator, d2_eval.DatasetEvaluator)


class FixedModel(torch.nn.Module):
    """Returns the scores of PRED for every input; checks it runs in eval mode without grad."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.fail = fail
        self.calls = 0

    def forward(self, batch):
        assert not self.training and not torch.is_grad_enabled()
        self.calls += 1
        if self.fail:
            raise RuntimeError("boom")
        return [{"sem_seg": scores_for(PRED)} for _ in batch]


def test_inference_on_dataset_restores_training_mode(dataset):
    model = FixedModel().train()
    loader = [[{"sem_seg": torch.tensor(LABEL)}], [{"sem_seg": torch.tensor(LABEL)}, {"sem_seg": torch.tensor(LABEL)}]]
    ev = OpenVocabSemSegEvaluator(dataset, distributed=False)
    results = inference_on_dataset(model, loader, ev)
    assert model.training and torch.is_grad_enabled() and model.calls == 2
    assert ev._conf.tolist() == (3 * np.array(CONF)).tolist()
    check_main_case(results["sem_seg"])  # ratios unchanged by tripling every count
    # eval mode is kept when the model was in eval mode, and restored after an exception too
    model.eval()
    inference_on_dataset(model, loader[:1], ev)
    assert not model.training
    failing = FixedModel(fail=True).train()
    with pytest.raises(RuntimeError, match="boom"):
        inference_on_dataset(failing, loader, ev)
    assert failing.training and torch.is_grad_enabled()
    assert inference_on_dataset(model, loader, None) == {}


def _distributed_worker(rank, world, init_file, name, out_dir, queue):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        MetadataCatalog.get(name).set(stuff_classes=list(CLASSES), seen_classes=list(SEEN),
                                      unseen_classes=list(UNSEEN), ignore_label=IGNORE)
        ev = OpenVocabSemSegEvaluator(name, output_dir=out_dir if rank == 0 else None)
        ev.reset()
        label, pred = np.array(LABEL), np.array(PRED)
        half = slice(0, 2) if rank == 0 else slice(2, 4)  # each process sees half of the image
        inp, out = sample(label[:, half], pred[:, half])
        ev.process([inp], [out])
        queue.put((rank, ev.evaluate()))
    finally:
        dist.destroy_process_group()


def test_distributed_sum_of_confusion_matrices(tmp_path):
    import torch.multiprocessing as mp

    name = f"_test_eval_dist_{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), name, str(tmp_path / "out"), queue),
             nprocs=2, join=True)
    results = dict(queue.get() for _ in range(2))
    assert results[1] == {}
    check_main_case(results[0]["sem_seg"])
    saved = json.loads((tmp_path / "out" / "sem_seg_results.json").read_text())
    assert saved["confusion_matrix"]["matrix"] == CONF and saved["num_images"] == 2


def _evaluate(dataset, label, pred):
    ev = OpenVocabSemSegEvaluator(dataset, distributed=False)
    inp, out = sample(label, pred)
    ev.process([inp], [out])
    return ev.evaluate()["sem_seg"]
