"""Reading scenes band by band and writing what a GIS user or a person opens directly.

GeoTIFF inputs (``.tif``/``.tiff``) are read and written with rasterio windows, so a scene of any
height is processed in memory bounded by its width; their outputs are georeferenced GeoTIFFs
(labels with a colour table and class names, a colour rendering, optional scores). Other images
(PNG, JPEG, ...) are decoded whole and give PNG outputs. Every input also gets an overlay PNG
with a legend (downsampled to ``preview_max_side``) and ``<stem>_classes.json``, which binds
the class list to these outputs and is written last (its presence marks a finished input).
"""
import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from ..utils.errors import AerOSegError, one_line
from .sliding_window import SlidingWindowPredictor
from ..utils.io import temp_path
from .visualize import class_palette, colorize, overlay_with_legend, preview_size

__all__ = ["SceneReader", "SceneReadError", "output_paths", "segment_scene", "GEOTIFF_SUFFIXES", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
GEOTIFF_SUFFIXES = (".tif", ".tiff")
SCORE_DTYPES = ("uint8", "float16")


class SceneReadError(AerOSegError, OSError):
    """An input image cannot be read (the message names it)."""


def is_geotiff(path: Path) -> bool:
    return Path(path).suffix.lower() in GEOTIFF_SUFFIXES


class SceneReader:
    """(3, h, W) uint8 RGB rows of a scene; GeoTIFFs through rasterio windows, others decoded whole.

    Single-band rasters are repeated to RGB; rasters with more than 3 bands use the first 3.
    Non-8-bit bands (e.g. 16-bit sensors) are stretched to 0..255 between their 2nd and 98th
    percentiles, estimated on an overview of at most 1024 px per side (exact for smaller scenes).
    """

    def __init__(self, path):
        self.path = Path(path)
        self.profile = None
        self._src = self._rgb = None
        try:
            if is_geotiff(self.path):
                import rasterio

                self._src = rasterio.open(self.path)
                if self._src.count == 2:
                    raise SceneReadError(f"{self.path}: 2-band rasters are not RGB (expected 1 or >= 3 bands)")
                self._bands = [1, 1, 1] if self._src.count == 1 else [1, 2, 3]
                self.profile = self._src.profile
                self.height, self.width = self._src.height, self._src.width
                self._stretch = None
                if self._src.dtypes[0] != "uint8":
                    sample = self._read_decimated(*preview_size(self.height, self.width, 1024, 1)).astype(np.float32)
                    lo = np.percentile(sample, 2, axis=(1, 2), keepdims=True)
                    hi = np.percentile(sample, 98, axis=(1, 2), keepdims=True)
                    self._stretch = (lo, np.maximum(hi - lo, 1e-6))
            else:
                with Image.open(self.path) as img:
                    self._rgb = np.ascontiguousarray(np.asarray(img.convert("RGB")).transpose(2, 0, 1))
                self.height, self.width = self._rgb.shape[1:]
        except SceneReadError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise SceneReadError(f"{self.path}: cannot read the image ({one_line(exc, 200)})") from None

    def _read_decimated(self, height: int, width: int) -> np.ndarray:
        from rasterio.enums import Resampling

        return self._src.read(self._bands, out_shape=(3, height, width), resampling=Resampling.average)

    def _to_uint8(self, bands: np.ndarray) -> np.ndarray:
        if self._stretch is None:
            return bands
        lo, span = self._stretch
        return np.clip((bands.astype(np.float32) - lo) / span * 255, 0, 255).astype(np.uint8)

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows y0..y1 -> (3, y1 - y0, W) uint8."""
        if self._rgb is not None:
            return self._rgb[:, y0:y1]
        from rasterio.windows import Window

        try:
            return self._to_uint8(self._src.read(self._bands, window=Window(0, y0, self.width, y1 - y0)))
        except Exception as exc:
            raise SceneReadError(f"{self.path}: cannot read rows {y0}-{y1} ({one_line(exc, 200)})") from None

    def overview(self, max_side: int) -> np.ndarray:
        """The whole scene at most ``max_side`` px per side -> (h, w, 3) uint8."""
        h, w = preview_size(self.height, self.width, max_side)
        if self._rgb is not None:
            img = Image.fromarray(self._rgb.transpose(1, 2, 0))
            if (h, w) == (self.height, self.width):
                return np.asarray(img)
            return np.asarray(img.resize((w, h), Image.BILINEAR if h < self.height else Image.NEAREST))
        return self._to_uint8(self._read_decimated(h, w)).transpose(1, 2, 0)

    def close(self) -> None:
        if self._src is not None:
            self._src.close()
            self._src = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def output_paths(out_dir: Path, stem: str, geotiff: bool, save_scores: bool) -> Dict[str, Path]:
    """kind -> path of every output of one input (``classes`` is written last)."""
    ext = ".tif" if geotiff else ".png"
    paths = {"labels": f"{stem}_labels{ext}", "color": f"{stem}_color{ext}", "overlay": f"{stem}_overlay.png"}
    if save_scores:
        paths["scores"] = f"{stem}_scores" + (".tif" if geotiff else ".npy")
    paths["classes"] = f"{stem}_classes.json"
    return {k: Path(out_dir) / v for k, v in paths.items()}


def _qml(palette: np.ndarray, names) -> str:
    """A QGIS paletted style (QGIS loads ``X.qml`` beside ``X.tif`` automatically)."""
    entries = "\n".join(
        f'        <paletteEntry value="{i}" color="#{c[0]:02x}{c[1]:02x}{c[2]:02x}" alpha="255" '
        f'label="{escape(n, {chr(34): "&quot;"})}"/>' for i, (n, c) in enumerate(zip(names, palette)))
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            "<qgis version=\"3.28.0\" styleCategories=\"Symbology\">\n"
            "  <pipe>\n    <rasterrenderer type=\"paletted\" band=\"1\" opacity=\"1\" alphaBand=\"-1\">\n"
            f"      <colorPalette>\n{entries}\n      </colorPalette>\n    </rasterrenderer>\n  </pipe>\n</qgis>\n")


def _pam(names) -> str:
    """GDAL's sidecar (``X.tif.aux.xml``) with the category names of band 1."""
    cats = "\n".join(f"      <Category>{escape(n)}</Category>" for n in names)
    return (f'<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>\n{cats}\n'
            "    </CategoryNames>\n  </PAMRasterBand>\n</PAMDataset>\n")


def segment_scene(predictor: SlidingWindowPredictor, path, out_dir, stem: str, *, save_scores: bool = False,
                  scores_dtype: str = "uint8", alpha: float = 0.5, preview_max_side: int = 2048,
                  progress=None, run_info: Optional[dict] = None) -> List[Path]:
    """Segment the image ``path`` with ``predictor`` and write its outputs (see module doc).

    Every file is written under a temporary name and renamed when complete, so an interrupted
    run never leaves a truncated output under a final name. ``progress`` (e.g. a tqdm bar) gets
    ``total`` = the number of windows and ``update(n)`` after each forward. Returns the written paths.
    """
    if scores_dtype not in SCORE_DTYPES:
        raise ValueError(f"scores_dtype={scores_dtype!r}: expected one of {', '.join(SCORE_DTYPES)}")
    out_dir = Path(out_dir)
    names = predictor.class_names
    if len(names) > 256:
        raise ValueError(f"{len(names)} classes: label maps are uint8, at most 256 classes")
    palette = class_palette(names)
    start = time.perf_counter()
    with SceneReader(path) as reader:
        geo = reader.profile is not None
        on_window = None
        if progress is not None:
            progress.total = predictor.num_windows(reader.height, reader.width)
            progress.refresh()
            on_window = progress.update
        paths = output_paths(out_dir, stem, geo, save_scores)
        tmps = {k: temp_path(p) for k, p in paths.items()}
        try:
            if geo:
                _write_geotiffs(predictor, reader, tmps, palette, names, save_scores, scores_dtype, on_window)
                import rasterio
                from rasterio.enums import Resampling

                h, w = preview_size(reader.height, reader.width, preview_max_side)
                with rasterio.open(tmps["labels"]) as src:  # nearest: class indices must not mix
                    small_labels = src.read(1, out_shape=(h, w), resampling=Resampling.nearest)
            else:
                labels = np.empty((reader.height, reader.width), np.uint8)
                scores_file = None
                if save_scores:
                    dtype = np.uint8 if scores_dtype == "uint8" else np.float16
                    scores_file = np.lib.format.open_memmap(tmps["scores"], mode="w+", dtype=dtype,
                                                            shape=(len(names), reader.height, reader.width))
                for y0, band in predictor.predict_bands(reader.read_rows, reader.height, reader.width, on_window):
                    labels[y0:y0 + band.shape[1]] = band.argmax(0)
                    if scores_file is not None:
                        scores_file[:, y0:y0 + band.shape[1]] = _scores_as(band, scores_dtype)
                if scores_file is not None:
                    scores_file.flush()
                    del scores_file
                Image.fromarray(labels).save(tmps["labels"], format="PNG")
                Image.fromarray(colorize(labels, palette)).save(tmps["color"], format="PNG")
                h, w = preview_size(reader.height, reader.width, preview_max_side)
                small_labels = np.asarray(Image.fromarray(labels).resize((w, h), Image.NEAREST))
            overlay = overlay_with_legend(reader.overview(preview_max_side), small_labels, palette, names, alpha)
            overlay.save(tmps["overlay"], format="PNG")
            info = dict(run_info or {}, input=str(Path(path).resolve()), height=reader.height, width=reader.width,
                        seconds=round(time.perf_counter() - start, 2),
                        outputs={k: p.name for k, p in paths.items() if k != "classes"},
                        scores=({"dtype": scores_dtype, "scale": 255 if scores_dtype == "uint8" else 1}
                                if save_scores else None),
                        classes=[{"index": i, "name": n, "synonyms": list(group), "color": palette[i].tolist()}
                                 for i, (n, group) in enumerate(zip(names, _groups(predictor)))])
            tmps["classes"].write_text(json.dumps(info, indent=2))
            for kind in paths:  # the class file last: it marks the input as done
                os.replace(tmps[kind], paths[kind])
        finally:
            for tmp in tmps.values():
                if tmp.exists():
                    tmp.unlink()
    if geo:
        paths["labels"].with_suffix(".qml").write_text(_qml(palette, names))
        Path(str(paths["labels"]) + ".aux.xml").write_text(_pam(names))
    return list(paths.values())


def _groups(predictor: SlidingWindowPredictor):
    if predictor.classes is not None:
        return predictor.classes.groups
    return [[n] for n in predictor.class_names]


def _scores_as(band: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":  # probabilities x 255, rounded
        return np.clip(np.rint(band * 255), 0, 255).astype(np.uint8)
    return band.astype(np.float16)


def _write_geotiffs(predictor, reader: SceneReader, tmps, palette, names, save_scores, scores_dtype, on_window):
    """Stream labels, colours and (optionally) scores into tiled, compressed GeoTIFFs."""
    import rasterio
    from rasterio.windows import Window

    base = dict(reader.profile, driver="GTiff", nodata=None, compress="deflate", tiled=True,
                blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER")
    for key in ("photometric", "interleave"):
        base.pop(key, None)
    if reader.width < 256 or reader.height < 256:  # GeoTIFF tiles must fit; strips then
        base.update(tiled=False)
        base.pop("blockxsize"), base.pop("blockysize")
    K = len(names)
    datasets = {
        "labels": rasterio.open(tmps["labels"], "w", **dict(base, count=1, dtype="uint8")),
        "color": rasterio.open(tmps["color"], "w", **dict(base, count=3, dtype="uint8", photometric="RGB")),
    }
    if save_scores:
        # GDAL before 3.11 has no 16-bit float type: float16 scores are stored as Float32
        datasets["scores"] = rasterio.open(
            tmps["scores"], "w", **dict(base, count=K, dtype="uint8" if scores_dtype == "uint8" else "float32"))
    try:
        lab = datasets["labels"]
        lab.write_colormap(1, {i: tuple(int(v) for v in c) + (255,) for i, c in enumerate(palette)})
        lab.set_band_description(1, "class index: " + ", ".join(f"{i}={n}" for i, n in enumerate(names)))
        lab.update_tags(CLASS_NAMES=json.dumps(list(names)))
        lab.update_tags(1, **{f"CLASS_{i}": n for i, n in enumerate(names)})
        if "scores" in datasets:
            for i, n in enumerate(names):
                datasets["scores"].set_band_description(i + 1, n)
            datasets["scores"].update_tags(SCALE="1/255" if scores_dtype == "uint8" else "1")
        for y0, band in predictor.predict_bands(reader.read_rows, reader.height, reader.width, on_window):
            window = Window(0, y0, reader.width, band.shape[1])
            labels = band.argmax(0).astype(np.uint8)
            lab.write(labels, 1, window=window)
            datasets["color"].write(colorize(labels, palette).transpose(2, 0, 1), window=window)
            if "scores" in datasets:
                scores = _scores_as(band, "uint8") if scores_dtype == "uint8" else band.astype(np.float32)
                datasets["scores"].write(scores, window=window)
    finally:
        for ds in datasets.values():
            ds.close()
