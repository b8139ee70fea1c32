"""Reading raw images and label masks, and checking them against each other."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import PrepareError
from .errors import describe_input_error as _describe

# DOTA scenes reach ~20,000 x 20,000 pixels, above Pillow's decompression-bomb
# guard. The inputs are the user's own dataset files, so the guard is lifted.
Image.MAX_IMAGE_PIXELS = None

def read_index_label(path: Path) -> np.ndarray:
    """Read a single-channel label image (palette, grayscale or 16-bit PNG/TIFF) with Pillow.

    Returns the stored values (palette indices for palette images) as an
    integer array ``(H, W)``. Colour images are rejected: a class-index label
    must have one channel.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                raise PrepareError(path, f"expected a single-channel (palette or grayscale) "
                                         f"label image, got mode {img.mode}")
            return np.asarray(img)
    except PrepareError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise PrepareError(path, f"cannot read label ({_describe(exc)})") from None


def read_rgb_image(path: Path) -> np.ndarray:
    """Read an image file with Pillow as an ``(H, W, 3)`` uint8 RGB array.

    Grayscale, palette and RGBA files are converted to RGB.
    Raises :class:`PrepareError` when the file is missing or unreadable.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise PrepareError(path, f"expected an 8-bit image, got mode {img.mode}")
            return np.asarray(img.convert("RGB"))
    except PrepareError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three
        raise PrepareError(path, f"cannot read image ({_describe(exc)})") from None


def check_same_size(image: np.ndarray, label: np.ndarray, label_path: Path) -> None:
    """Raise :class:`PrepareError` unless ``label`` has the height/width of ``image``."""
    if image.shape[:2] != label.shape[:2]:
        raise PrepareError(
            label_path,
            f"label size {label.shape[1]}x{label.shape[0]} (WxH) differs from "
            f"image size {image.shape[1]}x{image.shape[0]}",
        )


def remap_label_values(raw: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """Map raw label values ``1..num_classes`` to ``0..num_classes-1`` and ``0`` to 255.

    Any other value is an error (:class:`PrepareError` naming the values).
    Returns a uint8 array of the same shape.
    """
    if raw.dtype.kind not in "ui":
        raise PrepareError(path, f"expected integer label values, got data type {raw.dtype}")
    values = np.unique(raw)
    bad = [int(v) for v in values if v < 0 or v > num_classes]
    if bad:
        shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        raise PrepareError(
            path, f"unknown label value(s) {shown} (expected 0 = unlabelled or 1..{num_classes})"
        )
    lut = np.arange(-1, 255, dtype=np.int64).astype(np.uint8)  # v -> v - 1 (0 -> 255)
    return lut[raw.astype(np.intp)]


def fit_to_size(array: np.ndarray, height: int, width: int, fill: int) -> np.ndarray:
    """Crop or pad ``array`` (HxW or HxWxC) to exactly ``height`` x ``width``.

    Anchored at the top-left corner: extra rows/columns at the bottom/right are
    cut off, missing ones are appended at the bottom/right filled with ``fill``.
    """
    out = array[:height, :width]
    pad_h, pad_w = height - out.shape[0], width - out.shape[1]
    if pad_h or pad_w:
        pad = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (out.ndim - 2)
        out = np.pad(out, pad, mode="constant", constant_values=fill)
    return np.ascontiguousarray(out)
