#!/usr/bin/env python
"""Convert the OpenEarthMap release (without xBD) into AerOSeg's tiled layout.

A thin wrapper of :mod:`aeroseg.data.prepare.oem` (``--help`` lists the options; the installed
package also runs it as ``python -m aeroseg.data.prepare.oem``).
"""
import sys

from aeroseg.data.prepare.oem import main

if __name__ == "__main__":
    sys.exit(main())
