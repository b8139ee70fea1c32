"""The web demo (``aeroseg-demo``): upload a scene, type classes, see the segmentation.

:mod:`.session` holds what a request does (no web framework needed); :mod:`.app` builds the
Gradio page around it and the command line; :mod:`.browser` drives the page in headless
Chromium (the browser test and the documentation's screenshot).
"""
from .session import DEFAULT_MAX_PIXELS, DemoInputError, DemoResult, DemoSession, image_size

__all__ = ["DEFAULT_MAX_PIXELS", "DemoInputError", "DemoResult", "DemoSession", "image_size"]
