"""Converting the official iSAID, DLRSD and OpenEarthMap releases into AerOSeg's processed layout.

``OUT/{train,val}/{images,labels}/<stem>.png`` (lossless RGB tiles; uint8 labels, class index
0..K-1, 255 = ignore) plus ``OUT/manifest.json``, written last. One concern per module:

* :mod:`.constants`: tile size, ignore value, splits;
* :mod:`.errors`: :class:`PrepareError` (``<file>: <problem>``, one line);
* :mod:`.reading`: raw images and label masks, checked against each other;
* :mod:`.tiling`: the tiling policy;
* :mod:`.output`: output folders, atomic tile writes, per-image results;
* :mod:`.summary`: the end-of-run summary;
* :mod:`.jobs`: the worker pool with a progress bar and ``--skip-bad``;
* :mod:`.run_identity`: refusing to mix two runs in one folder, and the manifest;
* :mod:`.cli`: argument types, shared options, the ``main`` skeleton;
* :mod:`.isaid`, :mod:`.dlrsd`, :mod:`.oem`: one converter per dataset (``datasets/prepare_*.py``
  are their command lines).
"""
