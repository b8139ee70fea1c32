#!/usr/bin/env python
"""A web page to segment an image into any class names (Gradio).

A thin wrapper of ``aeroseg-demo`` (:mod:`aeroseg.demo.app`) for checkouts; run it with
``--help`` for the options.
"""
import sys

from aeroseg.demo.app import main

if __name__ == "__main__":
    sys.exit(main())
