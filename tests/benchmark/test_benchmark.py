"""The measuring code of tools/benchmark.py: FLOP counts, timers, MFU, and the JSON it writes."""
import json
import os
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aeroseg.benchmark.measure import (
    ModuleTimer,
    count_flops,
    group_flops,
    matmul_peak_flops,
    summarize_times,
)
from aeroseg.utils.errors import AerOSegError
from conftest import TINY_CONFIG


def _cli():
    from aeroseg.benchmark.cli import main

    return main


def _mlp():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_flops_of_a_linear_model_are_twice_the_multiply_adds():
    model = _mlp()
    x = torch.randn(3, 8)
    total, per_module = count_flops(lambda: model(x))
    first, second = 2 * 3 * 8 * 16, 2 * 3 * 16 * 4  # 2 x (batch x in x out)
    assert total == first + second
    groups = group_flops(model, per_module, {"first": lambda n, m: n == "0", "second": lambda n, m: n == "2"})
    assert groups == {"first": first, "second": second}


def test_fused_cpu_attention_is_counted():
    q, k, v = (torch.randn(1, 2, 5, 4) for _ in range(3))
    total, _ = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    assert total == 2 * (2 * 1 * 2 * 5 * 4 * 5)  # q k^T and attn v: 2 x (B H S D S) each


def test_multihead_attention_fast_path_counts_what_the_training_path_counts():
    # nn.MultiheadAttention runs one fused kernel at inference (open_clip's CLIP blocks) and
    # separate matmuls + SDPA in training; both must count the same, cross-attention included.
    attention = nn.MultiheadAttention(16, 4, batch_first=True)
    query, memory = torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    counts = {}
    for training in (False, True):
        attention.train(training)
        with torch.no_grad():
            counts[training], _ = count_flops(lambda: attention(query, memory, memory, need_weights=False))
    # q: 2*B*L*E*E, k and v: 2*B*S*E*E each, out: 2*B*L*E*E; q k^T and attn v: 2*B*L*S*E each
    expected = 2 * 2 * 16 * 16 * (5 + 3 + 3 + 5) + 2 * 2 * (2 * 5 * 3 * 16)
    assert counts == {False: expected, True: expected}


def test_matmul_peak_is_a_plausible_throughput():
    peak = matmul_peak_flops(torch.device("cpu"), "fp32", size=256, repeats=2, min_seconds=0.01)
    assert peak["size"] == 256 and peak["seconds_per_gemm"] > 0
    assert peak["flops_per_s"] == pytest.approx(2 * 256 ** 3 / peak["seconds_per_gemm"])
    assert 1e8 < peak["flops_per_s"] < 1e15


class _Slow(nn.Module):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


def _helper(x):
    time.sleep(0.02)
    return x


def test_module_timer_attributes_time_to_groups_and_restores_functions():
    import sys

    model = nn.Sequential(_Slow(0.05), nn.Sequential(_Slow(0.03), _Slow(0.01)), nn.Linear(2, 2))
    this = sys.modules[__name__]
    original = this._helper
    groups = {"first": lambda n, m: n == "0", "second": lambda n, m: n == "1"}
    with ModuleTimer(model, groups, {"helper": [(this, "_helper")]}, device=torch.device("cpu")) as timer:
        assert this._helper is not original and this._helper.__wrapped__ is original
        timer.start_run()
        model(torch.zeros(1, 2))
        this._helper(0)
        times = timer.end_run()
    assert this._helper is original  # unpatched on exit
    assert timer.groups == {"first": ["0"], "second": ["1"]}  # outermost matches only: nested ones count once
    # sleep() lasts at least what it is asked for (more on a loaded machine)
    assert times["first"] >= 0.05 and times["second"] >= 0.04 and times["helper"] >= 0.02
    assert set(times) == {"first", "second", "helper"}
    assert len(timer.runs) == 1


def test_summarize_times():
    s = summarize_times([3.0, 1.0, 2.0])
    assert (s["median_s"], s["min_s"], s["max_s"], s["runs"]) == (2.0, 1.0, 3.0, 3)


def test_benchmark_json_on_the_tiny_model(tmp_path):
    main = _cli()
    out = tmp_path / "bench.json"
    assert main(["--config-file", str(TINY_CONFIG), "--batch-size", "2", "--runs", "2", "--warmup", "1",
                 "--matmul-size", "256", "--compare-precision", "bf16", "--compare", "MODEL.SAM.INPUT_SIZE", "32",
                 "--json", str(out), "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]) == 0
    r = json.loads(out.read_text())
    assert r["batch_size"] == 2 and r["precision"] == "fp32" and r["num_classes"] == 6
    assert r["matmul_peak"]["flops_per_s"] > 0
    inference, train = r["inference"], r["train"]
    for mode in (inference, train):
        assert mode["runs"] == 2 and mode["min_s"] <= mode["median_s"] <= mode["max_s"]
        assert mode["images_per_s"] == pytest.approx(2 / mode["median_s"])
        assert 0 < mode["mfu"] <= 1.5
        assert mode["achieved_flops_per_s"] == pytest.approx(2 * mode["flops_per_image"] / mode["median_s"])
        assert mode["mfu"] == pytest.approx(mode["achieved_flops_per_s"] / r["matmul_peak"]["flops_per_s"])
        assert mode["peak_memory_bytes"] > 50 * 2 ** 20  # a Python process with torch loaded
        groups = mode["forward_flops_per_image_by_group"]
        assert all(v >= 0 for v in groups.values())
        assert sum(groups.values()) == pytest.approx(mode["forward_flops_per_image"])
        for part in ("clip", "guidance_encoder", "correlation", "spatial_refinement", "class_refinement", "decoder"):
            assert groups[part] > 0 and mode["breakdown_s"][part] > 0
        b = mode["breakdown_s"]
        in_forward = [g for g in b if g not in ("forward", "backward", "optimizer_step")]
        assert sum(b[g] for g in in_forward) == pytest.approx(b["forward"], rel=1e-6)
        assert 0 < mode["head_share_of_forward"] < 1
    # All of inference's FLOPs are inside named groups; the text tower is cached, so not counted.
    assert inference["forward_flops_per_image_by_group"]["other"] == 0
    assert "text_encoder" not in inference["breakdown_s"]
    # Training: the text tower runs (trainable q/v), back-projection and losses are in the forward,
    # and backward costs about twice the forward (no input gradient for frozen parts: less).
    assert train["forward_flops_per_image_by_group"]["back_projection"] > 0
    assert train["forward_flops_per_image_by_group"]["text_encoder"] > 0
    assert 1.5 * train["forward_flops_per_image"] < train["flops_per_image"] < 3.5 * train["forward_flops_per_image"]
    b = train["breakdown_s"]
    # median of 2 runs = their mean, so the parts of a step add up to the step (zero_grad aside)
    assert b["forward"] + b["backward"] + b["optimizer_step"] == pytest.approx(train["median_s"], rel=0.1)
    # Without warm-up the FLOPs are counted on one image and scaled to the batch; the text tower
    # runs once per step whatever the batch, so it must not be scaled with it. This run counted on
    # the whole batch (warm-up 1): the ground truth for a count on one image of the same model.
    from aeroseg.benchmark import benchmark_config
    from conftest import tiny_cfg

    on_one = benchmark_config(tiny_cfg(), batch_size=2, runs=1, warmup=0, modes=("train",), rotation_batching=False,
                              matmul_size=64)["train"]
    assert on_one["flops_counted_on_batch"] == 1 and train["flops_counted_on_batch"] == 2
    text = train["text_tower_flops_per_step"]
    assert text == on_one["text_tower_flops_per_step"] and text > 0.5 * train["flops_per_image"]
    # equal up to the head's other once-per-batch terms (text guidance projection, class padding
    # token): 1e-4 of the total here, while the text tower is a quarter of a step's FLOPs
    assert on_one["flops_per_image"] == pytest.approx(train["flops_per_image"], rel=1e-3)
    assert on_one["forward_flops_per_image"] == pytest.approx(train["forward_flops_per_image"], rel=1e-3)
    by_group = train["forward_flops_per_image_by_group"]
    assert by_group == pytest.approx(on_one["forward_flops_per_image_by_group"], rel=1e-3, abs=1e5)
    assert 0 < by_group["text_encoder"] < text / 2  # its forward share, spread over the 2 images
    # comparisons in the same run: a smaller SAM input does fewer FLOPs; bf16 about the same FLOPs
    # (not exactly: under autocast some attention calls take PyTorch's unfused path, counted op by op)
    cc = r["config_comparison"]
    assert cc["opts"] == ["MODEL.SAM.INPUT_SIZE", "32"]
    assert cc["base"]["flops_per_image"] == inference["flops_per_image"]
    assert 0 < cc["with_opts"]["flops_per_image"] < cc["base"]["flops_per_image"]
    assert cc["speedup"] == pytest.approx(cc["base"]["median_s"] / cc["with_opts"]["median_s"])
    pc = r["precision_comparison"]
    assert pc["fp32"]["flops_per_image"] == inference["flops_per_image"]
    assert pc["bf16"]["flops_per_image"] == pytest.approx(pc["fp32"]["flops_per_image"], rel=0.1)
    assert pc["matmul_peak_bf16"]["dtype"] == "bf16" and 0 < pc["bf16"]["mfu"]
    rb = r["rotation_batching"]
    assert rb["speedup_batched_over_sequential"] == pytest.approx(
        rb["sequential"]["median_s"] / rb["batched"]["median_s"])


def test_benchmark_errors_are_one_line_and_come_before_the_run(capsys, tmp_path, monkeypatch):
    import aeroseg.benchmark.cli as cli

    def must_not_run(*args, **kwargs):
        raise AssertionError("the benchmark ran despite a bad argument")

    monkeypatch.setattr(cli, "benchmark_config", must_not_run)
    folder = tmp_path / "results"
    folder.mkdir()
    cases = [(["--runs", "0"], "--runs 0"), (["--batch-size", "0"], "--batch-size 0: expected a number >= 1"),
             (["--batch-size", "-2"], "--batch-size -2"), (["--threads", "-1"], "--threads -1"),
             (["--warmup", "-1"], "--warmup -1"), (["--matmul-size", "0"], "--matmul-size 0"),
             (["--json", str(folder)], f"--json {folder} is a folder"),
             (["SOLVER.IMS_PER_BATCH"], "KEY VALUE pairs"),  # was an AssertionError traceback
             (["MODEL.AEROSEG.FEATUR", "3"], "MODEL.AEROSEG.FEATUR"),
             (["SOLVER.IMS_PER_BATCH", "0"], "SOLVER.IMS_PER_BATCH=0"),
             (["--compare", "MODEL.SAM.INPUT_SIZ", "512"], "--compare: Non-existent key: MODEL.SAM.INPUT_SIZ")]
    for extra, text in cases:
        assert cli.main(["--config-file", str(TINY_CONFIG), *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and text in err and "\n" not in err, (extra, err)
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        if not os.access(read_only, os.W_OK):  # root writes anywhere
            assert cli.main(["--config-file", str(TINY_CONFIG), "--json", str(read_only / "b.json")]) == 2
            assert "is not writable" in capsys.readouterr().err
    finally:
        read_only.chmod(0o700)
    # the runner itself refuses 0 (it used to fall back to SOLVER.IMS_PER_BATCH)
    from aeroseg.benchmark import benchmark_config
    from aeroseg.config.loading import load_config

    with pytest.raises(AerOSegError, match="--batch-size 0"):
        benchmark_config(load_config(str(TINY_CONFIG)), batch_size=0, modes=["inference"], runs=1, warmup=0,
                         rotation_batching=False)


@pytest.mark.skipif(not hasattr(torch, "compile") or not hasattr(nn.Module, "compile"),
                    reason="torch.compile / nn.Module.compile unavailable in this torch")
def test_compiled_blocks_give_the_eager_outputs():
    """MODEL.COMPILE compiles the blocks in place; outputs and state-dict keys do not change.

    Compiling every block of even the tiny model takes minutes on 2 cores, so the outputs are
    compared with the decoder compiled under the "eager" backend (Dynamo's graph capture without
    code generation); the config path is checked to mark every block for compilation
    (compilation itself is lazy).
    """
    from aeroseg.modeling.build import compile_blocks
    from conftest import build_tiny, random_batch

    eager = build_tiny().eval()
    compiled = build_tiny().eval()
    names = compile_blocks(compiled, "eager", parts=("head.decoder", "no_such.module"))
    assert names == ["head.decoder"]  # paths absent from the model are skipped
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    batch = random_batch(2)
    with torch.no_grad():
        for out_c, out_e in zip(compiled(batch), eager(batch)):
            torch.testing.assert_close(out_c["sem_seg"], out_e["sem_seg"], rtol=1e-4, atol=1e-5)

    model = build_tiny("MODEL.COMPILE", "True", "MODEL.COMPILE_BACKEND", "eager")
    blocks = [*model.clip_backbone.clip.visual.transformer.resblocks, *model.guidance_encoder.encoder.blocks,
              model.head.correlation_embed, *model.head.refinement, model.head.decoder]
    assert all(b._compiled_call_impl is not None for b in blocks)
    assert build_tiny().head.decoder._compiled_call_impl is None  # off by default

