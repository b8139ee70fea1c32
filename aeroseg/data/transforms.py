"""Training augmentations: geometric ones applied identically to an image (H, W, 3) and its label
(H, W), and photometric ones (:class:`ColorAugSSD`) applied to the image only.

Every random choice is drawn from the ``rng`` (a ``numpy.random.Generator``) passed in. The
training loader derives it from (SEED, position of the sample in the training stream), so the
augmentation of every sample is reproducible whatever the number of workers, and a resumed run
sees exactly the samples and augmentations of an uninterrupted one.
"""
from typing import Sequence, Tuple

import cv2
import numpy as np

__all__ = ["ResizeShortestEdge", "RandomCrop", "RandomFlip", "RandomRotate90", "ColorAugSSD", "apply_augmentations"]


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


class ColorAugSSD:
    """SSD's photometric distortions (Liu et al., ECCV 2016), CAT-Seg's ``INPUT.COLOR_AUG_SSD``.

    The same distortions and ranges as detectron2's ``ColorAugSSDTransform`` used by CAT-Seg and
    OVRS: brightness (probability 1/2, offset uniform in +-``brightness_delta``), then in random
    order either contrast, saturation, hue or saturation, hue, contrast; contrast and saturation
    (each probability 1/2) scale by a factor uniform in [low, high], hue (probability 1/2) shifts
    by an integer uniform in +-``hue_delta`` on OpenCV's 0..179 scale. Each step clips to 0..255
    and truncates to uint8. The label is returned unchanged.
    """

    def __init__(self, brightness_delta: float = 32, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), hue_delta: int = 18):
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = tuple(float(v) for v in contrast_range)
        self.saturation_range = tuple(float(v) for v in saturation_range)
        self.hue_delta = int(hue_delta)

    @staticmethod
    def _affine(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def _contrast(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < 0.5:
            image = self._affine(image, alpha=rng.uniform(*self.contrast_range))
        return image

    def _saturation(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < 0.5:
            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
            hsv[..., 1] = self._affine(hsv[..., 1], alpha=rng.uniform(*self.saturation_range))
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return image

    def _hue(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < 0.5:
            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
            shift = int(rng.integers(-self.hue_delta, self.hue_delta + 1))
            hsv[..., 0] = ((hsv[..., 0].astype(np.int64) + shift) % 180).astype(np.uint8)
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return image

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"INPUT.COLOR_AUG_SSD needs uint8 RGB images (H, W, 3), got {image.dtype} {image.shape}")
        image = np.ascontiguousarray(image)
        if rng.random() < 0.5:
            image = self._affine(image, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        if rng.random() < 0.5:
            image = self._hue(self._saturation(self._contrast(image, rng), rng), rng)
        else:
            image = self._contrast(self._hue(self._saturation(image, rng), rng), rng)
        return image, label


def apply_augmentations(augmentations, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
    for aug in augmentations:
        image, label = aug(image, label, rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)
