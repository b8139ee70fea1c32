#!/usr/bin/env python
"""Measure AerOSeg's speed, memory, FLOPs and model FLOP utilisation (MFU) for a config.

    python tools/benchmark.py --config-file configs/demo/tiny_cpu.yaml --json bench.json
    python tools/benchmark.py --config-file configs/isaid/aeroseg_vitb.yaml --device cpu --threads 2 \\
        --batch-size 8 --runs 1 --warmup 0 --mode inference --json paper_b8.json
    python tools/benchmark.py --config-file configs/isaid/aeroseg_vitb.yaml --params-only

The model is randomly initialised (PRETRAINED/CHECKPOINT forced to ""; weights do not change the
speed). Per mode (inference forward, training step): median and spread of the run times after
warm-up, images/s, peak memory, a per-module time breakdown, FLOPs per image (2 x multiply-adds)
and MFU = achieved FLOP/s / matmul peak, the peak measured by a large GEMM in the same run and
precision. Trailing KEY VALUE pairs override the config. See docs/PERFORMANCE.md.
"""
import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

import torch

from aeroseg.benchmark.runner import MODES, benchmark_config, random_init_config
from aeroseg.config.loading import load_config, merge_overrides
from aeroseg.config.validation import validate_config
from aeroseg.modeling import build_model, count_parameters
from aeroseg.utils.cpu_allocator import configure_cpu_allocator
from aeroseg.utils.errors import AerOSegError, ConfigError, describe_exception
from aeroseg.utils.io import write_text_atomic


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: MODEL.DEVICE")
    p.add_argument("--batch-size", type=int, default=None, help="images per forward (default: SOLVER.IMS_PER_BATCH)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per mode (after --warmup)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per mode (the first also counts FLOPs)")
    p.add_argument("--mode", choices=["inference", "train", "both"], default="both")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="fp32, or autocast to bf16/fp16 (the matmul peak is measured in the same dtype)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--matmul-size", type=int, default=None, help="GEMM side for the peak (CPU 2048, CUDA 8192)")
    p.add_argument("--no-rotation-batching", action="store_true",
                   help="skip timing CLIP with batched vs sequential rotations (MODEL.CLIP.ROTATION_BATCHING)")
    p.add_argument("--compare-precision", choices=["fp32", "bf16", "fp16"], default=None,
                   help="also time the inference forward of the same model in this precision")
    p.add_argument("--compare", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="also time the inference forward of a second model built with this override "
                        "(repeat it to give that model several overrides), e.g. --compare MODEL.SAM.INPUT_SIZE 512")
    p.add_argument("--json", default=None, help="write the full result here")
    p.add_argument("--params-only", action="store_true", help="only report parameter counts (meta device)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


def report_parameters(model) -> None:
    total = count_parameters(model)
    parts = {"CLIP backbone": model.clip_backbone, "guidance encoder": model.guidance_encoder}
    rows = [(name, count_parameters(m), count_parameters(m, True)) for name, m in parts.items()]
    head = total - sum(r[1] for r in rows)
    head_trainable = count_parameters(model, True) - sum(r[2] for r in rows)
    rows.append(("head (correlation ... decoder)", head, head_trainable))
    rows.append(("total", total, count_parameters(model, True)))
    print(f"{'module':34s} {'parameters':>12s} {'trainable':>12s}")
    for name, n, t in rows:
        print(f"{name:34s} {n / 1e6:11.2f}M {t / 1e6:11.2f}M")


def print_summary(result: dict) -> None:
    peak = result["matmul_peak"]
    print(f"batch {result['batch_size']} x {result['image_size']}px, {result['num_classes']} classes, "
          f"{result['device']} {result['precision']}, {result['environment']['threads']} threads; "
          f"matmul peak {peak['flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['size']}^3 GEMM)")
    for mode in MODES:
        if mode not in result:
            continue
        r = result[mode]
        print(f"[{mode}] median {r['median_s']:.3f} s (min {r['min_s']:.3f}, max {r['max_s']:.3f}, "
              f"{r['runs']} runs), {r['images_per_s']:.3f} images/s, peak memory "
              f"{r['peak_memory_bytes'] / 2 ** 30:.2f} GiB ({r['peak_memory_kind']})")
        print(f"  {r['flops_per_image'] / 1e12:.3f} TFLOP/image, {r['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s, "
              f"MFU {100 * r['mfu']:.1f}%, head {100 * r['head_share_of_forward']:.1f}% of the forward")
        flops = r["forward_flops_per_image_by_group"]
        for group, seconds in sorted(r["breakdown_s"].items(), key=lambda kv: -kv[1]):
            f = flops.get(group)
            extra = f"  {f / 1e9:10.2f} GFLOP/image (forward)" if f is not None and not math.isnan(f) else ""
            print(f"    {group:22s} {seconds:9.3f} s{extra}")
    for key, label in (("precision_comparison", "precision"), ("config_comparison", "config")):
        if key in result:
            c = result[key]
            parts = [f"{name} {v['median_s']:.3f} s ({v['images_per_s']:.3f} images/s, MFU {100 * v['mfu']:.1f}%)"
                     for name, v in c.items() if isinstance(v, dict) and "median_s" in v]
            opts = f" {' '.join(c['opts'])}:" if "opts" in c else ""
            print(f"[{label} comparison]{opts} " + "; ".join(parts) + f"; speed-up {c['speedup']:.2f}x")
    if "rotation_batching" in result:
        rb = result["rotation_batching"]
        print(f"[CLIP rotations] batched {rb['batched']['median_s']:.3f} s, sequential "
              f"{rb['sequential']['median_s']:.3f} s: batched is {rb['speedup_batched_over_sequential']:.2f}x")


def check_arguments(args) -> None:
    """Every command-line value, before the config is read or anything is built (one-line ConfigError)."""
    for name, minimum in (("batch_size", 1), ("threads", 1), ("runs", 1), ("warmup", 0), ("matmul_size", 1)):
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise ConfigError(f"--{name.replace('_', '-')} {value}: expected a number >= {minimum}")
    if args.json:
        check_writable_file(args.json, "--json")


def check_writable_file(path: str, option: str) -> None:
    """``path`` can be created (or replaced) as a file: not a folder, its folder creatable and writable."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{option} {path} is a folder: name the file to write, e.g. {target / 'bench.json'}")
    parent = target.parent if str(target.parent) else Path(".")
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: {existing} is not writable")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        check_arguments(args)
        cfg = load_config(args.config_file, args.opts)
        if args.device:
            cfg.MODEL.DEVICE = args.device
        if args.compare:
            merge_overrides(cfg.clone(), [v for pair in args.compare for v in pair], "--compare")
        validate_config(cfg, "benchmark")
        if args.params_only:
            with torch.device("meta"):
                model = build_model(random_init_config(cfg))
            report_parameters(model)
            return 0
        if args.threads:
            torch.set_num_threads(args.threads)
        allocator_set = (args.device or cfg.MODEL.DEVICE) == "cpu" and configure_cpu_allocator(cfg.CPU_ALLOCATOR)
        modes = list(MODES) if args.mode == "both" else [args.mode]
        result = benchmark_config(
            cfg, device=args.device, batch_size=args.batch_size, runs=args.runs, warmup=args.warmup,
            modes=modes, precision=args.precision, rotation_batching=not args.no_rotation_batching,
            matmul_size=args.matmul_size, compare_precision=args.compare_precision,
            compare_opts=[v for pair in args.compare for v in pair],
        )
        result["config_file"] = args.config_file
        result["cpu_allocator"] = {"CPU_ALLOCATOR": cfg.CPU_ALLOCATOR, "applied": bool(allocator_set)}
        result["opts"] = list(args.opts)
    except (AerOSegError, FileNotFoundError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(result)
    if args.json:
        text = json.dumps(result, indent=2, sort_keys=True)
        try:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(args.json, text)
        except OSError as exc:  # checked before the run; the disk may still fill up or the folder vanish
            print(text)
            print(f"error: cannot write {args.json} ({describe_exception(exc)}); the result is printed above",
                  file=sys.stderr)
            return 2
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
