"""Segmenting whole scenes: blended, streamed sliding windows; GIS outputs; overlays; the CLI."""
from .class_names import ClassNames, parse_classes, read_classes_file
from .scene_io import SceneReader, output_paths, segment_scene
from .sliding_window import SlidingWindowPredictor, blend_profile, window_offsets
from .visualize import class_palette, colorize, overlay_with_legend

__all__ = [
    "ClassNames", "SceneReader", "SlidingWindowPredictor", "blend_profile", "class_palette", "colorize",
    "output_paths", "overlay_with_legend", "parse_classes", "read_classes_file", "segment_scene", "window_offsets",
]
