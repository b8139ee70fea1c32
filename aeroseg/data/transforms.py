"""Geometric augmentations applied identically to an image (H, W, 3) and its label (H, W).

Every random choice is drawn from the ``rng`` (a ``numpy.random.Generator``) passed in. The
training loader derives it from (SEED, position of the sample in the training stream), so the
augmentation of every sample is reproducible whatever the number of workers, and a resumed run
sees exactly the samples and augmentations of an uninterrupted one.
"""
from typing import Sequence, Tuple

import cv2
import numpy as np

__all__ = ["ResizeShortestEdge", "RandomCrop", "RandomFlip", "RandomRotate90", "apply_augmentations"]


class ResizeShortestEdge:
    """Resize so the short side is one of ``sizes`` ("choice") or in [min, max] ("range")."""

    def __init__(self, sizes: Sequence[int], max_size: int = 0, sampling: str = "choice"):
        if sampling not in ("choice", "range"):
            raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING={sampling!r}: expected 'choice' or 'range'")
        self.sizes, self.max_size, self.sampling = tuple(int(s) for s in sizes), int(max_size), sampling

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        if self.sampling == "range":
            short = int(rng.integers(self.sizes[0], self.sizes[1] + 1))
        else:
            short = self.sizes[int(rng.integers(len(self.sizes)))]
        h, w = image.shape[:2]
        scale = short / min(h, w)
        if self.max_size > 0 and max(h, w) * scale > self.max_size:
            scale = self.max_size / max(h, w)
        new_w, new_h = int(round(w * scale)), int(round(h * scale))
        if (new_h, new_w) == (h, w):
            return image, label
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        return (cv2.resize(image, (new_w, new_h), interpolation=interp),
                cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST))


class RandomCrop:
    """Random (h, w) crop; smaller inputs are padded (image 0, label ``ignore_label``) first."""

    def __init__(self, size: Sequence[int], ignore_label: int = 255):
        self.size, self.ignore_label = (int(size[0]), int(size[1])), ignore_label

    def __call__(self, image, label, rng: np.random.Generator):
        ch, cw = self.size
        h, w = image.shape[:2]
        if h < ch or w < cw:
            pad = ((0, max(ch - h, 0)), (0, max(cw - w, 0)))
            image = np.pad(image, pad + ((0, 0),))
            label = np.pad(label, pad, constant_values=self.ignore_label)
            h, w = image.shape[:2]
        y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        return image[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]


class RandomFlip:
    """Flip horizontally and/or vertically, each with probability ``prob``."""

    def __init__(self, horizontal: bool = True, vertical: bool = False, prob: float = 0.5):
        self.horizontal, self.vertical, self.prob = horizontal, vertical, prob

    def __call__(self, image, label, rng: np.random.Generator):
        if self.horizontal and rng.random() < self.prob:
            image, label = image[:, ::-1], label[:, ::-1]
        if self.vertical and rng.random() < self.prob:
            image, label = image[::-1], label[::-1]
        return image, label


class RandomRotate90:
    """Rotate by 0, 90, 180 or 270 degrees, uniformly (aerial images have no canonical "up")."""

    def __call__(self, image, label, rng: np.random.Generator):
        k = int(rng.integers(4))
        return np.rot90(image, k), np.rot90(label, k)


def apply_augmentations(augmentations, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
    for aug in augmentations:
        image, label = aug(image, label, rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)
