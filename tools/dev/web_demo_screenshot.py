#!/usr/bin/env python
"""The web demo's screenshot in the documentation (docs/images/web_demo.png), taken in headless Chromium.

    python tools/demo_app.py --help      # the demo itself; this script only photographs it
    python tools/dev/web_demo_screenshot.py --config-file configs/demo/tiny_cpu.yaml \\
        --output docs/images/web_demo.png MODEL.WEIGHTS output/tiny_cpu/model_final.pth

Serves the demo on a free local port (in this process), makes a scene from the synthetic
dataset's generator (a mosaic of 64-px tiles: the demo model's scale), and drives the page as a
person would (:mod:`aeroseg.demo.browser`): uploads the scene, segments it into the synthetic
classes with synonyms, then segments it again into the plain class names (the image encodings are
reused) and photographs the page after the first. Prints both answers (their times included). Needs Gradio,
selenium and Debian's chromium + chromium-driver.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

FIRST = "building|roof, road|street, tree, water|lake, low vegetation|grass, car"
AGAIN = "building, road, tree, water, low vegetation, car"


def synthetic_mosaic(rows: int, cols: int, seed: int) -> np.ndarray:
    from aeroseg.data.datasets.synthetic import render_synthetic_scene

    rng = np.random.default_rng(seed)
    return np.concatenate([np.concatenate([render_synthetic_scene(rng, 64)[0] for _ in range(cols)], 1)
                           for _ in range(rows)], 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--output", required=True, help="the screenshot (PNG, 256 colours)")
    p.add_argument("--rows", type=int, default=5)
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, nargs=2, default=(1400, 1280), help="browser window width and height")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS model.pth")
    args = p.parse_args(argv)

    import torch

    from aeroseg.demo import DemoSession
    from aeroseg.demo.app import build_app, launch
    from aeroseg.demo.browser import DemoPage, wait_for_server
    from aeroseg.inference import SlidingWindowPredictor

    torch.set_num_threads(args.threads)
    predictor = SlidingWindowPredictor.from_config_file(args.config_file, opts=args.opts, cache_mb=1024)
    session = DemoSession(predictor)
    app = build_app(session)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(app, port=port, block=False)
    url = f"http://127.0.0.1:{port}/"
    wait_for_server(url)
    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "synthetic_scene.png"
        Image.fromarray(synthetic_mosaic(args.rows, args.cols, args.seed)).save(scene)
        page = DemoPage(url, Path(tmp) / "downloads", window_size=tuple(args.size), timeout=600)
        try:
            page.upload(scene)
            page.set_classes(FIRST)
            print("first:   ", page.segment())
            shot = Path(tmp) / "shot.png"
            page.screenshot(shot)
            page.set_classes(AGAIN)
            print("again:   ", page.segment())
        finally:
            page.close()
            app.close()
            session.close()
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Image.open(shot).convert("RGB").quantize(256).save(args.output, optimize=True)
    print(f"wrote {args.output} ({Path(args.output).stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
