"""The AerOSeg meta-architecture (paper Fig. 2): CLIP + guidance encoder + correlation head."""
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..compat import configurable
from ..utils.errors import ConfigError
from ..utils.names import check_unique_names
from .backbone import CLIPBackbone, build_clip_backbone
from .build import META_ARCH_REGISTRY
from .guidance import SAM2GuidanceEncoder, SAMGuidanceEncoder, build_guidance_encoder
from .head import BACK_PROJECTION_TARGETS, CorrelationHead
from .head.decoder import resize_feature_map
from .losses import segmentation_bce_loss, semantic_back_projection_loss

__all__ = ["AerOSeg", "ImageEncoding", "TRAINING_ONLY_PREFIXES"]

# Weights that serve the training loss only: the back-projection concatenates the training
# classes (Eq. 7), so its size follows the training vocabulary while inference works with any.
# Loading a checkpoint for evaluation or prediction may skip them (a model built for another
# vocabulary size still loads).
TRAINING_ONLY_PREFIXES = ("head.back_projection.",)

logger = logging.getLogger(__name__)

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
        head: CorrelationHead,
        vocabulary: Sequence[str] = (),
        back_projection_target: str = "SAM",
        bce_weight: float = 1.0,
        sem_weight: float = 1.0,
        ignore_value: int = 255,
        bce_ignored: str = "negative",
    ):
        """
        Args:
            clip_backbone: CLIP image and text encoders (rotated dense features, prompt ensembles).
            guidance_encoder: frozen SAM / SAM 2 image encoder (or CLIP's own layers), giving the
                guidance taps and the back-projection's SAM target.
            head: the correlation head, built for this backbone's and encoder's widths.
            vocabulary: the class names segmented at first (the seen classes when training).
            back_projection_target: what ``head.back_projection`` reconstructs, one of
                :data:`BACK_PROJECTION_TARGETS` (``"NONE"``: the head has no back-projection).
            bce_weight, sem_weight: loss weights of BCE and L_sem.
            ignore_value: label value excluded from the loss.
            bce_ignored: how ignored pixels enter the BCE, one of :data:`BCE_IGNORED_MODES`.
        """
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
        if (back_projection_target == "NONE") != (head.back_projection is None):
            raise ConfigError(
                f"MODEL.AEROSEG.BACK_PROJECTION_TARGET={back_projection_target!r} but the head was built "
                f"{'with' if head.back_projection is not None else 'without'} a back-projection"
            )
        self.back_projection_target = back_projection_target
        # Registered after the encoders: the parameter order (and the optimizer state's order)
        # is the one of checkpoints written before the head became a module.
        self.head = head
        # Checkpoints written before the head became a module name its weights without "head.".
        self.register_load_state_dict_pre_hook(_upgrade_state_dict_hook)
        # Text embeddings depend on the weights: recompute them after any weight load.
        self.register_load_state_dict_post_hook(lambda module, incompatible: module._clear_text_cache())

    @classmethod
    def from_config(cls, cfg) -> Dict[str, object]:
        a = cfg.MODEL.AEROSEG
        uses_clip_guidance = cfg.MODEL.GUIDANCE.ENCODER == "CLIP"
        clip_backbone = build_clip_backbone(cfg, cfg.MODEL.CLIP.GUIDANCE_LAYERS if uses_clip_guidance else ())
        guidance_encoder = build_guidance_encoder(cfg, clip_backbone)
        vocabulary = _initial_vocabulary(cfg)
        return {
            "clip_backbone": clip_backbone,
            "guidance_encoder": guidance_encoder,
            "head": CorrelationHead(cfg, clip_backbone, guidance_encoder, num_train_classes=len(vocabulary)),
            "vocabulary": vocabulary,
            "back_projection_target": a.BACK_PROJECTION_TARGET,
            "bce_weight": a.BCE_WEIGHT,
            "sem_weight": a.SEM_WEIGHT,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "bce_ignored": a.BCE_IGNORED,
        }

    @staticmethod
    def upgrade_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """A state dict of any AerOSeg version with the keys of this one (a new dict).

        Checkpoints written before the head became a module (:class:`CorrelationHead`) name its
        weights ``correlation_embed.*``, ``refinement.*``, ...; they are now ``head.*``.
        """
        return {_upgraded_key(k): v for k, v in state.items()}

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
        check_unique_names(names, "vocabulary")  # one rule wherever names enter (case / spaces)
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
    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        images = [item["image"].to(self.device) for item in batched_inputs]
        encoding = self.encode_images(images)
        if not self.training:
            sizes = [(int(item.get("height", image.shape[-2])), int(item.get("width", image.shape[-1])))
                     for item, image in zip(batched_inputs, images)]
            return self.segment_encoded(encoding, sizes)

        logits, refined = self._head(encoding)
        targets = [item["sem_seg"].to(self.device) for item in batched_inputs]
        losses = {"loss_bce": self.bce_weight * segmentation_bce_loss(
            logits, targets, self.ignore_value, ignored=self.bce_ignored)}
        if self.head.back_projection is not None:
            reconstruction = self.head.back_projection(refined)
            target = self._back_projection_target(encoding)
            target = resize_feature_map(target, reconstruction.shape[-2:])
            losses["loss_sem"] = self.sem_weight * semantic_back_projection_loss(reconstruction, target)
        return losses

    def encode_images(self, images: Sequence[torch.Tensor]) -> "ImageEncoding":
        """The part of the forward that depends on the images only: CLIP's dense features (all
        rotations) and the guidance encoder's taps, for any vocabulary.

        ``images``: (3, H, W) RGB on the 0..255 scale. :meth:`segment_encoded` finishes the
        forward for the current vocabulary; ``model(inputs)`` at inference is exactly
        ``model.segment_encoded(model.encode_images(images), sizes)``, so an encoding kept
        aside answers another class list with the same numbers without re-running CLIP's image
        tower and SAM. In training mode the encoding also keeps what the back-projection's
        target needs (:attr:`ImageEncoding.training_targets`).
        """
        images = [image.to(self.device) for image in images]
        clip_images = self.clip_backbone.preprocess(images)
        clip_features = self.clip_backbone(clip_images)
        guidance = self.guidance_encoder(images, clip_features)
        targets = None
        if self.training:
            targets = {"clip_images": clip_images, "clip_dense": clip_features["dense"], "sam": guidance["target"]}
        return ImageEncoding(dense=clip_features["dense"], taps=list(guidance["taps"]), training_targets=targets)

    def segment_encoded(self, encoding: "ImageEncoding",
                        sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, torch.Tensor]]:
        """Per-class probabilities of the encoded images for the current vocabulary.

        ``sizes``: the output (height, width) of each image. Returns ``[{"sem_seg": (K, h, w)}]``
        as the forward at inference does.
        """
        logits, _ = self._head(encoding)
        if len(sizes) != logits.shape[0]:
            raise ValueError(f"{len(sizes)} output sizes for an encoding of {logits.shape[0]} images")
        results = []
        for logit, size in zip(logits, sizes):
            logit = F.interpolate(logit[None], size=tuple(int(v) for v in size), mode="bilinear",
                                  align_corners=False)[0]
            results.append({"sem_seg": logit.sigmoid()})
        return results

    def _head(self, encoding: "ImageEncoding"):
        """The part that depends on the class names: (logits (B, T, 4h, 4w), refined features)."""
        return self.head(encoding.dense, self.text_embeddings(), encoding.taps)

    def _back_projection_target(self, encoding: "ImageEncoding") -> torch.Tensor:
        targets = encoding.training_targets
        if targets is None:
            raise RuntimeError("the back-projection target needs an encoding made in training mode")
        if self.back_projection_target == "SAM":
            return targets["sam"]
        if self.back_projection_target == "CLIP":
            return targets["clip_dense"][:, 0]
        return F.pixel_unshuffle(targets["clip_images"], self.clip_backbone.patch_size)  # "RGB": pixels of each patch


@dataclass
class ImageEncoding:
    """What :meth:`AerOSeg.encode_images` computes from a batch of images, for any vocabulary.

    ``dense``: (B, R, D, h, w) CLIP features of every rotation; ``taps``: the guidance maps
    (B, C_i, H_i, W_i). ``training_targets`` (training mode only): what the back-projection
    reconstructs. An inference encoding holds ``dense`` and ``taps`` only (:attr:`nbytes`).
    """

    dense: torch.Tensor
    taps: List[torch.Tensor]
    training_targets: Optional[Dict[str, torch.Tensor]] = None

    def __len__(self) -> int:
        return int(self.dense.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the encoding's tensors (shared storage counted once)."""
        tensors = [self.dense, *self.taps, *(self.training_targets or {}).values()]
        storages = {}
        for t in tensors:
            if t is not None:
                storage = t.untyped_storage()
                storages[(t.device, storage.data_ptr())] = storage.nbytes()
        return int(sum(storages.values()))


# Top-level modules of the head in checkpoints written before it became one module.
_LEGACY_HEAD_PREFIXES = ("correlation_embed.", "spatial_guidance_proj.", "text_guidance_proj.", "refinement.",
                         "decoder.", "back_projection.")


def _upgraded_key(key: str, prefix: str = "") -> str:
    local = key[len(prefix):]
    return f"{prefix}head.{local}" if key.startswith(prefix) and local.startswith(_LEGACY_HEAD_PREFIXES) else key


def _upgrade_state_dict_hook(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook: renames the legacy head keys in place (``prefix``: where the
    model sits in the module being loaded)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        new_key = _upgraded_key(key, prefix)
        if new_key != key:
            state_dict[new_key] = state_dict.pop(key)


def _initial_vocabulary(cfg) -> List[str]:
    """The seen classes of the first training dataset, else MODEL.AEROSEG.VOCABULARY."""
    from ..data.vocabulary import training_vocabulary  # here: modeling does not depend on data otherwise

    return training_vocabulary(cfg.DATASETS.TRAIN) or list(cfg.MODEL.AEROSEG.VOCABULARY)
