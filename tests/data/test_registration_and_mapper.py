import os
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from aeroseg.data import (
    DatasetCatalog,
    DatasetError,
    MetadataCatalog,
    SemSegDatasetMapper,
    build_test_loader,
    build_train_loader,
    register_datasets_from_config,
    register_folder_dataset,
)
from aeroseg.data.dataset_mapper import training_label_map
from aeroseg.data.samplers import InferenceSampler, InfiniteTrainingSampler
from aeroseg.data.datasets.synthetic import register_synthetic_dataset
from conftest import tiny_cfg

CLASSES = ["road", "tree", "water", "car"]
UNSEEN = ["water"]


def _write_split(root, split, n=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(root / split / "images", exist_ok=True)
    os.makedirs(root / split / "labels", exist_ok=True)
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / split / "images" / f"t{i}.png")
        label = np.zeros((size, size), np.uint8)
        label[:, 8:16] = 1
        label[:, 16:24] = 2  # water: unseen
        label[:, 24:] = 3
        label[0, 0] = 255
        Image.fromarray(label).save(root / split / "labels" / f"t{i}.png")


@pytest.fixture
def custom_dataset(tmp_path):
    root = tmp_path / "mycity"
    _write_split(root, "train")
    _write_split(root, "val", n=2)
    (root / "classes.txt").write_text("# my classes\nroad\ntree\nwater\ncar\n")
    (root / "unseen.txt").write_text("water\n")
    name = f"mycity{abs(hash(str(tmp_path))) % 10 ** 8}"
    names = register_folder_dataset(name, str(root), "classes.txt", "unseen.txt")
    yield name, root
    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


def test_builtin_datasets_are_registered_with_the_paper_splits():
    for name in ["isaid_train", "isaid_val", "dlrsd_train", "dlrsd_val", "oem_train", "oem_val"]:
        assert name in DatasetCatalog.list()
    meta = MetadataCatalog.get("isaid_val")
    assert len(meta.stuff_classes) == 15 and meta.ignore_label == 255
    assert meta.unseen_classes == [
        "tennis court", "bridge", "small vehicle", "helicopter", "soccer ball field", "harbor"]
    assert meta.seen_classes[0] == "ship" and "harbor" not in meta.seen_classes
    assert len(MetadataCatalog.get("dlrsd_train").unseen_classes) == 7
    assert MetadataCatalog.get("oem_train").seen_classes == ["bareland", "rangeland", "road", "building"]


def test_missing_builtin_dataset_names_folder_layout_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("AEROSEG_DATASETS", str(tmp_path))
    with pytest.raises(DatasetError) as info:
        DatasetCatalog.get("isaid_train")
    msg = str(info.value)
    assert str(tmp_path / "isaid" / "train" / "images") in msg and "{images,labels}" in msg
    assert "prepare_isaid.py" in msg and "\n" not in msg


def test_builtin_dataset_found_under_aeroseg_datasets(tmp_path, monkeypatch):
    from aeroseg.data.datasets.manifest import make_manifest, write_manifest

    _write_split(tmp_path / "oem", "val", n=3)
    monkeypatch.setenv("AEROSEG_DATASETS", str(tmp_path))
    with pytest.raises(DatasetError, match="no manifest.json"):  # not known to be complete
        DatasetCatalog.get("oem_val")
    write_manifest(str(tmp_path / "oem"), make_manifest("oem", {"val": ["t0", "t1"]}, tool="test"))
    dicts = DatasetCatalog.get("oem_val")
    # exactly the manifest's samples (t2.png, not listed, is not used)
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["t0.png", "t1.png"]
    assert dicts[0]["sem_seg_file_name"].endswith(os.path.join("labels", "t0.png"))


def test_folder_listing_reports_labels_without_image(custom_dataset):
    name, root = custom_dataset
    os.remove(root / "val" / "images" / "t1.png")
    with pytest.raises(DatasetError, match=r"label .*t1.png has no image t1"):
        DatasetCatalog.get(f"{name}_val")


def test_manifest_with_overlapping_or_edited_lists_is_refused(tmp_path):
    import json

    from aeroseg.data.datasets.manifest import make_manifest, read_manifest, write_manifest

    with pytest.raises(ValueError, match="t1 is in both train and val"):
        make_manifest("x", {"train": ["t0", "t1"], "val": ["t1"]}, tool="test")
    write_manifest(str(tmp_path), make_manifest("x", {"train": ["t0"], "val": ["t1"]}, tool="test"))
    assert read_manifest(str(tmp_path))["splits"]["val"]["files"] == ["t1"]
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["splits"]["val"]["files"].append("t0")  # hand-edited: now overlaps, checksum stale
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="does not match its checksum"):
        read_manifest(str(tmp_path))


def test_custom_dataset_registration(custom_dataset):
    name, root = custom_dataset
    assert len(DatasetCatalog.get(f"{name}_train")) == 3 and len(DatasetCatalog.get(f"{name}_val")) == 2
    meta = MetadataCatalog.get(f"{name}_val")
    assert meta.stuff_classes == CLASSES and meta.unseen_classes == UNSEEN
    assert meta.seen_classes == ["road", "tree", "car"]


def test_custom_dataset_from_config(tmp_path):
    root = tmp_path / "farm"
    _write_split(root, "train", n=1)
    cfg = tiny_cfg()
    cfg.DATASETS.CUSTOM = [{"NAME": "farm_cfg", "ROOT": str(root), "CLASSES": ["a", "b", "c", "d"], "UNSEEN": ["c"]}]
    try:
        assert register_datasets_from_config(cfg) == ["farm_cfg_train"]
        assert MetadataCatalog.get("farm_cfg_train").unseen_classes == ["c"]
    finally:
        DatasetCatalog.remove("farm_cfg_train")
        MetadataCatalog.remove("farm_cfg_train")
    cfg.DATASETS.CUSTOM = [{"NAME": "x"}]
    with pytest.raises(DatasetError, match=r"DATASETS.CUSTOM\[0\] lacks \['ROOT', 'CLASSES'\]"):
        register_datasets_from_config(cfg)


def test_registration_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        register_folder_dataset("nowhere", str(tmp_path / "nowhere"), ["a"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither split folders"):
        register_folder_dataset("empty", str(tmp_path / "empty"), ["a"])
    _write_split(tmp_path / "d", "train", n=1)
    with pytest.raises(DatasetError, match=r"unseen classes \['zz'\] are not among"):
        register_folder_dataset("d", str(tmp_path / "d"), ["a", "b"], ["zz"])
    with pytest.raises(DatasetError, match="class list .*missing.txt does not exist"):
        register_folder_dataset("d2", str(tmp_path / "d"), "missing.txt")


def test_image_without_label_is_reported(custom_dataset):
    name, root = custom_dataset
    os.remove(root / "val" / "labels" / "t1.png")
    with pytest.raises(DatasetError, match="t1.png has no label t1.png"):
        DatasetCatalog.get(f"{name}_val")


def test_training_label_map():
    lut = training_label_map(CLASSES, ["road", "tree", "car"])
    assert lut[0] == 0 and lut[1] == 1 and lut[2] == 255 and lut[3] == 2 and lut[255] == 255


def test_training_mapper_hides_unseen_and_reindexes(custom_dataset):
    name, _ = custom_dataset
    cfg = tiny_cfg("DATASETS.TRAIN", f"('{name}_train',)", "INPUT.MIN_SIZE_TRAIN", "(32,)",
                   "INPUT.CROP.SIZE", "[32, 32]",
                   "INPUT.RANDOM_FLIP", "none")
    mapper = SemSegDatasetMapper(cfg, is_train=True)
    out = mapper(DatasetCatalog.get(f"{name}_train")[0])
    label = out["sem_seg"]
    assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.uint8 and label.dtype == torch.int64
    assert (label[:, 16:24] == 255).all()  # water (unseen) -> ignore
    assert (label[1:, :8] == 0).all() and (label[:, 8:16] == 1).all() and (label[:, 24:] == 2).all()  # car 3 -> 2
    assert label[0, 0] == 255


def test_test_mapper_keeps_labels_and_size(custom_dataset):
    name, _ = custom_dataset
    cfg = tiny_cfg("DATASETS.TEST", f"('{name}_val',)", "INPUT.MIN_SIZE_TEST", "32")  # the tiles' own size
    d = DatasetCatalog.get(f"{name}_val")[0]
    out = SemSegDatasetMapper(cfg, is_train=False)(d)
    assert (out["sem_seg"][:, 16:24] == 2).all() and (out["sem_seg"][:, 24:] == 3).all()
    assert (out["height"], out["width"]) == (32, 32)
    img = np.asarray(Image.open(d["file_name"]))
    assert torch.equal(out["image"], torch.from_numpy(img.transpose(2, 0, 1).copy()))


def test_rotate_and_flip_move_image_and_label_together(custom_dataset):
    name, _ = custom_dataset
    cfg = tiny_cfg("DATASETS.TRAIN", f"('{name}_train',)", "INPUT.MIN_SIZE_TRAIN", "(32,)", "INPUT.CROP.SIZE",
                   "[32, 32]", "INPUT.RANDOM_FLIP", "both", "INPUT.RANDOM_ROTATE_90", "True")
    mapper = SemSegDatasetMapper(cfg, is_train=True)
    d = DatasetCatalog.get(f"{name}_train")[0]
    img = torch.from_numpy(np.asarray(Image.open(d["file_name"])).transpose(2, 0, 1).copy())
    seen = set()
    for position in range(12):
        out = mapper(d, rng=np.random.default_rng([0, position]))
        # the label's column stripes end up rows or columns; the image moved the same way
        found = False
        for k in range(4):
            for flip in ([], [-1], [-2], [-1, -2]):
                cand = torch.rot90(img.flip(flip) if flip else img, k, dims=(-2, -1))
                if torch.equal(cand, out["image"]):
                    lab = torch.from_numpy(np.asarray(Image.open(d["sem_seg_file_name"])).astype(np.int64))
                    mapped = training_label_map(CLASSES, ["road", "tree", "car"])[lab.numpy()]
                    lab = torch.from_numpy(mapped.astype(np.int64))
                    lab = torch.rot90(lab.flip(flip) if flip else lab, k, dims=(-2, -1))
                    found = found or torch.equal(lab, out["sem_seg"])
        assert found
        seen.add(out["image"].numpy().tobytes())
    assert len(seen) > 2


def test_label_size_mismatch_is_reported(custom_dataset):
    name, root = custom_dataset
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "val" / "labels" / "t0.png")
    cfg = tiny_cfg()
    with pytest.raises(DatasetError, match=r"t0.png: label size 16x16 differs from image t0.png 32x32"):
        SemSegDatasetMapper(cfg, is_train=False, dataset_name=f"{name}_val")(DatasetCatalog.get(f"{name}_val")[0])


def test_samplers():
    s = iter(InfiniteTrainingSampler(5, seed=3, rank=0, world_size=1))
    first = [next(s) for _ in range(10)]
    assert [p for p, _ in first] == list(range(10))
    idx = [i for _, i in first]
    assert sorted(idx[:5]) == list(range(5)) and sorted(idx[5:]) == list(range(5)) and idx[:5] != idx[5:]
    # resuming at position 4 continues the same stream
    resumed = iter(InfiniteTrainingSampler(5, seed=3, rank=0, world_size=1, start=4))
    assert [next(resumed) for _ in range(6)] == first[4:]
    a = iter(InfiniteTrainingSampler(6, seed=1, rank=0, world_size=2))
    b = iter(InfiniteTrainingSampler(6, seed=1, rank=1, world_size=2))
    pa, pb = [next(a) for _ in range(3)], [next(b) for _ in range(3)]
    assert [p for p, _ in pa] == [0, 2, 4] and [p for p, _ in pb] == [1, 3, 5]
    assert sorted(i for _, i in pa + pb) == list(range(6))
    shards = [list(InferenceSampler(7, rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 1, 2], [3, 4], [5, 6]]


def test_train_loader_is_infinite_batched_and_seeded(custom_dataset):
    name, _ = custom_dataset
    cfg = tiny_cfg("DATASETS.TRAIN", f"('{name}_train',)", "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(32,)",
                   "INPUT.CROP.SIZE", "[24, 24]", "SEED", "5")

    def batches(n, start_iter=0, workers=0):
        cfg.DATALOADER.NUM_WORKERS = workers
        it = iter(build_train_loader(cfg, start_iter=start_iter))
        return [next(it) for _ in range(n)]

    run1 = batches(4)  # 8 samples from a 3-image dataset: it wraps
    assert all(len(b) == 2 and b[0]["image"].shape == (3, 24, 24) for b in run1)
    assert len({x["image"].numpy().tobytes() for b in run1 for x in b}) == 8  # random crops differ

    def same(r1, r2):
        return all(x["file_name"] == y["file_name"] and torch.equal(x["image"], y["image"])
                   and torch.equal(x["sem_seg"], y["sem_seg"]) for b1, b2 in zip(r1, r2) for x, y in zip(b1, b2))

    assert same(run1, batches(4))  # seeded
    assert same(run1, batches(4, workers=2))  # independent of the number of workers
    assert same(run1[2:], batches(2, start_iter=2))  # resuming continues the stream exactly


def test_test_loader_batch_one_in_order(custom_dataset):
    name, _ = custom_dataset
    loader = build_test_loader(tiny_cfg(), f"{name}_val")
    names = [os.path.basename(b[0]["file_name"]) for b in loader]
    assert names == ["t0.png", "t1.png"] and all(len(b) == 1 for b in loader)


def test_model_vocabulary_comes_from_the_training_dataset(custom_dataset):
    from conftest import build_tiny

    name, _ = custom_dataset
    model = build_tiny("MODEL.AEROSEG.VOCABULARY", "[]", "DATASETS.TRAIN", f"('{name}_train',)")
    assert model.vocabulary == ["road", "tree", "car"]
    assert model.head.back_projection.num_classes == 3


def test_training_labels_are_the_raw_labels_with_unseen_classes_hidden(tmp_path):
    """Pixel by pixel, against a table written out here: seen classes renumbered in order, unseen
    ones ignored (a mapper that makes every pixel 255 fails)."""
    name = f"hidden_{uuid.uuid4().hex[:8]}"
    train, val = register_synthetic_dataset(name, root=str(tmp_path), num_train=6, num_val=1)
    try:
        meta = MetadataCatalog.get(train)
        assert meta.stuff_classes == ["building", "road", "tree", "water", "low vegetation", "car"]
        assert meta.unseen_classes == ["water", "car"]
        # dataset index -> training index: building 0, road 1, tree 2, water -, low vegetation 3, car -
        table = np.full(256, 255, dtype=np.int64)
        table[[0, 1, 2, 4]] = [0, 1, 2, 3]
        cfg = tiny_cfg("DATASETS.TRAIN", f"('{train}',)", "INPUT.MIN_SIZE_TRAIN", "(64,)",
                       "INPUT.CROP.ENABLED", "False", "INPUT.RANDOM_FLIP", "none", "INPUT.RANDOM_ROTATE_90", "False")
        mapper = SemSegDatasetMapper(cfg, is_train=True)
        raw_values, out_values = set(), set()
        for record in DatasetCatalog.get(train):
            raw = np.asarray(Image.open(record["sem_seg_file_name"]))
            label = mapper(record, rng=np.random.default_rng(0))["sem_seg"].numpy()
            np.testing.assert_array_equal(label, table[raw])
            raw_values |= set(np.unique(raw).tolist())
            out_values |= set(np.unique(label).tolist())
        assert {3, 5} & raw_values  # unseen classes were present, so hiding was exercised
        assert {0, 1, 2, 3} <= out_values  # every seen class survives, renumbered
    finally:
        for split in (train, val):
            DatasetCatalog.remove(split)
            MetadataCatalog.remove(split)


def test_mapper_and_model_share_one_training_vocabulary(custom_dataset):
    """The label renumbering of the mapper and the model's vocabulary come from one function."""
    from aeroseg.data.vocabulary import training_vocabulary
    from aeroseg.modeling import build_model

    name, _ = custom_dataset
    train = f"{name}_train"
    assert training_vocabulary([train]) == ["road", "tree", "car"]  # seen classes, dataset order
    assert training_vocabulary([]) is None
    cfg = tiny_cfg("DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", "()")
    assert build_model(cfg).vocabulary == ["road", "tree", "car"]
    sample = SemSegDatasetMapper(cfg, is_train=True)(DatasetCatalog.get(train)[0])
    values = set(sample["sem_seg"].unique().tolist())
    # road 0 -> 0, tree 1 -> 1, water (unseen) -> 255, car 3 -> 2: indices into the vocabulary
    assert values <= {0, 1, 2, 255} and 2 in values
