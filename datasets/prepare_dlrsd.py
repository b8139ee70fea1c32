#!/usr/bin/env python
"""Convert DLRSD (labels) + UC Merced Land Use (images) into AerOSeg's layout.

A thin wrapper of :mod:`aeroseg.data.prepare.dlrsd` (``--help`` lists the options; the installed
package also runs it as ``python -m aeroseg.data.prepare.dlrsd``).
"""
import sys

from aeroseg.data.prepare.dlrsd import main

if __name__ == "__main__":
    sys.exit(main())
