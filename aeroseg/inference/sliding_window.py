"""Segment scenes of any size with a model trained on tiles: blended, streamed sliding windows."""
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .class_names import ClassNames
from .encoding_cache import EncodingCache, batch_key, weights_version

__all__ = ["SlidingWindowPredictor", "window_offsets", "blend_profile", "BLEND_MODES"]

BLEND_MODES = ("cosine", "gaussian", "uniform")
# Reads rows [y0, y1) of a scene: -> (3, y1 - y0, W) uint8 RGB (numpy array or tensor), or a pair
# (image, valid) with the (y1 - y0, W) bool mask of the pixels that are image (not nodata).
RowReader = Callable[[int, int], Union[np.ndarray, torch.Tensor]]


def window_offsets(length: int, window: int, stride: int) -> List[int]:
    """Start offsets covering ``length``; the last window is moved back to end at the border."""
    if length <= window:
        return [0]
    offsets = list(range(0, length - window, stride))
    offsets.append(length - window)
    return offsets


def blend_profile(length: int, ramp: int, mode: str = "cosine") -> np.ndarray:
    """1-D weights (length,) of a window side, > 0 everywhere (so scene borders stay covered).

    ``cosine``: 1 in the middle, a raised-cosine ramp over the ``ramp`` pixels at each end,
    sampled at pixel centres; two windows overlapping by ``ramp`` pixels cross-fade with weights
    summing to exactly 1, so a window's edge (where models are least reliable and where its
    contribution would otherwise start or stop abruptly) fades out instead of making a seam.
    ``gaussian``: exp(-d^2 / (2 (length / 8)^2)) around the centre (nnU-Net's choice), floored at
    1e-3 of the peak. ``uniform``: all ones (plain averaging; seams show).
    """
    if mode == "uniform":
        return np.ones(length, np.float32)
    centres = np.arange(length, dtype=np.float64) + 0.5
    if mode == "gaussian":
        sigma = length / 8
        weights = np.exp(-((centres - length / 2) ** 2) / (2 * sigma ** 2))
        return np.maximum(weights, 1e-3).astype(np.float32)
    if mode != "cosine":
        raise ValueError(f"blend mode {mode!r}: expected one of {', '.join(BLEND_MODES)}")
    ramp = min(int(ramp), length // 2)
    weights = np.ones(length, np.float64)
    if ramp > 0:
        rising = 0.5 - 0.5 * np.cos(math.pi * centres[:ramp] / ramp)
        weights[:ramp] = rising
        weights[length - ramp:] = rising[::-1]
    return weights.astype(np.float32)


def tile_from_config(cfg) -> Optional[int]:
    """The default window side: the training crop (INPUT.CROP.SIZE, its longer side) when cropping is
    on, else the test size (INPUT.MIN_SIZE_TEST); None when neither gives one."""
    if cfg.INPUT.CROP.ENABLED:
        return int(max(float(v) for v in cfg.INPUT.CROP.SIZE))
    return int(cfg.INPUT.MIN_SIZE_TEST) or None


class SlidingWindowPredictor:
    """Per-class probabilities of a whole scene, produced one band of windows at a time.

    The scene is cut into ``tile`` x ``tile`` windows overlapping by ``overlap`` (a fraction of
    the tile), ``batch_size`` windows go through the model per forward, and overlapping scores
    are blended with the weights of :func:`blend_profile`. Windows are processed band by band
    (all windows starting on the same row); as soon as a band is done, the rows no later window
    touches are final and handed out, so memory holds at most ``K x tile x W`` scores (K classes,
    W the scene width) whatever the scene height. The next band is read by a background thread
    while the model runs.

    Classes may have synonyms (``[["tree", "forest"], "building"]``): the model segments every
    name and a class's score is the maximum over its names.

    ``cache_mb`` > 0 keeps up to that many MB of the last scene's window encodings (CLIP's
    dense features and the guidance taps, :meth:`AerOSeg.encode_images`): segmenting the same
    scene again with other classes then runs only the text encoder and the head, with the same
    numbers as a fresh run (:mod:`.encoding_cache`); changed weights (a checkpoint loaded,
    a training step) make it start afresh.

    Example::

        predictor = SlidingWindowPredictor.from_config_file("configs/demo/tiny_cpu.yaml",
                                                       "output/tiny_cpu/model_final.pth")
        scores = predictor(image, classes=["building", "road|street", "tree"])  # (3, H, W) -> (3, H, W)
    """

    def __init__(self, model, tile: int = 256, overlap: float = 0.25, batch_size: int = 4,
                 blend: str = "cosine", progress: bool = False, cache_mb: float = 0):
        if tile <= 0 or not 0 <= overlap < 1 or batch_size <= 0:
            raise ValueError(f"tile={tile} must be > 0, overlap={overlap} in [0, 1), batch_size={batch_size} > 0")
        if blend not in BLEND_MODES:
            raise ValueError(f"blend={blend!r}: expected one of {', '.join(BLEND_MODES)}")
        self.model, self.tile, self.batch_size, self.blend = model, int(tile), int(batch_size), blend
        self.stride = max(1, int(round(self.tile * (1 - overlap))))
        self.progress = progress
        self.classes: Optional[ClassNames] = None
        self.cfg = None  # the merged config when built by from_config
        if cache_mb < 0:
            raise ValueError(f"cache_mb={cache_mb}: expected >= 0")
        self.cache = EncodingCache(int(cache_mb * 2 ** 20)) if cache_mb > 0 else None

    def clear_cache(self) -> None:
        """Forget the kept image encodings."""
        if self.cache is not None:
            self.cache.clear()

    @classmethod
    def from_config_file(cls, config_file: str, weights: str = "", opts: Sequence[str] = (), **kwargs):
        """Build the model of ``config_file`` (with ``opts`` overrides), load ``weights``, wrap it."""
        from ..checkpoint import AerOSegCheckpointer
        from ..config.loading import load_config
        from ..config.validation import validate_config
        from ..modeling import build_model
        from ..modeling.meta_arch import TRAINING_ONLY_PREFIXES

        cfg = load_config(config_file, opts)  # one-line errors for the file and the overrides
        if weights:
            cfg.MODEL.WEIGHTS = weights
        if str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
            cfg.MODEL.DEVICE = "cpu"
        validate_config(cfg, "predict")  # every key, before the model is built
        default_tile = tile_from_config(cfg)
        if kwargs.get("tile") is None and default_tile is None:
            from ..utils.errors import ConfigError

            raise ConfigError(f"{config_file}: no window size (INPUT.CROP is off and INPUT.MIN_SIZE_TEST is "
                              f"{cfg.INPUT.MIN_SIZE_TEST}): pass --tile")
        model = build_model(cfg)
        weights = weights or cfg.MODEL.WEIGHTS
        if not weights:
            logging.getLogger(__name__).warning("no weights (MODEL.WEIGHTS is empty): segmenting with the "
                                                "config's initial weights")
        else:
            AerOSegCheckpointer(model, ignore_prefixes=TRAINING_ONLY_PREFIXES).load(weights, checkpointables=[])
        if kwargs.get("tile") is None:
            kwargs["tile"] = default_tile
        predictor = cls(model, **kwargs)
        predictor.cfg = cfg
        return predictor

    def set_classes(self, classes: Union[ClassNames, Sequence[Union[str, Sequence[str]]]]) -> ClassNames:
        """Segment ``classes`` from now on (names, or lists of synonyms); returns them parsed."""
        self.classes = classes if isinstance(classes, ClassNames) else ClassNames(classes)
        self.model.set_vocabulary(self.classes.all_names)
        return self.classes

    @property
    def class_names(self) -> List[str]:
        """Display name (the first synonym) of each output channel."""
        if self.classes is not None:
            return self.classes.display_names
        return list(self.model.vocabulary)

    # ------------------------------------------------------------------ whole scenes in memory
    @torch.no_grad()
    def __call__(self, image: Union[torch.Tensor, np.ndarray], classes=None) -> torch.Tensor:
        """image: (3, H, W) RGB on the 0..255 scale -> (K, H, W) float32 probabilities (CPU)."""
        if classes is not None:
            self.set_classes(classes)
        _, height, width = image.shape
        scores = None
        for y0, band in self.predict_bands(lambda a, b: image[:, a:b], height, width):
            if scores is None:
                scores = np.empty((band.shape[0], height, width), np.float32)
            scores[:, y0:y0 + band.shape[1]] = band
        return torch.from_numpy(scores)

    # ------------------------------------------------------------------ streaming
    def num_windows(self, height: int, width: int) -> int:
        return len(window_offsets(height, self.tile, self.stride)) * len(window_offsets(width, self.tile, self.stride))

    def predict_bands(self, read_rows: RowReader, height: int, width: int,
                      on_window: Optional[Callable[[int], None]] = None) -> Iterator[Tuple[int, np.ndarray]]:
        """Yield ``(y0, scores)`` for consecutive row ranges covering the scene, top to bottom.

        ``scores`` is a (K, h, W) float32 array of final (blended) probabilities of rows
        ``y0 .. y0 + h``. ``read_rows(y0, y1)`` returns rows ``y0 .. y1`` of the image, (3, h, W)
        uint8, or a pair ``(image, valid)`` with a (h, W) bool mask of the pixels that are image
        (not nodata); it is called once per band, one band ahead, from a background thread.
        With a mask, windows without any valid pixel are not segmented, and the scores of
        invalid pixels are NaN. ``on_window(n)`` is called with the number of windows done
        (segmented or skipped).
        """
        was_training = self.model.training
        self.model.eval()
        try:
            yield from self._bands(read_rows, height, width, on_window)
        finally:
            self.model.train(was_training)

    def _bands(self, read_rows, height, width, on_window):
        ys = window_offsets(height, self.tile, self.stride)
        xs = window_offsets(width, self.tile, self.stride)
        win_h, win_w = min(self.tile, height), min(self.tile, width)
        ramp = self.tile - self.stride
        weight_2d = np.outer(blend_profile(win_h, ramp, self.blend), blend_profile(win_w, ramp, self.blend))
        # acc rows cover the scene rows [top, top + win_h): the only rows not yet final.
        acc, acc_weight, top = None, np.zeros((win_h, width), np.float32), 0
        if self.cache is not None:
            self.cache.begin(weights_version(self.model))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="aeroseg-read") as reader:
            pending = reader.submit(read_rows, ys[0], ys[0] + win_h)
            for i, y in enumerate(ys):
                band_image = pending.result()
                if i + 1 < len(ys):  # read the next band while the model runs on this one
                    pending = reader.submit(read_rows, ys[i + 1], ys[i + 1] + win_h)
                valid = None
                if isinstance(band_image, tuple):
                    band_image, valid = band_image
                    valid = np.asarray(valid, dtype=bool)
                band_image = torch.as_tensor(np.asarray(band_image))
                bad_mask = valid is not None and valid.shape != (win_h, width)
                if tuple(band_image.shape) != (3, win_h, width) or bad_mask:
                    mask = "" if valid is None else f" and mask {valid.shape}"
                    raise ValueError(f"read_rows({y}, {y + win_h}) gave shape {tuple(band_image.shape)}{mask}, "
                                     f"expected {(3, win_h, width)}")
                # windows with image in them (all of them without a mask)
                todo = xs if valid is None else [x for x in xs if valid[:, x:x + win_w].any()]
                if on_window is not None and len(todo) < len(xs):
                    on_window(len(xs) - len(todo))
                for start in range(0, len(todo), self.batch_size):
                    batch_xs = todo[start:start + self.batch_size]
                    window_scores = self._segment([band_image[:, :, x:x + win_w] for x in batch_xs])
                    if acc is None:
                        acc = np.zeros((window_scores[0].shape[0], win_h, width), np.float32)
                    offset = y - top
                    for x, s in zip(batch_xs, window_scores):
                        acc[:, offset:offset + win_h, x:x + win_w] += s * weight_2d
                        acc_weight[offset:offset + win_h, x:x + win_w] += weight_2d
                    if on_window is not None:
                        on_window(len(batch_xs))
                if acc is None:  # nothing segmented yet: the number of classes is the predictor's
                    acc = np.zeros((len(self.class_names), win_h, width), np.float32)
                # rows above the next band's first row receive no more windows: hand them out
                final_end = ys[i + 1] if i + 1 < len(ys) else height
                n = final_end - top
                weight = acc_weight[None, :n]
                scores = np.divide(acc[:, :n], weight, out=np.full_like(acc[:, :n], np.nan), where=weight > 0)
                if valid is not None:  # top == y: the final rows are the first rows of this band
                    scores[:, ~valid[:n]] = np.nan
                yield top, scores
                acc = np.concatenate([acc[:, n:], np.zeros_like(acc[:, :n])], axis=1)
                acc_weight = np.concatenate([acc_weight[n:], np.zeros_like(acc_weight[:n])], axis=0)
                top = final_end

    def _segment(self, crops: List[torch.Tensor]) -> List[np.ndarray]:
        """One forward over ``crops`` ((3, h, w) each) -> per-class scores (K, h, w) each."""
        with torch.no_grad():
            if self.cache is None or not hasattr(self.model, "encode_images"):
                outputs = self.model([{"image": c, "height": c.shape[1], "width": c.shape[2]} for c in crops])
            else:  # the model's forward, split: the image encodings may be kept or reused
                key = batch_key(crops)
                encoding = self.cache.get(key)
                if encoding is None:
                    encoding = self.model.encode_images(crops)
                    self.cache.put(key, encoding, encoding.nbytes)
                outputs = self.model.segment_encoded(encoding, [tuple(c.shape[1:]) for c in crops])
        scores = []
        for out in outputs:
            s = out["sem_seg"].float()
            if self.classes is not None and self.classes.has_synonyms:
                s = self.classes.reduce(s)
            scores.append(s.cpu().numpy())
        return scores
