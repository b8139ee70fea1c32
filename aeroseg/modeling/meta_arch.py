"""The AerOSeg meta-architecture (paper Fig. 2): CLIP + guidance encoder + correlation head."""
import logging
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config.configurable import configurable
from ..utils.errors import ConfigError
from .head.back_projection import SemanticBackProjection
from .backbone import CLIPBackbone, build_clip_backbone
from .build import META_ARCH_REGISTRY
from .head.correlation import CorrelationEmbedding, correlation_volume
from .head.decoder import AttentionAwareUpsamplingDecoder, resize_feature_map
from .guidance import SAM2GuidanceEncoder, SAMGuidanceEncoder, build_guidance_encoder
from .losses import segmentation_bce_loss, semantic_back_projection_loss
from .head.refinement import CorrelationRefinementBlock

__all__ = ["AerOSeg", "TRAINING_ONLY_PREFIXES"]

# Weights that serve the training loss only: the back-projection concatenates the training
# classes (Eq. 7), so its size follows the training vocabulary while inference works with any.
# Loading a checkpoint for evaluation or prediction may skip them (a model built for another
# vocabulary size still loads).
TRAINING_ONLY_PREFIXES = ("back_projection.",)

logger = logging.getLogger(__name__)

BACK_PROJECTION_TARGETS = ("SAM", "CLIP", "RGB", "NONE")
BCE_IGNORED_MODES = ("negative", "exclude")


@META_ARCH_REGISTRY.register()
class AerOSeg(nn.Module):
    """Open-vocabulary segmentation of aerial images with SAM-guided correlation refinement.

    Input (detectron2 convention): a list of dicts with ``image`` (uint8 or float, (3, H, W), RGB,
    0..255), in training ``sem_seg`` (long (H, W), values index :attr:`vocabulary`, ignore =
    ``ignore_value``), and optionally ``height``/``width`` (output size at inference).

    Output: in training ``{"loss_bce", "loss_sem"}`` (``loss_sem`` unless the back-projection
    target is ``"NONE"``); at inference ``[{"sem_seg": (K, height, width)}]`` of per-class
    probabilities, K = ``len(model.vocabulary)``.

    The class names are data, not weights: :meth:`set_vocabulary` replaces them at any time and
    the same weights segment the new classes (text embeddings are recomputed once and cached).
    """

    @configurable
    def __init__(
        self,
        *,
        clip_backbone: CLIPBackbone,
        guidance_encoder: nn.Module,
        vocabulary: Sequence[str] = (),
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
        back_projection_target: str = "SAM",
        back_projection_hidden_dim: int = 512,
        num_train_classes: int = 0,
        bce_weight: float = 1.0,
        sem_weight: float = 1.0,
        ignore_value: int = 255,
        bce_ignored: str = "negative",
    ):
        super().__init__()
        self.clip_backbone = clip_backbone
        self.guidance_encoder = guidance_encoder
        self.ignore_value = int(ignore_value)
        self.bce_weight = float(bce_weight)
        self.sem_weight = float(sem_weight)
        if bce_ignored not in BCE_IGNORED_MODES:
            raise ConfigError(f"MODEL.AEROSEG.BCE_IGNORED={bce_ignored!r}: expected one of {BCE_IGNORED_MODES}")
        self.bce_ignored = bce_ignored
        self._vocabulary: List[str] = []
        self._text_cache: Optional[torch.Tensor] = None
        if vocabulary:
            self.set_vocabulary(vocabulary)

        guidance_channels = list(guidance_encoder.channels)
        bad_taps = [t for t in decoder_guidance_taps if not 0 <= int(t) < len(guidance_channels)]
        if bad_taps or len(decoder_guidance_taps) != len(decoder_dims):
            raise ConfigError(
                f"MODEL.AEROSEG.DECODER_GUIDANCE_TAPS={list(decoder_guidance_taps)}: expected one tap "
                f"index in 0..{len(guidance_channels) - 1} per decoder stage ({len(decoder_dims)})"
            )
        self.decoder_guidance_taps = tuple(int(t) for t in decoder_guidance_taps)

        num_maps = clip_backbone.num_rotations * clip_backbone.num_templates
        self.correlation_embed = CorrelationEmbedding(num_maps, feature_dim, correlation_kernel)
        # P_v: projection of the spatial guidance (last tap, SAM F3) to the refinement's q/k.
        self.spatial_guidance_proj = nn.Sequential(
            nn.Conv2d(guidance_channels[-1], spatial_guidance_dim, 3, padding=1), nn.ReLU()
        )
        # P_t: projection of the prompt-averaged text embedding to the class attention's q/k.
        self.text_guidance_proj = nn.Sequential(
            nn.Linear(clip_backbone.embed_dim, text_guidance_dim), nn.ReLU()
        )
        self.refinement = nn.ModuleList([
            CorrelationRefinementBlock(feature_dim, spatial_guidance_dim, text_guidance_dim,
                                       spatial_heads, window_size, class_heads, mlp_ratio,
                                       class_pooling_size, class_pad_len, spatial_guidance_norm,
                                       spatial_relative_position_bias)
            for _ in range(num_refinement_blocks)
        ])
        self.decoder = AttentionAwareUpsamplingDecoder(
            feature_dim, decoder_dims, [guidance_channels[t] for t in self.decoder_guidance_taps],
            decoder_guidance_dims, decoder_attention_activation,
        )

        if back_projection_target not in BACK_PROJECTION_TARGETS:
            raise ConfigError(
                f"MODEL.AEROSEG.BACK_PROJECTION_TARGET={back_projection_target!r}: expected one of "
                f"{BACK_PROJECTION_TARGETS}"
            )
        sam_encoders = (SAMGuidanceEncoder, SAM2GuidanceEncoder)
        if back_projection_target == "SAM" and not isinstance(guidance_encoder, sam_encoders):
            raise ConfigError(
                "MODEL.AEROSEG.BACK_PROJECTION_TARGET='SAM' needs MODEL.GUIDANCE.ENCODER='SAM' or 'SAM2' "
                "(use 'CLIP', 'RGB' or 'NONE' with CLIP guidance)"
            )
        self.back_projection_target = back_projection_target
        self.back_projection = None
        if back_projection_target != "NONE":
            num_train_classes = int(num_train_classes) or len(self._vocabulary)
            if num_train_classes <= 0:
                raise ConfigError(
                    "the back-projection needs the number of training classes: set "
                    "MODEL.SEM_SEG_HEAD.NUM_CLASSES or MODEL.AEROSEG.VOCABULARY"
                )
            target_dim = {
                "SAM": guidance_channels[-1],
                "CLIP": clip_backbone.embed_dim,
                "RGB": 3 * clip_backbone.patch_size ** 2,
            }[back_projection_target]
            self.back_projection = SemanticBackProjection(
                num_train_classes, feature_dim, back_projection_hidden_dim, target_dim
            )
        # Text embeddings depend on the weights: recompute them after any weight load.
        self.register_load_state_dict_post_hook(lambda module, incompatible: module._clear_text_cache())

    @classmethod
    def from_config(cls, cfg) -> Dict[str, object]:
        a = cfg.MODEL.AEROSEG
        uses_clip_guidance = cfg.MODEL.GUIDANCE.ENCODER == "CLIP"
        clip_backbone = build_clip_backbone(cfg, cfg.MODEL.CLIP.GUIDANCE_LAYERS if uses_clip_guidance else ())
        return {
            "clip_backbone": clip_backbone,
            "guidance_encoder": build_guidance_encoder(cfg, clip_backbone),
            "vocabulary": _initial_vocabulary(cfg),
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
            "back_projection_target": a.BACK_PROJECTION_TARGET,
            "back_projection_hidden_dim": a.BACK_PROJECTION_HIDDEN_DIM,
            "num_train_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "bce_weight": a.BCE_WEIGHT,
            "sem_weight": a.SEM_WEIGHT,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "bce_ignored": a.BCE_IGNORED,
        }

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocabulary(self) -> List[str]:
        """The class names the model currently segments (index k = output channel k)."""
        return list(self._vocabulary)

    def set_vocabulary(self, class_names: Sequence[str]) -> None:
        """Replace the class names; text embeddings are recomputed on the next forward."""
        if isinstance(class_names, str):
            raise TypeError("set_vocabulary expects a list of class names, not a single string")
        names = [str(n).strip() for n in class_names]
        if not names or any(not n for n in names):
            raise ValueError(f"vocabulary must be a non-empty list of non-empty names, got {list(class_names)!r}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"vocabulary has duplicate class names: {duplicates}")
        if names != self._vocabulary:
            self._vocabulary = names
            self._clear_text_cache()

    @contextmanager
    def vocabulary_as(self, class_names: Sequence[str]):
        """``with model.vocabulary_as(names):`` segments ``names`` inside the block.

        The previous vocabulary is restored when the block ends, also when it ends with an error
        (an evaluation that fails does not leave the model on the test classes).
        """
        previous = self.vocabulary
        self.set_vocabulary(class_names)
        try:
            yield self
        finally:
            if previous:
                self.set_vocabulary(previous)

    def _clear_text_cache(self) -> None:
        self._text_cache = None

    def train(self, mode: bool = True):
        super().train(mode)
        self._clear_text_cache()  # weights may change while training
        return self

    def text_embeddings(self) -> torch.Tensor:
        """(T, P, D) normalized text embeddings of :attr:`vocabulary`.

        While training a text encoder with trainable parameters they are recomputed with
        gradients on every call; otherwise computed once and cached until the vocabulary, the
        train/eval mode or the weights (via ``load_state_dict``) change.
        """
        if not self._vocabulary:
            raise ConfigError(
                "the model has no vocabulary: set MODEL.AEROSEG.VOCABULARY, use a dataset with "
                "class metadata, or call model.set_vocabulary([...])"
            )
        text_trainable = any(p.requires_grad for p in self.clip_backbone.clip.transformer.parameters())
        if self.training and torch.is_grad_enabled() and text_trainable:
            return self.clip_backbone.encode_text(self._vocabulary)
        if self._text_cache is None or self._text_cache.device != self.device:
            with torch.no_grad():
                self._text_cache = self.clip_backbone.encode_text(self._vocabulary)
        return self._text_cache

    @property
    def device(self) -> torch.device:
        return self.clip_backbone.pixel_mean.device

    # ------------------------------------------------------------------ forward
    def predict_logits(self, dense: torch.Tensor, text: torch.Tensor, taps: List[torch.Tensor]):
        """The correlation head.

        Args:
            dense: (B, R, D, h, w) CLIP features of every rotation.
            text: (T, P, D) text embeddings.
            taps: guidance maps; ``taps[-1]`` guides spatial refinement.
        Returns:
            logits (B, T, 4h, 4w) and the refined correlation features phi'' (B, T, d_F, h, w).
        """
        h, w = dense.shape[-2:]
        x = self.correlation_embed(correlation_volume(dense, text))
        spatial_guidance = self.spatial_guidance_proj(resize_feature_map(taps[-1], (h, w)))
        # Prompt-averaged text embedding, re-normalised (as CAT-Seg) before P_t.
        text_guidance = self.text_guidance_proj(F.normalize(text.mean(dim=1), dim=-1)).unsqueeze(0)  # (1, T, C_t)
        for block in self.refinement:
            x = block(x, spatial_guidance, text_guidance)
        logits = self.decoder(x, [taps[t] for t in self.decoder_guidance_taps])
        return logits, x

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        images = [item["image"].to(self.device) for item in batched_inputs]
        clip_images = self.clip_backbone.preprocess(images)
        clip_features = self.clip_backbone(clip_images)
        text = self.text_embeddings()
        guidance = self.guidance_encoder(images, clip_features)
        logits, refined = self.predict_logits(clip_features["dense"], text, guidance["taps"])

        if self.training:
            targets = [item["sem_seg"].to(self.device) for item in batched_inputs]
            losses = {"loss_bce": self.bce_weight * segmentation_bce_loss(
                logits, targets, self.ignore_value, ignored=self.bce_ignored)}
            if self.back_projection is not None:
                reconstruction = self.back_projection(refined)
                target = self._back_projection_target(guidance, clip_features, clip_images)
                target = resize_feature_map(target, reconstruction.shape[-2:])
                losses["loss_sem"] = self.sem_weight * semantic_back_projection_loss(reconstruction, target)
            return losses

        results = []
        for logit, item, image in zip(logits, batched_inputs, images):
            size = (int(item.get("height", image.shape[-2])), int(item.get("width", image.shape[-1])))
            logit = F.interpolate(logit[None], size=size, mode="bilinear", align_corners=False)[0]
            results.append({"sem_seg": logit.sigmoid()})
        return results

    def _back_projection_target(self, guidance, clip_features, clip_images) -> torch.Tensor:
        if self.back_projection_target == "SAM":
            return guidance["target"]
        if self.back_projection_target == "CLIP":
            return clip_features["dense"][:, 0]
        return F.pixel_unshuffle(clip_images, self.clip_backbone.patch_size)  # "RGB": pixels of each patch


def _initial_vocabulary(cfg) -> List[str]:
    """The seen classes of the first training dataset, else MODEL.AEROSEG.VOCABULARY."""
    from ..data.vocabulary import training_vocabulary  # here: modeling does not depend on data otherwise

    return training_vocabulary(cfg.DATASETS.TRAIN) or list(cfg.MODEL.AEROSEG.VOCABULARY)
