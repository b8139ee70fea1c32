"""``aeroseg-predict`` / ``tools/predict.py``: segment your own scenes into any list of class names.

    aeroseg-predict --config-file configs/isaid/aeroseg_vitb.yaml \\
        --input scene.tif more_scenes/ --classes "building|roof, road|street, swimming pool, tree" \\
        --output predictions/ MODEL.WEIGHTS output/isaid/aeroseg_vitb/model_final.pth

Scenes of any size are cut into overlapping windows (``--tile``, ``--overlap``) whose scores are
blended with a cosine ramp; GeoTIFFs are read and written band by band (memory bounded by the
scene width). For every input it writes ``<stem>_labels`` (class indices; GeoTIFF inputs: a
georeferenced GeoTIFF with a colour table, class names and a QGIS style ``.qml``; others: PNG),
``<stem>_color`` (colour rendering, GeoTIFF or PNG), ``<stem>_overlay.png`` (image, mask and
legend; at most ``--preview-max-side`` px), with ``--save-scores`` ``<stem>_scores`` (K bands of
probabilities: GeoTIFF or ``.npy``) and ``<stem>_classes.json`` (classes, synonyms, colours and
the run's settings; written last). A class may have synonyms, ``"tree|forest"``: its score is
the maximum over its names. Inputs sharing a stem get their folder/suffix in the output name.
Existing outputs are never replaced unless ``--overwrite``; ``--skip-existing`` resumes a batch.
An unreadable input is reported and skipped; the exit status is then 1. Bands follow the
declared colour interpretation (or ``--bands 3,2,1``), non-8-bit data are stretched over their
valid pixels (or ``--value-range``), and nodata pixels get no class (label 255); see
docs/PREDICT.md, "Rasters as they come".
"""
import argparse
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import List, Optional

import torch

from ..utils.cpu_allocator import configure_cpu_allocator
from ..utils.errors import AerOSegError, one_line
from .class_names import ClassNames, parse_classes, read_classes_file
from .scene_io import (IMAGE_SUFFIXES, SCORE_DTYPES, SceneReadError, is_geotiff, output_paths, parse_bands,
                       segment_scene)
from .sliding_window import BLEND_MODES, SlidingWindowPredictor

logger = logging.getLogger("aeroseg.predict")


class PredictError(AerOSegError):
    pass


def collect_inputs(paths) -> List[Path]:
    """Image files given or found (not recursively) in the folders given; duplicates dropped."""
    files, seen = [], set()
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found = [p]
        else:
            raise PredictError(f"{p}: no such file or folder")
        for f in found:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                files.append(f)
    if not files:
        raise PredictError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return files


def unique_stems(files: List[Path]) -> List[str]:
    """Output name of each input: its stem, or, where stems collide, the path below the colliding
    files' common folder with ``/`` -> ``__`` and the suffix kept (``a/x.png`` -> ``a__x_png``)."""
    counts = Counter(f.stem for f in files)
    groups = {}
    for f in files:
        groups.setdefault(f.stem, []).append(f.resolve())
    names = []
    for f in files:
        if counts[f.stem] == 1:
            names.append(f.stem)
            continue
        root = os.path.commonpath([str(g.parent) for g in groups[f.stem]])
        rel = Path(os.path.relpath(f.resolve(), root))
        names.append("__".join(rel.parent.parts + (rel.name.replace(".", "_"),)))
    taken = Counter(names)
    return [n if taken[n] == 1 else f"{n}_{i}" for i, n in enumerate(names)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="aeroseg-predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the model's config (e.g. the training one)")
    p.add_argument("--input", nargs="+", required=True, help="image files and/or folders of images")
    p.add_argument("--output", required=True, help="output folder")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--classes", help='comma-separated classes, synonyms joined by "|": "tree|forest, building"')
    group.add_argument("--classes-file", help='text file, one class per line, synonyms joined by "|"')
    p.add_argument("--tile", type=int, default=None,
                   help="window side in pixels, >= 1 (default: INPUT.CROP.SIZE, else INPUT.MIN_SIZE_TEST)")
    p.add_argument("--bands", default=None, metavar="R,G,B",
                   help="1-based band numbers (as GDAL) shown to the model as R, G, B, e.g. 3,2,1 or 4,3,2 of a "
                        "multispectral scene; one number for a grey image (default: the declared colour "
                        "interpretation, else the first three bands)")
    p.add_argument("--value-range", nargs=2, type=float, default=None, metavar=("LOW", "HIGH"),
                   help="map values LOW..HIGH linearly to 0..255 in every band (default: 8-bit data as they are, "
                        "other data stretched per band from its 2nd to 98th percentile of valid pixels)")
    p.add_argument("--overlap", type=float, default=0.25, help="window overlap, fraction of --tile")
    p.add_argument("--blend", choices=BLEND_MODES, default="cosine", help="weights of overlapping windows")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--save-scores", action="store_true", help="also write the per-class probabilities")
    p.add_argument("--scores-dtype", choices=SCORE_DTYPES, default="uint8",
                   help="uint8: probability x 255; float16 (.npy) / float32 (GeoTIFF)")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the mask in the overlay")
    p.add_argument("--preview-max-side", type=int, default=2048, help="longest side of the overlay PNG")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's; 1 is often fastest on a busy machine)")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    action.add_argument("--skip-existing", action="store_true",
                        help="skip inputs already done with the same classes (resume a batch)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS model.pth")
    return p.parse_args(argv)


def check_arguments(args) -> None:
    """Every command-line number, before anything is read or built (one-line PredictError)."""
    if args.tile is not None and args.tile < 1:
        raise PredictError(f"--tile {args.tile}: expected a window side >= 1 pixel (leave --tile out for the "
                           f"config's INPUT.CROP.SIZE)")
    for name in ("batch_size", "threads", "preview_max_side"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise PredictError(f"--{name.replace('_', '-')} {value}: expected a number >= 1")
    if not 0 <= args.overlap < 1:
        raise PredictError(f"--overlap {args.overlap}: expected a fraction of --tile in [0, 1)")
    if not 0 <= args.alpha <= 1:
        raise PredictError(f"--alpha {args.alpha}: expected a value in [0, 1]")
    if args.bands is not None:
        args.bands = parse_bands(args.bands)
    if args.value_range is not None:
        low, high = args.value_range
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise PredictError(f"--value-range {low:g} {high:g}: expected two finite numbers, LOW < HIGH")


def _classes_from_args(args) -> Optional[ClassNames]:
    if args.classes_file is not None:
        return read_classes_file(args.classes_file)
    if args.classes is not None:
        return parse_classes(args.classes)  # "" is an error, not "the training vocabulary"
    return None


def _done_with(classes_path: Path) -> Optional[list]:
    """The class groups recorded in a finished input's class file (None if unreadable)."""
    try:
        return [c["synonyms"] for c in json.loads(classes_path.read_text())["classes"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s %(name)s]: %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    try:
        check_arguments(args)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        classes = _classes_from_args(args)
        inputs = collect_inputs(args.input)
        stems = unique_stems(inputs)
        out_dir = Path(args.output)
        finished = []  # (input, stem, class file) of inputs a previous run completed
        todo = []
        for f, stem in zip(inputs, stems):
            paths = output_paths(out_dir, stem, is_geotiff(f), args.save_scores)
            existing = [p for p in paths.values() if p.exists()]
            if existing and not args.overwrite:
                if not args.skip_existing:
                    raise PredictError(f"{existing[0]} exists (use --overwrite to replace it, "
                                       "--skip-existing to keep finished inputs)")
                if paths["classes"].exists():
                    finished.append((f, paths["classes"]))
                    continue
                # outputs without a class file: an interrupted input, redone
            todo.append((f, stem))
        predictor = SlidingWindowPredictor.from_config_file(
            args.config_file, opts=args.opts or [], overlap=args.overlap, batch_size=args.batch_size,
            blend=args.blend, tile=args.tile)
        if predictor.model.device.type == "cpu":
            configure_cpu_allocator(predictor.cfg.CPU_ALLOCATOR)
        if classes is not None:
            predictor.set_classes(classes)
        elif not predictor.model.vocabulary:
            raise PredictError("no class names: pass --classes or --classes-file")
        else:
            logger.info("no --classes: segmenting the config's vocabulary %s", list(predictor.model.vocabulary))
        wanted = classes.groups if classes is not None else [[n] for n in predictor.class_names]
        for f, class_file in finished:  # a finished input is kept only if it has the same classes
            done = _done_with(class_file)
            if done != wanted:
                raise PredictError(f"{class_file}: {f} was segmented into other classes ({done}); "
                                   "use another --output or --overwrite")
            logger.info("%s: done already (%s), skipped", f, class_file.name)
        out_dir.mkdir(parents=True, exist_ok=True)
        return _run(predictor, todo, out_dir, args)
    except (AerOSegError, ValueError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a read-only or full output folder
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2


def _run(predictor: SlidingWindowPredictor, todo, out_dir: Path, args) -> int:
    from tqdm import tqdm

    run_info = {"config_file": str(args.config_file), "overrides": list(args.opts or []),
                "tile": predictor.tile, "overlap": args.overlap, "blend": predictor.blend}
    failed = []
    for f, stem in tqdm(todo, desc="images", unit="img", disable=None if len(todo) > 1 else True):
        start = time.perf_counter()
        try:
            with tqdm(desc=f.name, unit="win", leave=False, disable=None) as bar:
                written = segment_scene(
                    predictor, f, out_dir, stem, save_scores=args.save_scores, scores_dtype=args.scores_dtype,
                    alpha=args.alpha, preview_max_side=args.preview_max_side, progress=bar, run_info=run_info,
                    bands=args.bands, value_range=args.value_range)
        except SceneReadError as exc:
            print(f"error: {exc} (skipped)", file=sys.stderr)
            failed.append(f)
            continue
        logger.info("%s: %.1f s -> %s", f, time.perf_counter() - start, ", ".join(p.name for p in written))
    if failed:
        print(f"error: {len(failed)} of {len(todo)} inputs could not be read: {', '.join(map(str, failed))}",
              file=sys.stderr)
        return 1
    return 0
