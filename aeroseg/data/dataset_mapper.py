"""Turn a dataset dict into the model's input dict (detectron2's "mapper")."""
import copy
import logging
import os
from typing import List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..compat import MetadataCatalog, configurable
from ..utils.labels import invalid_label_mask
from .datasets.sem_seg_folder import DatasetError
from .transforms import (
    ColorAugSSD,
    RandomCrop,
    RandomFlip,
    RandomRotate90,
    ResizeShortestEdge,
    apply_augmentations,
)
from .vocabulary import training_vocabulary

__all__ = ["SemSegDatasetMapper", "training_label_map", "read_image", "read_label", "OUT_OF_RANGE_POLICIES"]

logger = logging.getLogger("aeroseg")

# DATALOADER.OUT_OF_RANGE_LABELS: what a label value that is neither a class index nor ignore does.
OUT_OF_RANGE_POLICIES = ("error", "ignore")


def read_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read image ({exc})") from None


def read_label(path: str) -> np.ndarray:
    """(H, W) uint8 class indices (palette PNGs give their indices, not colours)."""
    try:
        with Image.open(path) as img:
            label = np.asarray(img)
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read label ({exc})") from None
    if label.ndim != 2:
        raise DatasetError(f"{path}: label must be single-channel, got shape {label.shape}")
    return label


def training_label_map(classes: Sequence[str], train_classes: Sequence[str], ignore_label: int = 255) -> np.ndarray:
    """256-entry lookup table: dataset class index -> index in ``train_classes`` (else ignore).

    Training sees only the seen classes: their pixels are renumbered to index the training
    vocabulary, and pixels of every other class become ``ignore_label``.
    """
    lut = np.full(256, ignore_label, dtype=np.uint8)
    for i, name in enumerate(classes):
        if name in train_classes:
            lut[i] = list(train_classes).index(name)
    return lut


class SemSegDatasetMapper:
    """Read image + label, (training) hide unseen classes and augment, return model inputs.

    Returns ``{"file_name", "image": uint8 (3, H, W), "sem_seg": long (H, W), "sem_seg_file_name",
    "height", "width"}``.
    At test time labels keep the dataset's full class indices and their size, ``height``/``width``
    are the original image size (the model predicts at that size), and the image alone is resized
    to ``INPUT.MIN_SIZE_TEST`` on its short side (capped by ``INPUT.MAX_SIZE_TEST``; 0 keeps it),
    as detectron2's and CAT-Seg's test mappers do.

    Label values that are neither a class index (``0..num_classes-1``) nor ``ignore_label`` are an
    error naming the label file and the values (``out_of_range="error"``), or become
    ``ignore_label`` (``"ignore"``; then ``out["out_of_range_pixels"]`` counts them and a warning
    names the file). ``num_classes=None`` skips the check.
    """

    @configurable
    def __init__(self, is_train: bool = True, *, augmentations: Sequence = (),
                 label_map: Optional[np.ndarray] = None, ignore_label: int = 255,
                 num_classes: Optional[int] = None, out_of_range: str = "error", dataset_name: str = "",
                 test_resize: Optional[ResizeShortestEdge] = None):
        if out_of_range not in OUT_OF_RANGE_POLICIES:
            raise DatasetError(f"DATALOADER.OUT_OF_RANGE_LABELS={out_of_range!r}: expected one of "
                               f"{', '.join(OUT_OF_RANGE_POLICIES)}")
        self.is_train = is_train
        self.test_resize = test_resize
        self.augmentations: List = list(augmentations)
        self.label_map = label_map
        self.ignore_label = ignore_label
        self.num_classes = num_classes
        self.out_of_range = out_of_range
        self.dataset_name = dataset_name

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, dataset_name: Optional[str] = None):
        names = [dataset_name] if dataset_name else list(cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST)
        ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        label_map = None
        augs = []
        num_classes = None
        if len(names) == 1 or is_train:
            classes = MetadataCatalog.get(names[0]).get("stuff_classes") if names else None
            num_classes = len(classes) if classes else None
        if is_train:
            if not names:
                raise DatasetError("DATASETS.TRAIN is empty: name the dataset(s) to train on")
            meta = MetadataCatalog.get(names[0])
            for other in names[1:]:
                if MetadataCatalog.get(other).stuff_classes != meta.stuff_classes:
                    raise DatasetError(f"training datasets {names[0]} and {other} have different classes")
            label_map = training_label_map(meta.stuff_classes, training_vocabulary(names), ignore)
            augs.append(ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                           cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING))
            if cfg.INPUT.CROP.ENABLED:
                augs.append(RandomCrop(cfg.INPUT.CROP.SIZE, ignore))
            if cfg.INPUT.COLOR_AUG_SSD:  # after the crop, before the flip: CAT-Seg's order
                augs.append(ColorAugSSD())
            flip = cfg.INPUT.RANDOM_FLIP
            if flip not in ("none", "horizontal", "vertical", "both"):
                raise DatasetError(f"INPUT.RANDOM_FLIP={flip!r}: expected none, horizontal, vertical or both")
            if flip != "none":
                augs.append(RandomFlip(horizontal=flip in ("horizontal", "both"),
                                       vertical=flip in ("vertical", "both")))
            if cfg.INPUT.RANDOM_ROTATE_90:
                augs.append(RandomRotate90())
        test_resize = None
        if not is_train and cfg.INPUT.MIN_SIZE_TEST > 0:
            test_resize = ResizeShortestEdge((cfg.INPUT.MIN_SIZE_TEST,), cfg.INPUT.MAX_SIZE_TEST, "choice")
        return {"is_train": is_train, "augmentations": augs, "label_map": label_map, "ignore_label": ignore,
                "num_classes": num_classes, "out_of_range": cfg.DATALOADER.OUT_OF_RANGE_LABELS,
                "dataset_name": ", ".join(names), "test_resize": test_resize}

    def _check_label_values(self, label: np.ndarray, path: str):
        """``(label, number of out-of-range pixels)``; raises under the "error" policy."""
        if self.num_classes is None:
            return label, 0
        out_of_range = invalid_label_mask(label, self.num_classes, self.ignore_label)
        count = int(out_of_range.sum())
        if not count:
            return label, 0
        values = sorted(int(v) for v in np.unique(label[out_of_range]))
        shown = ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")
        if self.out_of_range == "error":
            raise DatasetError(f"{path}: label value(s) {shown} ({count} pixels) are not class indices of "
                               f"{self.dataset_name or 'the dataset'} (0..{self.num_classes - 1}, "
                               f"{self.ignore_label} = ignore); fix the file or set "
                               f"DATALOADER.OUT_OF_RANGE_LABELS ignore")
        logger.warning("%s: %d pixels with label value(s) %s outside 0..%d mapped to ignore (%d)", path, count,
                       shown, self.num_classes - 1, self.ignore_label)
        label = label.copy()
        label[out_of_range] = self.ignore_label
        return label, count

    def __call__(self, dataset_dict: dict, rng: Optional[np.random.Generator] = None) -> dict:
        """``rng`` drives the training augmentations (a fresh unseeded one if None)."""
        d = copy.deepcopy(dataset_dict)
        image = read_image(d["file_name"])
        out = {"file_name": d["file_name"], "height": d.get("height", image.shape[0]),
               "width": d.get("width", image.shape[1])}
        label = None
        out_of_range_pixels = 0
        if "sem_seg_file_name" in d:
            label = read_label(d["sem_seg_file_name"])
            out["sem_seg_file_name"] = d["sem_seg_file_name"]  # so later errors name the label file
            label, out_of_range_pixels = self._check_label_values(label, d["sem_seg_file_name"])
            if label.shape != image.shape[:2]:
                raise DatasetError(f"{d['sem_seg_file_name']}: label size {label.shape[1]}x{label.shape[0]} "
                                   f"differs from image {os.path.basename(d['file_name'])} "
                                   f"{image.shape[1]}x{image.shape[0]}")
        if self.is_train:
            if label is None:
                raise DatasetError(f"{d['file_name']}: training needs a label (sem_seg_file_name)")
            if self.label_map is not None:
                label = self.label_map[label]
            rng = rng if rng is not None else np.random.default_rng()
            image, label = apply_augmentations(self.augmentations, image, label, rng)
            out["height"], out["width"] = image.shape[:2]
        elif self.test_resize is not None:
            # image only: the label stays at the size the model's output is evaluated at
            image, _ = self.test_resize(image, image[..., 0], np.random.default_rng(0))
        out["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if label is not None:
            out["sem_seg"] = torch.from_numpy(label.astype(np.int64))
            out["out_of_range_pixels"] = out_of_range_pixels
        return out
