#!/usr/bin/env python
"""Segment your own aerial / satellite scenes into any list of class names.

A thin wrapper of ``aeroseg-predict`` (:mod:`aeroseg.inference.cli`) for checkouts; run it with
``--help`` for the options.
"""
import sys
from pathlib import Path

if (Path(__file__).resolve().parents[1] / "aeroseg").is_dir():  # a checkout: use its package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aeroseg.inference.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
