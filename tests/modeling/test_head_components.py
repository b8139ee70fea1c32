import math

import pytest
import torch
import torch.nn.functional as F

from aeroseg.modeling.head.back_projection import SemanticBackProjection
from aeroseg.modeling.head.class_refinement import ClassRefinementBlock, LinearClassAttention
from aeroseg.modeling.head.correlation import CorrelationEmbedding, correlation_volume
from aeroseg.modeling.head.decoder import AttentionAwareUpsampling, AttentionAwareUpsamplingDecoder
from aeroseg.modeling.losses import segmentation_bce_loss, semantic_back_projection_loss
from aeroseg.utils.errors import ConfigError
from aeroseg.modeling.head.spatial_refinement import (
    GuidedWindowAttention,
    SpatialRefinementBlock,
    relative_position_index,
    shifted_window_mask,
)


def test_correlation_volume_is_cosine_similarity_in_rotation_major_order():
    img = torch.randn(2, 3, 5, 4, 4)  # B, R, D, h, w
    txt = torch.randn(6, 2, 5)  # T, P, D
    corr = correlation_volume(img, txt)
    assert corr.shape == (2, 6, 3 * 2, 4, 4)
    b, t, r, p, y, x = 1, 4, 2, 1, 3, 0
    expected = F.cosine_similarity(img[b, r, :, y, x], txt[t, p], dim=0)
    torch.testing.assert_close(corr[b, t, r * 2 + p, y, x], expected)
    assert corr.abs().max() <= 1 + 1e-6


def test_correlation_embedding_is_shared_by_all_classes():
    embed = CorrelationEmbedding(4, 8, kernel_size=3)
    x = torch.randn(2, 5, 4, 6, 6)
    out = embed(x)
    assert out.shape == (2, 5, 8, 6, 6)
    torch.testing.assert_close(out[1, 3], embed.conv(x[1, 3][None])[0])


def test_relative_position_index_values():
    idx = relative_position_index(2)  # tokens (0,0),(0,1),(1,0),(1,1); table side 3
    # offset (dy, dx) -> (dy + 1) * 3 + (dx + 1)
    assert idx[0, 0] == 4 and idx[0, 3] == (0 - 1 + 1) * 3 + (0 - 1 + 1) and idx[3, 0] == 8
    assert idx.max() == 8 and idx.min() == 0


def test_shifted_window_mask_matches_brute_force():
    size, ws, shift = 8, 4, 2
    mask = shifted_window_mask(size, size, ws, shift)
    # Brute force: after the cyclic shift a window may contain tokens from opposite image borders.
    # Two tokens of a window may attend to each other iff they were close in the original image
    # (no wrap-around), i.e. less than a window apart in both directions.
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij"), -1)
    rolled = torch.roll(coords, shifts=(-shift, -shift), dims=(0, 1))
    windows = rolled.view(size // ws, ws, size // ws, ws, 2).permute(0, 2, 1, 3, 4).reshape(-1, ws * ws, 2)
    for w in range(windows.shape[0]):
        for i in range(ws * ws):
            for j in range(ws * ws):
                (yi, xi), (yj, xj) = windows[w, i].tolist(), windows[w, j].tolist()
                close = abs(yi - yj) < ws and abs(xi - xj) < ws
                assert (mask[w, i, j] == 0) == close, (w, i, j)
    assert torch.isinf(mask).any()


@pytest.mark.parametrize("relative_position_bias", [False, True])
def test_window_attention_matches_explicit_softmax(relative_position_bias):
    torch.manual_seed(0)
    attn = GuidedWindowAttention(dim=8, guidance_dim=3, num_heads=2, window_size=2,
                                 relative_position_bias=relative_position_bias)
    x, g = torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 3)
    out = attn(x, g)
    q, k = attn.qk(torch.cat([x, g], -1)).chunk(2, -1)
    v = attn.v(x)
    bias = torch.zeros(4, 4, 2)
    if relative_position_bias:
        bias = attn.relative_position_bias_table[relative_position_index(2).view(-1)].view(4, 4, 2)
    else:
        assert attn.relative_position_bias_table is None  # CAT-Seg has none: off by default
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        logits = q[0, 0, :, sl] @ k[0, 0, :, sl].T / math.sqrt(4) + bias[:, :, h]
        heads.append(logits.softmax(-1) @ v[0, 0, :, sl])
    torch.testing.assert_close(out[0, 0], attn.proj(torch.cat(heads, -1)), rtol=1e-5, atol=1e-6)


def test_spatial_refinement_treats_classes_independently_and_uses_guidance():
    block = SpatialRefinementBlock(dim=8, guidance_dim=4, num_heads=2, window_size=4)
    x, g = torch.randn(1, 3, 8, 8, 8), torch.randn(1, 4, 8, 8)
    out = block(x, g)
    x2 = x.clone()
    x2[0, 1] += 1.0
    out2 = block(x2, g)
    torch.testing.assert_close(out2[0, 0], out[0, 0])
    torch.testing.assert_close(out2[0, 2], out[0, 2])
    assert not torch.allclose(out2[0, 1], out[0, 1])
    assert not torch.allclose(block(x, g.roll(1, dims=1)), out)


def test_spatial_guidance_layernorm_removes_guidance_scale():
    """CAT-Seg normalises the guidance per pixel before q/k: a raw 1024-channel SAM map cannot
    dominate them, and a per-pixel affine change of the guidance changes nothing."""
    torch.manual_seed(0)
    x, g = torch.randn(1, 2, 8, 8, 8), torch.randn(1, 4, 8, 8)
    scale = 1.0 + 4.0 * torch.rand(1, 1, 8, 8)
    normed = SpatialRefinementBlock(dim=8, guidance_dim=4, num_heads=2, window_size=4)
    torch.testing.assert_close(normed(x, scale * g + 3.0), normed(x, g), rtol=1e-4, atol=1e-4)
    raw = SpatialRefinementBlock(dim=8, guidance_dim=4, num_heads=2, window_size=4, guidance_norm=False)
    assert not torch.allclose(raw(x, scale * g + 3.0), raw(x, g), atol=1e-3)


def test_linear_class_attention_matches_explicit_formula():
    attn = LinearClassAttention(dim=4, guidance_dim=2, num_heads=1)
    x, g = torch.randn(2, 3, 5, 4), torch.randn(2, 5, 2)
    q, k = attn.qk(torch.cat([x, g[:, None].expand(2, 3, 5, 2)], -1)).chunk(2, -1)
    q, k, v = F.elu(q) + 1, F.elu(k) + 1, attn.v(x)
    weights = q @ k.transpose(-1, -2)  # (B, P, T, T), positive
    explicit = (weights / weights.sum(-1, keepdim=True)) @ v
    torch.testing.assert_close(attn(x, g), explicit, rtol=1e-5, atol=1e-6)


def test_class_refinement_is_permutation_equivariant():
    block = ClassRefinementBlock(dim=8, guidance_dim=4, num_heads=2)
    x, t = torch.randn(2, 5, 8, 3, 3), torch.randn(1, 5, 4)
    perm = torch.tensor([4, 2, 0, 1, 3])
    torch.testing.assert_close(block(x[:, perm], t[:, perm]), block(x, t)[:, perm], rtol=1e-5, atol=1e-6)


def _padded_block(pad_len, materialize):
    torch.manual_seed(0)
    block = ClassRefinementBlock(dim=8, guidance_dim=4, num_heads=2, pooling_size=(2, 2), pad_len=pad_len,
                                 materialize_padding=materialize).double()
    if pad_len:
        with torch.no_grad():  # CAT-Seg starts them at zero; random values make the test sensitive
            block.padding_token.normal_()
            block.padding_guidance.normal_()
    return block


def test_closed_form_padding_equals_materialised_padding_with_gradients():
    x = torch.randn(2, 5, 8, 6, 5, dtype=torch.float64)
    text = torch.randn(1, 5, 4, dtype=torch.float64)
    cotangent = torch.randn(2, 5, 8, 6, 5, dtype=torch.float64)
    results = []
    for materialize in (False, True):
        block = _padded_block(pad_len=40, materialize=materialize)
        xi, ti = x.clone().requires_grad_(), text.clone().requires_grad_()
        out = block(xi, ti)
        (out * cotangent).sum().backward()
        grads = {n: p.grad for n, p in block.named_parameters()}
        results.append((out.detach(), xi.grad, ti.grad, grads))
    (out_c, gx_c, gt_c, gp_c), (out_m, gx_m, gt_m, gp_m) = results
    torch.testing.assert_close(out_c, out_m, rtol=0, atol=1e-5)
    torch.testing.assert_close(gx_c, gx_m, rtol=0, atol=1e-5)
    torch.testing.assert_close(gt_c, gt_m, rtol=0, atol=1e-5)
    assert gp_c.keys() == gp_m.keys()
    for name in gp_c:
        torch.testing.assert_close(gp_c[name], gp_m[name], rtol=0, atol=1e-5, msg=name)
    assert gp_c["padding_token"].abs().max() > 1e-3 and gp_c["padding_guidance"].abs().max() > 1e-3
    # float32 forward, the precision the model runs in
    block32 = _padded_block(pad_len=40, materialize=False).float()
    ref32 = _padded_block(pad_len=40, materialize=True).float()
    with torch.no_grad():
        torch.testing.assert_close(block32(x.float(), text.float()), ref32(x.float(), text.float()),
                                   rtol=0, atol=1e-5)


def test_padding_fixes_the_attention_length_and_long_vocabularies_are_not_padded():
    x, text = torch.randn(1, 5, 8, 4, 4, dtype=torch.float64), torch.randn(1, 5, 4, dtype=torch.float64)
    unpadded = _padded_block(pad_len=0, materialize=False)
    padded = _padded_block(pad_len=40, materialize=False)
    padded.load_state_dict({**unpadded.state_dict(), "padding_token": padded.padding_token,
                            "padding_guidance": padded.padding_guidance})
    assert not torch.allclose(padded(x, text), unpadded(x, text))
    for pad_len in (5, 3):  # T == pad_len and T > pad_len: nothing to pad
        short = _padded_block(pad_len=pad_len, materialize=False)
        short.load_state_dict({**unpadded.state_dict(), "padding_token": short.padding_token,
                               "padding_guidance": short.padding_guidance})
        torch.testing.assert_close(short(x, text), unpadded(x, text))


def test_class_refinement_pools_and_upsamples_with_aligned_corners():
    """The attention runs on the 2x2-average-pooled map; its output is upsampled bilinearly with
    align_corners=True and added to the input (CAT-Seg)."""
    block = ClassRefinementBlock(dim=4, guidance_dim=2, num_heads=1, pooling_size=(2, 2), pad_len=0)
    with torch.no_grad():  # zero attention and MLP: the block adds up(pool(x)) to x
        block.attn.v.weight.zero_()
        block.attn.v.bias.zero_()
        block.mlp[2].weight.zero_()
        block.mlp[2].bias.zero_()
    x, t = torch.randn(1, 2, 4, 6, 6), torch.randn(1, 2, 2)
    pooled = F.avg_pool2d(x.flatten(0, 1), 2)
    expected = x + F.interpolate(pooled, size=(6, 6), mode="bilinear", align_corners=True).view_as(x)
    torch.testing.assert_close(block(x, t), expected)


def test_class_refinement_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="CLASS_PAD_LEN"):
        ClassRefinementBlock(dim=4, guidance_dim=2, num_heads=1, pad_len=-1)
    with pytest.raises(ConfigError, match="CLASS_POOLING_SIZE"):
        ClassRefinementBlock(dim=4, guidance_dim=2, num_heads=1, pooling_size=(0, 2))


def test_decoder_upsamples_x4_and_is_class_permutation_equivariant():
    dec = AttentionAwareUpsamplingDecoder(8, [6, 4], [5, 7], [3, 2])
    x = torch.randn(2, 4, 8, 6, 6)
    guid = [torch.randn(2, 5, 12, 12), torch.randn(2, 7, 3, 3)]  # any size: resized per stage
    out = dec(x, guid)
    assert out.shape == (2, 4, 24, 24)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(dec(x[:, perm], guid), out[:, perm], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(dec(x, [guid[0] * 2, guid[1]]), out)


def test_decoder_attention_is_used_as_is_by_default_and_squashed_on_request():
    """Eq. 10 with the attention maps of Eqs. 8-9 as weights: g' = A_ch*g + A_sp*g + g."""
    torch.manual_seed(0)
    stage = AttentionAwareUpsampling(8, 8, 3, 4)
    with torch.no_grad():  # constant attention maps: A_ch = 2 (all channels), A_sp = -0.5
        stage.channel_attention.weight.zero_()
        stage.channel_attention.bias.fill_(2.0)
        stage.spatial_attention.weight.zero_()
        stage.spatial_attention.bias.fill_(-0.5)
    x, g = torch.randn(2 * 3, 8, 4, 4), torch.rand(2, 4, 8, 8)
    out = stage.fuse(x, g)
    plain = AttentionAwareUpsampling(8, 8, 3, 4)
    plain.load_state_dict(stage.state_dict())
    with torch.no_grad():  # A = 0 turns Eq. 10 into g' = g
        plain.channel_attention.bias.zero_()
        plain.spatial_attention.bias.zero_()
    torch.testing.assert_close(out, plain.fuse(x, 2.5 * g), rtol=1e-5, atol=1e-5)  # (2 - 0.5 + 1) g
    squashed = AttentionAwareUpsampling(8, 8, 3, 4, attention_activation="sigmoid")
    squashed.load_state_dict(stage.state_dict())
    factor = torch.sigmoid(torch.tensor(2.0)) + torch.sigmoid(torch.tensor(-0.5)) + 1
    torch.testing.assert_close(squashed.fuse(x, g), plain.fuse(x, factor * g), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="DECODER_ATTENTION_ACTIVATION"):
        AttentionAwareUpsampling(8, 8, 3, 4, attention_activation="softmax")
    with pytest.raises(ConfigError, match="DECODER_GUIDANCE_DIMS"):
        AttentionAwareUpsampling(8, 8, 3, 8)


def test_back_projection_shapes_and_class_count_check():
    bp = SemanticBackProjection(num_classes=3, dim=4, hidden_dim=8, out_dim=5)
    assert bp(torch.randn(2, 3, 4, 6, 6)).shape == (2, 5, 6, 6)
    with pytest.raises(ValueError, match="built for 3 training classes but the vocabulary has 4"):
        bp(torch.randn(2, 4, 4, 6, 6))


def test_bce_loss_hand_computed():
    # zero logits: every term is log(2) whatever the label
    logits = torch.zeros(1, 3, 2, 2)
    label = torch.tensor([[0, 1], [2, 255]])
    assert segmentation_bce_loss(logits, [label], ignored="exclude").item() == pytest.approx(math.log(2))
    # one valid pixel of class 1 with logits (a, b, c): mean of softplus(a), softplus(-b), softplus(c)
    logits = torch.tensor([2.0, -1.0, 0.5]).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()
    label = torch.tensor([[1, 255], [255, 255]])
    expected = (F.softplus(torch.tensor(2.0)) + F.softplus(torch.tensor(1.0)) + F.softplus(torch.tensor(0.5))) / 3
    assert segmentation_bce_loss(logits, [label], ignored="exclude").item() == pytest.approx(expected.item(), rel=1e-6)
    # ignore pixels do not count: changing their logits changes nothing
    logits2 = logits.clone()
    logits2[0, :, 1, 1] = 50.0
    assert segmentation_bce_loss(logits2, [label], ignored="exclude").item() == pytest.approx(expected.item(), rel=1e-6)


def test_bce_loss_upsamples_logits_to_label_size():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    label = torch.randint(0, 2, (8, 8))
    loss = segmentation_bce_loss(logits, [label])
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    expected = F.binary_cross_entropy_with_logits(up[0].permute(1, 2, 0), F.one_hot(label, 2).float())
    torch.testing.assert_close(loss, expected)


def test_semantic_loss_is_mse_with_stop_gradient():
    pred = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = semantic_back_projection_loss(pred, target)
    torch.testing.assert_close(loss, ((pred - target) ** 2).mean())
    loss.backward()
    assert target.grad is None and pred.grad is not None
