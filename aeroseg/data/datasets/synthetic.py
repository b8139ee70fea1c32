"""A small synthetic aerial-like dataset, generated on first use (no download, no real data).

It lets the demo (``configs/demo/tiny_cpu.yaml``) train and evaluate on a fresh machine: each
scene is a top-down layout of low vegetation with tree patches, straight or curved roads with a
dashed lane line, gabled rectangular buildings (with shadows) aligned to the road, smooth blobby
lakes or rivers, and small cars on the roads. Every class has its own mean colour *and* texture
(building: bright grey, two-tone roof halves and a dark outline; road: dark grey, smooth, lane
dashes; tree: dark green with coarse blobby crowns; water: blue, very smooth; low vegetation:
light green with fine grain; car: small saturated warm-coloured rectangles), on top of which
every image gets a global brightness / colour-cast jitter and pixel noise.

Layout written by :func:`generate_synthetic_aerial_dataset` (the same as the built-in datasets)::

    root/{train,val}/{images,labels}/<split>_<index>.png    RGB images, uint8 label indices
    root/manifest.json                                      the file list (see datasets/manifest.py)
    root/.complete                                          JSON: generator version + parameters

Label values index :data:`SYNTHETIC_CLASSES`; there is no ignore label in the files.
Generation is deterministic (same parameters -> byte-identical files), atomic per file, and
skipped when ``root/.complete`` records the same parameters and every file is present;
otherwise the whole dataset is regenerated, so a half-written dataset is never used.

:func:`register_synthetic_dataset` registers ``<name>_train`` / ``<name>_val``; nothing is
registered at import time.
"""
import io
import json
import os
from typing import List, Optional

import numpy as np
from PIL import Image

from ...utils.io import folder_lock, write_bytes_atomic
from ...compat import DatasetCatalog, MetadataCatalog
from .builtin import datasets_root
from .manifest import IN_PROGRESS_NAME, MANIFEST_NAME, make_manifest, mark_in_progress, write_manifest
from .sem_seg_folder import load_sem_seg_folder, register_sem_seg_dataset

__all__ = [
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_UNSEEN",
    "SYNTHETIC_PALETTE",
    "GENERATOR_VERSION",
    "generate_synthetic_aerial_dataset",
    "register_synthetic_dataset",
    "render_synthetic_scene",
]

# Must equal MODEL.AEROSEG.VOCABULARY of configs/demo/tiny_cpu.yaml, in this order.
SYNTHETIC_CLASSES = ["building", "road", "tree", "water", "low vegetation", "car"]
SYNTHETIC_UNSEEN = ["water", "car"]
# Visualisation colours (metadata ``stuff_colors``), in class order.
SYNTHETIC_PALETTE = [(230, 25, 75), (128, 128, 128), (0, 100, 0), (0, 90, 230), (150, 220, 90), (255, 200, 0)]

GENERATOR_VERSION = 2  # 2: larger cars, wider roads
# Size of objects (road widths, buildings, cars) in pixels per unit, at 64x64 images; larger
# images scale proportionally. 1.5 makes roads 13-20 px wide and buildings 12-30 px, i.e. at
# least about one 8-px token of the demo's tiny CLIP (1.0 trains markedly worse: s-mIoU ~33
# instead of ~43 after the demo's 300 iterations).
OBJECT_SCALE = 1.5
# Cars are 1.35x their size in version 1 (9-13 px long, 5-7 px wide) and roads 9-13 units wide
# (were 7-11) so that those cars fit in a lane. A version-1 car (7-10 x 4-5 px) was smaller than
# one token of the demo CLIP at 64 px and the unseen class "car" could not be segmented from it;
# now a car covers about two of the demo's 16 x 16 tokens (MODEL.CLIP.IMAGE_SIZE 128, patch 8).
CAR_SCALE = 1.35
ROAD_WIDTH = (9.0, 13.0)
MARKER = ".complete"
SPLITS = ("train", "val")

BUILDING, ROAD, TREE, WATER, LOW_VEG, CAR = range(6)

# Mean RGB of each class's material (before per-image jitter).
_BASE_COLOURS = np.array([
    [178, 172, 166],  # building: bright grey roofs
    [72, 72, 78],     # road: dark asphalt
    [38, 88, 40],     # tree: dark green
    [38, 78, 140],    # water: blue
    [128, 164, 84],   # low vegetation: light green
    [0, 0, 0],        # car: per car, from _CAR_COLOURS
], dtype=np.float32)
_CAR_COLOURS = np.array([
    [210, 35, 35], [225, 110, 20], [230, 200, 30], [200, 30, 140], [235, 60, 80],
], dtype=np.float32)
CAR_COLOUR_NAMES = ["red", "orange", "yellow", "pink", "red"]  # what a caption calls each of _CAR_COLOURS
_LANE_COLOUR = np.array([215, 212, 190], dtype=np.float32)


# --------------------------------------------------------------------------- scene rendering
def _smooth_noise(rng: np.random.Generator, size: int, cells: float) -> np.ndarray:
    """(size, size) smooth noise (zero mean, unit std): a random ``cells``-grid, smoothstep-interpolated."""
    cells = max(1, int(round(cells)))
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    t = (np.arange(size, dtype=np.float32) + 0.5) * (cells / size)
    i0 = np.minimum(np.floor(t).astype(np.int64), cells - 1)
    f = t - i0
    f = f * f * (3.0 - 2.0 * f)
    i1 = i0 + 1
    fy, fx = f[:, None], f[None, :]
    top = grid[np.ix_(i0, i0)] * (1 - fx) + grid[np.ix_(i0, i1)] * fx
    bottom = grid[np.ix_(i1, i0)] * (1 - fx) + grid[np.ix_(i1, i1)] * fx
    out = top * (1 - fy) + bottom * fy
    return (out - out.mean()) / (out.std() + 1e-6)


def _rotated(xx: np.ndarray, yy: np.ndarray, angle: float):
    """Coordinates along (u) and across (v) the direction ``angle``."""
    c, s = np.cos(angle), np.sin(angle)
    return xx * c + yy * s, -xx * s + yy * c


def _random_direction(rng: np.random.Generator) -> float:
    """Mostly near-horizontal / near-vertical (like street grids), sometimes any angle."""
    if rng.random() < 0.7:
        return float(rng.integers(0, 2) * (np.pi / 2) + rng.uniform(-0.25, 0.25))
    return float(rng.uniform(0, np.pi))


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved by (dy, dx) >= 0 pixels, without wrap-around."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[dy:, dx:] = mask[: h - dy, : w - dx]
    return out


def render_synthetic_scene(rng: np.random.Generator, size: int = 64, return_layout: bool = False):
    """One scene: ``(image (size, size, 3) uint8 RGB, label (size, size) uint8)``.

    With ``return_layout`` a third item describes what was drawn beyond the labels (what image
    captions are derived from, :mod:`.synthetic_captions`): ``{"water": "lake" | "river" | None,
    "curved_road": bool, "crossing": bool, "cars": (size, size) int16 car index (-1: none),
    "car_colours": [colour name per car], "lane": (size, size) bool lane dashes,
    "shadow": (size, size) bool building shadows}``. It draws no extra random numbers, so the
    image and label are the same either way.
    """
    unit = size / 64.0 * OBJECT_SCALE
    coords = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    label = np.full((size, size), LOW_VEG, dtype=np.uint8)
    # Per-instance colours (buildings, lane lines, cars) are painted into this layer.
    paint = np.zeros((size, size, 3), dtype=np.float32)
    painted = np.zeros((size, size), dtype=bool)

    # Tree patches: thresholded smooth noise (coverage varies from scene to scene).
    field = _smooth_noise(rng, size, rng.uniform(3, 6)) + 0.35 * _smooth_noise(rng, size, 10)
    coverage = rng.uniform(0.1, 0.45)
    label[field > np.quantile(field, 1 - coverage)] = TREE

    # Water: a blobby lake (radius modulated by a few harmonics) or a wide smooth river.
    water = np.zeros((size, size), dtype=bool)
    water_kind = None
    if rng.random() < 0.6:
        water_kind = "lake" if rng.random() < 0.7 else "river"
        if water_kind == "lake":
            cy, cx = rng.uniform(-0.45, 0.45, size=2) * size
            radius = rng.uniform(0.15, 0.32) * size
            theta = np.arctan2(yy - cy, xx - cx)
            r = np.ones_like(theta)
            for k in (2, 3, 4):
                r = r + rng.uniform(0, 0.25 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
            water = np.hypot(yy - cy, xx - cx) < radius * r
        else:
            u, v = _rotated(xx, yy, rng.uniform(0, np.pi))
            centre = rng.uniform(-0.35, 0.35) * size + rng.uniform(0.05, 0.15) * size * np.sin(
                2 * np.pi * u / (rng.uniform(1.0, 2.0) * size) + rng.uniform(0, 2 * np.pi))
            water = np.abs(v - centre) < rng.uniform(5, 9) * unit
        label[water] = WATER

    # Roads: 0-2 bands (straight or gently curved), dashed centre line, cars in the lanes.
    road = np.zeros((size, size), dtype=bool)
    roads = []
    curved_road = False
    n_roads = int(rng.random() < 0.8) + int(rng.random() < 0.35)
    for _ in range(n_roads):
        angle = _random_direction(rng) if not roads else roads[0][0] + np.pi / 2 + rng.uniform(-0.2, 0.2)
        u, v = _rotated(xx, yy, angle)
        offset = rng.uniform(-0.3, 0.3) * size
        amplitude = rng.uniform(0.04, 0.14) * size if rng.random() < 0.4 else 0.0
        curved_road = curved_road or amplitude > 0
        wavelength, phase = rng.uniform(1.2, 2.5) * size, rng.uniform(0, 2 * np.pi)
        d = v - (offset + amplitude * np.sin(2 * np.pi * u / wavelength + phase))
        width = rng.uniform(ROAD_WIDTH[0], ROAD_WIDTH[1]) * unit
        band = np.abs(d) < width / 2
        road |= band
        roads.append((angle, u, d, width))
    label[road] = ROAD
    lanes = np.zeros((size, size), dtype=bool)
    for angle, u, d, width in roads:  # lane dashes after all bands, so crossings keep them
        period = 7 * unit
        lane = (np.abs(d) < 0.55 * unit) & (np.mod(u + size, period) < 0.55 * period) & road
        paint[lane], painted[lane] = _LANE_COLOUR, True
        lanes |= lane

    # Buildings: gabled rectangles aligned with the first road, not touching roads / water.
    b_angle = roads[0][0] if roads else _random_direction(rng)
    bu, bv = _rotated(xx, yy, b_angle)
    blocked = road | water
    buildings = np.zeros((size, size), dtype=bool)
    target = int(rng.integers(2, 7))
    for _ in range(24):
        if target == 0:
            break
        cu, cv = rng.uniform(-0.5, 0.5, size=2) * size
        half_u, half_v = rng.uniform(4, 10, size=2) * unit
        du, dv = np.abs(bu - cu), np.abs(bv - cv)
        rect = (du < half_u) & (dv < half_v)
        if rect.sum() < 12 * unit * unit:
            continue
        margin = (du < half_u + 1.5 * unit) & (dv < half_v + 1.5 * unit)
        if (margin & (blocked | buildings)).any():
            continue
        target -= 1
        buildings |= rect
        tone = _BASE_COLOURS[BUILDING] + rng.uniform(-14, 14)
        ridge_along_u = half_u >= half_v
        side = (bv - cv) if ridge_along_u else (bu - cu)
        shade = np.where(side > 0, 12.0, -12.0)[..., None]  # sunlit / shaded roof halves
        edge = (du > half_u - 1.0 * unit) | (dv > half_v - 1.0 * unit)
        roof = (tone + shade) * np.where(edge, 0.72, 1.0)[..., None]
        paint[rect], painted[rect] = roof[rect], True
    # Shadows darken the ground south-east of each building (labels unchanged).
    s = max(1, int(round(2 * unit)))
    shadow = _shift(buildings, s, s) & ~buildings
    label[buildings] = BUILDING

    # Cars: small rotated rectangles inside a lane, never overlapping each other.
    cars = np.zeros((size, size), dtype=bool)
    car_ids = np.full((size, size), -1, dtype=np.int16)
    car_colours = []
    for angle, u, d, width in roads:
        wanted = int(rng.integers(1, 5))
        for _ in range(10):
            if wanted == 0:
                break
            cu = rng.uniform(-0.5, 0.5) * size
            lane_offset = (width / 4 + 0.3 * unit) * (1 if rng.random() < 0.5 else -1)
            length = rng.uniform(4.5, 6.5) * unit * CAR_SCALE
            breadth = rng.uniform(2.6, 3.4) * unit * CAR_SCALE
            car = (np.abs(u - cu) < length / 2) & (np.abs(d - lane_offset) < breadth / 2)
            n = int(car.sum())
            if n < 0.6 * length * breadth or not road[car].all() or (car & cars).any():
                continue
            wanted -= 1
            cars |= car
            colour_index = int(rng.integers(len(_CAR_COLOURS)))
            colour = _CAR_COLOURS[colour_index] * rng.uniform(0.85, 1.1)
            paint[car], painted[car] = colour, True
            car_ids[car] = len(car_colours)
            car_colours.append(CAR_COLOUR_NAMES[colour_index])
    label[cars] = CAR

    # Class textures, evaluated over the whole image and selected by label.
    jitter = rng.uniform(-8, 8, size=(6, 3)).astype(np.float32)
    base = _BASE_COLOURS + jitter
    fine = rng.standard_normal((size, size)).astype(np.float32)
    image = np.empty((size, size, 3), dtype=np.float32)
    tex = {
        # light green, fine grain (+ faint large-scale variation)
        LOW_VEG: base[LOW_VEG] + (8 * fine + 6 * _smooth_noise(rng, size, 3))[..., None],
        # dark green, coarse blobby crowns with dark gaps
        TREE: base[TREE] + (26 * _smooth_noise(rng, size, size / 3.0) + 4 * fine)[..., None]
        * np.array([0.8, 1.0, 0.7], dtype=np.float32),
        # blue, very smooth
        WATER: base[WATER] + (4 * _smooth_noise(rng, size, 2) + 1.2 * fine)[..., None],
        # dark grey, smooth
        ROAD: base[ROAD] + (3 * fine)[..., None],
    }
    for cls, layer in tex.items():
        sel = label == cls
        image[sel] = layer[sel]
    image[painted] = paint[painted] + 3 * fine[painted][..., None]
    image[shadow] *= 0.68

    # Global acquisition jitter: brightness, colour cast, sensor noise.
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-6, 6, size=3).astype(np.float32)
    image += rng.normal(0, 3.0, size=image.shape).astype(np.float32)
    image, label = np.clip(np.rint(image), 0, 255).astype(np.uint8), label
    if not return_layout:
        return image, label
    layout = {"water": water_kind, "curved_road": curved_road, "crossing": len(roads) > 1, "cars": car_ids,
              "car_colours": car_colours, "lane": lanes & (label == ROAD), "shadow": shadow}
    return image, label, layout


# --------------------------------------------------------------------------- files on disk
def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _stems(split: str, count: int) -> List[str]:
    return [f"{split}_{i:05d}" for i in range(count)]


def _marker_payload(num_train: int, num_val: int, size: int, seed: int) -> dict:
    return {"generator": "aeroseg.synthetic_aerial", "version": GENERATOR_VERSION, "classes": SYNTHETIC_CLASSES,
            "num_train": num_train, "num_val": num_val, "size": size, "seed": seed}


def _is_complete(root: str, payload: dict) -> bool:
    try:
        with open(os.path.join(root, MARKER), encoding="utf-8") as f:
            if json.load(f) != payload:
                return False
    except (OSError, ValueError):
        return False
    if not os.path.isfile(os.path.join(root, MANIFEST_NAME)) or os.path.exists(os.path.join(root, IN_PROGRESS_NAME)):
        return False
    for split, count in zip(SPLITS, (payload["num_train"], payload["num_val"])):
        for sub in ("images", "labels"):
            folder = os.path.join(root, split, sub)
            if not all(os.path.isfile(os.path.join(folder, s + ".png")) for s in _stems(split, count)):
                return False
    return True


def generate_synthetic_aerial_dataset(root: str, num_train: int = 160, num_val: int = 40, size: int = 64,
                                      seed: int = 0, force: bool = False) -> str:
    """Write the synthetic dataset under ``root`` (unless already complete); returns ``root``.

    Writes ``root/{train,val}/{images,labels}/<split>_<index>.png`` and, last, ``root/.complete``.
    Same arguments -> byte-identical files. An existing dataset is kept only when its marker
    records the same generator version and arguments and all its files exist; otherwise (or
    with ``force``) everything is regenerated and stray PNGs in those folders are removed.
    """
    for key, value in (("num_train", num_train), ("num_val", num_val), ("size", size), ("seed", seed)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"generate_synthetic_aerial_dataset: {key}={value!r} must be a non-negative integer")
    if size < 16:
        raise ValueError(f"generate_synthetic_aerial_dataset: size={size} is too small (>= 16 pixels)")
    num_train, num_val, size, seed = int(num_train), int(num_val), int(size), int(seed)
    root = os.fspath(root)
    payload = _marker_payload(num_train, num_val, size, seed)
    if not force and _is_complete(root, payload):
        return root
    os.makedirs(root, exist_ok=True)
    with folder_lock(root):
        if not force and _is_complete(root, payload):  # another process finished meanwhile
            return root
        marker = os.path.join(root, MARKER)
        if os.path.exists(marker):
            os.remove(marker)
        mark_in_progress(root, "generate_synthetic_aerial_dataset")
        for split_id, (split, count) in enumerate(zip(SPLITS, (num_train, num_val))):
            stems = _stems(split, count)
            folders = {sub: os.path.join(root, split, sub) for sub in ("images", "labels")}
            for folder in folders.values():
                os.makedirs(folder, exist_ok=True)
                keep = {s + ".png" for s in stems}
                for name in os.listdir(folder):  # stale files of an earlier, different dataset
                    if (name.lower().endswith(".png") and name not in keep) or ".png.tmp" in name:
                        os.remove(os.path.join(folder, name))
            for index, stem in enumerate(stems):
                rng = np.random.default_rng([seed, split_id, index])
                image, label = render_synthetic_scene(rng, size)
                write_bytes_atomic(os.path.join(folders["images"], stem + ".png"), _png_bytes(image))
                write_bytes_atomic(os.path.join(folders["labels"], stem + ".png"), _png_bytes(label))
        write_manifest(root, make_manifest(
            "synthetic_aerial", {split: _stems(split, count) for split, count in zip(SPLITS, (num_train, num_val))},
            tool="aeroseg.data.datasets.synthetic", seed=seed, classes=SYNTHETIC_CLASSES,
            options={"version": GENERATOR_VERSION, "size": size, "num_train": num_train, "num_val": num_val}))
        write_bytes_atomic(marker, json.dumps(payload, sort_keys=True).encode("utf-8"))
    return root


# --------------------------------------------------------------------------- registration
def register_synthetic_dataset(name: str = "synthetic_aerial", root: Optional[str] = None, num_train: int = 160,
                               num_val: int = 40, size: int = 64, seed: int = 0) -> List[str]:
    """Register ``<name>_train`` and ``<name>_val`` (lazily generated on first ``DatasetCatalog.get``).

    ``root`` defaults to ``$AEROSEG_DATASETS/synthetic_aerial`` (resolved when loading).
    Idempotent: a name that is already registered is left as it is. Returns the two names.
    """
    names = []
    for split in SPLITS:
        full_name = f"{name}_{split}"
        names.append(full_name)
        if full_name in DatasetCatalog:
            continue

        def load(split=split):
            data_root = root if root is not None else os.path.join(datasets_root(), "synthetic_aerial")
            generate_synthetic_aerial_dataset(data_root, num_train=num_train, num_val=num_val, size=size, seed=seed)
            folder = os.path.join(data_root, split)
            return load_sem_seg_folder(os.path.join(folder, "images"), os.path.join(folder, "labels"))

        shown_root = root if root is not None else os.path.join("$AEROSEG_DATASETS", "synthetic_aerial")
        register_sem_seg_dataset(
            full_name,
            image_dir=os.path.join(shown_root, split, "images"),
            label_dir=os.path.join(shown_root, split, "labels"),
            classes=SYNTHETIC_CLASSES,
            unseen_classes=SYNTHETIC_UNSEEN,
            ignore_label=255,
            loader=load,
        )
        MetadataCatalog.get(full_name).set(stuff_colors=[list(c) for c in SYNTHETIC_PALETTE])
    return names
