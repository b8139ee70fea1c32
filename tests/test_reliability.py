"""Issue 12: nothing silently wrong. One test per way a run could mix, lose or skip work."""
import json
import os
import signal
import time

import numpy as np
import pytest
import torch
from PIL import Image

from aeroseg.data import DatasetCatalog, MetadataCatalog
from conftest import TINY_CONFIG
from conftest import run_train_net as _run

from aeroseg.engine import train_net

CLASSES = ["building", "road", "tree", "water", "low vegetation", "car"]
UNSEEN = ["water", "car"]


@pytest.fixture(autouse=True)
def _datasets_env(datasets_dir, monkeypatch):
    monkeypatch.setenv("AEROSEG_DATASETS", str(datasets_dir))


def _fabricate(root, n_train=4, n_val=4, size=64, seed=0):
    """A 6-class folder dataset (root/{train,val}/{images,labels}); labels use all 6 classes."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for sub in ("images", "labels"):
            os.makedirs(root / split / sub, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                root / split / "images" / f"{split}{i}.png")
            label = (np.arange(size)[None, :].repeat(size, 0) * 6 // size).astype(np.uint8)
            Image.fromarray(label).save(root / split / "labels" / f"{split}{i}.png")
    return root


@pytest.fixture
def fab(tmp_path):
    """(dataset name, root, config opts registering it as DATASETS.CUSTOM and using it)."""
    root = _fabricate(tmp_path / "fab")
    name = f"fab{abs(hash(str(tmp_path))) % 10 ** 8}"
    custom = repr([{"NAME": name, "ROOT": str(root), "CLASSES": CLASSES, "UNSEEN": UNSEEN}])
    opts = ("DATASETS.CUSTOM", custom, "DATASETS.TRAIN", f"('{name}_train',)",
            "DATASETS.TEST", f"('{name}_val',)", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "0")
    yield name, root, opts
    for split in ("train", "val"):
        if f"{name}_{split}" in DatasetCatalog:
            DatasetCatalog.remove(f"{name}_{split}")
            MetadataCatalog.remove(f"{name}_{split}")


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().rsplit("\r", 1)[-1].strip()  # after tqdm's progress bars
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# ----------------------------------------------------------------------------- 1. output lock
def _hold_lock(path, ready):
    from aeroseg.engine.output_lock import acquire_output_dir_lock

    acquire_output_dir_lock(path)
    ready.set()
    time.sleep(120)


def test_1_output_dir_is_locked_for_the_run_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    import multiprocessing

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("the holder's config\n")
    context = multiprocessing.get_context("fork")  # another process, without re-importing torch
    ready = context.Event()
    holder = context.Process(target=_hold_lock, args=(str(out), ready), daemon=True)
    holder.start()
    try:
        assert ready.wait(60)
        assert _run(out, "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()") == 2
        err = _error(capsys)
        assert f"PID {holder.pid}" in err and str(out) in err and "in use by another run" in err
        # the refused run wrote nothing into the folder of the running one
        assert (out / "config.yaml").read_text() == "the holder's config\n"
        assert not (out / "log.txt").exists() and not (out / "model_final.pth").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    # the killed holder's lock file still names it: the next run takes it over and says so
    assert f"PID {holder.pid}" in (out / ".aeroseg_run.lock").read_text()
    assert _run(out, "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()") == 0
    log = (out / "log.txt").read_text()
    assert "did not end cleanly" in log and f"PID {holder.pid}" in log
    assert (out / ".aeroseg_run.lock").read_text() == ""  # released at the end of the run


# ----------------------------------------------------------------------------- 4. missing / unreadable samples
def test_4_evaluation_with_a_missing_image_is_an_error_naming_it(fab, tmp_path, capsys):
    name, root, opts = fab
    os.remove(root / "val" / "images" / "val2.png")
    assert _run(tmp_path / "out", *opts, "SOLVER.MAX_ITER", "1", flags=()) == 2
    err = _error(capsys)
    assert "val2" in err and "val" in err


def test_4_unreadable_training_image_errors_or_is_skipped_and_counted(fab, tmp_path, capsys):
    name, root, opts = fab
    (root / "train" / "images" / "train1.png").write_bytes(b"not a png")
    assert _run(tmp_path / "a", *opts, "DATASETS.TEST", "()") == 2
    assert "train1.png" in _error(capsys)
    out = tmp_path / "b"
    assert _run(out, *opts, "DATASETS.TEST", "()", "DATALOADER.SKIP_BAD_SAMPLES", "True") == 0
    log = (out / "log.txt").read_text()
    assert "Skipped" in log and "train1.png" in log and "bad sample" in log


# ----------------------------------------------------------------------------- 5. out-of-range labels
def _poison_label(root, split, stem, values):
    path = root / split / "labels" / f"{stem}.png"
    label = np.asarray(Image.open(path)).copy()
    for i, v in enumerate(values):
        label[i, :5] = v
    Image.fromarray(label).save(path)
    return path


def test_5_out_of_range_label_values_are_an_error_naming_file_and_values(fab, tmp_path, capsys):
    name, root, opts = fab
    bad = _poison_label(root, "val", "val1", [7, 200])
    assert _run(tmp_path / "a", *opts, "SOLVER.MAX_ITER", "1") == 2
    err = _error(capsys)
    assert str(bad) in err and "7" in err and "200" in err and "0..5" in err
    bad_train = _poison_label(root, "train", "train0", [9])
    assert _run(tmp_path / "b", *opts, "DATASETS.TEST", "()") == 2
    err = _error(capsys)
    assert str(bad_train) in err and "9" in err


def test_5_out_of_range_labels_may_be_mapped_to_ignore_and_are_counted(fab):
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


# ----------------------------------------------------------------------------- 6. DATASETS.CUSTOM keys
def test_6_unknown_custom_dataset_key_is_an_error_with_the_close_match(fab, tmp_path, capsys):
    name, root, opts = fab
    typo = repr([{"NAME": name + "x", "ROOT": str(root), "CLASSES": CLASSES, "UNSEEEN": UNSEEN}])
    assert _run(tmp_path / "a", "DATASETS.CUSTOM", typo, "DATASETS.TRAIN", f"('{name}x_train',)",
                "SOLVER.MAX_ITER", "1") == 2
    err = _error(capsys)
    assert "UNSEEEN" in err and "did you mean UNSEEN" in err and f"{name}x_train" not in DatasetCatalog


# ----------------------------------------------------------------------------- 8. crash in the final evaluation
def test_8_resume_of_a_finished_run_without_results_evaluates_it(fab, tmp_path, monkeypatch):
    from aeroseg.engine import Trainer

    name, root, opts = fab
    out = tmp_path / "run"

    def crash(cls, cfg, model, evaluators=None):
        raise KeyboardInterrupt("killed during the final evaluation")

    monkeypatch.setattr(Trainer, "test", classmethod(crash))
    with pytest.raises(KeyboardInterrupt):
        _run(out, *opts)
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    monkeypatch.undo()
    monkeypatch.setenv("AEROSEG_DATASETS", str(tmp_path))
    results = out / "inference" / f"{name}_val" / "sem_seg_results.json"
    assert not results.exists()
    assert _run(out, *opts, flags=("--resume",)) == 0
    assert results.is_file() and "h-mIoU" in json.loads(results.read_text())["metrics"]
    # a finished run with its results is left alone
    stamp = results.stat().st_mtime_ns
    assert _run(out, *opts, flags=("--resume",)) == 0
    assert results.stat().st_mtime_ns == stamp


# ----------------------------------------------------------------------------- 9. resume without last_checkpoint
def test_9_resume_without_last_checkpoint_continues_from_the_newest_complete_one(tmp_path, capsys):
    out = tmp_path / "run"
    opts = ("SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()")
    assert _run(out, *opts, "SOLVER.MAX_ITER", "3") == 0
    os.remove(out / "model_final.pth")
    os.remove(out / "last_checkpoint")
    (out / "model_0000009.pth").write_bytes(b"")  # a truncated file is not "complete"
    kept = (out / "model_0000000.pth").read_bytes()
    assert _run(out, *opts, flags=("--resume",)) == 0
    log = (out / "log.txt").read_text()
    assert "no last_checkpoint to follow" in log and "newest complete checkpoint" in log and "model_0000001.pth" in log
    assert "Resumed from" in log and "at iteration 2" in log
    assert (out / "model_0000000.pth").read_bytes() == kept  # never overwritten
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 3
    # an empty last_checkpoint is the same case (not "checkpoint OUTPUT_DIR/ does not exist")
    (out / "last_checkpoint").write_text("")
    assert _run(out, *opts, "SOLVER.MAX_ITER", "5", flags=("--resume",)) == 0
    assert "last_checkpoint is empty" in (out / "log.txt").read_text()


def test_9_resume_refuses_when_no_checkpoint_is_complete(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model_0000004.pth").write_bytes(b"\x00" * 10)
    assert _run(out, "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()", flags=("--resume",)) == 2
    err = _error(capsys)
    assert "model_0000004.pth" in err and "none of them" in err
    assert (out / "model_0000004.pth").read_bytes() == b"\x00" * 10


# ----------------------------------------------------------------------------- 10. datasets checked first
@pytest.mark.parametrize("key,value,flags,words", [
    ("DATASETS.TEST", "('synthetic_aerial_vall',)", (), ["synthetic_aerial_vall", "synthetic_aerial_val"]),
    ("DATASETS.TRAIN", "('synthetic_aerial_trian',)", (), ["synthetic_aerial_trian", "synthetic_aerial_train"]),
    ("DATASETS.TEST", "('nope_val',)", ("--eval-only",), ["nope_val", "DATASETS.TEST"]),
])
def test_10_unknown_dataset_names_fail_before_the_model_is_built(tmp_path, capsys, monkeypatch, key, value,
                                                                  flags, words):
    import aeroseg.engine.trainer as trainer_module

    def no_model(cfg):
        raise AssertionError("the model was built before the datasets were checked")

    monkeypatch.setattr(trainer_module, "build_model", no_model)
    monkeypatch.setattr(train_net, "build_model", no_model)
    assert _run(tmp_path / "out", key, value, flags=flags) == 2
    err = _error(capsys)
    assert all(w in err for w in words), err


def test_10_missing_dataset_folder_fails_before_the_model_is_built(fab, tmp_path, capsys, monkeypatch):
    import shutil

    import aeroseg.engine.trainer as trainer_module

    name, root, opts = fab
    monkeypatch.setattr(trainer_module, "build_model", lambda cfg: (_ for _ in ()).throw(AssertionError("built")))
    shutil.rmtree(root / "val" / "labels")
    assert _run(tmp_path / "out", *opts) == 2
    assert str(root / "val" / "labels") in _error(capsys)


# ----------------------------------------------------------------------------- readable errors
def test_worker_errors_are_the_same_one_line_error(fab, tmp_path, capsys):
    name, root, opts = fab
    (root / "train" / "images" / "train1.png").write_bytes(b"not a png")
    assert _run(tmp_path / "a", *opts, "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "1") == 2
    err = _error(capsys)
    assert "train1.png" in err and "Traceback" not in err and "DataLoader worker" not in err


def test_config_file_errors_are_one_line(tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("MODEL:\n  DEVICE: [cpu\n")
    assert train_net.run(["--config-file", str(bad_yaml)]) == 2
    assert "bad.yaml" in _error(capsys)
    no_base = tmp_path / "nobase.yaml"
    no_base.write_text('_BASE_: "missing-base.yaml"\n')
    assert train_net.run(["--config-file", str(no_base)]) == 2
    err = _error(capsys)
    assert "missing-base.yaml" in err and "_BASE_" in err


def test_read_only_output_dir_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    if os.geteuid() == 0:  # root ignores permission bits: make the folder creation fail as it would
        real_makedirs = os.makedirs

        def read_only(path, *args, **kwargs):
            if str(path).startswith(str(parent)):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_makedirs(path, *args, **kwargs)

        monkeypatch.setattr(os, "makedirs", read_only)
    try:
        assert _run(parent / "out", "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()") == 2
        err = _error(capsys)
        assert str(parent / "out") in err and "Permission denied" in err and "writable" in err
    finally:
        parent.chmod(0o700)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    import errno

    import aeroseg.checkpoint.checkpointer as checkpointer

    out = tmp_path / "run"
    opts = ("SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()")
    real_save = torch.save
    calls = {"n": 0}

    def full_disk(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpointer.torch, "save", full_disk)
    monkeypatch.setattr(checkpointer, "_free_bytes", lambda path: 1024)
    assert _run(out, *opts) == 2
    err = _error(capsys)
    assert "model_final.pth" in err and "disk" in err and "model_0000000.pth" in err
    assert (out / "last_checkpoint").read_text() == "model_0000000.pth"
    assert torch.load(out / "model_0000000.pth", weights_only=True)["iteration"] == 0
    assert not [n for n in os.listdir(out) if ".tmp" in n]

    def enospc(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointer.torch, "save", enospc)
    assert _run(tmp_path / "run2", *opts) == 2
    assert "No space left on device" in _error(capsys)


def test_empty_weights_file_names_the_reason(tmp_path, capsys):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert _run(tmp_path / "out", "MODEL.WEIGHTS", str(empty), flags=("--eval-only",)) == 2
    err = _error(capsys)
    assert str(empty) in err and "empty (0 bytes)" in err


# ----------------------------------------------------------------------------- housekeeping
def test_stale_temp_checkpoints_are_removed_and_metrics_have_no_duplicates(tmp_path, monkeypatch):
    from aeroseg.engine import Trainer

    out = tmp_path / "run"
    opts = ("SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3", "DATASETS.TEST", "()")
    original = Trainer.run_step
    calls = {"n": 0}

    def crash_after_five(self, batch):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt("simulated crash")
        return original(self, batch)

    import aeroseg.engine.metrics as metrics

    monkeypatch.setattr(metrics.MetricsWriter, "__init__", _period_one(metrics.MetricsWriter.__init__))
    monkeypatch.setattr(Trainer, "run_step", crash_after_five)
    with pytest.raises(KeyboardInterrupt):
        _run(out, *opts)
    (out / ".model_0000005.pth.tmp.999999.0badcafe.pth").write_bytes(b"half a checkpoint")
    iterations = [json.loads(line)["iteration"] for line in (out / "metrics.json").read_text().splitlines()]
    assert iterations == [0, 1, 2, 3, 4]
    monkeypatch.setattr(Trainer, "run_step", original)
    assert _run(out, *opts, flags=("--resume",)) == 0
    assert not (out / ".model_0000005.pth.tmp.999999.0badcafe.pth").exists()
    iterations = [json.loads(line)["iteration"] for line in (out / "metrics.json").read_text().splitlines()]
    assert iterations == [0, 1, 2, 3, 4, 5]


def _period_one(init):
    def patched(self, *args, **kwargs):
        kwargs["period"] = 1
        init(self, *args, **kwargs)

    return patched


# ----------------------------------------------------------------------------- tools/check_dataset.py
def test_check_dataset_finds_every_kind_of_problem(tmp_path, capsys):
    import shutil

    from aeroseg.data import check_dataset
    from aeroseg.data.datasets.manifest import make_manifest, write_manifest

    root = _fabricate(tmp_path / "ds", n_train=4, n_val=2)
    files = {"train": [f"train{i}" for i in range(4)], "val": ["val0", "val1"]}
    write_manifest(str(root), make_manifest("ds", files, tool="test", classes=CLASSES))
    assert check_dataset.main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "OK: no problem found" in out and "train: 4 samples" in out
    # class pixel counts: each 64x64 label has 64 rows x (64 / 6 rounded) columns per class
    row = next(line for line in out.splitlines() if " building " in line)
    assert row.split()[-2:] == [f"{4 * 64 * 11:,}", f"{2 * 64 * 11:,}"]

    (root / "train/images/train1.png").write_bytes(b"garbage")                              # unreadable
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(root / "train/labels/train2.png")     # size mismatch
    _poison_label(root, "val", "val0", [9])                                                  # out of range
    os.remove(root / "val/images/val1.png")                                                  # listed, missing
    shutil.copy(root / "train/images/train3.png", root / "val/images/train3.png")            # not in manifest
    assert check_dataset.main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "train1.png: unreadable image" in out
    assert "train2.png: size 64x32 differs from its image 64x64" in out
    assert "val0.png: label value(s) 9 are not class indices (0..5)" in out
    assert "val1.png: listed in manifest.json but missing" in out
    assert "1 file(s) not in manifest.json" in out and "4 problem(s) found" in out

    # a folder without manifest: overlap between splits and an interrupted run are found too
    os.remove(root / "manifest.json")
    shutil.copy(root / "train/labels/train3.png", root / "val/labels/train3.png")
    assert check_dataset.main([str(root), "--classes", str(_class_file(tmp_path))]) == 1
    assert "train3: in both train and val" in capsys.readouterr().out
    (root / ".prepare_in_progress").write_text("{}")
    assert check_dataset.main([str(root)]) == 1
    assert "incomplete" in capsys.readouterr().out
    assert check_dataset.main(["no_such_dataset"]) == 2


def _class_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(CLASSES) + "\n")
    return path
