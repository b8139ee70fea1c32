#!/usr/bin/env python
"""Pretrain the demo's tiny CLIP contrastively on synthetic aerial image-caption pairs.

    python tools/pretrain_clip.py                       # the demo's cache (what the demo loads)
    python tools/pretrain_clip.py --output my_clip.pt --epochs 10 --seed 1

A thin wrapper of :func:`aeroseg.modeling.backbone.clip_pretraining.main`; ``--help`` lists the
options. The demo (``MODEL.CLIP.PRETRAINED "synthetic_aerial"``) runs the same recipe on first use.
"""
import sys
from pathlib import Path

if (Path(__file__).resolve().parents[1] / "aeroseg").is_dir():  # a checkout: use its package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aeroseg.modeling.backbone.clip_pretraining import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
