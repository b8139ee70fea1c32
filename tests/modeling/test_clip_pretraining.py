"""Pretraining the demo's tiny CLIP on synthetic aerial image-caption pairs (captions, recipe, cache, CLI)."""
import json
import logging
import os

import numpy as np
import pytest
import torch

from aeroseg.data.datasets.synthetic import CAR, ROAD, SYNTHETIC_CLASSES, WATER, generate_synthetic_aerial_dataset
from aeroseg.data.datasets.synthetic_captions import _NAMES, caption_for_crop, make_caption_pairs, make_zero_shot_crops
from aeroseg.modeling.backbone.clip_backbone import _to_dict, build_clip_model
from aeroseg.modeling.backbone.clip_pretraining import (
    PretrainingParams,
    main,
    synthetic_aerial_clip,
    write_pretrained_clip,
    zero_shot_accuracy,
)
from aeroseg.utils.errors import CheckpointError
from conftest import DEMO_CONFIG, tiny_cfg

# A few seconds of pretraining: enough to test the recipe's plumbing, not its quality
# (test_open_vocabulary_transfer.py tests the default recipe's result).
SMALL = PretrainingParams(num_scenes=24, crops_per_scene=4, epochs=1, batch_size=32, zero_shot_per_class=3)


def _demo_clip():
    cfg = tiny_cfg()
    cfg.merge_from_file(str(DEMO_CONFIG))
    return cfg.MODEL.CLIP.NAME, _to_dict(cfg.MODEL.CLIP.ARCH_OVERRIDES)


def _layout(size, water=None, car_colours=()):
    return {"water": water, "curved_road": False, "crossing": False, "car_colours": list(car_colours),
            "lane": False, "shadow": False}


def _names_in(caption, cls):
    words = [n.split(" ", 1)[-1] if n.startswith(("a ", "an ")) else n for n in _NAMES[cls]]
    return any(w in caption for w in words)


def test_captions_name_the_classes_a_crop_shows_and_no_other():
    rng = np.random.default_rng(0)
    water = np.full((20, 20), WATER, dtype=np.uint8)
    road_with_car = np.full((20, 20), ROAD, dtype=np.uint8)
    road_with_car[8:13, 4:14] = CAR  # 12.5% of the crop: a caption names the car
    for _ in range(50):
        caption = caption_for_crop(water, _layout(20, water="lake"), rng)
        assert _names_in(caption, WATER) or "lake" in caption, caption
        assert not any(_names_in(caption, c) for c in range(len(SYNTHETIC_CLASSES)) if c != WATER), caption
        caption = caption_for_crop(road_with_car, _layout(20, car_colours=["red"]), rng)
        assert "car" in caption or "vehicle" in caption, caption
        assert not _names_in(caption, WATER), caption
    # One red car: "a red car" is among the phrasings; an article agrees with the colour.
    captions = {caption_for_crop(road_with_car, _layout(20, car_colours=["orange"]), rng) for _ in range(200)}
    assert any("an orange car" in c for c in captions) and not any("a orange" in c for c in captions)


def test_caption_pairs_cover_both_unseen_classes_and_are_deterministic():
    images, captions = make_caption_pairs(30, 4, 64, seed=0, single_class_fraction=0.6)
    assert images.shape == (120, 3, 64, 64) and images.dtype == torch.uint8
    text = " ".join(captions)
    assert "water" in text or "lake" in text or "river" in text
    assert "car" in text
    again, captions_again = make_caption_pairs(30, 4, 64, seed=0, single_class_fraction=0.6)
    assert torch.equal(images, again) and captions == captions_again
    other, _ = make_caption_pairs(30, 4, 64, seed=1, single_class_fraction=0.6)
    assert not torch.equal(images, other)


def test_pretraining_scenes_are_not_the_segmentation_images(tmp_path):
    """The pairs' whole-scene crops (the first of each scene) differ from every train / val image."""
    root = generate_synthetic_aerial_dataset(tmp_path / "ds", num_train=8, num_val=8, size=64, seed=0)
    from PIL import Image

    seg = [np.array(Image.open(os.path.join(root, split, "images", f)))
           for split in ("train", "val") for f in sorted(os.listdir(os.path.join(root, split, "images")))]
    images, _ = make_caption_pairs(8, 1, 64, seed=0)  # 1 crop per scene: the whole scene, rotated
    for image in images:
        for turns in range(4):
            scene = torch.rot90(image, -turns, dims=(1, 2)).permute(1, 2, 0).numpy()
            assert not any(np.array_equal(scene, s) for s in seg)


def test_zero_shot_crops_show_their_class():
    images, classes = make_zero_shot_crops(4, 32, seed=0)
    assert images.shape[1:] == (3, 32, 32)
    counts = torch.bincount(classes, minlength=len(SYNTHETIC_CLASSES))
    assert counts.tolist() == [4] * len(SYNTHETIC_CLASSES)


class _FakeCLIP(torch.nn.Module):
    """encode_image: e1 for images brighter in red than CLIP's mean, else e0; encode_text: by prompt."""

    def __init__(self, text_table):
        super().__init__()
        self.text_table = text_table

    def encode_text(self, tokens, normalize=True):
        return torch.nn.functional.normalize(torch.stack([self.text_table[t] for t in tokens]), dim=-1)

    def encode_image(self, x, normalize=True):
        index = (x[:, 0].mean(dim=(1, 2)) > 0).long()
        return torch.nn.functional.one_hot(index, 3).float()


def test_zero_shot_accuracy_averages_over_prompts_per_class():
    # Class "a": both prompts at e0. Class "b": its prompts at e1 and e2, so its prompt mean is
    # (e1 + e2) / sqrt(2). Averaging over classes instead would give every image class "a".
    table = {"x a": torch.tensor([1.0, 0.0, 0.0]), "y a": torch.tensor([1.0, 0.0, 0.0]),
             "x b": torch.tensor([0.0, 1.0, 0.0]), "y b": torch.tensor([0.0, 0.0, 1.0])}
    model = _FakeCLIP(table)
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    images[2:, 0] = 200  # the two brighter images -> e1 -> class b
    classes = torch.tensor([0, 0, 1, 0])  # the last one is an "a" that looks like a "b"
    acc = zero_shot_accuracy(model, list, images, classes, ["a", "b"], templates=("x {}", "y {}"))
    assert acc == pytest.approx({"a": 200 / 3, "b": 100.0})


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    name, overrides = _demo_clip()
    root = tmp_path_factory.mktemp("small_clip")
    path = synthetic_aerial_clip(name, overrides, root=str(root), params=SMALL, progress=False)
    return name, overrides, root, path


def test_cache_is_an_open_clip_checkpoint_with_its_record(small_checkpoint):
    name, overrides, root, path = small_checkpoint
    assert path == os.path.join(root, "synthetic_aerial_clip", "open_clip.pt")
    with open(os.path.join(root, "synthetic_aerial_clip", "open_clip.json")) as f:
        record = json.load(f)
    assert record["recipe"]["params"]["num_scenes"] == SMALL.num_scenes and record["recipe"]["arch"] == name
    assert set(record["zero_shot_accuracy"]) == set(SYNTHETIC_CLASSES) and len(record["history"]) == SMALL.epochs
    # It loads through MODEL.CLIP.PRETRAINED as a file, like OpenAI's weights (positions resized 64 -> 128).
    model = build_clip_model(name, path, 128, overrides)
    saved = torch.load(path, weights_only=True)
    assert torch.equal(model.text_projection, saved["text_projection"])
    assert torch.equal(model.visual.conv1.weight, saved["visual.conv1.weight"])
    assert model.visual.positional_embedding.shape[0] == 1 + 16 * 16


def test_same_parameters_give_an_identical_file(small_checkpoint, tmp_path):
    name, overrides, _, path = small_checkpoint
    again = tmp_path / "again.pt"
    write_pretrained_clip(name, overrides, SMALL, str(again), progress=False)
    assert again.read_bytes() == open(path, "rb").read()


def test_pretraining_moves_the_weights_and_learns_the_temperature(small_checkpoint):
    name, overrides, _, path = small_checkpoint
    torch.manual_seed(SMALL.seed)
    initial = build_clip_model(name, "", SMALL.image_size, overrides)
    saved = torch.load(path, weights_only=True)
    assert not torch.equal(initial.visual.proj, saved["visual.proj"])
    assert not torch.equal(initial.logit_scale, saved["logit_scale"])


def test_cache_is_reused_rebuilt_on_new_parameters_and_when_damaged(small_checkpoint, monkeypatch, caplog):
    name, overrides, root, path = small_checkpoint
    import aeroseg.modeling.backbone.clip_pretraining as pretraining

    built = []
    real = pretraining.write_pretrained_clip
    monkeypatch.setattr(pretraining, "write_pretrained_clip", lambda *a, **k: built.append(a[2]) or real(*a, **k))
    assert synthetic_aerial_clip(name, overrides, root=str(root), params=SMALL) == path
    assert built == []  # cached: nothing rebuilt
    with open(path, "r+b") as f:  # truncated, as by a killed copy
        f.truncate(os.path.getsize(path) // 2)
    with caplog.at_level(logging.WARNING, logger="aeroseg"):
        synthetic_aerial_clip(name, overrides, root=str(root), params=SMALL, progress=False)
    assert built == [SMALL] and "truncated or corrupted" in caplog.text
    build_clip_model(name, path, 64, overrides)  # whole again
    other = PretrainingParams(**{**SMALL.__dict__, "seed": 1})
    synthetic_aerial_clip(name, overrides, root=str(root), params=other, progress=False)
    assert built == [SMALL, other]
    synthetic_aerial_clip(name, overrides, root=str(root), params=SMALL, progress=False)  # leave it as found


def test_checkpoint_of_another_architecture_is_a_one_line_error(small_checkpoint):
    name, overrides, _, path = small_checkpoint
    wider = {**overrides, "vision_cfg": {**overrides["vision_cfg"], "width": 48}}
    with pytest.raises(CheckpointError) as info:
        build_clip_model(name, path, 64, wider)
    message = str(info.value)
    assert path in message and "\n" not in message
    assert "shape mismatches (e.g. visual.class_embedding: file (32,) vs model (48,))" in message
    deeper = {**overrides, "vision_cfg": {**overrides["vision_cfg"], "layers": 2}}
    with pytest.raises(CheckpointError, match=r"12 missing keys \(e.g. visual.transformer.resblocks.1"):
        build_clip_model(name, path, 64, deeper)


def test_synthetic_tag_builds_once_under_aeroseg_datasets(tmp_path, monkeypatch):
    import aeroseg.modeling.backbone.clip_pretraining as pretraining

    name, overrides = _demo_clip()
    monkeypatch.setenv("AEROSEG_DATASETS", str(tmp_path))
    monkeypatch.setattr(pretraining, "PretrainingParams", lambda: SMALL)
    model = build_clip_model(name, "synthetic_aerial", 128, overrides)
    saved = torch.load(tmp_path / "synthetic_aerial_clip" / "open_clip.pt", weights_only=True)
    assert torch.equal(model.visual.proj, saved["visual.proj"])


def test_command_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "clip.pt"
    argv = ["--output", str(out), "--epochs", "1", "--scenes", "12", "--batch-size", "16"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "zero-shot accuracy" in printed and "car" in printed and out.is_file()
    assert (tmp_path / "clip.json").is_file()
    before = out.read_bytes()
    assert main(argv) == 2  # never overwrites without --force
    err = capsys.readouterr().err
    assert "exists" in err and "--force" in err and err.count("\n") == 1 and out.read_bytes() == before
    assert main(["--output", str(tmp_path / "x.pt"), "--epochs", "0"]) == 2
    assert "--epochs=0" in capsys.readouterr().err
    assert main(["--config-file", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err
