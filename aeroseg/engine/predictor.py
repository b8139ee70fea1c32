"""Moved to :mod:`aeroseg.inference` (kept so that existing imports keep working)."""
from ..inference.class_names import parse_classes
from ..inference.sliding_window import SlidingWindowPredictor, window_offsets

__all__ = ["SlidingWindowPredictor", "window_offsets", "classes_from_text"]


def classes_from_text(text: str):
    """"a, b|c" -> ["a", "b|c"] (empty entries dropped; ``|`` separates synonyms)."""
    return ["|".join(g) for g in parse_classes(text).groups]
