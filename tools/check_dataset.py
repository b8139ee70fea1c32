#!/usr/bin/env python
"""Audit a prepared dataset folder before training on it.

A thin wrapper of :mod:`aeroseg.data.check_dataset` (run it with ``--help``; the installed package also runs it as
``python -m aeroseg.data.check_dataset``).
"""
import sys

from aeroseg.data.check_dataset import main

if __name__ == "__main__":
    sys.exit(main())
