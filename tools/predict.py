#!/usr/bin/env python
"""Segment your own aerial / satellite scenes into any list of class names.

A thin wrapper of ``aeroseg-predict`` (:mod:`aeroseg.inference.cli`) for checkouts; run it with
``--help`` for the options.
"""
import sys

from aeroseg.inference.cli import main

if __name__ == "__main__":
    sys.exit(main())
