"""A run folder belongs to one run: --resume with another config, a fresh run into a used folder and
--eval-only of foreign weights are refused before anything there changes (aeroseg/engine/run_folder.py)."""
import os

import pytest
import torch
import yaml

from aeroseg.engine import Trainer
from conftest import error_line as _error
from conftest import run_train_net as _run

pytestmark = pytest.mark.usefixtures("datasets_env")

OPTS = ("SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()")


def _snapshot(folder):
    """name -> (size, mtime) of everything in ``folder`` (recursively)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if name != ".aeroseg_run.lock":
                stat = os.stat(path)
                out[os.path.relpath(path, folder)] = (stat.st_size, stat.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory, datasets_dir):
    """A finished 3-iteration run (checkpoints 0, 1, final): copied by each test that changes it."""
    previous = os.environ.get("AEROSEG_DATASETS")
    os.environ["AEROSEG_DATASETS"] = str(datasets_dir)
    out = tmp_path_factory.mktemp("finished") / "run"
    try:
        assert _run(out, *OPTS) == 0
    finally:
        if previous is None:
            del os.environ["AEROSEG_DATASETS"]
        else:
            os.environ["AEROSEG_DATASETS"] = previous
    return out


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_resume_with_a_result_changing_key_is_refused_and_changes_nothing(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path / "run")
    before = _snapshot(out)
    for key, value in (("SOLVER.BASE_LR", "0.1"), ("DATASETS.TRAIN", "('synthetic_aerial_val',)"),
                       ("MODEL.AEROSEG.BCE_WEIGHT", "2.0")):
        assert _run(out, *OPTS, key, value, flags=("--resume",)) == 2
        err = _error(capsys)
        assert f"--resume: the config differs from the run in {out} in keys that change the result" in err
        assert key in err and value.strip("()',") in err
        # not even with the option for harmless changes
        assert _run(out, *OPTS, key, value, flags=("--resume", "--allow-config-changes")) == 2
        assert key in _error(capsys)
    assert _snapshot(out) == before  # config.yaml, log.txt, metrics.json, checkpoints: untouched


def test_harmless_changes_need_the_option_and_are_then_recorded(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path / "run")
    before = _snapshot(out)
    harmless = ("TEST.EVAL_PERIOD", "7", "DATALOADER.NUM_WORKERS", "1")
    assert _run(out, *OPTS, *harmless, flags=("--resume",)) == 2
    err = _error(capsys)
    assert "TEST.EVAL_PERIOD 0 -> 7" in err and "DATALOADER.NUM_WORKERS 0 -> 1" in err
    assert "--allow-config-changes" in err
    assert _snapshot(out) == before
    assert _run(out, *OPTS, *harmless, flags=("--resume", "--allow-config-changes")) == 0
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["TEST"]["EVAL_PERIOD"] == 7 and recorded["SOLVER"]["BASE_LR"] == 0.001
    # the same config again: nothing to accept
    assert _run(out, *OPTS, *harmless, flags=("--resume",)) == 0


def test_a_fresh_run_into_a_used_folder_is_refused_or_starts_clean_with_overwrite(finished, tmp_path, capsys,
                                                                                  monkeypatch):
    out = _copy(finished, tmp_path / "run")
    (out / "notes.txt").write_text("the user's own file")
    results = out / "inference" / "old_val" / "sem_seg_results.json"
    results.parent.mkdir(parents=True)
    results.write_text('{"metrics": {}}')
    before = _snapshot(out)
    new = ("SOLVER.BASE_LR", "0.01")
    assert _run(out, *OPTS, *new) == 2
    err = _error(capsys)
    assert f"OUTPUT_DIR {out} holds another run" in err
    assert "--resume" in err and "another OUTPUT_DIR" in err and "--overwrite" in err
    assert _snapshot(out) == before
    # --overwrite: the old run's outputs go, the user's file stays, the new run starts from an empty folder
    stopped = {"n": 0}
    original = Trainer.run_step

    def stop_after_two(self, batch):
        stopped["n"] += 1
        if stopped["n"] == 3:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "run_step", stop_after_two)
    assert _run(out, *OPTS, *new, flags=("--overwrite",)) == 130
    monkeypatch.setattr(Trainer, "run_step", original)
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert not results.exists() and not (out / "model_final.pth").exists()
    assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_0000000.pth", "model_0000001.pth"]
    assert torch.load(out / "model_0000001.pth", weights_only=True)["iteration"] == 1
    assert "deleted the earlier run's outputs" in (out / "log.txt").read_text()
    assert (out / "log.txt").read_text().count("Rank 0 of 1") == 1  # the old log went too
    # the interrupted new run resumes as itself, with its own config
    assert _run(out, *OPTS, *new, flags=("--resume",)) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["SOLVER"]["BASE_LR"] == 0.01


def test_eval_only_into_a_training_run_folder(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path / "run")
    record = (out / "config.yaml").read_text()
    foreign = tmp_path / "other.pth"
    foreign.write_bytes((out / "model_0000000.pth").read_bytes())
    evaluate = ("DATASETS.TEST", "('synthetic_aerial_val',)")
    assert _run(out, *OPTS, *evaluate, "MODEL.WEIGHTS", str(foreign), flags=("--eval-only",)) == 2
    assert "is not one of its checkpoints" in _error(capsys)
    assert not (out / "inference").exists()
    # its own weights: evaluated there, the record of the training run left as it is
    assert _run(out, *OPTS, *evaluate, "MODEL.WEIGHTS", str(out / "model_final.pth"), flags=("--eval-only",)) == 0
    assert (out / "inference" / "synthetic_aerial_val" / "sem_seg_results.json").is_file()
    assert (out / "config.yaml").read_text() == record
    # another model is refused even with its weights
    assert _run(out, *OPTS, *evaluate, "MODEL.WEIGHTS", str(out / "model_final.pth"),
                "MODEL.AEROSEG.DECODER_ATTENTION_ACTIVATION", "sigmoid", flags=("--eval-only",)) == 2
    assert "MODEL.AEROSEG.DECODER_ATTENTION_ACTIVATION" in _error(capsys)


def test_a_drawn_seed_is_recorded_and_reused_by_resume(tmp_path, monkeypatch, capsys):
    opts = ("SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2", "DATASETS.TEST", "()", "SEED", "-1")
    original = Trainer.run_step
    calls = {"n": 0}

    def crash_at_four(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "run_step", crash_at_four)
    assert _run(tmp_path / "resumed", *opts) == 130
    assert "stopped at iteration 4 of 4" in capsys.readouterr().err
    monkeypatch.setattr(Trainer, "run_step", original)
    seed = yaml.safe_load((tmp_path / "resumed" / "config.yaml").read_text())["SEED"]
    assert isinstance(seed, int) and seed >= 0
    assert _run(tmp_path / "resumed", *opts, flags=("--resume",)) == 0
    assert yaml.safe_load((tmp_path / "resumed" / "config.yaml").read_text())["SEED"] == seed
    # an uninterrupted run with that seed gives the same weights
    assert _run(tmp_path / "full", *opts[:-1], str(seed)) == 0
    full = torch.load(tmp_path / "full" / "model_final.pth", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "resumed" / "model_final.pth", weights_only=True)["model"]
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    # and a resume with an explicit other seed is a result-changing change
    assert _run(tmp_path / "resumed", *opts[:-1], str(seed + 1), flags=("--resume",)) == 2
    assert "SEED" in _error(capsys)


def test_submitted_runs_carry_the_folder_options_and_a_requeue_continues_instead_of_clearing(tmp_path):
    import argparse

    from aeroseg.engine.submit import TrainJob, train_arguments

    args = argparse.Namespace(config_file="cfg.yaml", resume=False, eval_only=False, engine="aeroseg",
                              overwrite=True, allow_config_changes=False, opts=["SOLVER.MAX_ITER", "3"])
    argv = train_arguments(args, tmp_path / "run")
    assert "--overwrite" in argv and argv[-2:] == ["OUTPUT_DIR", str(tmp_path / "run")]
    # SLURM requeued the job itself: the next attempt resumes the cleared folder's run, never clears it again
    again = TrainJob(argv).attempt_argv({"SLURM_RESTART_COUNT": "1"})
    assert again[0] == "--resume" and "--overwrite" not in again
    assert again[-4:] == ["SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(tmp_path / "run")]
    assert TrainJob(argv).attempt_argv({}) == argv  # the first attempt as submitted
