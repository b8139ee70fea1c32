"""The tiling policy: where tiles start, padding, tile names, which tiles are kept."""
from __future__ import annotations

from typing import Iterator, List, Tuple

import numpy as np

from .constants import IGNORE_INDEX
from .reading import fit_to_size


def tile_origins(length: int, tile: int, stride: int) -> List[int]:
    """Start offsets of the tiles covering ``0..length`` along one axis.

    Tiles start every ``stride`` pixels; the last tile is shifted back so that it
    ends exactly at the border (it then overlaps its neighbour), so every tile is
    full-size and every pixel is covered. Axes shorter than ``tile`` give ``[0]``
    (the caller pads the image first).

    >>> tile_origins(1000, 256, 256)
    [0, 256, 512, 744]
    >>> tile_origins(512, 256, 256)
    [0, 256]
    """
    if tile <= 0 or stride <= 0:
        raise ValueError("tile and stride must be positive")
    if length <= tile:
        return [0]
    origins = list(range(0, length - tile + 1, stride))
    if origins[-1] != length - tile:
        origins.append(length - tile)
    return origins


def pad_to_tile(image: np.ndarray, label: np.ndarray,
                tile: int) -> Tuple[np.ndarray, np.ndarray, bool]:
    """Pad image (black) and label (255) at the bottom/right to at least ``tile`` per side.

    Returns ``(image, label, padded)``.
    """
    height, width = label.shape[:2]
    if height >= tile and width >= tile:
        return image, label, False
    new_h, new_w = max(height, tile), max(width, tile)
    return (fit_to_size(image, new_h, new_w, 0),
            fit_to_size(label, new_h, new_w, IGNORE_INDEX), True)


def iter_tiles(image: np.ndarray, label: np.ndarray, tile: int,
               stride: int) -> Iterator[Tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield ``(y, x, image_tile, label_tile)`` over the grid of :func:`tile_origins`.

    ``image`` and ``label`` must already be at least ``tile`` pixels per side.
    """
    height, width = label.shape[:2]
    for y in tile_origins(height, tile, stride):
        for x in tile_origins(width, tile, stride):
            yield (y, x,
                   np.ascontiguousarray(image[y:y + tile, x:x + tile]),
                   np.ascontiguousarray(label[y:y + tile, x:x + tile]))


def tile_stem(stem: str, y: int, x: int) -> str:
    """Deterministic file stem of the tile at pixel offset ``(y, x)`` of ``stem``."""
    return f"{stem}_y{y:05d}_x{x:05d}"


def has_labelled_pixel(label: np.ndarray) -> bool:
    """True when ``label`` contains at least one pixel that is not ignore (255)."""
    return bool((label != IGNORE_INDEX).any())


def class_histogram(label: np.ndarray) -> np.ndarray:
    """Pixel count of every value 0..255 in a uint8 label (length-256 int64 array)."""
    return np.bincount(label.ravel(), minlength=256).astype(np.int64)
