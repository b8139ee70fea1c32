"""Image-caption pairs from the synthetic aerial world, for pretraining the demo's tiny CLIP.

Web-scale CLIP learned "water" and "car" from captioned web images, not from segmentation
labels. The CPU demo reproduces that on a small scale: crops of scenes drawn by the same
generator as the segmentation dataset (:func:`.synthetic.render_synthetic_scene`), each with a
caption that names what the crop shows. Captions are derived from the generator's layout (its
label map plus what it drew beyond the labels: lake or river, curved roads, crossings, car
colours, lane markings, shadows), never from the segmentation dataset's files, and they cover
more concepts than the segmentation demo:

* all six demo classes, the two held out of segmentation training (water, car) included, each
  under several names ("water", "a lake", "a river"; "a car", "cars", "a vehicle", ...);
* attributes: car colours and counts, curved roads, large buildings, dense trees;
* distractor concepts that are no segmentation class: lane markings, shadows, crossroads,
  rivers and lakes as kinds of water.

Scenes come from their own random streams (``[seed, PRETRAINING_STREAM, index]`` and, for the
held-out zero-shot crops, ``[seed, ZERO_SHOT_STREAM, index]``), which no segmentation image
(``[seed, split, index]`` with split 0 or 1) shares.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .synthetic import BUILDING, CAR, LOW_VEG, ROAD, SYNTHETIC_CLASSES, TREE, WATER, render_synthetic_scene

__all__ = [
    "CAPTION_VERSION",
    "ZERO_SHOT_MIN_SHARE",
    "caption_for_crop",
    "make_caption_pairs",
    "make_zero_shot_crops",
]

# Bump when the captions or the crop sampling change (cached pretrained checkpoints are rebuilt).
CAPTION_VERSION = 1
PRETRAINING_STREAM = 101
ZERO_SHOT_STREAM = 102

# What a caption may call each class, by how much of the crop it covers. The first name is the
# class name of the segmentation vocabulary (SYNTHETIC_CLASSES).
_NAMES: Dict[int, Tuple[str, ...]] = {
    BUILDING: ("building", "buildings", "a building", "houses", "a house", "rooftops", "a roof"),
    ROAD: ("road", "a road", "roads", "a street", "an asphalt road", "a paved road"),
    TREE: ("tree", "trees", "a forest", "tree canopy", "woodland", "a group of trees"),
    WATER: ("water", "open water", "a body of water", "surface water"),
    LOW_VEG: ("low vegetation", "grass", "a meadow", "grassland", "a lawn", "short grass"),
    CAR: ("car", "a car", "cars", "a vehicle", "vehicles", "a parked car"),
}
_PREFIXES = (
    "a satellite image of {}", "an aerial image of {}", "a remote sensing image of {}", "a land use image of {}",
    "an overhead photo of {}", "a top-down view of {}", "a photo of {}", "{}", "{} seen from above",
    "aerial view of {}",
)
_JOINERS = (" and ", " with ", " next to ", " beside ")
_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight")
# A class is named in a caption when it covers this share of the crop (cars are small: they
# are named at a lower share, as a caption writer would name the cars on a road).
_NAMED_SHARE = {BUILDING: 0.15, ROAD: 0.15, TREE: 0.15, WATER: 0.15, LOW_VEG: 0.2, CAR: 0.04}
# Held-out zero-shot crops: a crop counts as showing one class when that class covers this share
# of it. A car is smaller than any 12-px crop, so its crops count from 40%.
ZERO_SHOT_MIN_SHARE = {BUILDING: 0.8, ROAD: 0.8, TREE: 0.8, WATER: 0.8, LOW_VEG: 0.8, CAR: 0.3}


def _class_phrase(cls: int, share: float, crop_layout: dict, rng: np.random.Generator) -> str:
    """A noun phrase for class ``cls`` (with an attribute when the layout supports one)."""
    r = rng.random()
    if cls == CAR:
        colours = crop_layout["car_colours"]
        n = len(colours)
        if n == 1 and r < 0.5:
            return f"{'an' if colours[0][0] in 'aeiou' else 'a'} {colours[0]} car"
        if 1 < n < len(_NUMBERS) and r < 0.4:
            return f"{_NUMBERS[n]} cars"
        if n > 1 and len(set(colours)) == 1 and r < 0.6:
            return f"{colours[0]} cars"
    elif cls == WATER and crop_layout["water"] and r < 0.5:
        kind = crop_layout["water"]
        return rng.choice([f"a {kind}", kind, f"the water of a {kind}"])
    elif cls == ROAD and r < 0.4:
        if crop_layout["crossing"]:
            return str(rng.choice(["a crossroads", "an intersection", "two crossing roads"]))
        if crop_layout["curved_road"]:
            return str(rng.choice(["a curved road", "a winding road"]))
        if crop_layout["lane"]:
            return "a road with lane markings"
    elif cls == TREE and r < 0.3:
        return "dense trees" if share > 0.6 else "scattered trees"
    elif cls == BUILDING and r < 0.3:
        phrase = "a large building" if share > 0.5 else "small buildings"
        return phrase + (" with shadows" if crop_layout["shadow"] and rng.random() < 0.5 else "")
    return str(rng.choice(_NAMES[cls]))


def caption_for_crop(label: np.ndarray, crop_layout: dict, rng: np.random.Generator) -> str:
    """A caption naming what a crop shows, largest class first.

    Args:
        label: (h, w) class indices of the crop.
        crop_layout: the scene layout restricted to the crop (see :func:`_crop_layout`).
    """
    counts = np.bincount(label.ravel(), minlength=len(SYNTHETIC_CLASSES)).astype(np.float64)
    shares = counts / counts.sum()
    named = [c for c in np.argsort(-shares, kind="stable") if shares[c] >= _NAMED_SHARE[int(c)]]
    named = [int(c) for c in named][:3]
    if not named:
        named = [int(np.argmax(shares))]
    phrases = [_class_phrase(c, shares[c], crop_layout, rng) for c in named]
    if len(phrases) == 1:
        body = phrases[0]
    elif len(phrases) == 2:
        body = phrases[0] + str(rng.choice(_JOINERS)) + phrases[1]
    else:
        body = f"{phrases[0]}, {phrases[1]} and {phrases[2]}"
    return str(rng.choice(_PREFIXES)).format(body)


def _crop_layout(layout: dict, y: int, x: int, side: int) -> dict:
    """The scene layout restricted to the crop (what a caption of the crop may mention)."""
    window = (slice(y, y + side), slice(x, x + side))
    car_ids = layout["cars"][window]
    present = sorted(int(i) for i in np.unique(car_ids) if i >= 0)
    # A car counts when most of it is inside the crop.
    whole = [i for i in present if (car_ids == i).sum() >= 0.5 * (layout["cars"] == i).sum()]
    return {
        "water": layout["water"],
        "curved_road": layout["curved_road"],
        "crossing": layout["crossing"] and side >= 32,
        "car_colours": [layout["car_colours"][i] for i in whole],
        "lane": bool(layout["lane"][window].any()),
        "shadow": bool(layout["shadow"][window].any()),
    }


def _resize(crop: np.ndarray, size: int) -> torch.Tensor:
    """(h, w, 3) uint8 -> (3, size, size) uint8, bilinear (antialiased when shrinking)."""
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=crop.shape[0] > size)
    return x[0].round().clamp(0, 255).to(torch.uint8)


def _car_crop(layout: dict, rng: np.random.Generator, scene_size: int, min_side: int, margin=(2, 9)):
    """(y, x, side) of a square around a random car (``margin`` px more than its extent), or None."""
    n = len(layout["car_colours"])
    if n == 0:
        return None
    ys, xs = np.nonzero(layout["cars"] == int(rng.integers(n)))
    extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
    side = int(min(scene_size, max(min_side, extent + int(rng.integers(*margin)))))
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    y = int(np.clip(round(cy - side / 2 + rng.uniform(-2, 2)), 0, scene_size - side))
    x = int(np.clip(round(cx - side / 2 + rng.uniform(-2, 2)), 0, scene_size - side))
    return y, x, side


def _single_class_crop(label: np.ndarray, rng: np.random.Generator, sides: Sequence[int], tries: int = 8):
    """(y, x, side) of the random crop (of ``tries``) in which one class covers the largest share."""
    best, best_share = None, -1.0
    for _ in range(tries):
        side = int(rng.integers(sides[0], sides[1] + 1))
        y, x = (int(v) for v in rng.integers(0, label.shape[0] - side + 1, size=2))
        share = np.bincount(label[y:y + side, x:x + side].ravel()).max() / side ** 2
        if share > best_share:
            best, best_share = (y, x, side), share
    return best


def make_caption_pairs(num_scenes: int, crops_per_scene: int, image_size: int, seed: int = 0,
                       scene_size: int = 64, crop_sides: Sequence[int] = (12, 48),
                       car_crop_fraction: float = 0.15, single_class_fraction: float = 0.0,
                       single_class_sides: Sequence[int] = (12, 32)) -> Tuple[torch.Tensor, List[str]]:
    """Captioned crops of freshly generated scenes.

    Each scene gives ``crops_per_scene`` square crops: the whole scene, random crops with a side
    in ``crop_sides`` (pixels of the scene) and, with probability ``car_crop_fraction`` each, a
    crop around one car. Crops are rotated by a random multiple of 90 degrees (aerial images
    have no up) and resized to ``image_size``.

    Returns:
        images: (N, 3, image_size, image_size) uint8; captions: N strings.
    """
    images, captions = [], []
    for index in range(num_scenes):
        rng = np.random.default_rng([seed, PRETRAINING_STREAM, index])
        image, label, layout = render_synthetic_scene(rng, scene_size, return_layout=True)
        for k in range(crops_per_scene):
            box = None
            if k == 0:
                box = (0, 0, scene_size)
            elif rng.random() < car_crop_fraction:
                box = _car_crop(layout, rng, scene_size, crop_sides[0])
            elif rng.random() < single_class_fraction:
                box = _single_class_crop(label, rng, single_class_sides)
            if box is None:
                side = int(rng.integers(crop_sides[0], crop_sides[1] + 1))
                y, x = (int(v) for v in rng.integers(0, scene_size - side + 1, size=2))
                box = (y, x, side)
            y, x, side = box
            crop = image[y:y + side, x:x + side]
            turns = int(rng.integers(4))
            images.append(torch.rot90(_resize(crop, image_size), turns, dims=(1, 2)))
            captions.append(caption_for_crop(label[y:y + side, x:x + side], _crop_layout(layout, y, x, side), rng))
    return torch.stack(images), captions


def make_zero_shot_crops(per_class: int, image_size: int, seed: int = 0, scene_size: int = 64,
                         crop_sides: Sequence[int] = (12, 32),
                         max_scenes: int = 4000) -> Tuple[torch.Tensor, torch.Tensor]:
    """Held-out crops that each show one class, for zero-shot classification by class name.

    Scenes come from a stream that neither the pretraining pairs nor the segmentation dataset
    use. A crop is kept when one class covers at least :data:`ZERO_SHOT_MIN_SHARE` of it;
    cars are cropped around a car. Up to ``per_class`` crops per class.

    Returns:
        images: (N, 3, image_size, image_size) uint8; classes: (N,) long indices of SYNTHETIC_CLASSES.
    """
    num_classes = len(SYNTHETIC_CLASSES)
    found: List[List[torch.Tensor]] = [[] for _ in range(num_classes)]
    for index in range(max_scenes):
        if all(len(f) >= per_class for f in found):
            break
        rng = np.random.default_rng([seed, ZERO_SHOT_STREAM, index])
        image, label, layout = render_synthetic_scene(rng, scene_size, return_layout=True)
        car_box = _car_crop(layout, rng, scene_size, 8, margin=(2, 3))  # tight: the car and its lane
        candidates = [(car_box, CAR)] if car_box is not None else []
        for _ in range(6):
            side = int(rng.integers(crop_sides[0], crop_sides[1] + 1))
            y, x = (int(v) for v in rng.integers(0, scene_size - side + 1, size=2))
            candidates.append(((y, x, side), None))  # counts for its largest class
        for (y, x, side), cls in candidates:
            shares = np.bincount(label[y:y + side, x:x + side].ravel(), minlength=num_classes) / side ** 2
            cls = int(np.argmax(shares)) if cls is None else cls
            if shares[cls] >= ZERO_SHOT_MIN_SHARE[cls] and len(found[cls]) < per_class:
                found[cls].append(_resize(image[y:y + side, x:x + side], image_size))
    images = [img for per in found for img in per]
    classes = [c for c, per in enumerate(found) for _ in per]
    return torch.stack(images), torch.tensor(classes, dtype=torch.long)
