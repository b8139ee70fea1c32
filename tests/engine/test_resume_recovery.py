"""--resume after a crash: a finished run without results is evaluated, a missing last_checkpoint
falls back to the newest complete checkpoint, nothing usable is a one-line refusal."""
import json
import os

import pytest
import torch

from aeroseg.config.loading import load_config
from conftest import TINY_CONFIG
from conftest import error_line as _error
from conftest import run_train_net as _run

pytestmark = pytest.mark.usefixtures("datasets_env")


def test_resume_of_a_finished_run_without_results_evaluates_it(fab, tmp_path, monkeypatch):
    from aeroseg.engine import Trainer

    name, root, opts = fab
    out = tmp_path / "run"

    def crash(cls, cfg, model, evaluators=None):
        raise KeyboardInterrupt("killed during the final evaluation")

    monkeypatch.setattr(Trainer, "test", classmethod(crash))
    assert _run(out, *opts) == 130
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


def test_resume_without_last_checkpoint_continues_from_the_newest_complete_one(tmp_path, capsys):
    out = tmp_path / "run"
    opts = ("SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()")
    assert _run(out, *opts) == 0
    os.remove(out / "model_final.pth")
    os.remove(out / "model_0000002.pth")
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
    os.remove(out / "model_final.pth")
    assert _run(out, *opts, flags=("--resume",)) == 0
    assert "last_checkpoint is empty" in (out / "log.txt").read_text()


def test_resume_refuses_when_no_checkpoint_is_complete(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    opts = ("SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()")
    (out / "config.yaml").write_text(load_config(str(TINY_CONFIG), opts).dump())  # the run's record
    (out / "model_0000004.pth").write_bytes(b"\x00" * 10)
    assert _run(out, *opts, flags=("--resume",)) == 2
    err = _error(capsys)
    assert "model_0000004.pth" in err and "none of them" in err
    assert (out / "model_0000004.pth").read_bytes() == b"\x00" * 10


def test_empty_weights_file_names_the_reason(tmp_path, capsys):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert _run(tmp_path / "out", "MODEL.WEIGHTS", str(empty), flags=("--eval-only",)) == 2
    err = _error(capsys)
    assert str(empty) in err and "empty (0 bytes)" in err
