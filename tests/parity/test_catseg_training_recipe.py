"""The CAT-Seg / OVRS training recipe where the paper is silent (docs/DESIGN.md, "Design choices"):
dense CLIP value path, BCE with ignored pixels, gradient clipping, prompts, text-guidance
normalisation, SSD colour augmentation and test-time resizing (DDP with the value path: test_engine)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock

from aeroseg.config import GENERIC_TEMPLATES, REMOTE_SENSING_TEMPLATES, get_cfg
from aeroseg.data.transforms import ColorAugSSD
from aeroseg.modeling.backbone import value_dense_tokens
from aeroseg.modeling.losses import segmentation_bce_loss
from aeroseg.utils.errors import ConfigError
from conftest import BASE_CONFIG, REPO, build_tiny, random_batch, tiny_cfg


# ----------------------------------------------------------------------------- dense CLIP features
def _random_block(width=8, heads=2, seed=0):
    torch.manual_seed(seed)
    block = ResidualAttentionBlock(width, heads, batch_first=True)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-zero biases
    return block.eval()


def test_value_path_does_not_mix_tokens_but_adds_the_class_token():
    block = _random_block()
    x = torch.randn(2, 6, 8)  # (N, 1 + L, W), class token first
    out = value_dense_tokens(block, x)
    # hand computation: z_i = y_i + mlp(ln_2(y_i)), y_i = out_proj(W_v ln_1(x_i) + b_v) + x_cls
    w_v, b_v = block.attn.in_proj_weight[16:], block.attn.in_proj_bias[16:]
    y = block.attn.out_proj(block.ln_1(x) @ w_v.T + b_v) + x[:, :1]
    torch.testing.assert_close(out, y + block.mlp(block.ln_2(y)))
    # changing patch token 3 changes only output 3; changing the class token changes all outputs
    x2 = x.clone()
    x2[:, 3] += torch.randn(2, 8)  # not a constant: ln_1 would remove it
    diff = (value_dense_tokens(block, x2) - out).abs().amax(dim=(0, 2))
    assert diff[3] > 1e-3 and torch.all(diff[[0, 1, 2, 4, 5]] == 0)
    x3 = x.clone()
    x3[:, 0] += torch.randn(2, 8)
    assert torch.all((value_dense_tokens(block, x3) - out).abs().amax(dim=(0, 2)) > 1e-3)
    # the ordinary block mixes tokens: the same patch change moves the other outputs
    assert (block(x2) - block(x)).abs().amax(dim=(0, 2))[[1, 2, 4, 5]].min() > 0


def test_dense_feature_modes_differ_and_bad_mode_is_a_config_error():
    images = build_tiny().clip_backbone.preprocess([torch.rand(3, 64, 64) * 255])
    with torch.no_grad():
        value = build_tiny().clip_backbone(images)["dense"]
        tokens = build_tiny("MODEL.CLIP.DENSE_FEATURES", "tokens").clip_backbone(images)["dense"]
    assert value.shape == tokens.shape and (value - tokens).abs().max() > 1e-2
    with pytest.raises(ConfigError, match=r"MODEL.CLIP.DENSE_FEATURES='dense': expected one of"):
        build_tiny("MODEL.CLIP.DENSE_FEATURES", "dense")


def test_guidance_layers_are_the_ordinary_blocks_in_value_mode():
    # CLIP guidance (Baseline) taps block outputs; the value path only replaces the final features.
    opts = ("MODEL.GUIDANCE.ENCODER", "CLIP", "MODEL.CLIP.GUIDANCE_LAYERS", "[0, 1]",
            "MODEL.AEROSEG.BACK_PROJECTION_TARGET", "NONE")
    value = build_tiny(*opts).clip_backbone
    tokens = build_tiny(*opts, "MODEL.CLIP.DENSE_FEATURES", "tokens").clip_backbone
    x = value.preprocess([torch.rand(3, 64, 64) * 255])
    with torch.no_grad():
        a, b = value(x), tokens(x)
    for ta, tb in zip(a["intermediates"], b["intermediates"]):
        torch.testing.assert_close(ta, tb)
    assert (a["dense"] - b["dense"]).abs().max() > 1e-2


# ----------------------------------------------------------------------------- BCE and ignored pixels
def test_bce_ignored_pixels_hand_computed_in_both_modes():
    # one pixel of class 1, three ignored pixels, logits (a, b, c) = (2, -1, 0.5) everywhere
    logits = torch.tensor([2.0, -1.0, 0.5]).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()
    label = torch.tensor([[1, 255], [255, 255]])
    def sp(v):  # softplus: BCE of logit v against 0 is sp(v), against 1 is sp(-v)
        return math.log1p(math.exp(v))

    labelled = sp(2.0) + sp(1.0) + sp(0.5)
    ignored = sp(2.0) + sp(-1.0) + sp(0.5)  # all-zero target
    negative = segmentation_bce_loss(logits, [label], ignored="negative").item()
    exclude = segmentation_bce_loss(logits, [label], ignored="exclude").item()
    assert negative == pytest.approx((labelled + 3 * ignored) / 12, rel=1e-6)
    assert exclude == pytest.approx(labelled / 3, rel=1e-6)
    # as CAT-Seg: dense zero targets with one-hot rows where labelled, one mean over everything
    target = torch.zeros(2, 2, 3)
    target[0, 0, 1] = 1
    catseg = F.binary_cross_entropy_with_logits(logits[0].permute(1, 2, 0), target).item()
    assert negative == pytest.approx(catseg, rel=1e-6)


def test_bce_negative_pushes_ignored_pixels_down():
    logits = torch.zeros(1, 2, 2, 2, requires_grad=True)
    label = torch.tensor([[0, 255], [1, 255]])
    segmentation_bce_loss(logits, [label], ignored="negative").backward()
    assert torch.all(logits.grad[0, :, :, 1] > 0)  # gradient descent lowers every class there
    logits.grad = None
    segmentation_bce_loss(logits, [label], ignored="exclude").backward()
    assert torch.all(logits.grad[0, :, :, 1] == 0)


def test_bce_ignored_mode_is_read_from_the_config():
    assert build_tiny().bce_ignored == "negative"
    model = build_tiny("MODEL.AEROSEG.BCE_IGNORED", "exclude")
    model.train()
    batch = random_batch(1, ignore_fraction=0.5)
    loss_exclude = model(batch)["loss_bce"]
    model.bce_ignored = "negative"
    assert not torch.isclose(model(batch)["loss_bce"], loss_exclude)
    with pytest.raises(ConfigError, match=r"MODEL.AEROSEG.BCE_IGNORED='drop': expected one of"):
        build_tiny("MODEL.AEROSEG.BCE_IGNORED", "drop")


# ----------------------------------------------------------------------------- recipe values
def test_paper_configs_use_the_reference_recipe():
    cfg = get_cfg()
    cfg.merge_from_file(str(BASE_CONFIG))
    c = cfg.SOLVER.CLIP_GRADIENTS
    assert (c.ENABLED, c.CLIP_TYPE, c.CLIP_VALUE, c.NORM_TYPE) == (True, "full_model", 0.01, 2.0)
    assert cfg.INPUT.COLOR_AUG_SSD and cfg.MODEL.CLIP.DENSE_FEATURES == "value"
    assert cfg.MODEL.AEROSEG.BCE_IGNORED == "negative"
    # the paper's templates, as printed (no full stop); CAT-Seg's generic prompt for the ablations
    assert cfg.MODEL.CLIP.PROMPT_TEMPLATES == REMOTE_SENSING_TEMPLATES == [
        "A satellite image of a {}", "A land use image of a {}",
        "A remote sensing image of a {}", "An aerial image of a {}"]
    assert GENERIC_TEMPLATES == ["A photo of a {} in the scene"]
    for name in ("isaid", "dlrsd", "oem"):
        for ablation in ("baseline", "config_a", "config_b"):
            a = get_cfg()
            a.merge_from_file(str(REPO / "configs" / name / "ablations" / f"{ablation}.yaml"))
            assert a.MODEL.CLIP.PROMPT_TEMPLATES == GENERIC_TEMPLATES
    defaults = get_cfg()
    assert not defaults.INPUT.COLOR_AUG_SSD  # off unless a config asks for it (detectron2's default)


def test_text_guidance_is_the_renormalised_prompt_average():
    model = build_tiny()
    model.eval()
    seen = []
    model.head.text_guidance_proj[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model(random_batch(1))
    text = model.text_embeddings()
    assert text.mean(dim=1).norm(dim=-1).max() < 0.999  # the average of unit vectors is shorter
    torch.testing.assert_close(seen[0], F.normalize(text.mean(dim=1), dim=-1))


# ----------------------------------------------------------------------------- colour augmentation
def _scene(seed=0, size=32):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    label = rng.integers(0, 5, (size, size)).astype(np.uint8)
    return image, label


def test_color_aug_changes_the_image_only_and_is_deterministic_per_seed():
    aug = ColorAugSSD()
    image, label = _scene()
    outputs = []
    for position in range(8):
        out, out_label = aug(image.copy(), label.copy(), np.random.default_rng([0, position]))
        again, _ = aug(image.copy(), label.copy(), np.random.default_rng([0, position]))
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert np.array_equal(out_label, label) and np.array_equal(out, again)
        outputs.append(out)
    assert sum(not np.array_equal(o, image) for o in outputs) >= 6  # P(no change) = 1/16 per draw
    assert len({o.tobytes() for o in outputs}) >= 6


def test_color_aug_ranges_on_a_grey_image():
    # Grey pixels have no saturation or hue, so only brightness (+-32) then contrast (x0.5..1.5)
    # act: 128 ends in [(128 - 32) * 0.5, (128 + 32) * 1.5] = [48, 240], and the extremes are reached.
    aug = ColorAugSSD()
    grey = np.full((4, 4, 3), 128, np.uint8)
    values = []
    for seed in range(300):
        out, _ = aug(grey, np.zeros((4, 4), np.uint8), np.random.default_rng(seed))
        assert np.all(out == out[0, 0, 0])
        values.append(int(out[0, 0, 0]))
    assert 48 <= min(values) < 75 and 200 < max(values) <= 240
    assert len(set(values)) > 50


def test_color_aug_in_the_training_mapper(tmp_path, monkeypatch):
    from aeroseg.data import SemSegDatasetMapper
    from PIL import Image

    image, label = _scene(size=64)
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(label).save(tmp_path / "lab.png")
    d = {"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(tmp_path / "lab.png")}
    opts = ("INPUT.RANDOM_FLIP", "none", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.CROP.ENABLED", "False")
    monkeypatch.setattr("aeroseg.data.dataset_mapper.training_label_map", lambda *a: np.arange(256, dtype=np.uint8))
    from aeroseg.data import MetadataCatalog

    MetadataCatalog.get("p8a_color_train").set(stuff_classes=list("abcde"), seen_classes=list("abcde"))
    train = ("DATASETS.TRAIN", "('p8a_color_train',)")
    plain = SemSegDatasetMapper(tiny_cfg(*opts, *train, "INPUT.COLOR_AUG_SSD", "False"),
                                is_train=True)
    color = SemSegDatasetMapper(tiny_cfg(*opts, *train, "INPUT.COLOR_AUG_SSD", "True"),
                                is_train=True)
    changed = 0
    for position in range(4):
        a = plain(d, rng=np.random.default_rng([0, position]))
        b = color(d, rng=np.random.default_rng([0, position]))
        b2 = color(d, rng=np.random.default_rng([0, position]))
        assert torch.equal(a["image"], torch.from_numpy(image.transpose(2, 0, 1).copy()))
        assert torch.equal(b["sem_seg"], a["sem_seg"]) and torch.equal(b["image"], b2["image"])
        changed += not torch.equal(b["image"], a["image"])
    assert changed >= 3


# ----------------------------------------------------------------------------- test-time resizing
def test_test_mapper_resizes_the_image_to_min_size_test_only(tmp_path):
    from aeroseg.data import SemSegDatasetMapper
    from PIL import Image

    image, label = _scene(size=32)
    image = np.ascontiguousarray(image[:, :24])  # 32 x 24: short side 24
    label = np.ascontiguousarray(label[:, :24])
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(label).save(tmp_path / "lab.png")
    d = {"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(tmp_path / "lab.png")}
    out = SemSegDatasetMapper(tiny_cfg("INPUT.MIN_SIZE_TEST", "48"), is_train=False)(d)
    assert out["image"].shape == (3, 64, 48)  # short side 24 -> 48, aspect kept
    assert (out["height"], out["width"]) == (32, 24)  # the model predicts at the original size
    assert torch.equal(out["sem_seg"], torch.from_numpy(label.astype(np.int64)))
    capped = SemSegDatasetMapper(tiny_cfg("INPUT.MIN_SIZE_TEST", "48", "INPUT.MAX_SIZE_TEST", "40"), is_train=False)(d)
    assert capped["image"].shape == (3, 40, 30)
    native = SemSegDatasetMapper(tiny_cfg("INPUT.MIN_SIZE_TEST", "0"), is_train=False)(d)
    assert torch.equal(native["image"], torch.from_numpy(image.transpose(2, 0, 1).copy()))
