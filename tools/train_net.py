#!/usr/bin/env python
"""Train and evaluate AerOSeg (detectron2's command line).

A thin wrapper of :mod:`aeroseg.engine.train_net` (run it with ``--help``; the installed package also runs it as
``python -m aeroseg.engine.train_net``).
"""
import sys

from aeroseg.engine.train_net import run

if __name__ == "__main__":
    sys.exit(run())
