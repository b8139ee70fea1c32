"""The L_sem reconstruction targets (MODEL.AEROSEG.BACK_PROJECTION_TARGET) checked by content, and
BCE_WEIGHT / SEM_WEIGHT scaling the two losses.

Each expected target is recomputed here from the raw input image, independently of the model's
forward: RGB = the normalized pixels of each CLIP patch of the unrotated image (channel
c * p * p + dy * p + dx of token (i, j) is pixel (i p + dy, j p + dx) of colour c); CLIP = the
dense CLIP features of the unrotated view (not another rotation); SAM = the output of the last
tapped SAM block (F3), bilinearly resized to the token grid.
"""
import pytest
import torch
import torch.nn.functional as F

import aeroseg.modeling.meta_arch as meta_arch
from aeroseg.modeling.losses import semantic_back_projection_loss
from conftest import build_tiny, random_batch, tiny_cfg

P = 8  # tiny CLIP patch size; 64 / 8 = 8 x 8 tokens


def _captured_loss_inputs(model, batch, monkeypatch):
    captured = {}

    def recording(reconstruction, target):
        captured["reconstruction"], captured["target"] = reconstruction.detach(), target.detach()
        return semantic_back_projection_loss(reconstruction, target)

    monkeypatch.setattr(meta_arch, "semantic_back_projection_loss", recording)
    model.train()
    losses = model(batch)
    return losses, captured["reconstruction"], captured["target"]


def _normalized(batch, mean, std):
    x = torch.stack([item["image"].float() for item in batch])  # 64 x 64 already: no resize
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_rgb_target_is_the_pixels_of_each_patch(monkeypatch):
    model = build_tiny("MODEL.AEROSEG.BACK_PROJECTION_TARGET", "RGB", "MODEL.AEROSEG.SEM_WEIGHT", "1.0")
    batch = random_batch(2)
    losses, reconstruction, target = _captured_loss_inputs(model, batch, monkeypatch)
    cfg = tiny_cfg()
    pixels = _normalized(batch, cfg.MODEL.CLIP.PIXEL_MEAN, cfg.MODEL.CLIP.PIXEL_STD)
    assert target.shape == (2, 3 * P * P, 8, 8)
    # spot checks written out: token (i, j), colour c, offset (dy, dx)
    for b, c, i, j, dy, dx in [(0, 0, 0, 0, 0, 0), (1, 2, 3, 5, 7, 1), (0, 1, 7, 2, 4, 6)]:
        assert target[b, c * P * P + dy * P + dx, i, j] == pytest.approx(pixels[b, c, i * P + dy, j * P + dx].item(),
                                                                         abs=1e-5)
    expected = pixels.view(2, 3, 8, P, 8, P).permute(0, 1, 3, 5, 2, 4).reshape(2, 3 * P * P, 8, 8)
    torch.testing.assert_close(target, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses["loss_sem"].detach(), F.mse_loss(reconstruction, expected), rtol=1e-5, atol=1e-7)


def test_clip_target_is_the_unrotated_dense_features(monkeypatch):
    model = build_tiny("MODEL.AEROSEG.BACK_PROJECTION_TARGET", "CLIP", "MODEL.CLIP.ROTATIONS", "[0, 90, 180, 270]")
    batch = random_batch(2)
    losses, reconstruction, target = _captured_loss_inputs(model, batch, monkeypatch)
    clip = model.clip_backbone
    with torch.no_grad():
        images = clip.preprocess([item["image"] for item in batch])
        unrotated = clip._dense_tokens(images)[0]  # (B, D, 8, 8) of the image as it is
        # features of the 90-degree view, rotated back: close to, but not, the unrotated ones
        rotated_back = torch.rot90(clip._dense_tokens(torch.rot90(images, 1, dims=(-2, -1)))[0], -1, dims=(-2, -1))
    assert target.shape == unrotated.shape == (2, 32, 8, 8)
    torch.testing.assert_close(target, unrotated, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(target, rotated_back, atol=1e-3)
    torch.testing.assert_close(losses["loss_sem"].detach(), F.mse_loss(reconstruction, unrotated), rtol=1e-4, atol=1e-7)


def test_sam_target_is_the_last_tap_resized_to_the_token_grid(monkeypatch):
    model = build_tiny("MODEL.AEROSEG.BACK_PROJECTION_TARGET", "SAM", "MODEL.SAM.TAP_LAYERS", "[1, 2, 3]",
                       "MODEL.SAM.USE_NECK", "False")
    batch = random_batch(2)
    losses, reconstruction, target = _captured_loss_inputs(model, batch, monkeypatch)
    cfg = tiny_cfg()
    encoder = model.guidance_encoder.encoder
    with torch.no_grad():
        sam_input = _normalized(batch, cfg.MODEL.SAM.PIXEL_MEAN, cfg.MODEL.SAM.PIXEL_STD)
        x = encoder.patch_embed(sam_input) + encoder.pos_embed
        outputs = []
        for block in encoder.blocks:
            x = block(x)
            outputs.append(x.permute(0, 3, 1, 2))
    f1, f3 = outputs[0], outputs[2]
    assert f3.shape == (2, 32, 4, 4)  # SAM's 64 / 16 grid, upsampled to CLIP's 8 x 8 tokens
    expected = F.interpolate(f3, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(target, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(target, F.interpolate(f1, size=(8, 8), mode="bilinear", align_corners=False), atol=1e-3)
    torch.testing.assert_close(losses["loss_sem"].detach(), F.mse_loss(reconstruction, expected), rtol=1e-4, atol=1e-7)


def test_sem_loss_is_a_mean_squared_error_with_a_stopped_target_gradient():
    reconstruction = torch.tensor([[1.0, 2.0], [3.0, 5.0]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = semantic_back_projection_loss(reconstruction, target)
    assert loss.item() == pytest.approx((0 + 4 + 9 + 16) / 4)
    loss.backward()
    assert target.grad is None  # sg(F3): the target encoder is not pulled towards the reconstruction
    torch.testing.assert_close(reconstruction.grad, torch.tensor([[0.0, 1.0], [1.5, 2.0]]))


def test_loss_weights_scale_each_loss():
    batch = random_batch(2)
    results = []
    for bce, sem in (("1.0", "1.0"), ("0.5", "3.0")):
        model = build_tiny("MODEL.AEROSEG.BCE_WEIGHT", bce, "MODEL.AEROSEG.SEM_WEIGHT", sem,
                           "MODEL.AEROSEG.BACK_PROJECTION_TARGET", "SAM", seed=0)
        model.train()
        with torch.no_grad():
            results.append(model(batch))
    plain, weighted = results
    assert plain["loss_bce"] > 0 and plain["loss_sem"] > 0
    assert weighted["loss_bce"].item() == pytest.approx(0.5 * plain["loss_bce"].item(), rel=1e-5)
    assert weighted["loss_sem"].item() == pytest.approx(3.0 * plain["loss_sem"].item(), rel=1e-5)
