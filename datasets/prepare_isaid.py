#!/usr/bin/env python
"""Convert the official iSAID release into AerOSeg's tiled layout.

A thin wrapper of :mod:`aeroseg.data.prepare.isaid` (``--help`` lists the options; the installed
package also runs it as ``python -m aeroseg.data.prepare.isaid``).
"""
import sys

from aeroseg.data.prepare.isaid import main

if __name__ == "__main__":
    sys.exit(main())
