#!/usr/bin/env python
"""Time CAT-Seg's head and ours interleaved in one process, on the shared head benchmark's inputs.

``../shared/bench/catseg_head_bench.py`` times the heads one after another. With glibc's default
allocator a head's time then depends on what the process allocated before (every large
activation is a fresh mmap that page-faults), and CAT-Seg's forward swings 2x between runs of the
harness. Here every repetition runs each head once, in turn, on the same inputs, so the heads see
the same allocator state on average; run it once as is and once with the allocator retaining
memory (what ``CPU_ALLOCATOR retain`` does for our tools) to see both regimes:

    CATSEG_SRC=/path/to/CAT-Seg python tools/dev/head_interleaved.py --runs 3
    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647 \\
        CATSEG_SRC=/path/to/CAT-Seg python tools/dev/head_interleaved.py --runs 3

The harness, its inputs and our candidate wrapper are imported from ``--bench`` (none of
CAT-Seg's code is here or in the harness: it loads CAT-Seg from ``CATSEG_SRC``).
"""
import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", default=os.path.join(REPO, "..", "shared", "bench"),
                    help="folder with catseg_head_bench.py and aeroseg_head_candidate.py")
    ap.add_argument("--classes", type=int, default=15)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3, help="repetitions after one warm-up of each head")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the times here")
    args = ap.parse_args(argv)
    if not os.environ.get("CATSEG_SRC"):
        print("error: set CATSEG_SRC to a CAT-Seg checkout (the folder holding cat_seg/)", file=sys.stderr)
        return 2
    sys.path.insert(0, REPO)
    torch.set_num_threads(args.threads)
    harness = _load(os.path.join(args.bench, "catseg_head_bench.py"), "_catseg_head_bench")
    candidate = _load(os.path.join(args.bench, "aeroseg_head_candidate.py"), "_aeroseg_head_candidate")
    aggregator = harness.load_aggregator("file")[0]
    config = dict(harness.VITB384, prompt_channel=args.prompts)
    torch.manual_seed(0)
    heads = {
        "catseg_pad256": aggregator(**dict(config, pad_len=256)).eval(),
        "catseg_nopad": aggregator(**dict(config, pad_len=0)).eval(),
        "aeroseg": candidate.make(config, args.prompts, args.classes).eval(),
    }
    inputs = harness.make_inputs(args.batch, args.classes, args.prompts, config)
    times = {name: [] for name in heads}
    with torch.no_grad():
        for head in heads.values():
            head(*inputs)
        for _ in range(args.runs):
            for name, head in heads.items():
                start = time.perf_counter()
                head(*inputs)
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:14s} median {medians[name]:7.3f} s   runs {' '.join(f'{x:.2f}' for x in t)}")
    print(f"CAT-Seg as shipped / AerOSeg: {medians['catseg_pad256'] / medians['aeroseg']:.2f}x; "
          f"AerOSeg / CAT-Seg pad 0: {medians['aeroseg'] / medians['catseg_nopad']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"medians_s": medians, "runs_s": times, "allocator": os.environ.get("GLIBC_TUNABLES", ""),
                       "classes": args.classes, "prompts": args.prompts, "batch": args.batch}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
