"""Colours for class maps, overlays with a legend, and downsampled previews of large scenes."""
import colorsys
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.datasets.builtin_meta import ISAID_CLASSES, ISAID_PALETTE, OEM_CLASSES
from ..data.datasets.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE

__all__ = ["class_palette", "colorize", "overlay_with_legend", "preview_size", "DATASET_PALETTES"]

# OpenEarthMap's colour table (the class colours of its release and paper figures), class order.
OEM_PALETTE = [(128, 0, 0), (0, 255, 36), (148, 148, 148), (255, 255, 255),
               (34, 97, 38), (0, 69, 255), (75, 181, 73), (222, 31, 7)]
# dataset -> {class name: RGB}; classes named like a dataset's get that dataset's colours.
DATASET_PALETTES: Dict[str, Dict[str, tuple]] = {
    "isaid": dict(zip(ISAID_CLASSES, ISAID_PALETTE)),
    "oem": dict(zip(OEM_CLASSES, OEM_PALETTE)),
    "synthetic_aerial": dict(zip(SYNTHETIC_CLASSES, SYNTHETIC_PALETTE)),
}
# Readable default for other names: matplotlib's "tab10" + the light half of "tab20".
DEFAULT_COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
]


def class_palette(names: Sequence[str]) -> np.ndarray:
    """(K, 3) uint8 colours: the palette of the dataset sharing most names, defaults for the rest."""
    lowered = [n.lower() for n in names]
    best = max(DATASET_PALETTES.values(), key=lambda p: sum(n in p for n in lowered))
    colours: List[tuple] = [best.get(n) for n in lowered]
    spare = [c for c in DEFAULT_COLOURS if c not in colours]
    extra = 0
    for i, c in enumerate(colours):
        if c is None:
            if spare:
                colours[i] = spare.pop(0)
            else:  # more classes than defaults: golden-ratio hues
                colours[i] = tuple(int(255 * v) for v in colorsys.hsv_to_rgb((extra * 0.618034) % 1.0, 0.75, 0.95))
                extra += 1
    return np.array(colours, dtype=np.uint8).reshape(len(names), 3)


# How nodata pixels (no class) look in colour renderings and overlays.
NODATA_COLOUR = (0, 0, 0)
NODATA_OVERLAY_COLOUR = (128, 128, 128)


def colorize(labels: np.ndarray, palette: np.ndarray, nodata_label: Optional[int] = None) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours; ``nodata_label`` pixels are :data:`NODATA_COLOUR`."""
    if nodata_label is None:
        return palette[labels]
    table = np.zeros((max(256, len(palette)), 3), np.uint8)
    table[:len(palette)] = palette
    table[nodata_label] = NODATA_COLOUR
    return table[labels]


def preview_size(height: int, width: int, max_side: int, min_side: int = 256):
    """(h, w) of a preview: the longer side at most ``max_side`` (huge scenes are downsampled),
    small scenes enlarged by a whole factor to about ``min_side`` (so the legend fits); aspect kept."""
    longest = max(height, width)
    if longest > max_side:
        scale = max_side / longest
    else:
        scale = float(max(1, min_side // longest))
    return max(1, round(height * scale)), max(1, round(width * scale))


def overlay_with_legend(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, names: Sequence[str],
                        alpha: float = 0.5, nodata_label: Optional[int] = None) -> Image.Image:
    """The RGB ``image`` (H, W, 3) with the class colours of ``labels`` (H, W) blended in
    (``alpha`` = mask opacity) and a legend strip (colour swatch + class name) on the right.
    Pixels labelled ``nodata_label`` are shown in :data:`NODATA_OVERLAY_COLOUR`, with a legend
    entry "nodata", when there are any."""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    nodata = labels == nodata_label if nodata_label is not None else np.zeros(labels.shape, bool)
    colours = colorize(labels, palette, nodata_label).astype(np.float32)
    blended = image.astype(np.float32) * (1 - alpha) + colours * alpha
    blended[nodata] = NODATA_OVERLAY_COLOUR
    if nodata.any():
        palette = np.concatenate([palette, np.array([NODATA_OVERLAY_COLOUR], np.uint8)])
        names = [*names, "nodata"]
    blended = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
    # legend text about 1/50 of the picture's height (at least 11 px), so it stays readable
    size = max(11, blended.height // 50)
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    pad, swatch = size // 2, size
    line = max(swatch, font.getbbox("Ag")[3]) + 4
    text_w = max(int(font.getlength(n)) for n in names)
    legend_w = pad * 3 + swatch + text_w
    height = max(blended.height, pad * 2 + line * len(names))
    canvas = Image.new("RGB", (blended.width + legend_w, height), (255, 255, 255))
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0 = blended.width + pad
    for i, (name, colour) in enumerate(zip(names, palette)):
        y = pad + i * line
        draw.rectangle([x0, y, x0 + swatch, y + swatch], fill=tuple(int(c) for c in colour), outline=(0, 0, 0))
        draw.text((x0 + swatch + pad, y), name, fill=(0, 0, 0), font=font)
    return canvas
