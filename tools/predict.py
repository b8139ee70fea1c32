#!/usr/bin/env python
"""Segment your own aerial / satellite scenes into any list of class names.

    python tools/predict.py --config-file configs/isaid/aeroseg_vitb.yaml \\
        --input scene.tif more_scenes/ --classes "building, road, swimming pool, tree" \\
        --output predictions/ MODEL.WEIGHTS output/isaid/aeroseg_vitb/model_final.pth

Scenes of any size are cut into overlapping tiles (``--tile``, ``--overlap``) at the training
resolution and the per-class probabilities are averaged. For every input it writes
``<stem>_labels.tif`` (GeoTIFF inputs: georeferenced like the input) or ``<stem>_labels.png``
(class index per pixel, in ``--classes`` order), ``<stem>_color.png`` (a colour rendering) and,
with ``--save-scores``, ``<stem>_scores.npy`` (K, H, W float16 probabilities); ``classes.json``
lists index, name and colour. Existing files are never overwritten unless ``--overwrite``.
"""
import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aeroseg.checkpoint import AerOSegCheckpointer  # noqa: E402
from aeroseg.config import get_cfg  # noqa: E402
from aeroseg.engine.predictor import SlidingWindowPredictor, classes_from_text  # noqa: E402
from aeroseg.modeling import build_model  # noqa: E402
from aeroseg.utils.errors import AerOSegError  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
GEOTIFF_SUFFIXES = (".tif", ".tiff")
logger = logging.getLogger("aeroseg.predict")


class PredictError(AerOSegError):
    pass


def palette(num_classes: int) -> np.ndarray:
    """Distinct, deterministic RGB colours (golden-ratio hues)."""
    import colorsys

    return np.array([[int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)]
                     for i in range(num_classes)], dtype=np.uint8)


def read_scene(path: Path):
    """(3, H, W) uint8 tensor and, for GeoTIFFs, the rasterio profile to georeference outputs."""
    try:
        if path.suffix.lower() in GEOTIFF_SUFFIXES:
            import rasterio

            with rasterio.open(path) as src:
                bands = src.read(list(range(1, min(src.count, 3) + 1)))
                profile = src.profile
            if bands.shape[0] == 1:
                bands = np.repeat(bands, 3, axis=0)
            elif bands.shape[0] == 2:
                raise PredictError(f"{path}: 2-band rasters are not RGB (expected 1 or >= 3 bands)")
            if bands.dtype != np.uint8:  # e.g. 16-bit sensors: stretch each band to 0..255
                bands = bands.astype(np.float32)
                lo = np.percentile(bands, 2, axis=(1, 2), keepdims=True)
                hi = np.percentile(bands, 98, axis=(1, 2), keepdims=True)
                bands = np.clip((bands - lo) / np.maximum(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
            return torch.from_numpy(np.ascontiguousarray(bands)), profile
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))), None
    except PredictError:
        raise
    except Exception as exc:
        raise PredictError(f"{path}: cannot read the image ({' '.join(str(exc).split())})") from None


def collect_inputs(paths):
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise PredictError(f"{p}: no such file or folder")
    if not files:
        raise PredictError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return files


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_outputs(stem: str, out_dir: Path, scores: torch.Tensor, profile, colours, save_scores: bool) -> list:
    labels = scores.argmax(0).numpy().astype(np.uint8)
    written = []
    if profile is not None:
        import rasterio

        meta = dict(profile, driver="GTiff", count=1, dtype="uint8", nodata=None, compress="deflate")
        meta.pop("photometric", None)
        path = out_dir / f"{stem}_labels.tif"

        def write_tif(tmp):
            with rasterio.open(tmp, "w", **meta) as dst:
                dst.write(labels, 1)

        _atomic(path, write_tif)
    else:
        path = out_dir / f"{stem}_labels.png"
        _atomic(path, lambda tmp: Image.fromarray(labels).save(tmp, format="PNG"))
    written.append(path)
    color_path = out_dir / f"{stem}_color.png"
    _atomic(color_path, lambda tmp: Image.fromarray(colours[labels]).save(tmp, format="PNG"))
    written.append(color_path)
    if save_scores:
        score_path = out_dir / f"{stem}_scores.npy"
        _atomic(score_path, lambda tmp: np.save(open(tmp, "wb"), scores.numpy().astype(np.float16)))
        written.append(score_path)
    return written


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--input", nargs="+", required=True, help="image files and/or folders of images")
    p.add_argument("--output", required=True, help="output folder")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--classes", help='comma-separated class names, e.g. "building, road, tree"')
    group.add_argument("--classes-file", help="text file, one class name per line")
    p.add_argument("--tile", type=int, default=256, help="window side in pixels (the training tile size)")
    p.add_argument("--overlap", type=float, default=0.25, help="window overlap, fraction of --tile")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--save-scores", action="store_true", help="also write the probabilities (.npy)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS model.pth")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s %(name)s]: %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    try:
        cfg = get_cfg()
        try:
            cfg.merge_from_file(args.config_file)
            cfg.merge_from_list(args.opts or [])
        except (KeyError, ValueError, AssertionError, OSError) as exc:
            raise PredictError(f"{args.config_file}: {' '.join(str(exc).split())}") from None
        if cfg.MODEL.DEVICE == "cuda" and not torch.cuda.is_available():
            cfg.MODEL.DEVICE = "cpu"
        if args.classes_file:
            from aeroseg.data import read_class_file

            classes = read_class_file(args.classes_file)
        elif args.classes:
            classes = classes_from_text(args.classes)
        else:
            classes = None
        inputs = collect_inputs(args.input)
        out_dir = Path(args.output)
        if not args.overwrite:
            for f in inputs:
                suffixes = ["_labels.tif" if f.suffix.lower() in GEOTIFF_SUFFIXES else "_labels.png", "_color.png"]
                for suffix in suffixes + (["_scores.npy"] if args.save_scores else []):
                    if (out_dir / f"{f.stem}{suffix}").exists():
                        raise PredictError(f"{out_dir / (f.stem + suffix)} exists (use --overwrite to replace it)")
        model = build_model(cfg)
        if cfg.MODEL.WEIGHTS:
            AerOSegCheckpointer(model, ignore_prefixes=("back_projection.",)).load(cfg.MODEL.WEIGHTS, checkpointables=[])
        else:
            logger.warning("MODEL.WEIGHTS is empty: segmenting with the config's initial weights")
        if classes is not None:
            model.set_vocabulary(classes)
        if not model.vocabulary:
            raise PredictError("no class names: pass --classes or --classes-file")
        colours = palette(len(model.vocabulary))
        out_dir.mkdir(parents=True, exist_ok=True)
        table = [{"index": i, "name": n, "color": colours[i].tolist()} for i, n in enumerate(model.vocabulary)]
        _atomic(out_dir / "classes.json", lambda tmp: tmp.write_text(json.dumps(table, indent=2)))
        predictor = SlidingWindowPredictor(model, args.tile, args.overlap, args.batch_size)
        for f in inputs:
            image, profile = read_scene(f)
            scores = predictor(image)
            for path in write_outputs(f.stem, out_dir, scores, profile, colours, args.save_scores):
                logger.info("wrote %s", path)
    except (AerOSegError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
