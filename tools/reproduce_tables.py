#!/usr/bin/env python
"""Reproduce the paper's Tables 2-8 and compare our numbers with the published ones.

A thin wrapper of :mod:`aeroseg.engine.reproduce_tables` (run it with ``--help``; the installed package also runs it as
``python -m aeroseg.engine.reproduce_tables``).
"""
import sys

from aeroseg.engine.reproduce_tables import main

if __name__ == "__main__":
    sys.exit(main())
