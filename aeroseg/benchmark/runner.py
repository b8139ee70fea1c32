"""Benchmark of an AerOSeg config: speed, memory, FLOPs and FLOP utilisation per mode.

:func:`benchmark_config` builds the model of a config with random weights (``PRETRAINED`` and
``CHECKPOINT`` forced to "" -- weights do not change the speed), feeds it a synthetic batch, and
returns a JSON-ready dict; ``tools/benchmark.py`` is its command line. See docs/PERFORMANCE.md
for how to read the result.
"""
import contextlib
import copy
import importlib
import logging
import math
import statistics
from typing import Dict, List, Optional, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..modeling import build_model, count_parameters
from .measure import (
    AEROSEG_FUNCTION_GROUPS,
    AEROSEG_MODULE_GROUPS,
    HEAD_GROUPS,
    PRECISIONS,
    ModuleTimer,
    autocast_context,
    environment,
    flop_counter,
    group_flops,
    matmul_peak_flops,
    peak_memory_bytes,
    peak_memory_reset,
    summarize_times,
    synchronize,
    time_runs,
)
from ..config.loading import merge_overrides
from ..config.validation import weightless_config
from ..utils.errors import ConfigError

__all__ = ["MODES", "benchmark_config", "random_init_config", "synthetic_batch"]

logger = logging.getLogger(__name__)

MODES = ("inference", "train")
# A copy of a config with every weight source cleared: the benchmark never reads weights.
random_init_config = weightless_config


def synthetic_batch(n: int, size: int, num_classes: int, device: torch.device, seed: int = 0) -> List[dict]:
    """``n`` random uint8 (3, size, size) images with random labels in [0, num_classes)."""
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8).to(device),
             "sem_seg": torch.randint(0, num_classes, (size, size), generator=g).to(device),
             "height": size, "width": size} for _ in range(n)]


def _function_targets(model) -> Dict[str, list]:
    targets = {group: [(importlib.import_module(target.split(":")[0]), target.split(":")[1]) for target in names]
               for group, names in AEROSEG_FUNCTION_GROUPS.items()}
    # The text tower runs through encode_text, not the backbone's forward: wrapped on the instance.
    targets["text_encoder"] = [(model.clip_backbone, "encode_text")]
    return targets


def _text_tower_step_flops(model) -> int:
    """Forward + backward FLOPs of one training step's text-tower pass (all classes, all prompts).

    Counted on a pass of its own: the step's backward cannot be split by module reliably. The
    pass builds the same graph as the step's (the loss only adds work after the embeddings), and
    its gradients are dropped.
    """
    params = [p for p in model.clip_backbone.clip.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    counter = flop_counter()
    with counter:
        model.clip_backbone.encode_text(model.vocabulary).sum().backward()
    for p, g in zip(params, saved):
        p.grad = g
    return int(counter.get_total_flops())


def _median_breakdown(runs: List[Dict[str, float]]) -> Dict[str, float]:
    groups = sorted({g for run in runs for g in run})
    return {g: statistics.median(run.get(g, 0.0) for run in runs) for g in groups}


def _measure_mode(model, batch, mode: str, *, device, precision: str, runs: int, warmup: int,
                  peak_flops: float) -> dict:
    """Time ``runs`` inference forwards or training steps (forward, backward, AdamW step)."""
    scaler = None
    if mode == "train":
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-6)
        with torch.no_grad():
            model.text_embeddings()  # a frozen text tower is cached after this; a trainable one runs every step
        if precision == "fp16" and device.type == "cuda":
            scaler = torch.amp.GradScaler("cuda")
    else:
        model.eval()
        with torch.no_grad():
            model.text_embeddings()  # cached across calls at inference: not part of a forward

    timer = ModuleTimer(model, AEROSEG_MODULE_GROUPS, _function_targets(model), device=device)

    counting: Dict[str, FlopCounterMode] = {}  # region -> active counter, only on the counting pass

    def region(name):
        """Time ``name``; on the counting pass also count its FLOPs with a counter of its own."""
        stack = contextlib.ExitStack()
        stack.enter_context(timer.record(name))
        if counting:
            counter = counting[name] = flop_counter()
            if name == "forward":
                timer.flop_counter = counter
            stack.enter_context(counter)
        return stack

    def step(inputs):
        if mode == "inference":
            with torch.no_grad(), region("forward"), autocast_context(device, precision):
                model(inputs)
            return
        with region("forward"), autocast_context(device, precision):
            losses = model(inputs)
            loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        with region("backward"):
            (scaler.scale(loss) if scaler else loss).backward()
        with timer.record("optimizer_step"):
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()

    with timer:
        # FLOPs: counted on one pass over the full batch, which doubles as the first warm-up run;
        # without warm-up, on a single image (FLOPs per image do not depend on the batch).
        flops_batch = batch if warmup >= 1 else batch[:1]
        counting["forward"] = None  # non-empty: region() counts
        timer.start_run()
        step(flops_batch)
        timer.end_run(keep=False)
        timer.flop_counter = None
        # Per-module FLOPs come from the forward only: FlopCounterMode's attribution of backward
        # operations to modules is unreliable (it double counts), its backward total is not.
        forward_counter = counting["forward"]
        total_flops = sum(int(c.get_total_flops()) for c in counting.values())
        forward_flops = int(forward_counter.get_total_flops())
        per_module = {name: int(sum(ops.values())) for name, ops in forward_counter.get_flop_counts().items()}
        counting.clear()
        flops_by_group = group_flops(model, per_module, AEROSEG_MODULE_GROUPS)
        for group, value in timer.function_flops.items():
            flops_by_group[group] = flops_by_group.get(group, 0) + int(value)
        flops_by_group["other"] = forward_flops - sum(flops_by_group.values())
        # Everything scales with the images except the text tower, which a training step runs once
        # for the whole batch (its embeddings are cached at inference): per step, the counted pass's
        # per-image FLOPs times the batch, plus the text tower's forward and backward once.
        text_forward = flops_by_group.get("text_encoder", 0)
        text_step = _text_tower_step_flops(model) if text_forward else 0
        per_image = 1.0 / len(flops_batch)
        step_flops = (total_flops - text_step) * per_image * len(batch) + text_step
        step_forward_flops = (forward_flops - text_forward) * per_image * len(batch) + text_forward

        memory_kind = peak_memory_reset(device)
        times = time_runs(lambda: step(batch), runs, max(warmup - (1 if warmup >= 1 else 0), 0), device, timer)
        peak_memory = peak_memory_bytes(device)

    stats = summarize_times(times)
    breakdown = _median_breakdown(timer.runs)
    forward = breakdown.get("forward", float("nan"))
    in_forward = [g for g in breakdown if g not in ("forward", "backward", "optimizer_step")]
    breakdown["forward_other"] = forward - sum(breakdown[g] for g in in_forward)
    head = sum(breakdown.get(g, 0.0) for g in HEAD_GROUPS)
    n = len(batch)
    flops_per_image = step_flops / n
    achieved = step_flops / stats["median_s"] if stats["runs"] else float("nan")
    by_group = {g: v * (1.0 / n if g == "text_encoder" else per_image) for g, v in flops_by_group.items()}
    return {
        **stats,
        "images_per_s": n / stats["median_s"] if stats["runs"] else float("nan"),
        "peak_memory_bytes": peak_memory,
        "peak_memory_kind": memory_kind,
        "breakdown_s": breakdown,
        "head_share_of_forward": head / forward if forward and not math.isnan(forward) else float("nan"),
        "flops_per_image": flops_per_image,
        "forward_flops_per_image": step_forward_flops / n,
        "forward_flops_per_image_by_group": by_group,
        "flops_counted_on_batch": len(flops_batch),
        "text_tower_flops_per_step": text_step,
        "achieved_flops_per_s": achieved,
        "mfu": achieved / peak_flops,
    }


def _rotation_batching(model, batch, *, device, precision: str, runs: int, warmup: int) -> dict:
    """Inference time of the CLIP backbone alone with the rotations in one batch vs one per pass.

    Only the CLIP forward depends on ``MODEL.CLIP.ROTATION_BATCHING``, so only it is timed.
    """
    backbone = model.clip_backbone
    was = backbone.batch_rotations
    model.eval()
    images = backbone.preprocess([item["image"] for item in batch])
    out = {}
    try:
        for name, batched in (("batched", True), ("sequential", False)):
            backbone.batch_rotations = batched

            def run():
                with torch.no_grad(), autocast_context(device, precision):
                    backbone(images)
            out[name] = summarize_times(time_runs(run, runs, warmup, device))
    finally:
        backbone.batch_rotations = was
    out["speedup_batched_over_sequential"] = out["sequential"]["median_s"] / out["batched"]["median_s"]
    return out


def benchmark_config(cfg, *, device: Optional[str] = None, batch_size: Optional[int] = None,
                     runs: int = 3, warmup: int = 1, modes: Sequence[str] = MODES, precision: str = "fp32",
                     rotation_batching: bool = True, matmul_size: Optional[int] = None, seed: int = 0,
                     compare_precision: Optional[str] = None, compare_opts: Sequence[str] = ()) -> dict:
    """Measure the model of ``cfg`` (random init) on a synthetic batch; see the module docstring.

    Args:
        device: "cpu" or "cuda" (default: ``MODEL.DEVICE``).
        batch_size: images per forward (default ``SOLVER.IMS_PER_BATCH``).
        runs, warmup: timed and untimed repetitions per mode.
        modes: subset of ("inference", "train").
        precision: "fp32", or "bf16"/"fp16" autocast; the matmul peak is measured in the same dtype.
        rotation_batching: also time the CLIP backbone with batched vs sequential rotations.
        matmul_size: side of the GEMM measuring the peak (default 2048 on CPU, 8192 on CUDA).
        compare_precision: also time the inference forward of the same model in this precision
            (``result["precision_comparison"]``, with its own matmul peak).
        compare_opts: config overrides ``[KEY, VALUE, ...]``: also time the inference forward of a
            second model built with them (``result["config_comparison"]``), e.g.
            ``["MODEL.SAM.INPUT_SIZE", "512"]``.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: expected one of {sorted(PRECISIONS)}")
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ConfigError(f"--mode {list(modes)}: expected some of {list(MODES)}")
    if runs < 1 or warmup < 0:
        raise ConfigError(f"--runs {runs} / --warmup {warmup}: expected runs >= 1 and warmup >= 0")
    cfg = random_init_config(cfg, device)
    torch.manual_seed(seed)
    model = build_model(cfg)
    device_t = model.device
    n = int(cfg.SOLVER.IMS_PER_BATCH if batch_size is None else batch_size)
    if n < 1:
        raise ConfigError(f"--batch-size {n}: expected a number of images >= 1")
    size = int(cfg.INPUT.CROP.SIZE[0])
    num_classes = len(model.vocabulary)
    batch = synthetic_batch(n, size, num_classes, device_t, seed)
    peak = matmul_peak_flops(device_t, precision, matmul_size or (8192 if device_t.type == "cuda" else 2048))
    result = {
        "batch_size": n,
        "image_size": size,
        "num_classes": num_classes,
        "device": str(device_t),
        "precision": precision,
        "parameters": count_parameters(model),
        "trainable_parameters": count_parameters(model, True),
        "flops_convention": "FLOPs = 2 x multiply-adds, counted by torch.utils.flop_counter.FlopCounterMode "
                            "(matmuls, convolutions, attention; elementwise ops not counted)",
        "matmul_peak": peak,
        "environment": environment(),
        "config": {"MODEL.SAM.INPUT_SIZE": int(cfg.MODEL.SAM.INPUT_SIZE),
                   "MODEL.GUIDANCE.ENCODER": cfg.MODEL.GUIDANCE.ENCODER,
                   "MODEL.CLIP.NAME": cfg.MODEL.CLIP.NAME,
                   "MODEL.CLIP.ROTATION_BATCHING": cfg.MODEL.CLIP.ROTATION_BATCHING},
    }
    for mode in modes:
        logger.info("benchmark: %s, batch %d, %s, %d runs after %d warm-up", mode, n, precision, runs, warmup)
        result[mode] = _measure_mode(model, batch, mode, device=device_t, precision=precision, runs=runs,
                                     warmup=warmup, peak_flops=peak["flops_per_s"])
    def summary(r):
        keys = ("median_s", "min_s", "max_s", "runs", "images_per_s", "mfu", "flops_per_image",
                "peak_memory_bytes", "breakdown_s")
        return {k: r[k] for k in keys}

    if compare_precision:
        if compare_precision not in PRECISIONS:
            raise ConfigError(f"--compare-precision {compare_precision!r}: expected one of {sorted(PRECISIONS)}")
        other_peak = matmul_peak_flops(device_t, compare_precision, peak["size"])
        other = _measure_mode(model, batch, "inference", device=device_t, precision=compare_precision, runs=runs,
                              warmup=warmup, peak_flops=other_peak["flops_per_s"])
        base = result.get("inference") or _measure_mode(model, batch, "inference", device=device_t,
                                                        precision=precision, runs=runs, warmup=warmup,
                                                        peak_flops=peak["flops_per_s"])
        result["precision_comparison"] = {
            precision: summary(base), compare_precision: summary(other), "matmul_peak_" + compare_precision: other_peak,
            "speedup": base["median_s"] / other["median_s"],
        }
    if compare_opts:
        other_cfg = cfg.clone()
        other_cfg.defrost()
        merge_overrides(other_cfg, compare_opts, "--compare")
        torch.manual_seed(seed)
        other_model = build_model(random_init_config(other_cfg))
        other = _measure_mode(other_model, batch, "inference", device=device_t, precision=precision, runs=runs,
                              warmup=warmup, peak_flops=peak["flops_per_s"])
        del other_model
        base = result.get("inference") or _measure_mode(model, batch, "inference", device=device_t,
                                                        precision=precision, runs=runs, warmup=warmup,
                                                        peak_flops=peak["flops_per_s"])
        result["config_comparison"] = {"opts": list(compare_opts), "base": summary(base), "with_opts": summary(other),
                                       "speedup": base["median_s"] / other["median_s"]}
    if rotation_batching:
        result["rotation_batching"] = _rotation_batching(model, batch, device=device_t, precision=precision,
                                                         runs=runs, warmup=min(warmup, 1))
    # The peak again at the end: on a shared machine the GEMM may have run while other jobs were
    # busy. MFU is taken against the better of the two, so it is not inflated by a slow first GEMM.
    after = matmul_peak_flops(device_t, precision, peak["size"])
    result["matmul_peak"] = dict(peak, flops_per_s=max(peak["flops_per_s"], after["flops_per_s"]),
                                 flops_per_s_before=peak["flops_per_s"], flops_per_s_after=after["flops_per_s"])
    rescale = peak["flops_per_s"] / result["matmul_peak"]["flops_per_s"]
    same_precision = [result.get(m) for m in modes]
    same_precision += list((result.get("config_comparison") or {}).get(k) for k in ("base", "with_opts"))
    same_precision.append((result.get("precision_comparison") or {}).get(precision))
    for entry in {id(e): e for e in same_precision if e}.values():
        entry["mfu"] *= rescale
    synchronize(device_t)
    return copy.deepcopy(result)
