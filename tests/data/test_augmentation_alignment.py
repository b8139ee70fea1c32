"""Training augmentations keep image and label aligned pixel for pixel (crop, flips, rot90, resize).

The tile encodes its own geometry: pixel (row, col) has R = 5 col, G = 5 row and B = the id of its
4x4 block (row // 4) * 12 + col // 4, and the label is that same block id. After any augmentation
the label must equal the B channel wherever the image was not interpolated, and both must be an
exact window of one of the 8 flips/rotations of the original, so a label cropped at another
offset, flipped or rotated differently, or resized with interpolation instead of nearest fails.
"""
import uuid

import numpy as np
import pytest
from PIL import Image

from aeroseg.data import MetadataCatalog, SemSegDatasetMapper
from conftest import tiny_cfg

SIDE, BLOCK = 48, 4
BLOCKS = SIDE // BLOCK  # 12 x 12 = 144 block ids, all below the ignore value


def _tile():
    row, col = np.mgrid[0:SIDE, 0:SIDE]
    block = (row // BLOCK) * BLOCKS + col // BLOCK
    image = np.stack([5 * col, 5 * row, block], axis=-1).astype(np.uint8)
    return image, block.astype(np.uint8)


def _dihedral(a):
    """The 8 flips/rotations of the first two axes of ``a``."""
    out = []
    for flipped in (a, a[:, ::-1]):
        for k in range(4):
            out.append(np.rot90(flipped, k))
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("align")
    image, label = _tile()
    Image.fromarray(image).save(folder / "tile.png")
    Image.fromarray(label).save(folder / "tile_label.png")
    name = f"align_{uuid.uuid4().hex[:8]}"
    classes = [f"class {i}" for i in range(BLOCKS * BLOCKS)]
    MetadataCatalog.get(name).set(stuff_classes=classes, seen_classes=classes, unseen_classes=[])
    return name, {"file_name": str(folder / "tile.png"), "sem_seg_file_name": str(folder / "tile_label.png"),
                  "height": SIDE, "width": SIDE}


def _mapper(name, *opts):
    cfg = tiny_cfg("INPUT.RANDOM_FLIP", "both", "INPUT.RANDOM_ROTATE_90", "True", "INPUT.MIN_SIZE_TRAIN_SAMPLING",
                   "choice", "INPUT.MAX_SIZE_TRAIN", "1024", "INPUT.CROP.TYPE", "absolute", *opts)
    if "COLOR_AUG_SSD" in cfg.INPUT:  # photometric augmentation would change the encoded pixels
        cfg.INPUT.COLOR_AUG_SSD = False
    return SemSegDatasetMapper(cfg, is_train=True, dataset_name=name)


def _run(mapper, record, seeds=range(24)):
    for seed in seeds:
        out = mapper(record, rng=np.random.default_rng(seed))
        yield out["image"].numpy().transpose(1, 2, 0), out["sem_seg"].numpy()


def _locate(window, full_views):
    """(view index, y, x) such that full_views[view][y:y+h, x:x+w] == window exactly, else None."""
    h, w = window.shape[:2]
    for v, full in enumerate(full_views):
        ys, xs = np.nonzero(np.all(full == window[0, 0], axis=-1) if full.ndim == 3 else full == window[0, 0])
        for y, x in zip(ys, xs):
            if y + h <= full.shape[0] and x + w <= full.shape[1] and np.array_equal(full[y:y + h, x:x + w], window):
                return v, int(y), int(x)
    return None


def test_crop_flip_rotate_move_image_and_label_together(sample):
    name, record = sample
    image0, label0 = _tile()
    views = _dihedral(image0)
    mapper = _mapper(name, "INPUT.MIN_SIZE_TRAIN", f"({SIDE},)", "INPUT.CROP.ENABLED", "True",
                     "INPUT.CROP.SIZE", "[32, 32]")
    placements = set()
    for image, label in _run(mapper, record):
        assert image.shape == (32, 32, 3) and label.shape == (32, 32)
        np.testing.assert_array_equal(label, image[..., 2])  # every pixel: label = its block id
        found = _locate(image, views)  # an exact window of one orientation of the tile
        assert found is not None
        placements.add(found)
    # the seeds exercised several orientations and crop offsets
    assert len({v for v, _, _ in placements}) >= 4
    assert len({(y, x) for _, y, x in placements}) >= 6


def test_resize_to_min_size_train_uses_nearest_for_labels(sample):
    """MIN_SIZE_TRAIN 96 on a 48 tile: x2. Labels by nearest neighbour are exactly the tile's label
    with every pixel doubled; the image is interpolated, so it matches only inside blocks."""
    name, record = sample
    _, label0 = _tile()
    doubled = np.kron(label0, np.ones((2, 2), dtype=label0.dtype))
    label_views = _dihedral(doubled)
    mapper = _mapper(name, "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.CROP.ENABLED", "True", "INPUT.CROP.SIZE", "[64, 64]")
    offsets = set()
    for image, label in _run(mapper, record, range(12)):
        assert image.shape == (64, 64, 3) and label.shape == (64, 64)
        found = _locate(label, label_views)
        assert found is not None, "the label is not a nearest-neighbour x2 resize of the tile's label"
        offsets.add(found[1:])
        # inside blocks (3x3 neighbourhood of one label value) the interpolated image is exact
        padded = np.pad(label.astype(np.int32), 1, mode="edge")
        interior = np.ones_like(label, dtype=bool)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                interior &= padded[dy:dy + 64, dx:dx + 64] == label
        assert interior.mean() > 0.4
        np.testing.assert_array_equal(image[..., 2][interior], label[interior])
    assert len(offsets) >= 4

    # without a crop the whole tile is resized: 96 x 96
    uncropped = _mapper(name, "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.CROP.ENABLED", "False")
    for image, label in _run(uncropped, record, range(4)):
        assert image.shape == (96, 96, 3)
        assert any(np.array_equal(label, view) for view in label_views)


def test_crop_larger_than_the_tile_pads_image_with_zero_and_label_with_ignore(sample):
    name, record = sample
    mapper = _mapper(name, "INPUT.MIN_SIZE_TRAIN", f"({SIDE},)", "INPUT.CROP.ENABLED", "True",
                     "INPUT.CROP.SIZE", "[64, 64]")
    for image, label in _run(mapper, record, range(6)):
        pad = label == 255
        assert pad.sum() == 64 * 64 - SIDE * SIDE
        assert (image[pad] == 0).all()
        np.testing.assert_array_equal(label[~pad], image[..., 2][~pad])
