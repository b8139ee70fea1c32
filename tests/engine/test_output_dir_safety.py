"""A run's output folder: locked while in use, and never left corrupted by a full disk, a read-only
folder or a killed save."""
import json
import os
import signal
import time

import pytest
import torch

from conftest import error_line as _error
from conftest import run_train_net as _run

pytestmark = pytest.mark.usefixtures("datasets_env")


def _hold_lock(path, ready):
    from aeroseg.engine.output_lock import acquire_output_dir_lock

    acquire_output_dir_lock(path)
    ready.set()
    time.sleep(120)


def test_output_dir_is_locked_for_the_run_and_a_stale_lock_is_taken_over(tmp_path, capsys):
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


def test_lock_refusal_with_several_processes_is_one_line(tmp_path, capfd, monkeypatch):
    import multiprocessing

    from aeroseg.engine import train_net

    out = tmp_path / "run"
    out.mkdir()
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=_hold_lock, args=(str(out), ready), daemon=True)
    holder.start()
    try:
        assert ready.wait(60)
        opts = ("SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()")
        # refused by the launching process before any process is spawned
        assert _run(out, *opts, flags=("--num-gpus", "2")) == 2
        err = _error(capfd)
        assert f"PID {holder.pid}" in err and "in use by another run" in err
        # and by the spawned main process (if another run takes the folder after that check): one line too
        monkeypatch.setattr(train_net, "precheck_output_dir", lambda cfg, args: None)
        assert _run(out, *opts, flags=("--num-gpus", "2")) == 2
        err = _error(capfd)  # (the spawned processes write to the file descriptor)
        assert f"PID {holder.pid}" in err and "in use by another run" in err
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()


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
    assert _run(out, *opts) == 130
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
