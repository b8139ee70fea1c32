"""Batched evaluation (TEST.IMS_PER_BATCH) gives the results of batch-1 evaluation."""
import uuid

import pytest
import torch

from aeroseg.data import DatasetCatalog, MetadataCatalog, build_test_loader
from aeroseg.data.datasets.synthetic import register_synthetic_dataset
from aeroseg.evaluation import build_evaluator, inference_on_dataset
from conftest import build_tiny, tiny_cfg


@pytest.fixture
def synthetic_val(tmp_path):
    name = f"synth_eval_{uuid.uuid4().hex[:8]}"
    names = register_synthetic_dataset(name, root=str(tmp_path / "data"), num_train=1, num_val=5, size=64, seed=3)
    yield names[1]
    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


def test_batched_evaluation_equals_batch_one(synthetic_val, tmp_path):
    model = build_tiny()
    model.set_vocabulary(MetadataCatalog.get(synthetic_val).stuff_classes)
    results, batch_sizes, outputs = {}, {}, {}
    for ims in (1, 3):
        cfg = tiny_cfg("TEST.IMS_PER_BATCH", str(ims))
        loader = build_test_loader(cfg, synthetic_val)
        batch_sizes[ims] = [len(b) for b in loader]
        calls = []
        hook = model.register_forward_hook(lambda m, i, o: calls.extend(r["sem_seg"] for r in o))
        evaluator = build_evaluator(cfg, synthetic_val, output_dir=str(tmp_path / f"ims{ims}"))
        results[ims] = inference_on_dataset(model, loader, evaluator)["sem_seg"]
        hook.remove()
        outputs[ims] = calls
    assert batch_sizes == {1: [1] * 5, 3: [3, 2]}  # in order, last batch smaller
    for single, batched in zip(outputs[1], outputs[3]):
        torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)
    assert results[3].keys() == results[1].keys()
    for key, value in results[1].items():
        assert results[3][key] == pytest.approx(value, nan_ok=True), key


def test_test_loader_batch_size_is_validated(synthetic_val):
    with pytest.raises(ValueError, match="TEST.IMS_PER_BATCH=0"):
        build_test_loader(tiny_cfg("TEST.IMS_PER_BATCH", "0"), synthetic_val)
