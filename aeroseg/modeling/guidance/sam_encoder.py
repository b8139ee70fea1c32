"""SAM image encoder as the guidance encoder (paper Sec. 3.1, "Guidance Encoder").

Builds segment-anything's ``ImageEncoderViT`` and returns the outputs of selected blocks
(paper: after blocks 8, 16 and 24 of SAM ViT-L, called F1, F2, F3).
"""
import logging
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import Attention as SAMAttention
from segment_anything.modeling.image_encoder import get_rel_pos
from torch import nn

from ...checkpoint.state_dict_io import describe_mismatch, read_state_dict
from ...utils.errors import CheckpointError, ConfigError
from .base import ImageGuidanceEncoder, run_blocks_with_taps, validate_taps

__all__ = ["ATTENTION_IMPLEMENTATIONS", "SAM_VARIANTS", "SAMGuidanceEncoder", "SDPARelPosAttention",
           "build_sam_image_encoder", "load_sam_checkpoint", "set_attention_implementation"]

logger = logging.getLogger(__name__)

# Hyper-parameters of the released SAM image encoders (segment_anything/build_sam.py).
SAM_VARIANTS: Dict[str, dict] = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}
_COMMON = dict(patch_size=16, mlp_ratio=4.0, out_chans=256, qkv_bias=True, use_rel_pos=True,
               window_size=14)


class SDPARelPosAttention(SAMAttention):
    """segment-anything's ``Attention`` computed by ``F.scaled_dot_product_attention``.

    Same parameters and same result as the original (windowed or global multi-head attention
    with decomposed relative-position bias, MViTv2): the bias ``q . R_h + q . R_w`` is built as a
    (B, heads, N, N) additive mask, N = H * W tokens, so the fused kernel computes the softmax
    without materialising the scaled, biased and normalised attention maps separately (the
    original keeps three N x N tensors per head alive). Swapped onto the blocks by
    :func:`set_attention_implementation` (the state dict is unchanged).

    The mask is built and used in pieces of at most :attr:`mask_bytes` (images first, then rows of
    queries; the softmax is per query, so the pieces give the same result). Whole, it would be
    B x heads x N^2 values: 8.6 GB for a batch of 8 in a global block of SAM-L at 1024 px, written
    and read again for every global block, and the largest allocation of the forward.

    ``forward(x)``: (B, H, W, C) -> (B, H, W, C).
    """

    mask_bytes = 64 * 2 ** 20

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        tokens = height * width
        # (B, N, 3 C) -> 3 x (B, heads, N, C_head)
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
            return self.proj(out.transpose(1, 2).reshape(batch, height, width, -1))
        rel_h = get_rel_pos(height, height, self.rel_pos_h)  # (H, H, C_head)
        rel_w = get_rel_pos(width, width, self.rel_pos_w)  # (W, W, C_head)
        q_grid = q.reshape(batch, self.num_heads, height, width, -1)
        # The bias uses the unscaled queries, as segment-anything's add_decomposed_rel_pos does.
        # Query (h, w) to key (h', w'): bias_h[h, w, h'] + bias_w[h, w, w'].
        bias_h = torch.einsum("bnhwc,hkc->bnhwk", q_grid, rel_h.to(q.dtype)).flatten(2, 3)  # (B, heads, N, H)
        bias_w = torch.einsum("bnhwc,wkc->bnhwk", q_grid, rel_w.to(q.dtype)).flatten(2, 3)  # (B, heads, N, W)
        per_image = self.num_heads * tokens * tokens * q.element_size()
        images = max(1, self.mask_bytes // per_image)
        rows = tokens if images > 1 else max(1, self.mask_bytes // (self.num_heads * tokens * q.element_size()))
        out = q.new_empty(batch, self.num_heads, tokens, v.shape[-1])
        for i in range(0, batch, images):
            b = slice(i, i + images)
            for j in range(0, tokens, rows):
                r = slice(j, j + rows)
                bias = (bias_h[b, :, r, :, None] + bias_w[b, :, r, None, :]).flatten(-2)  # (b, heads, r, N)
                out[b, :, r] = F.scaled_dot_product_attention(q[b, :, r], k[b], v[b], attn_mask=bias,
                                                              scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, height, width, -1))


# MODEL.SAM.ATTENTION: "sdpa" (fused, default) or "reference" (segment-anything's own forward).
ATTENTION_IMPLEMENTATIONS = {"sdpa": SDPARelPosAttention, "reference": SAMAttention}


def set_attention_implementation(encoder: nn.Module, name: str) -> nn.Module:
    """Switch every SAM ``Attention`` of ``encoder`` to ``name`` (see :data:`ATTENTION_IMPLEMENTATIONS`).

    Only the class (i.e. the forward) changes; parameters, buffers and state-dict keys do not.
    """
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ConfigError(f"MODEL.SAM.ATTENTION={name!r}: expected one of {sorted(ATTENTION_IMPLEMENTATIONS)}")
    for module in encoder.modules():
        if isinstance(module, SAMAttention):
            module.__class__ = ATTENTION_IMPLEMENTATIONS[name]
    return encoder


def build_sam_image_encoder(variant: str, input_size: int, overrides: Optional[dict] = None) -> ImageEncoderViT:
    """segment-anything ``ImageEncoderViT`` of ``variant`` for square inputs of ``input_size``."""
    if variant not in SAM_VARIANTS:
        raise ConfigError(f"MODEL.SAM.VARIANT={variant!r}: expected one of {sorted(SAM_VARIANTS)}")
    args = dict(_COMMON, **SAM_VARIANTS[variant])
    args.update(overrides or {})
    if input_size % args["patch_size"] != 0:
        raise ConfigError(
            f"MODEL.SAM.INPUT_SIZE={input_size} is not a multiple of the patch size {args['patch_size']}"
        )
    args["global_attn_indexes"] = tuple(args["global_attn_indexes"])
    return ImageEncoderViT(
        img_size=input_size,
        norm_layer=lambda dim: nn.LayerNorm(dim, eps=1e-6),
        act_layer=nn.GELU,
        rel_pos_zero_init=True,
        **args,
    )


def _resize_sam_state_dict(state: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Resize absolute and relative position embeddings to the shapes of ``target`` (the encoder's).

    SAM checkpoints are for 1024x1024 inputs (64x64 tokens). For another input size the absolute
    embedding (1, 64, 64, C) is resized bicubically and the relative-position tables of the
    global-attention blocks (2*64-1, C_head) linearly, as ViTDet / SAM do for other resolutions.
    """
    out = dict(state)
    for key, value in state.items():
        if key not in target or target[key].shape == value.shape:
            continue
        want = target[key].shape
        if key == "pos_embed" and value.dim() == 4:
            resized = F.interpolate(value.permute(0, 3, 1, 2).float(), size=tuple(want[1:3]),
                                    mode="bicubic", align_corners=False)
            out[key] = resized.permute(0, 2, 3, 1).to(value.dtype)
        elif key.endswith(("rel_pos_h", "rel_pos_w")) and value.dim() == 2 and value.shape[1] == want[1]:
            resized = F.interpolate(value.t()[None].float(), size=want[0], mode="linear", align_corners=False)
            out[key] = resized[0].t().to(value.dtype)
    return out


def load_sam_checkpoint(encoder: ImageEncoderViT, path: str, variant: str) -> None:
    """Load a SAM checkpoint (full ``Sam`` state dict or encoder-only) into ``encoder``.

    The neck's weights are skipped when ``encoder`` has no neck (replaced by ``nn.Identity``).

    Uses ``torch.load(weights_only=True)``; any missing file, unreadable file, missing/unexpected
    key or shape that cannot be resized raises :class:`CheckpointError` with one line.
    """
    state = read_state_dict(path, "SAM checkpoint", "MODEL.SAM.CHECKPOINT")
    prefix = "image_encoder."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    target = encoder.state_dict()
    if not any(k.startswith("neck.") for k in target):  # neck unused (MODEL.SAM.USE_NECK False)
        state = {k: v for k, v in state.items() if not k.startswith("neck.")}
    state = _resize_sam_state_dict(state, target)
    problems = describe_mismatch(target, state)
    if problems:
        raise CheckpointError(f"SAM checkpoint {path} does not match the SAM image encoder {variant!r}: {problems}")
    encoder.load_state_dict(state, strict=True)


class SAMGuidanceEncoder(ImageGuidanceEncoder):
    """Frozen (by default) SAM image encoder returning intermediate block outputs.

    Args:
        encoder: segment-anything ``ImageEncoderViT``.
        tap_layers: 1-based block numbers whose outputs are returned (paper: 8, 16, 24).
        frozen: no gradients and always eval mode (paper); False lets it be fine-tuned.
        use_neck: pass the last tap through SAM's neck (256 channels).
        pixel_mean, pixel_std: SAM's normalisation on the 0..255 scale.
        attention: "sdpa" (fused ``scaled_dot_product_attention``, same result) or "reference"
            (segment-anything's forward); see :func:`set_attention_implementation`.

    ``forward(images)`` takes a list of (3, H, W) RGB images (0..255) and returns
    ``{"taps": [F1, F2, F3], "target": F3}`` with ``F_i`` of shape (B, C_i, H_s, W_s),
    H_s = W_s = input_size / 16.
    """

    def __init__(
        self,
        encoder: ImageEncoderViT,
        *,
        tap_layers: Sequence[int] = (8, 16, 24),
        frozen: bool = True,
        use_neck: bool = False,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        attention: str = "sdpa",
    ):
        super().__init__(input_size=encoder.img_size, pixel_mean=pixel_mean, pixel_std=pixel_std, frozen=frozen)
        self.tap_layers = validate_taps(tap_layers, len(encoder.blocks), "MODEL.SAM.TAP_LAYERS")
        self.encoder = set_attention_implementation(encoder, attention)
        self.use_neck = bool(use_neck)
        if not use_neck:
            # The neck's parameters would be unused (no gradient, DDP complains): drop it.
            self.encoder.neck = nn.Identity()
        self._apply_freezing()

    @property
    def channels(self) -> List[int]:
        """Channels of each tap, in ``tap_layers`` order."""
        dim = self.encoder.patch_embed.proj.out_channels
        chans = [dim] * len(self.tap_layers)
        if self.use_neck:
            chans[-1] = self.encoder.neck[0].out_channels
        return chans

    def forward(self, images: Sequence[torch.Tensor], clip_features=None) -> Dict[str, object]:
        with self.grad_context():
            x = self.encoder.patch_embed(self.preprocess(images))  # (B, Hs, Ws, C)
            if self.encoder.pos_embed is not None:
                x = x + self.encoder.pos_embed
            taps = run_blocks_with_taps(self.encoder.blocks, x, self.tap_layers)
            if self.use_neck:
                taps[-1] = self.encoder.neck(taps[-1])
        return {"taps": taps, "target": taps[-1]}

    @classmethod
    def build_from_config(cls, cfg) -> "SAMGuidanceEncoder":
        """The encoder ``cfg.MODEL.SAM`` describes, with its checkpoint loaded (an instance, not
        constructor arguments: detectron2's ``from_config`` name is kept for those)."""
        s = cfg.MODEL.SAM
        overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(s.ARCH_OVERRIDES).items()}
        guidance = cls(
            build_sam_image_encoder(s.VARIANT, s.INPUT_SIZE, overrides),
            tap_layers=s.TAP_LAYERS,
            frozen=s.FROZEN,
            use_neck=s.USE_NECK,
            pixel_mean=s.PIXEL_MEAN,
            pixel_std=s.PIXEL_STD,
            attention=s.ATTENTION,
        )
        if s.CHECKPOINT:
            load_sam_checkpoint(guidance.encoder, s.CHECKPOINT, s.VARIANT)
        return guidance
