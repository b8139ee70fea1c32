"""Datasets with problems: missing or unreadable samples, label values outside the classes, unknown
dataset names or keys. Each is a one-line error naming the file or key before work starts, or
(where asked for) skipped and counted."""
import os

import pytest

from aeroseg.data import DatasetCatalog
from aeroseg.engine import train_net
from conftest import CLASSES, TINY_CONFIG, UNSEEN, poison_label as _poison_label, error_line as _error
from conftest import run_train_net as _run

pytestmark = pytest.mark.usefixtures("datasets_env")


def test_evaluation_with_a_missing_image_is_an_error_naming_it(fab, tmp_path, capsys):
    name, root, opts = fab
    os.remove(root / "val" / "images" / "val2.png")
    assert _run(tmp_path / "out", *opts, "SOLVER.MAX_ITER", "1", flags=()) == 2
    err = _error(capsys)
    assert "val2" in err and "val" in err


def test_unreadable_training_image_errors_or_is_skipped_and_counted(fab, tmp_path, capsys):
    name, root, opts = fab
    (root / "train" / "images" / "train1.png").write_bytes(b"not a png")
    assert _run(tmp_path / "a", *opts, "DATASETS.TEST", "()") == 2
    assert "train1.png" in _error(capsys)
    out = tmp_path / "b"
    assert _run(out, *opts, "DATASETS.TEST", "()", "DATALOADER.SKIP_BAD_SAMPLES", "True") == 0
    log = (out / "log.txt").read_text()
    assert "Skipped" in log and "train1.png" in log and "bad sample" in log


def test_out_of_range_label_values_are_an_error_naming_file_and_values(fab, tmp_path, capsys):
    name, root, opts = fab
    bad = _poison_label(root, "val", "val1", [7, 200])
    assert _run(tmp_path / "a", *opts, "SOLVER.MAX_ITER", "1") == 2
    err = _error(capsys)
    assert str(bad) in err and "7" in err and "200" in err and "0..5" in err
    bad_train = _poison_label(root, "train", "train0", [9])
    assert _run(tmp_path / "b", *opts, "DATASETS.TEST", "()") == 2
    err = _error(capsys)
    assert str(bad_train) in err and "9" in err


def test_out_of_range_labels_may_be_mapped_to_ignore_and_are_counted(fab):
    from aeroseg.config import get_cfg
    from aeroseg.data import SemSegDatasetMapper, register_datasets_from_config

    name, root, opts = fab
    _poison_label(root, "val", "val1", [7, 200])
    cfg = get_cfg()
    cfg.merge_from_file(str(TINY_CONFIG))
    cfg.merge_from_list(list(opts) + ["DATALOADER.OUT_OF_RANGE_LABELS", "ignore"])
    register_datasets_from_config(cfg)
    mapper = SemSegDatasetMapper(cfg, is_train=False, dataset_name=f"{name}_val")
    out = mapper({"file_name": str(root / "val/images/val1.png"),
                  "sem_seg_file_name": str(root / "val/labels/val1.png")})
    label = out["sem_seg"]
    assert out["sem_seg_file_name"] == str(root / "val/labels/val1.png")  # the evaluator names it in errors
    assert (label[0, :5] == 255).all() and (label[1, :5] == 255).all()
    assert int((label == 255).sum()) == 10 and out["out_of_range_pixels"] == 10
    assert label.max() < 256 and set(label[2:].unique().tolist()) == set(range(6))
    with pytest.raises(Exception, match="OUT_OF_RANGE_LABELS"):
        cfg.defrost()
        cfg.DATALOADER.OUT_OF_RANGE_LABELS = "drop"
        SemSegDatasetMapper(cfg, is_train=False, dataset_name=f"{name}_val")


def test_evaluation_gives_the_total_of_labels_mapped_to_ignore(fab, tmp_path):
    import json

    name, root, opts = fab
    _poison_label(root, "val", "val1", [7, 200])  # 2 rows x 5 pixels
    _poison_label(root, "val", "val3", [9])  # 5 pixels
    out = tmp_path / "eval"
    assert _run(out, *opts, "DATALOADER.OUT_OF_RANGE_LABELS", "ignore", flags=("--eval-only",)) == 0
    results = json.loads((out / "inference" / f"{name}_val" / "sem_seg_results.json").read_text())
    assert results["num_images"] == 4
    assert results["out_of_range_labels"]["files"] == 2 and results["out_of_range_labels"]["pixels"] == 15
    assert "15 label pixels in 2 of 4 file(s) had values outside 0..5" in (out / "log.txt").read_text()


def test_unknown_custom_dataset_key_is_an_error_with_the_close_match(fab, tmp_path, capsys):
    name, root, opts = fab
    typo = repr([{"NAME": name + "x", "ROOT": str(root), "CLASSES": CLASSES, "UNSEEEN": UNSEEN}])
    assert _run(tmp_path / "a", "DATASETS.CUSTOM", typo, "DATASETS.TRAIN", f"('{name}x_train',)",
                "SOLVER.MAX_ITER", "1") == 2
    err = _error(capsys)
    assert "UNSEEEN" in err and "did you mean UNSEEN" in err and f"{name}x_train" not in DatasetCatalog


@pytest.mark.parametrize("key,value,flags,words", [
    ("DATASETS.TEST", "('synthetic_aerial_vall',)", (), ["synthetic_aerial_vall", "synthetic_aerial_val"]),
    ("DATASETS.TRAIN", "('synthetic_aerial_trian',)", (), ["synthetic_aerial_trian", "synthetic_aerial_train"]),
    ("DATASETS.TEST", "('nope_val',)", ("--eval-only",), ["nope_val", "DATASETS.TEST"]),
])
def test_unknown_dataset_names_fail_before_the_model_is_built(tmp_path, capsys, monkeypatch, key, value,
                                                                  flags, words):
    import aeroseg.engine.trainer as trainer_module

    def no_model(cfg):
        raise AssertionError("the model was built before the datasets were checked")

    monkeypatch.setattr(trainer_module, "build_model", no_model)
    monkeypatch.setattr(train_net, "build_model", no_model)
    assert _run(tmp_path / "out", key, value, flags=flags) == 2
    err = _error(capsys)
    assert all(w in err for w in words), err


def test_missing_dataset_folder_fails_before_the_model_is_built(fab, tmp_path, capsys, monkeypatch):
    import shutil

    import aeroseg.engine.trainer as trainer_module

    name, root, opts = fab
    monkeypatch.setattr(trainer_module, "build_model", lambda cfg: (_ for _ in ()).throw(AssertionError("built")))
    shutil.rmtree(root / "val" / "labels")
    assert _run(tmp_path / "out", *opts) == 2
    assert str(root / "val" / "labels") in _error(capsys)


def test_worker_errors_are_the_same_one_line_error(fab, tmp_path, capsys):
    name, root, opts = fab
    (root / "train" / "images" / "train1.png").write_bytes(b"not a png")
    assert _run(tmp_path / "a", *opts, "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "1") == 2
    err = _error(capsys)
    assert "train1.png" in err and "Traceback" not in err and "DataLoader worker" not in err
