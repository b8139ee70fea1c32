"""Learning rates of every parameter group over a whole run (SOLVER.*), checked against closed forms.

Groups (paper Sec. 4.2): CLIP's trainable parameters at BASE_LR x CLIP_MULTIPLIER, a fine-tuned
guidance encoder at BASE_LR x GUIDANCE_MULTIPLIER, everything else at BASE_LR; all follow the
same schedule multiplier f(i). With W = WARMUP_ITERS, M = MAX_ITER, w = WARMUP_FACTOR
(detectron2's semantics, which the code follows):
  cosine      main(i) = e + (1 - e) (1 + cos(pi i / M)) / 2,  e = BASE_LR_END / BASE_LR
  poly        main(i) = (1 - i / M) ** POLY_LR_POWER
  multistep   main(i) = GAMMA ** #{s in STEPS : s <= i}
  constant    main(i) = 1
  f(i) = main(i) for i >= W; linear warmup f(i) = w + (main(W) - w) i / W; constant warmup f(i) = w.
"""
import math

import pytest
from torch import nn

from aeroseg.checkpoint import AerOSegCheckpointer
from aeroseg.solver import build_lr_scheduler, build_optimizer
from conftest import tiny_cfg

BASE_LR, CLIP_MULT, GUIDANCE_MULT = 1e-3, 0.01, 0.1
M = 40


class _ThreePartModel(nn.Module):
    """Parameter names as in AerOSeg: ``clip_backbone.*``, ``guidance_encoder.*``, the head."""

    def __init__(self):
        super().__init__()
        self.clip_backbone = nn.Linear(2, 2)
        self.guidance_encoder = nn.Linear(2, 2)
        self.decoder = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))


def _cfg(schedule, *opts):
    return tiny_cfg("SOLVER.LR_SCHEDULER_NAME", schedule, "SOLVER.BASE_LR", str(BASE_LR),
                    "SOLVER.CLIP_MULTIPLIER", str(CLIP_MULT), "SOLVER.GUIDANCE_MULTIPLIER", str(GUIDANCE_MULT),
                    "SOLVER.MAX_ITER", str(M), "SOLVER.BASE_LR_END", "0.0", "SOLVER.STEPS", "(12, 30)",
                    "SOLVER.GAMMA", "0.1", "SOLVER.POLY_LR_POWER", "0.9", "SOLVER.WARMUP_ITERS", "0",
                    "SOLVER.WARMUP_FACTOR", "0.001", "SOLVER.WARMUP_METHOD", "linear", "SOLVER.OPTIMIZER", "ADAMW",
                    *opts)


def _main(cfg, i):
    s = cfg.SOLVER
    name = s.LR_SCHEDULER_NAME
    if name == "WarmupCosineLR":
        end = s.BASE_LR_END / s.BASE_LR
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * i / s.MAX_ITER))
    if name == "WarmupPolyLR":
        return (1 - i / s.MAX_ITER) ** s.POLY_LR_POWER
    if name == "WarmupMultiStepLR":
        return s.GAMMA ** sum(step <= i for step in s.STEPS)
    assert name == "WarmupConstantLR"
    return 1.0


def _factor(cfg, i):
    s = cfg.SOLVER
    if i >= s.WARMUP_ITERS:
        return _main(cfg, i)
    if s.WARMUP_METHOD == "constant":
        return s.WARMUP_FACTOR
    return s.WARMUP_FACTOR + (_main(cfg, s.WARMUP_ITERS) - s.WARMUP_FACTOR) * i / s.WARMUP_ITERS


def _part_lrs(optimizer):
    """{"clip": lr, "guidance": lr, "head": lr}; every group of a part must agree."""
    out = {}
    for group in optimizer.param_groups:
        part = group["name"].split("/")[0]
        assert out.setdefault(part, group["lr"]) == group["lr"], group["name"]
    return out


def _expected(cfg, i):
    f = _factor(cfg, i)
    return {"clip": BASE_LR * CLIP_MULT * f, "guidance": BASE_LR * GUIDANCE_MULT * f, "head": BASE_LR * f}


def _assert_lrs(optimizer, cfg, i):
    got, want = _part_lrs(optimizer), _expected(cfg, i)
    assert set(got) == {"clip", "guidance", "head"}
    for part in want:
        assert got[part] == pytest.approx(want[part], rel=1e-6, abs=1e-15), (cfg.SOLVER.LR_SCHEDULER_NAME, i, part)


SCHEDULES = [
    ("WarmupCosineLR", ()),
    ("WarmupCosineLR", ("SOLVER.BASE_LR_END", "0.0002")),  # a floor of 0.2 x BASE_LR
    ("WarmupPolyLR", ()),
    ("WarmupPolyLR", ("SOLVER.POLY_LR_POWER", "2.0")),
    ("WarmupMultiStepLR", ()),
    ("WarmupConstantLR", ()),
]
WARMUPS = [
    ("SOLVER.WARMUP_ITERS", "0"),
    ("SOLVER.WARMUP_ITERS", "8", "SOLVER.WARMUP_FACTOR", "0.1", "SOLVER.WARMUP_METHOD", "linear"),
    ("SOLVER.WARMUP_ITERS", "5", "SOLVER.WARMUP_FACTOR", "0.25", "SOLVER.WARMUP_METHOD", "constant"),
]


@pytest.mark.parametrize("warmup", WARMUPS, ids=["no-warmup", "linear-warmup", "constant-warmup"])
@pytest.mark.parametrize("schedule,extra", SCHEDULES, ids=[s + "".join(e[1:]) for s, e in SCHEDULES])
def test_every_group_follows_the_closed_form_curve(schedule, extra, warmup):
    cfg = _cfg(schedule, *extra, *warmup)
    optimizer = build_optimizer(cfg, _ThreePartModel())
    scheduler = build_lr_scheduler(cfg, optimizer)
    for i in range(M):  # the lr used by iteration i (the trainer steps the scheduler after it)
        _assert_lrs(optimizer, cfg, i)
        optimizer.step()
        scheduler.step()


def test_schedules_really_differ():
    """Guards the closed forms themselves: each schedule's curve is distinct at mid-run."""
    mids = [_factor(_cfg(name, *extra), 25) for name, extra in SCHEDULES]
    assert len(set(round(v, 9) for v in mids)) == len(SCHEDULES)


@pytest.mark.parametrize("schedule", ["WarmupCosineLR", "WarmupMultiStepLR"])
def test_group_learning_rates_continue_the_curve_after_a_resume(tmp_path, schedule):
    """Stop at iteration 17 (inside the run, after warmup), save with the trainer's checkpointer,
    rebuild everything from the config as a resumed run does, load, and go on to the end."""
    cfg = _cfg(schedule, "SOLVER.WARMUP_ITERS", "6", "SOLVER.WARMUP_FACTOR", "0.1")
    model = _ThreePartModel()
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for i in range(17):
        optimizer.step()
        scheduler.step()
    saver = AerOSegCheckpointer(model, str(tmp_path), optimizer=optimizer, scheduler=scheduler)
    saver.save("model_0000016", iteration=16)

    model2 = _ThreePartModel()
    optimizer2 = build_optimizer(cfg, model2)
    scheduler2 = build_lr_scheduler(cfg, optimizer2)
    _assert_lrs(optimizer2, cfg, 0)  # a fresh run starts at the beginning of the curve
    extra = AerOSegCheckpointer(model2, str(tmp_path), optimizer=optimizer2, scheduler=scheduler2).resume_or_load(
        "", resume=True)
    assert extra["iteration"] == 16
    for i in range(17, M):
        _assert_lrs(optimizer2, cfg, i)
        optimizer2.step()
        scheduler2.step()


def test_real_model_groups_over_time():
    """The tiny AerOSeg with a fine-tuned SAM: CLIP q/v, SAM and head groups after 10 steps."""
    from conftest import build_tiny

    cfg = _cfg("WarmupCosineLR", "SOLVER.WARMUP_ITERS", "4", "SOLVER.WARMUP_FACTOR", "0.1", "MODEL.SAM.FROZEN", "False")
    model = build_tiny("MODEL.SAM.FROZEN", "False")
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    names = {n: g["name"].split("/")[0] for g in optimizer.param_groups for n in g["param_names"]}
    clip = sorted(n for n, part in names.items() if part == "clip")
    # only q (original0) and v (original2) of the split in_proj are trained, never k (original1)
    assert clip and all(n.endswith(("original0", "original2")) for n in clip)
    assert all(n.startswith("clip_backbone.") for n in clip)
    assert names["guidance_encoder.encoder.blocks.0.attn.qkv.weight"] == "guidance"
    assert names["head.decoder.head.weight"] == "head"
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    _assert_lrs(optimizer, cfg, 10)
