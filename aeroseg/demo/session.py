"""What the web demo does with one request, without the web page: checks, segmentation, results.

:class:`DemoSession` wraps a :class:`SlidingWindowPredictor` (the same windows, blending, class
syntax and GIS outputs as ``aeroseg-predict``: :func:`segment_scene` writes every file) and
turns bad input into :class:`DemoInputError`, whose one-line message the page shows. The
predictor keeps the last image's window encodings (``cache_mb``), so a new class list on the
same image runs only the text encoder and the correlation head.
"""
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
from PIL import Image

from ..inference.class_names import ClassNames, parse_classes
from ..inference.scene_io import NODATA_LABEL, IMAGE_SUFFIXES, SceneReader, is_geotiff, output_paths, segment_scene
from ..inference.sliding_window import SlidingWindowPredictor
from ..inference.visualize import class_palette, overlay_with_legend
from ..utils.errors import AerOSegError, describe_exception

__all__ = ["DemoInputError", "DemoResult", "DemoSession", "image_size", "DEFAULT_MAX_PIXELS"]

logger = logging.getLogger(__name__)

# Largest image (height x width) segmented by default: with the CPU demo model
# (configs/demo/tiny_cpu.yaml) a 2-core machine answers such an image within a minute
# (docs/WEB_DEMO.md gives the measurement).
DEFAULT_MAX_PIXELS = 2_000_000
# Longest side of the overlay shown on the page (the downloads keep the image's full size).
PREVIEW_MAX_SIDE = 1024
# Result folders kept on disk (older ones are deleted as new requests finish).
KEEP_RESULTS = 16


class DemoInputError(AerOSegError, ValueError):
    """A request the demo cannot answer (the message, one line, is shown on the page)."""


def image_size(path) -> tuple:
    """(height, width) of an image file from its header, without decoding the pixels."""
    path = Path(path)
    try:
        if is_geotiff(path):
            import rasterio

            with rasterio.open(path) as src:
                return src.height, src.width
        with Image.open(path) as img:
            return img.height, img.width
    except Exception as exc:  # the library's words, with the upload's name for its server-side path
        reason = describe_exception(exc, with_type=True).replace(str(path), path.name)
        raise DemoInputError(f"{path.name}: cannot read the image ({reason}); expected a PNG, JPEG or GeoTIFF") \
            from None


@dataclass
class DemoResult:
    """One segmentation: the files written and what the page shows."""

    names: List[str]                # display name of each class (index = label value)
    groups: List[List[str]]         # each class's names (synonyms)
    palette: np.ndarray             # (K, 3) uint8 colours
    shares: List[float]             # fraction of the image's pixels given each class
    height: int
    width: int
    files: dict                     # kind -> Path (labels, color, overlay, classes)
    seconds: float
    windows: int
    reused_batches: int = 0         # window batches whose image encodings were reused
    batches: int = 0
    # "image", "labels": what the overlay is drawn from (redrawn at other opacities)
    preview: dict = field(default_factory=dict)

    @property
    def overlay_path(self) -> Path:
        return self.files["overlay"]

    @property
    def labels_path(self) -> Path:
        return self.files["labels"]

    @property
    def classes_path(self) -> Path:
        return self.files["classes"]

    def summary(self) -> str:
        if self.batches and self.reused_batches == self.batches:
            how = "image encodings reused: only the classes were recomputed"
        elif self.reused_batches:
            how = f"image encodings reused for {self.reused_batches} of {self.batches} window batches"
        else:
            how = "image encoded"
        return (f"{self.width}×{self.height} px, {len(self.names)} classes, {self.windows} windows, "
                f"{self.seconds:.1f} s ({how})")


class DemoSession:
    """Answers segmentation requests with ``predictor``; outputs go to folders below ``work_dir``.

    ``max_pixels``: the largest image (height x width) accepted. ``work_dir`` defaults to a new
    temporary folder, removed by :meth:`close`.
    """

    def __init__(self, predictor: SlidingWindowPredictor, max_pixels: int = DEFAULT_MAX_PIXELS,
                 work_dir: Optional[str] = None, preview_max_side: int = PREVIEW_MAX_SIDE):
        if max_pixels <= 0:
            raise ValueError(f"max_pixels={max_pixels}: expected > 0")
        self.predictor = predictor
        self.max_pixels = int(max_pixels)
        self.preview_max_side = int(preview_max_side)
        self._own_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="aeroseg-demo-") if work_dir is None else work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._results: List[Path] = []
        self._count = 0

    @property
    def default_classes(self) -> str:
        """The classes box's first text: the classes of the config's first test dataset (seen and
        unseen), else the model's vocabulary."""
        cfg = self.predictor.cfg
        names = None
        if cfg is not None and cfg.DATASETS.TEST:
            from ..data import MetadataCatalog

            names = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("stuff_classes", None)
        return ", ".join(names or self.predictor.model.vocabulary)

    def check(self, image_path, classes_text: str) -> ClassNames:
        """The parsed classes, or :class:`DemoInputError` saying what is wrong with the request."""
        if not image_path:
            raise DemoInputError("no image: upload a PNG, JPEG or GeoTIFF first")
        path = Path(image_path)
        if not path.is_file():
            raise DemoInputError(f"{path.name}: the uploaded file is gone; upload it again")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DemoInputError(f"{path.name}: expected a PNG, JPEG or GeoTIFF image ({', '.join(IMAGE_SUFFIXES)})")
        try:
            classes = parse_classes(classes_text or "", source="classes")
        except AerOSegError as exc:
            raise DemoInputError(str(exc)) from None
        if len(classes) > 256:
            raise DemoInputError(f"{len(classes)} classes: at most 256 (the labels file stores one byte per pixel)")
        height, width = image_size(path)
        if height * width > self.max_pixels:
            raise DemoInputError(
                f"{path.name} is {width}×{height} px ({height * width:,} pixels): this demo segments images of up "
                f"to {self.max_pixels:,} pixels (--max-pixels); crop or downsample it, or use aeroseg-predict")
        return classes

    def segment(self, image_path, classes_text: str, alpha: float = 0.5,
                progress: Optional[Callable[[int, int], None]] = None) -> DemoResult:
        """Segment the image file into the classes of ``classes_text`` (``"a|b, c"``) and write
        the labels, colours, overlay and classes JSON; ``progress(done, total)`` counts windows."""
        if not 0 <= float(alpha) <= 1:
            raise DemoInputError(f"opacity {alpha}: expected a value in [0, 1]")
        classes = self.check(image_path, classes_text)
        path = Path(image_path)
        self.predictor.set_classes(classes)
        self._count += 1
        out_dir = self.work_dir / f"{self._count:06d}"
        out_dir.mkdir(parents=True)
        stem = path.stem or "image"
        tracker = _WindowCounter(progress)
        start = time.perf_counter()
        try:
            segment_scene(self.predictor, path, out_dir, stem, alpha=float(alpha),
                          preview_max_side=self.preview_max_side, progress=tracker,
                          run_info={"tile": self.predictor.tile, "blend": self.predictor.blend})
        except AerOSegError as exc:  # e.g. rows that cannot be read: named by the upload's name
            shutil.rmtree(out_dir, ignore_errors=True)
            raise DemoInputError(str(exc).replace(str(path), path.name)) from None
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
        seconds = time.perf_counter() - start
        files = {k: p for k, p in output_paths(out_dir, stem, is_geotiff(path), False).items()}
        labels = _read_labels(files["labels"])
        counts = np.bincount(labels.ravel(), minlength=len(classes))[:len(classes)]
        cache = self.predictor.cache
        result = DemoResult(
            names=classes.display_names, groups=classes.groups, palette=class_palette(classes.display_names),
            shares=(counts / max(1, labels.size)).tolist(), height=int(labels.shape[0]), width=int(labels.shape[1]),
            files=files, seconds=seconds, windows=tracker.total,
            reused_batches=cache.hits if cache is not None else 0,
            batches=(cache.hits + cache.misses) if cache is not None else 0)
        with SceneReader(path) as reader:
            overview = reader.overview(self.preview_max_side)
        h, w = overview.shape[:2]
        result.preview = {"image": overview,
                          "labels": np.asarray(Image.fromarray(labels).resize((w, h), Image.NEAREST))}
        self._remember(out_dir)
        return result

    def overlay(self, result: DemoResult, alpha: float) -> Image.Image:
        """The overlay of ``result`` at another opacity (the mask is not recomputed)."""
        return overlay_with_legend(result.preview["image"], result.preview["labels"], result.palette,
                                   result.names, float(alpha), nodata_label=NODATA_LABEL)

    def _remember(self, out_dir: Path) -> None:
        self._results.append(out_dir)
        while len(self._results) > KEEP_RESULTS:
            shutil.rmtree(self._results.pop(0), ignore_errors=True)

    def close(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


class _WindowCounter:
    """What :func:`segment_scene` expects of a progress bar (``total``, ``refresh``, ``update``)."""

    def __init__(self, report: Optional[Callable[[int, int], None]]):
        self.report, self.total, self.done = report, 0, 0

    def refresh(self) -> None:
        if self.report is not None:
            self.report(self.done, self.total)

    def update(self, n: int) -> None:
        self.done += int(n)
        self.refresh()


def _read_labels(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as src:
            return src.read(1)
    with Image.open(path) as img:
        return np.asarray(img)
