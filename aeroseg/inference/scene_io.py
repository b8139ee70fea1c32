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
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from ..utils.errors import AerOSegError, one_line
from .sliding_window import SlidingWindowPredictor
from ..utils.io import temp_path
from .visualize import class_palette, colorize, overlay_with_legend, preview_size

__all__ = ["NODATA_LABEL", "SceneReader", "SceneReadError", "output_paths", "parse_bands", "segment_scene",
           "GEOTIFF_SUFFIXES", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
GEOTIFF_SUFFIXES = (".tif", ".tiff")
SCORE_DTYPES = ("uint8", "float16")


class SceneReadError(AerOSegError, OSError):
    """An input image cannot be read (the message names it)."""


def is_geotiff(path: Path) -> bool:
    return Path(path).suffix.lower() in GEOTIFF_SUFFIXES


# Label value of pixels that are not image (nodata, a mask band, PNG alpha): no class is predicted there.
NODATA_LABEL = 255
MAX_CLASSES = NODATA_LABEL  # class indices 0..254
# Percentiles of the valid pixels mapped to 0 and 255 when non-8-bit data are stretched.
STRETCH_PERCENTILES = (2.0, 98.0)


def parse_bands(text: str) -> List[int]:
    """``"3,2,1"`` -> ``[3, 2, 1]``: 1-based band numbers (as GDAL), one (grey) or three (R, G, B)."""
    try:
        bands = [int(b) for b in str(text).replace(" ", "").split(",") if b != ""]
    except ValueError:
        raise SceneReadError(f"--bands {text}: expected 1-based band numbers, e.g. 3,2,1 (R, G, B) or 4 "
                             f"(one band shown as grey)") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise SceneReadError(f"--bands {text}: expected one or three band numbers >= 1 (1-based, as GDAL), "
                             f"e.g. 3,2,1")
    return bands


class SceneReader:
    """(3, h, W) uint8 RGB rows of a scene and the mask of its valid pixels, read through rasterio
    (GDAL) for every format: GeoTIFFs by windows (memory bounded by the scene width), other
    images (PNG, JPEG, BMP) whole.

    **Bands.** ``bands`` (1-based, as GDAL: ``[3, 2, 1]``, or one band shown as grey) chooses
    them explicitly. Otherwise the declared colour interpretation is used: the bands declared
    red, green and blue in that order (a GeoTIFF stored blue, green, red is read right), a
    paletted image through its colour table, a grey band (with or without alpha) as grey; other
    rasters use their first three bands. Two bands without alpha are refused.

    **Valid pixels.** A pixel is nodata when GDAL's masks say so for all chosen bands (the
    GeoTIFF's nodata value in every band, an internal or ``.msk`` mask band, an alpha band, PNG
    transparency, a transparent palette entry), or when a chosen band is NaN / infinite. Nodata pixels get no
    class; windows without valid pixels are not segmented.

    **Values.** 8-bit data are used as they are. Other data (16-bit sensors, 16-bit PNGs, float
    reflectances) are stretched per band, linearly, from its 2nd to its 98th percentile to
    0..255, the percentiles computed over the valid pixels only (NaN and nodata never enter),
    on a sample of at most 1024 px per side (exact for smaller scenes). ``value_range=(lo, hi)``
    replaces the stretch by one fixed linear map of lo..hi to 0..255 for every band (8-bit
    data included).
    """

    def __init__(self, path, bands: Optional[Sequence[int]] = None,
                 value_range: Optional[Sequence[float]] = None):
        self.path = Path(path)
        self.profile = None
        self._src = self._whole = None
        self._lut = None  # palette -> RGBA
        try:
            import rasterio

            with warnings.catch_warnings():  # a PNG has no georeferencing: that is fine here
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self._src = rasterio.open(self.path)
            src = self._src
            self.height, self.width = src.height, src.width
            self.band_indexes = self._choose_bands(src, bands)
            self.dtype = np.dtype(src.dtypes[self.band_indexes[0] - 1])
            if value_range is not None:
                lo, hi = (float(v) for v in value_range)
                if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                    raise SceneReadError(f"--value-range {lo:g} {hi:g}: expected two finite numbers, low < high")
                self.scaling = {"method": "value_range", "low": [lo] * 3, "high": [hi] * 3}
            elif self.dtype == np.uint8 or self._lut is not None:
                self.scaling = None
            else:
                self.scaling = self._percentile_stretch()
            if is_geotiff(self.path):
                self.profile = src.profile
            else:  # decoded whole, once
                data, valid = self._read(None)
                image = self._to_uint8(data)
                image[:, ~valid] = 0
                self._whole = (image, valid)
                self._src.close()
                self._src = None
        except SceneReadError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise SceneReadError(f"{self.path}: cannot read the image ({one_line(exc, 200)})") from None

    # ------------------------------------------------------------------ bands and masks
    def _choose_bands(self, src, bands) -> List[int]:
        from rasterio.enums import ColorInterp

        if bands is not None:
            bands = [int(b) for b in bands]
            if len(bands) not in (1, 3) or min(bands) < 1 or max(bands) > src.count:
                raise SceneReadError(f"{self.path}: --bands {','.join(map(str, bands))} does not fit its {src.count} "
                                     f"band(s) (1-based, one or three of 1..{src.count})")
            return bands * 3 if len(bands) == 1 else bands
        interp = list(src.colorinterp)
        if all(c in interp for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
            return [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)]
        if interp and interp[0] == ColorInterp.palette:
            colormap = src.colormap(1)
            lut = np.zeros((max(256, max(colormap) + 1), 4), np.uint8)
            for index, rgba in colormap.items():
                lut[index] = rgba
            self._lut = lut
            return [1, 1, 1]
        non_alpha = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha]
        if len(non_alpha) == 1:
            return non_alpha * 3
        if len(non_alpha) == 2:
            raise SceneReadError(f"{self.path}: 2 bands without alpha are not an image (expected 1 or >= 3 bands; "
                                 f"choose them with --bands, e.g. --bands 1)")
        return non_alpha[:3]

    def _read(self, window, out_shape=None):
        """(raw bands (3, h, w) in the file's dtype, valid (h, w) bool) of ``window`` (None: all)."""
        from rasterio.enums import Resampling

        unique = list(dict.fromkeys(self.band_indexes))
        kwargs = dict(window=window)
        if out_shape is not None:
            kwargs.update(out_shape=(len(unique), *out_shape), resampling=Resampling.nearest)
        data = self._src.read(unique, **kwargs)
        masks = self._src.read_masks(unique, **kwargs)
        valid = np.any(masks > 0, axis=0)  # nodata: every band is nodata (as rasterio's dataset_mask)
        if data.dtype.kind == "f":
            valid &= np.all(np.isfinite(data), axis=0)
        if self._lut is not None:
            valid &= self._lut[data[0], 3] > 0
        position = {b: i for i, b in enumerate(unique)}
        return data[[position[b] for b in self.band_indexes]], valid

    def _percentile_stretch(self) -> dict:
        h, w = preview_size(self.height, self.width, 1024, 1)
        data, valid = self._read(None, out_shape=(h, w))
        low, high = [], []
        for band in data:
            values = band[valid].astype(np.float64)
            if values.size == 0:  # an all-nodata scene: nothing will be segmented
                low.append(0.0), high.append(1.0)
                continue
            lo, hi = np.percentile(values, STRETCH_PERCENTILES)
            low.append(float(lo)), high.append(float(hi))
        return {"method": "percentile", "percentiles": list(STRETCH_PERCENTILES), "low": low, "high": high}

    def _to_uint8(self, data: np.ndarray) -> np.ndarray:
        if self._lut is not None:
            return np.ascontiguousarray(self._lut[data[0], :3].transpose(2, 0, 1))
        if self.scaling is None:
            return data
        lo = np.asarray(self.scaling["low"], np.float64)[:, None, None]
        span = np.maximum(np.asarray(self.scaling["high"], np.float64)[:, None, None] - lo, 1e-12)
        scaled = (data.astype(np.float64) - lo) / span * 255
        scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------ reading
    def read_rows(self, y0: int, y1: int):
        """Rows y0..y1 -> ((3, y1 - y0, W) uint8 RGB, (y1 - y0, W) bool valid pixels)."""
        if self._whole is not None:
            image, valid = self._whole
            return image[:, y0:y1], valid[y0:y1]
        from rasterio.windows import Window

        try:
            data, valid = self._read(Window(0, y0, self.width, y1 - y0))
        except Exception as exc:
            raise SceneReadError(f"{self.path}: cannot read rows {y0}-{y1} ({one_line(exc, 200)})") from None
        image = self._to_uint8(data)
        image[:, ~valid] = 0
        return image, valid

    def overview(self, max_side: int) -> np.ndarray:
        """The whole scene at most ``max_side`` px per side -> (h, w, 3) uint8 (nodata black)."""
        h, w = preview_size(self.height, self.width, max_side)
        if self._whole is not None:
            img = Image.fromarray(self._whole[0].transpose(1, 2, 0))
            if (h, w) == (self.height, self.width):
                return np.asarray(img)
            return np.asarray(img.resize((w, h), Image.BILINEAR if h < self.height else Image.NEAREST))
        data, valid = self._read(None, out_shape=(h, w))
        image = self._to_uint8(data)
        image[:, ~valid] = 0
        return image.transpose(1, 2, 0)

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
                  progress=None, run_info: Optional[dict] = None, bands: Optional[Sequence[int]] = None,
                  value_range: Optional[Sequence[float]] = None) -> List[Path]:
    """Segment the image ``path`` with ``predictor`` and write its outputs (see module doc).

    ``bands`` and ``value_range`` choose the bands and the value scaling (:class:`SceneReader`).
    Nodata pixels get the label :data:`NODATA_LABEL` (declared as the labels' nodata value in
    GeoTIFFs), black and masked out in the colour rendering, masked (GeoTIFF) / NaN (float
    scores) / 0 (uint8 ``.npy``) in the scores, grey in the overlay. Every file is written
    under a temporary name and renamed when complete, so an interrupted run never leaves a
    truncated output under a final name. ``progress`` (e.g. a tqdm bar) gets ``total`` = the
    number of windows and ``update(n)`` as windows are done. Returns the written paths.
    """
    if scores_dtype not in SCORE_DTYPES:
        raise ValueError(f"scores_dtype={scores_dtype!r}: expected one of {', '.join(SCORE_DTYPES)}")
    out_dir = Path(out_dir)
    names = predictor.class_names
    if len(names) > MAX_CLASSES:
        raise ValueError(f"{len(names)} classes: label maps are uint8 with {NODATA_LABEL} for nodata, "
                         f"at most {MAX_CLASSES} classes")
    palette = class_palette(names)
    start = time.perf_counter()
    with SceneReader(path, bands=bands, value_range=value_range) as reader:
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
                nodata_pixels = _write_geotiffs(predictor, reader, tmps, palette, names, save_scores, scores_dtype,
                                                on_window)
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
                    labels[y0:y0 + band.shape[1]] = labels_of(band)
                    if scores_file is not None:
                        scores_file[:, y0:y0 + band.shape[1]] = _scores_as(band, scores_dtype)
                if scores_file is not None:
                    scores_file.flush()
                    del scores_file
                nodata = labels == NODATA_LABEL
                nodata_pixels = int(nodata.sum())
                Image.fromarray(labels).save(tmps["labels"], format="PNG")
                colours = colorize(labels, palette, NODATA_LABEL)
                if nodata_pixels:  # transparent where there is no image
                    colours = np.dstack([colours, np.where(nodata, 0, 255).astype(np.uint8)])
                Image.fromarray(colours).save(tmps["color"], format="PNG")
                h, w = preview_size(reader.height, reader.width, preview_max_side)
                small_labels = np.asarray(Image.fromarray(labels).resize((w, h), Image.NEAREST))
            overlay = overlay_with_legend(reader.overview(preview_max_side), small_labels, palette, names, alpha,
                                          nodata_label=NODATA_LABEL)
            overlay.save(tmps["overlay"], format="PNG")
            info = dict(run_info or {}, input=str(Path(path).resolve()), height=reader.height, width=reader.width,
                        seconds=round(time.perf_counter() - start, 2),
                        outputs={k: p.name for k, p in paths.items() if k != "classes"},
                        bands=reader.band_indexes, value_scaling=reader.scaling,
                        nodata_label=NODATA_LABEL, nodata_pixels=nodata_pixels,
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


def labels_of(scores: np.ndarray) -> np.ndarray:
    """(K, h, w) scores, NaN where there is no image -> (h, w) uint8 class indices, :data:`NODATA_LABEL` there."""
    nodata = np.isnan(scores[0])
    labels = np.nan_to_num(scores, nan=-1.0).argmax(0).astype(np.uint8)
    labels[nodata] = NODATA_LABEL
    return labels


def _groups(predictor: SlidingWindowPredictor):
    if predictor.classes is not None:
        return predictor.classes.groups
    return [[n] for n in predictor.class_names]


def _scores_as(band: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":  # probabilities x 255, rounded; nodata (NaN) 0
        return np.clip(np.rint(np.nan_to_num(band, nan=0.0) * 255), 0, 255).astype(np.uint8)
    return band.astype(np.float16)  # nodata stays NaN


def _write_geotiffs(predictor, reader: SceneReader, tmps, palette, names, save_scores, scores_dtype, on_window) -> int:
    """Stream labels, colours and (optionally) scores into tiled, compressed GeoTIFFs; returns the
    number of nodata pixels (labels :data:`NODATA_LABEL`, the other outputs masked there)."""
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
    nodata_pixels = 0
    # masks of the colour and uint8 score rasters go inside the file (QGIS and GDAL read them)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        datasets = {
            "labels": rasterio.open(tmps["labels"], "w", **dict(base, count=1, dtype="uint8", nodata=NODATA_LABEL)),
            "color": rasterio.open(tmps["color"], "w", **dict(base, count=3, dtype="uint8", photometric="RGB")),
        }
        if save_scores:
            # GDAL before 3.11 has no 16-bit float type: float16 scores are stored as Float32 (NaN = nodata)
            kind = dict(dtype="uint8") if scores_dtype == "uint8" else dict(dtype="float32", nodata=float("nan"))
            datasets["scores"] = rasterio.open(tmps["scores"], "w", **dict(base, count=K, **kind))
        try:
            lab = datasets["labels"]
            colormap = {i: tuple(int(v) for v in c) + (255,) for i, c in enumerate(palette)}
            colormap[NODATA_LABEL] = (0, 0, 0, 0)
            lab.write_colormap(1, colormap)
            lab.set_band_description(1, "class index: " + ", ".join(f"{i}={n}" for i, n in enumerate(names))
                                     + f"; {NODATA_LABEL}=nodata")
            lab.update_tags(CLASS_NAMES=json.dumps(list(names)))
            lab.update_tags(1, **{f"CLASS_{i}": n for i, n in enumerate(names)})
            if "scores" in datasets:
                for i, n in enumerate(names):
                    datasets["scores"].set_band_description(i + 1, n)
                datasets["scores"].update_tags(SCALE="1/255" if scores_dtype == "uint8" else "1")
            for y0, band in predictor.predict_bands(reader.read_rows, reader.height, reader.width, on_window):
                window = Window(0, y0, reader.width, band.shape[1])
                labels = labels_of(band)
                valid = labels != NODATA_LABEL
                nodata_pixels += int(valid.size - valid.sum())
                mask = np.where(valid, 255, 0).astype(np.uint8)
                lab.write(labels, 1, window=window)
                datasets["color"].write(colorize(labels, palette, NODATA_LABEL).transpose(2, 0, 1), window=window)
                datasets["color"].write_mask(mask, window=window)
                if "scores" in datasets:
                    scores = _scores_as(band, "uint8") if scores_dtype == "uint8" else band.astype(np.float32)
                    datasets["scores"].write(scores, window=window)
                    if scores_dtype == "uint8":
                        datasets["scores"].write_mask(mask, window=window)
        finally:
            for ds in datasets.values():
                ds.close()
    return nodata_pixels
