"""The correlation head as one module: AerOSeg(clip_backbone, guidance_encoder, head), and the
checkpoints written before the head became a module."""
import hashlib
import json

import pytest
import torch

from aeroseg.checkpoint import AerOSegCheckpointer
from aeroseg.modeling import AerOSeg
from aeroseg.modeling.backbone import build_clip_backbone
from aeroseg.modeling.guidance import build_guidance_encoder
from aeroseg.modeling.head import CorrelationHead
from aeroseg.modeling.meta_arch import TRAINING_ONLY_PREFIXES
from aeroseg.utils.errors import CheckpointError, ConfigError
from conftest import FIXTURES, build_tiny, random_batch, tiny_cfg

# The state dict of build_tiny(seed=0) as the code wrote it before the head became a module:
# (key, shape, dtype, SHA-256 prefix of the tensor bytes) in state-dict order.
LEGACY = json.loads((FIXTURES / "legacy_tiny_state.json").read_text())["keys"]


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()[:16]


def _legacy_state(model: torch.nn.Module) -> dict:
    """The model's weights under the legacy key names, in the legacy order."""
    state = model.state_dict()
    return {old: state[new] for (old, *_), new in zip(LEGACY, AerOSeg.upgrade_state_dict(
        {old: None for old, *_ in LEGACY}))}


def test_the_refactor_builds_the_legacy_model_weight_for_weight():
    """Same seed, same weights, same order: the legacy keys, renamed, are the new state dict
    key for key (so optimizer states, which follow the parameter order, still line up), with
    identical shapes and bytes (the head draws its initialisation in the old order)."""
    state = build_tiny(seed=0).state_dict()
    renamed = list(AerOSeg.upgrade_state_dict({old: None for old, *_ in LEGACY}))
    assert renamed == list(state)
    moved = [old for old, *_ in LEGACY if not old.startswith(("clip_backbone.", "guidance_encoder."))]
    assert len(moved) > 50 and all(AerOSeg.upgrade_state_dict({k: 0}) == {"head." + k: 0} for k in moved)
    for (old, shape, dtype, digest), new in zip(LEGACY, renamed):
        tensor = state[new]
        assert list(tensor.shape) == shape and str(tensor.dtype) == f"torch.{dtype}", new
        assert _digest(tensor) == digest, f"{new} (was {old}) is initialised differently"


def test_a_legacy_checkpoint_loads_through_the_checkpointer_and_load_state_dict(tmp_path):
    source = build_tiny(seed=1)
    legacy = _legacy_state(source)
    assert "correlation_embed.conv.weight" in legacy and "head.correlation_embed.conv.weight" not in legacy
    torch.save({"model": legacy, "iteration": 7}, tmp_path / "legacy.pth")

    for load in (
        lambda m: AerOSegCheckpointer(m).load(str(tmp_path / "legacy.pth"), checkpointables=[]),
        lambda m: m.load_state_dict(dict(legacy), strict=True),  # the pre-hook renames
    ):
        target = build_tiny(seed=2)
        load(target)
        for name, tensor in source.state_dict().items():
            assert torch.equal(target.state_dict()[name], tensor), name
    batch = random_batch(1)
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(batch)[0]["sem_seg"], source.eval()(batch)[0]["sem_seg"],
                                   rtol=0, atol=0)

    # A wrapped model's legacy keys ("module.correlation_embed...") are renamed after unwrapping.
    torch.save({"model": {f"module.{k}": v for k, v in legacy.items()}}, tmp_path / "ddp.pth")
    target = build_tiny(seed=2)
    AerOSegCheckpointer(target).load(str(tmp_path / "ddp.pth"))
    assert torch.equal(target.head.decoder.stages[0].conv1.weight, source.head.decoder.stages[0].conv1.weight)


def test_the_legacy_back_projection_is_training_only_too(tmp_path):
    """Evaluating a legacy 6-class checkpoint with a 4-class config: its back_projection.* (now
    head.back_projection.*) may differ, as for new checkpoints; everything else must match."""
    torch.save({"model": _legacy_state(build_tiny(seed=1))}, tmp_path / "six.pth")
    four = build_tiny("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "4")
    with pytest.raises(CheckpointError, match=r"head\.back_projection"):
        AerOSegCheckpointer(four).load(str(tmp_path / "six.pth"))
    AerOSegCheckpointer(four, ignore_prefixes=TRAINING_ONLY_PREFIXES).load(str(tmp_path / "six.pth"))
    assert four.head.back_projection.num_classes == 4


def test_aeroseg_takes_a_backbone_a_guidance_encoder_and_a_head():
    """Built from parts (Mask2Former's MaskFormer(backbone, sem_seg_head, ...)), with the head
    from plain arguments, the model equals the config-built one and its forward is the head's."""
    cfg = tiny_cfg()
    torch.manual_seed(4)
    reference = AerOSeg(cfg)

    torch.manual_seed(4)
    clip_backbone = build_clip_backbone(cfg, ())
    guidance = build_guidance_encoder(cfg, clip_backbone)
    kwargs = CorrelationHead.from_config(cfg, clip_backbone, guidance, num_train_classes=6)
    assert kwargs["num_correlation_maps"] == clip_backbone.num_rotations * clip_backbone.num_templates
    assert kwargs["guidance_channels"] == list(guidance.channels)
    head = CorrelationHead(**kwargs)
    model = AerOSeg(clip_backbone=clip_backbone, guidance_encoder=guidance, head=head,
                    vocabulary=reference.vocabulary, back_projection_target="SAM")
    assert list(model.state_dict()) == list(reference.state_dict())
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name

    model.eval()
    batch = random_batch(1)
    with torch.no_grad():
        images = [batch[0]["image"]]
        features = model.clip_backbone(model.clip_backbone.preprocess(images))
        logits, refined = model.head(features["dense"], model.text_embeddings(),
                                     model.guidance_encoder(images, features)["taps"])
        h, w = features["dense"].shape[-2:]
        assert logits.shape == (1, 6, 4 * h, 4 * w) and refined.shape == (1, 6, cfg.MODEL.AEROSEG.FEATURE_DIM, h, w)
        upsampled = torch.nn.functional.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(batch)[0]["sem_seg"], upsampled[0].sigmoid(), rtol=0, atol=0)


def test_head_and_model_agree_on_the_back_projection():
    cfg = tiny_cfg("MODEL.AEROSEG.BACK_PROJECTION_TARGET", "NONE")
    parts = AerOSeg.from_config(cfg)
    assert parts["head"].back_projection is None
    with pytest.raises(ConfigError, match="built without a back-projection"):
        AerOSeg(**{**parts, "back_projection_target": "SAM"})
    with pytest.raises(ConfigError, match=r"BACK_PROJECTION_TARGET='PIXELS': expected one of"):
        build_tiny("MODEL.AEROSEG.BACK_PROJECTION_TARGET", "PIXELS")
