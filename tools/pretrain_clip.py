#!/usr/bin/env python
"""Pretrain the demo's tiny CLIP contrastively on synthetic aerial image-caption pairs.

    python tools/pretrain_clip.py                       # the demo's cache (what the demo loads)
    python tools/pretrain_clip.py --output my_clip.pt --epochs 10 --seed 1

A thin wrapper of :func:`aeroseg.modeling.backbone.clip_pretraining.main`; ``--help`` lists the
options. The demo (``MODEL.CLIP.PRETRAINED "synthetic_aerial"``) runs the same recipe on first use.
"""
import sys

from aeroseg.modeling.backbone.clip_pretraining import main

if __name__ == "__main__":
    sys.exit(main())
