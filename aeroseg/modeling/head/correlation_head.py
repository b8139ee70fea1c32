"""The correlation head: correlation volume -> embedding -> refinement -> decoder (paper Fig. 2)."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...compat import configurable
from ...utils.errors import ConfigError
from .back_projection import SemanticBackProjection
from .correlation import CorrelationEmbedding, correlation_volume
from .decoder import AttentionAwareUpsamplingDecoder, resize_feature_map
from .refinement import CorrelationRefinementBlock

__all__ = ["BACK_PROJECTION_TARGETS", "CorrelationHead"]

# What the semantic back-projection reconstructs (MODEL.AEROSEG.BACK_PROJECTION_TARGET).
BACK_PROJECTION_TARGETS = ("SAM", "CLIP", "RGB", "NONE")


class CorrelationHead(nn.Module):
    """From dense CLIP features, text embeddings and guidance maps to per-class logits.

    CAT-Seg's aggregator with AerOSeg's guidance and OVRS's decoder:

    1. correlation volume of every rotation's dense features with every prompt's text
       embedding, embedded by a conv (Eqs. 1-2, :class:`CorrelationEmbedding`);
    2. ``num_refinement_blocks`` x (spatial refinement guided by P_v(last guidance tap) +
       class refinement guided by P_t(prompt-averaged text)) (Eqs. 3-6);
    3. the attention-aware upsampling decoder fed by the guidance taps
       ``decoder_guidance_taps`` (Eqs. 8-11), x2 per stage.

    The semantic back-projection MLP (Eq. 7, :attr:`back_projection`, ``None`` when
    ``back_projection_dim`` is 0) reconstructs a target from the refined features; it serves
    the training loss only, so :meth:`forward` returns the refined features beside the logits.

    Args:
        num_correlation_maps: R*P, rotations x prompt templates of the correlation volume.
        text_dim: D, width of the text embeddings.
        guidance_channels: channels of each guidance tap (the last one guides the spatial block).
        feature_dim: d_F, channels of the correlation features.
        back_projection_dim: channels of the reconstructed target (0: no back-projection).
        num_train_classes: classes the back-projection concatenates (Eq. 7).
        The others: see :class:`CorrelationRefinementBlock` and
        :class:`AttentionAwareUpsamplingDecoder`.
    """

    @configurable
    def __init__(
        self,
        *,
        num_correlation_maps: int,
        text_dim: int,
        guidance_channels: Sequence[int],
        feature_dim: int = 128,
        correlation_kernel: int = 7,
        num_refinement_blocks: int = 2,
        spatial_guidance_dim: int = 128,
        text_guidance_dim: int = 128,
        spatial_heads: int = 4,
        window_size: int = 12,
        class_heads: int = 4,
        mlp_ratio: float = 4.0,
        class_pooling_size: Sequence[int] = (2, 2),
        class_pad_len: int = 256,
        spatial_guidance_norm: bool = True,
        spatial_relative_position_bias: bool = False,
        decoder_attention_activation: str = "none",
        decoder_dims: Sequence[int] = (64, 32),
        decoder_guidance_dims: Sequence[int] = (32, 16),
        decoder_guidance_taps: Sequence[int] = (0, 1),
        back_projection_dim: int = 0,
        back_projection_hidden_dim: int = 512,
        num_train_classes: int = 0,
    ):
        super().__init__()
        guidance_channels = [int(c) for c in guidance_channels]
        bad_taps = [t for t in decoder_guidance_taps if not 0 <= int(t) < len(guidance_channels)]
        if bad_taps or len(decoder_guidance_taps) != len(decoder_dims):
            raise ConfigError(
                f"MODEL.AEROSEG.DECODER_GUIDANCE_TAPS={list(decoder_guidance_taps)}: expected one tap "
                f"index in 0..{len(guidance_channels) - 1} per decoder stage ({len(decoder_dims)})"
            )
        self.decoder_guidance_taps = tuple(int(t) for t in decoder_guidance_taps)
        self.class_pad_len = int(class_pad_len)

        self.correlation_embed = CorrelationEmbedding(num_correlation_maps, feature_dim, correlation_kernel)
        # P_v: projection of the spatial guidance (last tap, SAM F3) to the refinement's q/k.
        self.spatial_guidance_proj = nn.Sequential(
            nn.Conv2d(guidance_channels[-1], spatial_guidance_dim, 3, padding=1), nn.ReLU()
        )
        # P_t: projection of the prompt-averaged text embedding to the class attention's q/k.
        self.text_guidance_proj = nn.Sequential(nn.Linear(text_dim, text_guidance_dim), nn.ReLU())
        self.refinement = nn.ModuleList([
            CorrelationRefinementBlock(
                feature_dim, spatial_guidance_dim, text_guidance_dim,
                spatial_heads=spatial_heads, window_size=window_size, class_heads=class_heads,
                mlp_ratio=mlp_ratio, class_pooling_size=class_pooling_size, class_pad_len=class_pad_len,
                spatial_guidance_norm=spatial_guidance_norm,
                relative_position_bias=spatial_relative_position_bias,
            )
            for _ in range(num_refinement_blocks)
        ])
        self.decoder = AttentionAwareUpsamplingDecoder(
            feature_dim, decoder_dims, [guidance_channels[t] for t in self.decoder_guidance_taps],
            decoder_guidance_dims, decoder_attention_activation,
        )
        self.back_projection: Optional[SemanticBackProjection] = None
        if back_projection_dim:
            if num_train_classes <= 0:
                raise ConfigError(
                    "the back-projection needs the number of training classes: set "
                    "MODEL.SEM_SEG_HEAD.NUM_CLASSES or MODEL.AEROSEG.VOCABULARY"
                )
            self.back_projection = SemanticBackProjection(
                num_train_classes, feature_dim, back_projection_hidden_dim, back_projection_dim
            )

    @classmethod
    def from_config(cls, cfg, clip_backbone, guidance_encoder, num_train_classes: int = 0):
        """Config values plus the widths of the already built CLIP backbone and guidance encoder."""
        a = cfg.MODEL.AEROSEG
        guidance_channels = list(guidance_encoder.channels)
        if a.BACK_PROJECTION_TARGET not in BACK_PROJECTION_TARGETS:
            raise ConfigError(
                f"MODEL.AEROSEG.BACK_PROJECTION_TARGET={a.BACK_PROJECTION_TARGET!r}: expected one of "
                f"{BACK_PROJECTION_TARGETS}"
            )
        back_projection_dim = {
            "SAM": guidance_channels[-1],
            "CLIP": clip_backbone.embed_dim,
            "RGB": 3 * clip_backbone.patch_size ** 2,  # the pixels of each patch
            "NONE": 0,
        }[a.BACK_PROJECTION_TARGET]
        return {
            "num_correlation_maps": clip_backbone.num_rotations * clip_backbone.num_templates,
            "text_dim": clip_backbone.embed_dim,
            "guidance_channels": guidance_channels,
            "feature_dim": a.FEATURE_DIM,
            "correlation_kernel": a.CORRELATION_KERNEL,
            "num_refinement_blocks": a.NUM_REFINEMENT_BLOCKS,
            "spatial_guidance_dim": a.SPATIAL_GUIDANCE_DIM,
            "text_guidance_dim": a.TEXT_GUIDANCE_DIM,
            "spatial_heads": a.SPATIAL_NUM_HEADS,
            "window_size": a.WINDOW_SIZE,
            "class_heads": a.CLASS_NUM_HEADS,
            "mlp_ratio": a.MLP_RATIO,
            "class_pooling_size": a.CLASS_POOLING_SIZE,
            "class_pad_len": a.CLASS_PAD_LEN,
            "spatial_guidance_norm": a.SPATIAL_GUIDANCE_NORM,
            "spatial_relative_position_bias": a.SPATIAL_RELATIVE_POSITION_BIAS,
            "decoder_attention_activation": a.DECODER_ATTENTION_ACTIVATION,
            "decoder_dims": a.DECODER_DIMS,
            "decoder_guidance_dims": a.DECODER_GUIDANCE_DIMS,
            "decoder_guidance_taps": a.DECODER_GUIDANCE_TAPS,
            "back_projection_dim": back_projection_dim,
            "back_projection_hidden_dim": a.BACK_PROJECTION_HIDDEN_DIM,
            "num_train_classes": int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) or int(num_train_classes),
        }

    def forward(self, dense: torch.Tensor, text: torch.Tensor,
                taps: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            dense: (B, R, D, h, w) CLIP features of every rotation (rotated back).
            text: (T, P, D) normalized text embeddings of T classes x P prompts.
            taps: guidance maps (B, C_i, H_i, W_i); ``taps[-1]`` guides the spatial refinement.
        Returns:
            logits (B, T, 4h, 4w) and the refined correlation features phi'' (B, T, d_F, h, w);
            None for the latter when T exceeds the class padding (:meth:`_forward_top_classes`).
        """
        if 0 < self.class_pad_len < text.shape[0]:
            return self._forward_top_classes(dense, text, taps), None
        h, w = dense.shape[-2:]
        x = self.correlation_embed(correlation_volume(dense, text))
        spatial_guidance = self.spatial_guidance_proj(resize_feature_map(taps[-1], (h, w)))
        # Prompt-averaged text embedding, re-normalised (as CAT-Seg) before P_t.
        text_guidance = self.text_guidance_proj(F.normalize(text.mean(dim=1), dim=-1)).unsqueeze(0)  # (1, T, C_t)
        for block in self.refinement:
            x = block(x, spatial_guidance, text_guidance)
        logits = self.decoder(x, [taps[t] for t in self.decoder_guidance_taps])
        return logits, x

    def _forward_top_classes(self, dense: torch.Tensor, text: torch.Tensor, taps: List[torch.Tensor]) -> torch.Tensor:
        """A vocabulary longer than ``class_pad_len`` (CAT-Seg's rule): per image, the ``class_pad_len``
        classes with the highest CLIP correlation (its maximum over rotations, prompts and positions)
        go through the head; the other classes get the logit -100 (probability 0). Inference only:
        the training loss needs every class's logits.
        """
        if self.training:
            raise ConfigError(f"the vocabulary has {text.shape[0]} classes, more than MODEL.AEROSEG.CLASS_PAD_LEN "
                              f"{self.class_pad_len}: train with at most that many classes or a larger "
                              f"CLASS_PAD_LEN (only inference keeps the top {self.class_pad_len} classes per image)")
        score = correlation_volume(dense, text).flatten(2).amax(dim=2)  # (B, T): best match of each class
        chosen = score.topk(self.class_pad_len, dim=1).indices.sort(dim=1).values
        logits = []
        for b in range(dense.shape[0]):
            classes = chosen[b]
            selected, _ = self(dense[b:b + 1], text[classes], [t[b:b + 1] for t in taps])
            full = selected.new_full((1, text.shape[0], *selected.shape[-2:]), -100.0)
            full[:, classes] = selected
            logits.append(full)
        return torch.cat(logits)
