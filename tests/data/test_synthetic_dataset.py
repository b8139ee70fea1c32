import json
import os
import uuid

import numpy as np
import pytest
from PIL import Image

from aeroseg.compat import DatasetCatalog, MetadataCatalog
from aeroseg.data.datasets.synthetic import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_UNSEEN,
    generate_synthetic_aerial_dataset,
    register_synthetic_dataset,
)

from conftest import DEMO_CONFIG


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(".png"):
                path = os.path.join(dirpath, name)
                out[os.path.relpath(path, root)] = path
    return out


def _read_split(root, split):
    folder = os.path.join(str(root), split)
    stems = sorted(os.listdir(os.path.join(folder, "images")))
    images = np.stack([np.asarray(Image.open(os.path.join(folder, "images", s))) for s in stems])
    labels = np.stack([np.asarray(Image.open(os.path.join(folder, "labels", s))) for s in stems])
    return images, labels


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_aerial_dataset(root, num_train=48, num_val=16, seed=0)
    return root


@pytest.fixture
def unique_name():
    name = f"syn_test_{uuid.uuid4().hex[:8]}"
    yield name
    for split in ("train", "val"):
        full = f"{name}_{split}"
        if full in DatasetCatalog:
            DatasetCatalog.remove(full)
        if full in MetadataCatalog.list():
            MetadataCatalog.remove(full)


def test_vocabulary_matches_the_demo_config():
    import yaml

    with open(DEMO_CONFIG) as f:
        vocabulary = yaml.safe_load(f)["MODEL"]["AEROSEG"]["VOCABULARY"]
    assert SYNTHETIC_CLASSES == list(vocabulary)
    assert len(SYNTHETIC_UNSEEN) == 2 and set(SYNTHETIC_UNSEEN) < set(SYNTHETIC_CLASSES)


def test_layout_counts_and_formats(dataset):
    for split, count in (("train", 48), ("val", 16)):
        images = sorted(os.listdir(dataset / split / "images"))
        labels = sorted(os.listdir(dataset / split / "labels"))
        assert len(images) == count and images == labels
        assert all(name.endswith(".png") for name in images)
        with Image.open(dataset / split / "images" / images[0]) as img:
            assert img.mode == "RGB" and img.size == (64, 64)
        with Image.open(dataset / split / "labels" / labels[0]) as lab:
            assert lab.mode == "L" and lab.size == (64, 64)
    marker = json.loads((dataset / ".complete").read_text())
    assert marker["num_train"] == 48 and marker["num_val"] == 16 and marker["size"] == 64 and marker["seed"] == 0
    assert not [n for n in _files(dataset) if ".tmp" in n]


def test_generation_is_deterministic(dataset, tmp_path):
    again = tmp_path / "again"
    generate_synthetic_aerial_dataset(again, num_train=48, num_val=16, seed=0)
    a, b = _files(dataset), _files(again)
    assert sorted(a) == sorted(b)
    for rel in a:
        with open(a[rel], "rb") as fa, open(b[rel], "rb") as fb:
            assert fa.read() == fb.read(), rel
    other = tmp_path / "other"
    generate_synthetic_aerial_dataset(other, num_train=4, num_val=1, seed=1)
    for rel in _files(other):
        with open(a[rel], "rb") as fa, open(os.path.join(other, rel), "rb") as fo:
            assert fa.read() != fo.read(), rel


def test_other_sizes(tmp_path):
    generate_synthetic_aerial_dataset(tmp_path, num_train=2, num_val=1, size=96)
    images, labels = _read_split(tmp_path, "train")
    assert images.shape == (2, 96, 96, 3) and labels.shape == (2, 96, 96)
    with pytest.raises(ValueError):
        generate_synthetic_aerial_dataset(tmp_path / "bad", num_train=-1)


def test_labels_and_class_shares(dataset):
    _, labels = _read_split(dataset, "train")
    assert labels.dtype == np.uint8 and labels.max() < len(SYNTHETIC_CLASSES)
    share = np.bincount(labels.ravel(), minlength=len(SYNTHETIC_CLASSES)) / labels.size
    for name, s in zip(SYNTHETIC_CLASSES, share):
        low = 0.004 if name == "car" else 0.04
        assert low < s < 0.6, (name, s)
    # Most images mix several classes (scenes, not single-class tiles).
    assert np.mean([len(np.unique(lab)) >= 4 for lab in labels]) > 0.8


def test_class_appearance_is_distinct(dataset):
    images, labels = _read_split(dataset, "train")
    means = np.stack([images[labels == c].astype(np.float64).mean(0) for c in range(len(SYNTHETIC_CLASSES))])
    for i in range(len(means)):
        for j in range(i + 1, len(means)):
            dist = np.linalg.norm(means[i] - means[j])
            assert dist > 30, (SYNTHETIC_CLASSES[i], SYNTHETIC_CLASSES[j], dist)
    # Texture differs too (grey level, pixels whose 5x5 window is one class): water is smooth,
    # low vegetation is fine-grained (neighbour differences ~ window spread), trees are coarse
    # blobs (large window spread, smaller neighbour differences), roads carry lane stripes.
    grey = images.astype(np.float64).mean(-1)[..., None]
    mean = _box_mean(grey, 2)
    spread = np.sqrt(np.maximum(_box_mean(grey ** 2, 2) - mean ** 2, 0))[..., 0]
    pure = _box_mean(np.eye(len(SYNTHETIC_CLASSES))[labels], 2).max(-1) > 0.999
    grad = np.abs(np.diff(grey[..., 0], axis=2))
    same = labels[:, :, 1:] == labels[:, :, :-1]
    s = {n: spread[pure & (labels == c)].mean() for c, n in enumerate(SYNTHETIC_CLASSES) if n != "car"}
    g = {n: grad[same & (labels[:, :, 1:] == c)].mean() for c, n in enumerate(SYNTHETIC_CLASSES) if n != "car"}
    assert s["water"] < 0.5 * min(v for n, v in s.items() if n != "water")
    assert s["low vegetation"] < s["tree"] < s["road"]
    assert g["low vegetation"] / s["low vegetation"] > 1.4 * g["tree"] / s["tree"]


def _box_mean(x, r):
    k = 2 * r + 1
    p = np.pad(x, ((0, 0), (r + 1, r), (r + 1, r), (0, 0)), mode="edge").cumsum(1).cumsum(2)
    return (p[:, k:, k:] - p[:, :-k, k:] - p[:, k:, :-k] + p[:, :-k, :-k]) / (k * k)


def _pixel_features(images, r=2):
    x = images.astype(np.float64)
    mean = _box_mean(x, r)
    std = np.sqrt(np.maximum(_box_mean(x * x, r) - mean ** 2, 0)).mean(-1, keepdims=True)
    return np.concatenate([mean, std], -1).reshape(-1, 4)


def test_classes_are_learnable_by_nearest_class_mean(dataset):
    train_x, train_y = _read_split(dataset, "train")
    val_x, val_y = _read_split(dataset, "val")
    ft, fv = _pixel_features(train_x), _pixel_features(val_x)
    mu, sd = ft.mean(0), ft.std(0)
    ft, fv = (ft - mu) / sd, (fv - mu) / sd
    yt, yv = train_y.ravel(), val_y.ravel()
    centres = np.stack([ft[yt == c].mean(0) for c in range(len(SYNTHETIC_CLASSES))])
    pred = ((fv[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yv).mean() > 0.7
    for c, name in enumerate(SYNTHETIC_CLASSES):
        assert (pred[yv == c] == c).mean() > 0.4, name


def test_complete_marker_skips_and_regenerates(tmp_path):
    root = tmp_path / "data"
    generate_synthetic_aerial_dataset(root, num_train=3, num_val=2)
    files = _files(root)
    old = 1_000_000_000
    for path in files.values():
        os.utime(path, (old, old))

    def untouched():
        return all(os.stat(p).st_mtime == old for p in files.values())

    generate_synthetic_aerial_dataset(root, num_train=3, num_val=2)
    assert untouched()

    (root / ".complete").write_text("{corrupt")  # e.g. a crash while writing
    generate_synthetic_aerial_dataset(root, num_train=3, num_val=2)
    assert not any(os.stat(p).st_mtime == old for p in files.values())

    for path in files.values():
        os.utime(path, (old, old))
    (root / ".complete").unlink()
    generate_synthetic_aerial_dataset(root, num_train=3, num_val=2)
    assert not any(os.stat(p).st_mtime == old for p in files.values())

    for path in files.values():
        os.utime(path, (old, old))
    os.remove(files[os.path.join("val", "labels", "val_00001.png")])  # marker present, a file lost
    generate_synthetic_aerial_dataset(root, num_train=3, num_val=2)
    assert set(_files(root)) == set(files) and not untouched()


def test_different_parameters_regenerate_and_drop_stale_files(tmp_path):
    generate_synthetic_aerial_dataset(tmp_path, num_train=4, num_val=2, seed=0)
    generate_synthetic_aerial_dataset(tmp_path, num_train=2, num_val=1, seed=3)
    assert len(os.listdir(tmp_path / "train" / "images")) == 2
    assert len(os.listdir(tmp_path / "val" / "labels")) == 1
    assert json.loads((tmp_path / ".complete").read_text())["seed"] == 3


def test_registration_is_lazy_and_idempotent(tmp_path, unique_name):
    root = tmp_path / "lazy"
    names = register_synthetic_dataset(unique_name, root=str(root), num_train=3, num_val=2)
    assert names == [f"{unique_name}_train", f"{unique_name}_val"]
    assert not root.exists()  # nothing generated before the dataset is used
    assert register_synthetic_dataset(unique_name, root=str(root), num_train=3, num_val=2) == names

    train = DatasetCatalog.get(f"{unique_name}_train")
    assert (root / ".complete").exists()
    # it carries a manifest like a prepared dataset, so it counts as complete
    from aeroseg.data.datasets.manifest import read_manifest

    manifest = read_manifest(str(root))
    assert manifest["splits"]["train"]["files"] == [f"train_{i:05d}" for i in range(3)]
    assert manifest["splits"]["val"]["count"] == 2 and manifest["classes"] == SYNTHETIC_CLASSES
    assert len(train) == 3 and len(DatasetCatalog.get(f"{unique_name}_val")) == 2
    d = train[0]
    assert os.path.isfile(d["file_name"]) and os.path.isfile(d["sem_seg_file_name"])
    assert (d["height"], d["width"]) == (64, 64)

    meta = MetadataCatalog.get(f"{unique_name}_val")
    assert meta.stuff_classes == SYNTHETIC_CLASSES
    assert meta.unseen_classes == SYNTHETIC_UNSEEN
    assert meta.seen_classes == [c for c in SYNTHETIC_CLASSES if c not in SYNTHETIC_UNSEEN]
    assert meta.ignore_label == 255


def test_default_root_follows_aeroseg_datasets(tmp_path, monkeypatch, unique_name):
    monkeypatch.setenv("AEROSEG_DATASETS", str(tmp_path))
    register_synthetic_dataset(unique_name, num_train=2, num_val=1)
    assert len(DatasetCatalog.get(f"{unique_name}_val")) == 1
    assert (tmp_path / "synthetic_aerial" / ".complete").exists()

