import copy

import pytest
import torch
import torch.nn.functional as F

from aeroseg.modeling.guidance import SAMGuidanceEncoder, build_sam_image_encoder, load_sam_checkpoint
from aeroseg.utils.errors import CheckpointError, ConfigError
from conftest import build_tiny

TINY = dict(embed_dim=16, depth=4, num_heads=2, window_size=2, global_attn_indexes=(1, 3))


def _encoder(size, seed=0, **over):
    torch.manual_seed(seed)
    enc = build_sam_image_encoder("vit_b", size, dict(TINY, **over))
    with torch.no_grad():  # SAM zero-inits these; give them values so loading is observable
        enc.pos_embed.normal_()
        for blk in enc.blocks:
            if blk.attn.use_rel_pos:
                blk.attn.rel_pos_h.normal_()
                blk.attn.rel_pos_w.normal_()
    return enc


def test_taps_are_the_outputs_of_the_chosen_blocks():
    enc = _encoder(64)
    guidance = SAMGuidanceEncoder(enc, tap_layers=(3, 1), frozen=True)
    images = [torch.rand(3, 40, 40) * 255]
    out = guidance(images)
    x = enc.patch_embed(guidance.preprocess(images)) + enc.pos_embed
    x1 = enc.blocks[0](x)
    x3 = enc.blocks[2](enc.blocks[1](x1))
    torch.testing.assert_close(out["taps"][0], x3.permute(0, 3, 1, 2))  # order of tap_layers kept
    torch.testing.assert_close(out["taps"][1], x1.permute(0, 3, 1, 2))
    assert out["target"] is out["taps"][-1] and out["taps"][0].shape == (1, 16, 4, 4)


def test_frozen_encoder_stays_in_eval_mode_without_gradients():
    guidance = SAMGuidanceEncoder(_encoder(64), tap_layers=(1, 2), frozen=True)
    guidance.train()
    assert not guidance.encoder.training
    assert not any(p.requires_grad for p in guidance.parameters())
    assert not guidance([torch.rand(3, 64, 64)])["taps"][0].requires_grad


def test_full_sam_checkpoint_loads_and_positions_are_resized(tmp_path):
    source = _encoder(128, seed=1)  # "released" at 128 px: 8x8 tokens
    state = {f"image_encoder.{k}": v for k, v in source.state_dict().items()}
    state["mask_decoder.dummy.weight"] = torch.zeros(2)  # a full SAM checkpoint has more than the encoder
    path = tmp_path / "sam_tiny.pth"
    torch.save(state, path)
    target = _encoder(64, seed=2)  # used at 64 px: 4x4 tokens
    load_sam_checkpoint(target, str(path), "vit_b")
    expected_pos = F.interpolate(source.pos_embed.permute(0, 3, 1, 2), size=(4, 4), mode="bicubic",
                                 align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(target.pos_embed, expected_pos)
    glob = target.blocks[1].attn  # a global-attention block: rel-pos table resized 15 -> 7
    assert glob.rel_pos_h.shape == (7, 8)
    expected_rel = F.interpolate(source.blocks[1].attn.rel_pos_h.t()[None], size=7, mode="linear",
                                 align_corners=False)[0].t()
    torch.testing.assert_close(glob.rel_pos_h, expected_rel)
    torch.testing.assert_close(target.blocks[0].mlp.lin1.weight, source.blocks[0].mlp.lin1.weight)


def test_full_sam_checkpoint_through_the_config(tmp_path):
    # A released SAM file holds the whole model, neck included; the neck is unused here.
    torch.manual_seed(7)
    source = build_sam_image_encoder("vit_b", 64, dict(embed_dim=32, depth=3, num_heads=2, window_size=2,
                                                       global_attn_indexes=(2,)))
    assert any(k.startswith("neck.") for k in source.state_dict())
    path = tmp_path / "sam_full.pth"
    torch.save({f"image_encoder.{k}": v for k, v in source.state_dict().items()}, path)
    model = build_tiny("MODEL.SAM.CHECKPOINT", str(path))
    torch.testing.assert_close(model.guidance_encoder.encoder.blocks[0].mlp.lin1.weight,
                               source.blocks[0].mlp.lin1.weight)


def test_wrong_sam_checkpoints_give_one_line_errors(tmp_path):
    target = _encoder(64)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_sam_checkpoint(target, str(tmp_path / "missing.pth"), "vit_b")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_sam_checkpoint(target, str(garbage), "vit_b")
    wide = tmp_path / "wide.pth"
    torch.save(_encoder(64, embed_dim=32).state_dict(), wide)
    with pytest.raises(CheckpointError) as info:
        load_sam_checkpoint(target, str(wide), "vit_b")
    msg = str(info.value)
    assert str(wide) in msg and "shape mismatches" in msg and "\n" not in msg
    deep = tmp_path / "deep.pth"
    torch.save(_encoder(64, depth=6, global_attn_indexes=(1, 3, 5)).state_dict(), deep)
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_sam_checkpoint(target, str(deep), "vit_b")


def test_config_errors():
    with pytest.raises(ConfigError, match="MODEL.SAM.VARIANT='vit_x'"):
        build_tiny("MODEL.SAM.VARIANT", "vit_x")
    with pytest.raises(ConfigError, match=r"MODEL.SAM.TAP_LAYERS=\[1, 9\]"):
        build_tiny("MODEL.SAM.TAP_LAYERS", "[1, 9]")


# ---------------------------------------------------------------------------- fused attention
def test_sdpa_attention_equals_segment_anything_on_window_and_global_blocks():
    from aeroseg.modeling.guidance import set_attention_implementation

    # 5x5 tokens: the window blocks (window 2) pad to 6x6; blocks 1 and 3 attend globally.
    reference = _encoder(80, seed=3)
    fused = set_attention_implementation(copy.deepcopy(reference), "sdpa")
    assert [type(b.attn).__name__ for b in fused.blocks] == ["SDPARelPosAttention"] * 4
    assert type(reference.blocks[0].attn).__name__ == "Attention"
    x = torch.randn(2, 3, 80, 80)
    tokens = reference.patch_embed(x) + reference.pos_embed
    for ref_block, fused_block in zip(reference.blocks, fused.blocks):  # window and global blocks
        expected = ref_block(tokens)
        torch.testing.assert_close(fused_block(tokens), expected, rtol=0, atol=1e-5)
        tokens = expected
    torch.testing.assert_close(fused(x), reference(x), rtol=0, atol=1e-5)


# the mask in one piece; one image at a time (2 x 15 x 15 float32 values per image); 2 query rows at a time
@pytest.mark.parametrize("mask_bytes", [64 * 2 ** 20, 1800, 300])
def test_sdpa_attention_on_non_square_grids_and_its_gradients(mask_bytes, monkeypatch):
    from aeroseg.modeling.guidance import SDPARelPosAttention

    sdpa, masks = F.scaled_dot_product_attention, []

    def recording_sdpa(*args, attn_mask=None, **kwargs):
        masks.append(attn_mask.numel() * attn_mask.element_size())
        return sdpa(*args, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording_sdpa)
    from segment_anything.modeling.image_encoder import Attention

    torch.manual_seed(0)
    reference = Attention(16, num_heads=2, use_rel_pos=True, input_size=(3, 5))
    with torch.no_grad():
        reference.rel_pos_h.normal_()
        reference.rel_pos_w.normal_()
    fused = copy.deepcopy(reference)
    fused.__class__ = SDPARelPosAttention
    fused.mask_bytes = mask_bytes
    x = torch.randn(2, 3, 5, 16, requires_grad=True)  # H != W catches swapped axes
    out_ref, out_fused = reference(x), fused(x)
    torch.testing.assert_close(out_fused, out_ref, rtol=0, atol=1e-5)
    assert max(masks) <= mask_bytes and sum(masks) == 2 * 2 * 15 * 15 * 4  # pieces of the whole mask
    grads_ref = torch.autograd.grad(out_ref.square().sum(), [x, reference.rel_pos_h, reference.rel_pos_w])
    grads_fused = torch.autograd.grad(out_fused.square().sum(), [x, fused.rel_pos_h, fused.rel_pos_w])
    for g_fused, g_ref in zip(grads_fused, grads_ref):
        torch.testing.assert_close(g_fused, g_ref, rtol=1e-4, atol=1e-5)


def test_attention_implementation_is_a_config_key():
    ref = build_tiny("MODEL.SAM.ATTENTION", "reference")
    fused = build_tiny("MODEL.SAM.ATTENTION", "sdpa")
    assert {type(b.attn).__name__ for b in ref.guidance_encoder.encoder.blocks} == {"Attention"}
    assert {type(b.attn).__name__ for b in fused.guidance_encoder.encoder.blocks} == {"SDPARelPosAttention"}
    assert ref.state_dict().keys() == fused.state_dict().keys()
    with pytest.raises(ConfigError, match="MODEL.SAM.ATTENTION='flash'"):
        build_tiny("MODEL.SAM.ATTENTION", "flash")


# ---------------------------------------------------------------------------- frozen = no activations
def _saved_tensor_count(fn):
    """Number of tensors autograd saves for backward while ``fn`` runs."""
    saved = []

    def pack(t):
        saved.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return len(saved), out


def test_frozen_encoder_keeps_no_activations_for_backward_in_training():
    guidance = SAMGuidanceEncoder(_encoder(64), tap_layers=(1, 2), frozen=True).train()
    images = [torch.rand(3, 64, 64) * 255]
    with torch.enable_grad():
        count, out = _saved_tensor_count(lambda: guidance(images))
    assert count == 0
    assert all(t.grad_fn is None and not t.requires_grad for t in out["taps"])

    trainable = SAMGuidanceEncoder(_encoder(64), tap_layers=(1, 2), frozen=False).train()
    with torch.enable_grad():
        count, out = _saved_tensor_count(lambda: trainable(images))
    assert count > 0 and out["taps"][-1].requires_grad


def test_frozen_encoder_in_a_training_step_and_gradients_when_fine_tuned():
    from conftest import random_batch

    batch = random_batch(2)
    model = build_tiny().train()
    sam_params = list(model.guidance_encoder.parameters())
    counts = []
    hook = model.guidance_encoder.register_forward_hook(
        lambda m, i, o: counts.append(sum(t.requires_grad for t in o["taps"])))
    sum(model(batch).values()).backward()
    hook.remove()
    assert counts == [0] and all(p.grad is None for p in sam_params)

    model = build_tiny("MODEL.SAM.FROZEN", "False").train()
    sum(model(batch).values()).backward()
    grads = [p.grad for p in model.guidance_encoder.encoder.blocks[0].parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
