import json
import math
import os

import pytest
import torch

from aeroseg.engine import Trainer
from aeroseg.solver import get_param_groups
from conftest import build_tiny, tiny_cfg
from conftest import run_train_net as _run

from aeroseg.engine import train_net


@pytest.fixture(autouse=True)
def _datasets_env(datasets_dir, monkeypatch):
    monkeypatch.setenv("AEROSEG_DATASETS", str(datasets_dir))


def _final_state(out):
    return torch.load(os.path.join(out, "model_final.pth"), weights_only=True)["model"]


# ----------------------------------------------------------------------------- solver
def test_param_groups_have_the_papers_learning_rates():
    cfg = tiny_cfg("SOLVER.BASE_LR", "0.0002", "SOLVER.CLIP_MULTIPLIER", "0.01", "SOLVER.WEIGHT_DECAY", "0.05")
    model = build_tiny()
    groups = get_param_groups(model, cfg)
    by_name = {n: g for g in groups for n in g["param_names"]}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(by_name) == sorted(trainable)  # every trainable parameter exactly once
    for name, group in by_name.items():
        expected = 2e-6 if name.startswith("clip_backbone.") else 2e-4
        assert group["lr"] == pytest.approx(expected), name
    assert not any(n.startswith("guidance_encoder.") for n in by_name)  # frozen SAM
    assert by_name["head.refinement.0.spatial.blocks.0.norm1.weight"]["weight_decay"] == 0.0  # norms
    with_bias = build_tiny("MODEL.AEROSEG.SPATIAL_RELATIVE_POSITION_BIAS", "True")  # off by default (CAT-Seg)
    bias_groups = {n: g for g in get_param_groups(with_bias, cfg) for n in g["param_names"]}
    assert bias_groups["head.refinement.0.spatial.blocks.0.attn.relative_position_bias_table"]["weight_decay"] == 0.0
    assert by_name["head.decoder.head.weight"]["weight_decay"] == 0.05
    tuned_sam = build_tiny("MODEL.SAM.FROZEN", "False")
    cfg.SOLVER.GUIDANCE_MULTIPLIER = 0.1
    lrs = [g["lr"] for g in get_param_groups(tuned_sam, cfg) if g["name"].startswith("guidance")]
    assert lrs and all(lr == pytest.approx(2e-5) for lr in lrs)


# ----------------------------------------------------------------------------- training runs
def test_short_run_writes_checkpoints_metrics_and_results(tmp_path):
    out = tmp_path / "run"
    assert _run(out, "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3", "TEST.EVAL_PERIOD", "0") == 0
    names = set(os.listdir(out))
    expected = {"config.yaml", "log.txt", "metrics.json", "last_checkpoint", "model_0000002.pth", "model_final.pth"}
    assert expected <= names
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert any(n.startswith("events.out.tfevents") for n in names)
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    train = [r for r in records if "loss_bce" in r]
    assert train[-1]["iteration"] == 5 and {"loss_sem", "total_loss", "lr", "time"} <= set(train[-1])
    final_eval = [r for r in records if "sem_seg/h-mIoU" in r]
    assert final_eval and final_eval[-1]["iteration"] == 5
    results = json.loads((out / "inference" / "synthetic_aerial_val" / "sem_seg_results.json").read_text())
    assert results["metrics"]["s-mIoU"] == pytest.approx(final_eval[-1]["sem_seg/s-mIoU"])
    ckpt = torch.load(out / "model_final.pth", weights_only=True)
    assert ckpt["iteration"] == 5 and {"model", "optimizer", "scheduler", "rng"} <= set(ckpt)
    assert "Engine: aeroseg" in (out / "log.txt").read_text()


def test_same_seed_gives_identical_weights(tmp_path):
    opts = ("SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "1")
    assert _run(tmp_path / "a", *opts) == 0 and _run(tmp_path / "b", *opts) == 0
    a, b = _final_state(tmp_path / "a"), _final_state(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _run(tmp_path / "c", *opts, "SEED", "1") == 0
    c = _final_state(tmp_path / "c")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_after_interruption_reaches_the_same_weights(tmp_path, monkeypatch, capsys):
    opts = ("SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3", "DATASETS.TEST", "()")
    assert _run(tmp_path / "full", *opts) == 0

    original = Trainer.run_step
    calls = {"n": 0}

    def crash_after_four(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated crash")
        return original(self, batch)

    monkeypatch.setattr(Trainer, "run_step", crash_after_four)
    assert _run(tmp_path / "resumed", *opts) == train_net.EXIT_INTERRUPTED  # Ctrl-C: one line, no traceback
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("interrupted: stopped at iteration 5 of 6") and "--resume" in err
    assert str(tmp_path / "resumed" / "model_0000002.pth") in err
    assert (tmp_path / "resumed" / "last_checkpoint").read_text() == "model_0000002.pth"
    monkeypatch.setattr(Trainer, "run_step", original)
    assert _run(tmp_path / "resumed", *opts, flags=("--resume",)) == 0
    full, resumed = _final_state(tmp_path / "full"), _final_state(tmp_path / "resumed")
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_eval_only_reproduces_the_end_of_training_metrics(tmp_path):
    out = tmp_path / "train"
    assert _run(out, "SOLVER.MAX_ITER", "5") == 0
    trained = json.loads((out / "inference" / "synthetic_aerial_val" / "sem_seg_results.json").read_text())
    ev = tmp_path / "eval"
    assert _run(ev, "MODEL.WEIGHTS", str(out / "model_final.pth"), flags=("--eval-only",)) == 0
    again = json.loads((ev / "inference" / "synthetic_aerial_val" / "sem_seg_results.json").read_text())
    assert again["metrics"] == trained["metrics"]
    assert again["confusion_matrix"] == trained["confusion_matrix"]


def test_command_line_errors_are_one_line(tmp_path, capsys):
    assert _run(tmp_path / "x", "MODEL.AEROSEG.FEATUR", "3") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "MODEL.AEROSEG.FEATUR" in err and "\n" not in err
    assert train_net.run(["--config-file", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err
    weights = tmp_path / "nope.pth"
    assert _run(tmp_path / "y", "MODEL.WEIGHTS", str(weights), flags=("--eval-only",)) == 2
    assert f"checkpoint {weights} does not exist" in capsys.readouterr().err


def test_detectron2_engine_needs_detectron2(tmp_path, capsys):
    from aeroseg.compat import detectron2_available

    if detectron2_available():
        pytest.skip("detectron2 is installed: covered by tests/engine/test_detectron2_integration.py")
    assert _run(tmp_path / "d2", flags=("--engine", "detectron2")) == 2
    assert "needs detectron2 installed" in capsys.readouterr().err


def test_two_process_ddp_matches_one_process(tmp_path):
    """--num-gpus 2 (gloo on CPU): IMS_PER_BATCH is global, ranks read disjoint halves of the same
    stream and gradients are averaged, so the weights match a single-process run. Plain SGD keeps
    the comparison tight (Adam amplifies float noise of near-zero gradients)."""
    opts = ("SOLVER.MAX_ITER", "3", "DATASETS.TEST", "()", "SOLVER.CHECKPOINT_PERIOD", "0",
            "SOLVER.OPTIMIZER", "SGD", "SOLVER.MOMENTUM", "0.0", "SOLVER.BASE_LR", "0.1",
            "SOLVER.CLIP_GRADIENTS.ENABLED", "False")  # clipped SGD steps would be too small to compare
    assert _run(tmp_path / "one", *opts) == 0
    assert _run(tmp_path / "two", *opts, flags=("--num-gpus", "2")) == 0
    assert (tmp_path / "two" / "log.txt.rank1").is_file()
    # every process' RNG states are saved (each rank is seeded SEED + rank, so they differ)
    states = torch.load(tmp_path / "two" / "model_final.pth", weights_only=True)["rng_all_ranks"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])
    one, two = _final_state(tmp_path / "one"), _final_state(tmp_path / "two")
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-3, atol=5e-4, msg=k)
    # the tolerance is meaningful: training on half the batch moves the weights much further
    assert _run(tmp_path / "half", *opts, "SOLVER.IMS_PER_BATCH", "2") == 0
    half = _final_state(tmp_path / "half")
    assert max((half[k] - one[k]).abs().max().item() for k in one if one[k].is_floating_point()) > 2e-3


def test_bf16_mixed_precision_run(tmp_path, monkeypatch):
    from aeroseg.utils import cpu_info

    monkeypatch.setattr(cpu_info, "has_native_bf16", lambda: False)  # as this AVX2 machine: a warning
    assert _run(tmp_path / "amp", "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()", "SOLVER.AMP.ENABLED", "True") == 0
    assert "SOLVER.AMP.ENABLED on a CPU without AVX512-BF16/AMX" in (tmp_path / "amp" / "log.txt").read_text()
    records = [json.loads(line) for line in (tmp_path / "amp" / "metrics.json").read_text().splitlines()]
    assert all(math.isfinite(r["total_loss"]) for r in records if "total_loss" in r)
    state = _final_state(tmp_path / "amp")
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())  # master weights stay fp32


def test_ctrl_c_during_an_evaluation_is_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(cls, cfg, model, evaluators=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "test", classmethod(interrupted))
    assert _run(tmp_path / "eval", flags=("--eval-only",)) == train_net.EXIT_INTERRUPTED
    err = capsys.readouterr().err.strip()
    assert err == ("interrupted: stopped during the evaluation of synthetic_aerial_val; results are written only "
                   "when an evaluation completes, so run the same command again")
    # and before the first checkpoint of a training run: nothing to resume
    monkeypatch.setattr(Trainer, "run_step", lambda self, batch: (_ for _ in ()).throw(KeyboardInterrupt))
    assert _run(tmp_path / "train", "SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()") == train_net.EXIT_INTERRUPTED
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted: stopped at iteration 1 of 4, before the first checkpoint") and "\n" not in err
