"""Guidance encoders: a registry of modules that provide the features guiding the head.

Every guidance module's ``forward(images, clip_features)`` returns ``{"taps": [...], "target"}``:
``taps[-1]`` guides spatial refinement, ``taps[i]`` for i in ``MODEL.AEROSEG.DECODER_GUIDANCE_TAPS``
guide the decoder stages, ``target`` (or None) is the encoder's L_sem reconstruction target.
"""
from fvcore.common.registry import Registry

from .clip_guidance import CLIPGuidance
from .sam2_encoder import SAM2_VARIANTS, SAM2GuidanceEncoder, build_hiera_trunk, load_sam2_checkpoint
from .sam_encoder import (
    SAM_VARIANTS,
    SAMGuidanceEncoder,
    SDPARelPosAttention,
    build_sam_image_encoder,
    load_sam_checkpoint,
    set_attention_implementation,
)

GUIDANCE_ENCODER_REGISTRY = Registry("GUIDANCE_ENCODER")
GUIDANCE_ENCODER_REGISTRY.__doc__ = "Guidance encoders, selected by MODEL.GUIDANCE.ENCODER."


# The registry keys are the function names, i.e. the values of MODEL.GUIDANCE.ENCODER.
@GUIDANCE_ENCODER_REGISTRY.register()
def SAM(cfg, clip_backbone):  # noqa: N802
    """SAM image encoder (paper)."""
    return SAMGuidanceEncoder.build_from_config(cfg)


@GUIDANCE_ENCODER_REGISTRY.register()
def SAM2(cfg, clip_backbone):  # noqa: N802
    """SAM 2 / SAM 2.1 Hiera trunk (Table 6); needs the optional sam2 package."""
    return SAM2GuidanceEncoder.build_from_config(cfg)


@GUIDANCE_ENCODER_REGISTRY.register()
def CLIP(cfg, clip_backbone):  # noqa: N802
    """CLIP's own intermediate features (Baseline of Table 3)."""
    return CLIPGuidance(
        layer_channels=[clip_backbone.width] * len(clip_backbone.guidance_layers),
        dense_channels=clip_backbone.embed_dim,
    )


def build_guidance_encoder(cfg, clip_backbone):
    """The guidance module named by ``cfg.MODEL.GUIDANCE.ENCODER``."""
    from ...utils.errors import ConfigError

    name = cfg.MODEL.GUIDANCE.ENCODER
    if name not in GUIDANCE_ENCODER_REGISTRY:
        raise ConfigError(
            f"MODEL.GUIDANCE.ENCODER={name!r}: expected one of {sorted(k for k, _ in GUIDANCE_ENCODER_REGISTRY)}"
        )
    return GUIDANCE_ENCODER_REGISTRY.get(name)(cfg, clip_backbone)


__all__ = [
    "CLIPGuidance",
    "GUIDANCE_ENCODER_REGISTRY",
    "SAM2GuidanceEncoder",
    "SAM2_VARIANTS",
    "SAM_VARIANTS",
    "SAMGuidanceEncoder",
    "SDPARelPosAttention",
    "build_guidance_encoder",
    "build_hiera_trunk",
    "build_sam_image_encoder",
    "load_sam2_checkpoint",
    "load_sam_checkpoint",
    "set_attention_implementation",
]
