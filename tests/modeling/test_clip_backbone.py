import pytest
import torch
from torch import nn

from aeroseg.modeling.backbone import build_clip_model, multi_rotation_features, split_qkv_for_finetuning
from aeroseg.modeling.backbone.qv_finetune import iter_qkv_originals
from aeroseg.utils.errors import CheckpointError, ConfigError
from conftest import build_tiny

TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"layers": 1, "width": 16, "head_width": 8, "patch_size": 8},
             "text_cfg": {"layers": 1, "width": 16, "heads": 2}}


# --------------------------------------------------------------------------- rotations
def test_rotation_equivariant_encoder_aligns_all_rotations():
    # A pointwise (1x1) conv is rotation-equivariant: every rotated-back map equals the unrotated one.
    conv = nn.Conv2d(3, 5, 1)
    images = torch.randn(2, 3, 8, 8)
    for batched in (True, False):
        (feats,) = multi_rotation_features(lambda x: [conv(x)], images, (0, 90, 180, 270), batched)
        assert feats.shape == (2, 4, 5, 8, 8)
        for r in range(4):
            torch.testing.assert_close(feats[:, r], feats[:, 0])


def test_rotation_back_uses_the_inverse_rotation():
    # cumsum along the width is direction-dependent. Rotating by 180, cumsum, rotating back is a
    # right-to-left cumsum; 90/270 become cumsums along the height (top-down / bottom-up).
    images = torch.randn(1, 1, 5, 5)
    (feats,) = multi_rotation_features(lambda x: [x.cumsum(-1)], images, (0, 90, 180, 270))
    x = images[0, 0]
    torch.testing.assert_close(feats[0, 0, 0], x.cumsum(1))
    torch.testing.assert_close(feats[0, 2, 0], x.flip(1).cumsum(1).flip(1))
    # rot90 by 90 degrees (counter-clockwise) turns the image's rows into the rotated image's
    # columns, top row first: a left-to-right cumsum there is a top-down cumsum here.
    torch.testing.assert_close(feats[0, 1, 0], x.cumsum(0))
    torch.testing.assert_close(feats[0, 3, 0], x.flip(0).cumsum(0).flip(0))


def test_batched_and_sequential_rotations_agree():
    model = build_tiny()
    model.eval()
    images = model.clip_backbone.preprocess([torch.rand(3, 64, 64) * 255 for _ in range(2)])
    with torch.no_grad():
        model.clip_backbone.batch_rotations = True
        a = model.clip_backbone(images)["dense"]
        model.clip_backbone.batch_rotations = False
        b = model.clip_backbone(images)["dense"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_clip_rotation_slices_are_rotated_back_features():
    # The 90-degree slice of x must equal the (rotated back) unrotated slice of rot90(x).
    model = build_tiny()
    model.eval()
    backbone = model.clip_backbone
    x = backbone.preprocess([torch.rand(3, 64, 64) * 255])
    with torch.no_grad():
        feats_x = backbone(x)["dense"]
        feats_rx = backbone(torch.rot90(x, 1, dims=(-2, -1)))["dense"]
    torch.testing.assert_close(feats_x[:, 1], torch.rot90(feats_rx[:, 0], -1, dims=(-2, -1)), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(feats_x[:, 1], feats_x[:, 0], atol=1e-3)  # a random CLIP is not equivariant


def test_non_multiple_of_90_rotation_is_a_config_error():
    with pytest.raises(ConfigError, match=r"MODEL.CLIP.ROTATIONS=\[0, 45\]"):
        build_tiny("MODEL.CLIP.ROTATIONS", "[0, 45]")


# --------------------------------------------------------------------------- q/v fine-tuning
def _last_visual_q(clip):
    return "visual.transformer.resblocks.%d.attn.parametrizations.in_proj_weight.original0" % (
        len(clip.visual.transformer.resblocks) - 1)


@pytest.mark.parametrize("dense", ["value", "tokens"])
def test_only_query_and_value_projection_weights_are_trainable(dense):
    model = build_tiny("MODEL.CLIP.DENSE_FEATURES", dense)
    clip = model.clip_backbone.clip
    trainable = {n for n, p in clip.named_parameters() if p.requires_grad}
    originals = list(iter_qkv_originals(clip))
    expected = {n for n, which, _ in originals if which in "qv" and "in_proj_weight" in n}
    if dense == "value":  # the last image block's W_q cannot influence CAT-Seg's dense features
        expected.discard(_last_visual_q(clip))
    assert originals and trainable == expected
    layers = len(clip.visual.transformer.resblocks) + len(clip.transformer.resblocks)
    assert len(trainable) == 2 * layers - (dense == "value")


@pytest.mark.parametrize("dense", ["value", "tokens"])
def test_one_adamw_step_changes_exactly_the_q_and_v_weights(dense):
    """Biases, W_k (and in value mode the last image block's W_q) stay bit-identical under AdamW
    with weight decay; every other W_q and W_v moves."""
    model = build_tiny("MODEL.CLIP.DENSE_FEATURES", dense)
    clip = model.clip_backbone.clip
    before = {n: p.detach().clone() for n, _, p in iter_qkv_originals(clip)}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.5)
    from conftest import random_batch

    model.train()
    sum(model(random_batch()).values()).backward()
    opt.step()
    frozen_q = _last_visual_q(clip) if dense == "value" else None
    for name, which, param in iter_qkv_originals(clip):
        should_move = "in_proj_weight" in name and which in "qv" and name != frozen_q
        moved = not torch.equal(param, before[name])
        assert moved == should_move, f"{name}: moved={moved}"
        if not should_move:
            assert param.grad is None


def test_split_keeps_the_packed_weight_and_outputs():
    attn = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 5, 8)
    before = attn(x, x, x, need_weights=False)[0]
    weight = attn.in_proj_weight.detach().clone()
    assert split_qkv_for_finetuning(attn) == 1
    torch.testing.assert_close(attn.in_proj_weight, weight)
    torch.testing.assert_close(attn(x, x, x, need_weights=False)[0], before)


def test_finetune_modes():
    frozen = build_tiny("MODEL.CLIP.FINETUNE", "none")
    assert not any(p.requires_grad for p in frozen.clip_backbone.parameters())
    full = build_tiny("MODEL.CLIP.FINETUNE", "full")
    assert all(p.requires_grad for p in full.clip_backbone.parameters())
    # The state-dict layout does not depend on the mode: a q/v-tuned model loads into a frozen one.
    assert set(frozen.state_dict()) == set(build_tiny().state_dict())
    with pytest.raises(ConfigError, match="MODEL.CLIP.FINETUNE='qkv'"):
        build_tiny("MODEL.CLIP.FINETUNE", "qkv")


# --------------------------------------------------------------------------- weights
def test_local_clip_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    source = build_clip_model("ViT-B-16", "", 32, TINY_CLIP)
    path = tmp_path / "tiny_clip.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded = build_clip_model("ViT-B-16", str(path), 32, TINY_CLIP)
    for (name, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_local_clip_checkpoint_resizes_position_embedding(tmp_path):
    source = build_clip_model("ViT-B-16", "", 32, TINY_CLIP)  # 4x4 grid
    path = tmp_path / "tiny_clip.pt"
    torch.save(source.state_dict(), path)
    loaded = build_clip_model("ViT-B-16", str(path), 64, TINY_CLIP)  # 8x8 grid
    assert loaded.visual.positional_embedding.shape == (1 + 64, 16)
    torch.testing.assert_close(loaded.visual.positional_embedding[0], source.visual.positional_embedding[0])


def test_mismatched_clip_checkpoint_is_a_one_line_error(tmp_path):
    other = dict(TINY_CLIP, vision_cfg=dict(TINY_CLIP["vision_cfg"], width=32))
    path = tmp_path / "wide_clip.pt"
    torch.save(build_clip_model("ViT-B-16", "", 32, other).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        build_clip_model("ViT-B-16", str(path), 32, TINY_CLIP)
    message = str(info.value)
    assert str(path) in message and "ViT-B-16" in message and "\n" not in message


def test_missing_clip_file_and_unknown_tag():
    with pytest.raises(CheckpointError, match="does not exist"):
        build_clip_model("ViT-B-16", "/nonexistent/clip.pt", 32, TINY_CLIP)
    with pytest.raises(ConfigError, match="neither an existing file nor an open_clip tag"):
        build_clip_model("ViT-B-16", "no_such_tag", 32, TINY_CLIP)
    with pytest.raises(ConfigError, match="not an open_clip architecture"):
        build_clip_model("ViT-Q-99", "", 32, {})


def test_text_embeddings_are_normalized_per_class_and_template():
    model = build_tiny()
    emb = model.clip_backbone.encode_text(["ship", "harbor", "bridge"])
    assert emb.shape == (3, 4, 16 * 2)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3, 4))
    # each (class, template) prompt gets its own embedding
    assert not torch.allclose(emb[0, 0], emb[0, 1]) and not torch.allclose(emb[0, 0], emb[1, 0])
