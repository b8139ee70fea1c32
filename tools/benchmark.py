#!/usr/bin/env python
"""Measure AerOSeg's speed, memory, FLOPs and model FLOP utilisation (MFU) for a config.

A thin wrapper of :mod:`aeroseg.benchmark.cli` (run it with ``--help``; the installed package also runs it as
``python -m aeroseg.benchmark.cli``).
"""
import sys

from aeroseg.benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
