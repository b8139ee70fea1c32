"""Dataset constants of the conversion scripts: tile size, ignore value, splits, class lists."""
from __future__ import annotations

from typing import Sequence, Tuple

TILE_SIZE = 256
IGNORE_INDEX = 255
SPLITS = ("train", "val")

ISAID_BACKGROUND = (0, 0, 0)


def seen_classes(classes: Sequence[str], unseen: Sequence[str]) -> Tuple[str, ...]:
    """Return the classes of ``classes`` that are not in ``unseen``, in order."""
    return tuple(name for name in classes if name not in unseen)
