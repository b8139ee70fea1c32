#!/usr/bin/env python
"""Measure AerOSeg's speed (training step, inference) and size for a config.

    python tools/benchmark.py --config-file configs/demo/tiny_cpu.yaml
    python tools/benchmark.py --config-file configs/Base-AerOSeg.yaml --params-only \\
        MODEL.CLIP.PRETRAINED "" MODEL.SAM.CHECKPOINT "" MODEL.SEM_SEG_HEAD.NUM_CLASSES 9
    python tools/benchmark.py --config-file configs/demo/tiny_cpu.yaml --compare-rotation-batching

Weights are not needed: with PRETRAINED/CHECKPOINT set to "" the model is randomly initialised,
which does not change its speed. ``--params-only`` builds on the meta device (no memory).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aeroseg.config import get_cfg  # noqa: E402
from aeroseg.modeling import build_model, count_parameters  # noqa: E402
from aeroseg.utils.errors import AerOSegError  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--batch-size", type=int, default=None, help="default: SOLVER.IMS_PER_BATCH")
    p.add_argument("--image-size", type=int, default=None, help="input tile side (default: INPUT.CROP.SIZE[0])")
    p.add_argument("--iters", type=int, default=10, help="timed iterations (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--params-only", action="store_true", help="only report parameter counts (meta device)")
    p.add_argument("--compare-rotation-batching", action="store_true",
                   help="time MODEL.CLIP.ROTATION_BATCHING 'batched' against 'sequential'")
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


def _batch(n, size, num_classes, device):
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8).to(device),
             "sem_seg": torch.randint(0, num_classes, (size, size), generator=g).to(device),
             "height": size, "width": size} for _ in range(n)]


def _time(fn, iters, warmup, device):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def benchmark(cfg, args) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg)
    device = model.device
    n = args.batch_size or cfg.SOLVER.IMS_PER_BATCH
    size = args.image_size or cfg.INPUT.CROP.SIZE[0]
    batch = _batch(n, size, len(model.vocabulary), device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def train_step():
        model.train()
        loss = sum(model(batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer():
        model.eval()
        with torch.no_grad():
            model(batch)

    train = _time(train_step, args.iters, args.warmup, device)
    test = _time(infer, args.iters, args.warmup, device)
    return {"train": train, "inference": test, "batch": n, "size": size}


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = get_cfg()
    try:
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        if args.params_only:
            with torch.device("meta"):
                model = build_model(cfg)
            report_parameters(model)
            return 0
        torch.set_num_threads(torch.get_num_threads())
        modes = ["batched", "sequential"] if args.compare_rotation_batching else [cfg.MODEL.CLIP.ROTATION_BATCHING]
        for mode in modes:
            cfg.defrost()
            cfg.MODEL.CLIP.ROTATION_BATCHING = mode
            r = benchmark(cfg, args)
            print(f"[{mode}] batch {r['batch']} x {r['size']}px on {cfg.MODEL.DEVICE}, "
                  f"{torch.get_num_threads()} threads: train step {r['train'][0] * 1e3:.1f} ms "
                  f"(min {r['train'][1] * 1e3:.1f}), inference {r['inference'][0] * 1e3:.1f} ms "
                  f"(min {r['inference'][1] * 1e3:.1f}) -- median of {args.iters}")
    except (AerOSegError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
