"""CLIP vision-language backbone (paper Sec. 3.1, "Vision-Language Backbone").

Wraps an open_clip ``CLIP`` model and provides:
  * dense, projected patch embeddings of an image and its rotations, rotated back (Eq. 1),
    by default as CAT-Seg computes them (the last block without token mixing, see
    :func:`value_dense_tokens`);
  * text embeddings of every class under every prompt template (Eq. 2);
  * the fine-tuning recipe of the paper (only attention q/v projections trainable).
"""
import copy
import functools
import logging
import os
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoint.state_dict_io import describe_mismatch, verify_checksum
from ...utils.errors import CheckpointError, ConfigError, one_line
from .qv_finetune import split_qkv_for_finetuning
from .rotation import multi_rotation_features, rotation_steps

SYNTHETIC_AERIAL_TAG = "synthetic_aerial"  # see clip_pretraining.py (which imports this module lazily)

__all__ = ["CLIPBackbone", "build_clip_model", "build_clip_backbone", "clip_tokenizer", "value_dense_tokens"]

logger = logging.getLogger(__name__)

_FINETUNE_MODES = ("none", "attention_qv", "full")
# "value": CAT-Seg's / OVRS's dense path (last block without attention mixing); "tokens": the
# ordinary last-block patch tokens.
DENSE_FEATURE_MODES = ("value", "tokens")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith(_CHECKPOINT_SUFFIXES) or os.path.exists(value)


def _deep_update(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_clip_model(
    name: str,
    pretrained: str = "",
    image_size: Optional[int] = None,
    arch_overrides: Optional[dict] = None,
    device: Optional[torch.device] = None,
) -> nn.Module:
    """Create an open_clip CLIP model and load its weights.

    Args:
        name: open_clip architecture, e.g. ``"ViT-B-16"``, ``"ViT-L-14"``.
        pretrained: an open_clip pretrained tag (e.g. ``"openai"``, downloaded by open_clip), a
            local checkpoint file (``torch.load(weights_only=True)`` or safetensors),
            ``"synthetic_aerial"`` (pretrained on this machine on synthetic aerial image-caption
            pairs, cached under ``$AEROSEG_DATASETS``: :mod:`.clip_pretraining`), or ``""`` for
            random initialisation.
        image_size: input side; the checkpoint's positional embedding is resized to it.
        arch_overrides: entries deep-merged into the architecture's open_clip model config
            (``{"vision_cfg": {"layers": 2}}``), e.g. for small test models.
        device: where to create the model (``torch.get_default_device()`` if None, which makes
            ``with torch.device("meta"):`` work for parameter counting).
    """
    import open_clip  # here, not at the top: importing it costs 2.5 s, and only model building needs it

    base_cfg = open_clip.get_model_config(name)
    if base_cfg is None:
        raise ConfigError(
            f"MODEL.CLIP.NAME={name!r} is not an open_clip architecture "
            f"(e.g. ViT-B-16, ViT-L-14; see open_clip.list_models())"
        )
    model_cfg = _deep_update(base_cfg, dict(arch_overrides or {}))
    if device is None:
        device = torch.get_default_device()
    kwargs = {k: model_cfg[k] for k in model_cfg if k not in ("custom_text",)}

    if pretrained == SYNTHETIC_AERIAL_TAG:
        # Made here (once, then cached) and loaded as a local open_clip checkpoint, like OpenAI's file.
        from .clip_pretraining import synthetic_aerial_clip

        pretrained = synthetic_aerial_clip(name, arch_overrides)
    tag_cfg = None
    if pretrained and not _looks_like_path(pretrained):
        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) or None
        if tag_cfg is None:
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ConfigError(
                f"MODEL.CLIP.PRETRAINED={pretrained!r} is neither an existing file nor an open_clip "
                f"tag of {name} (tags: {', '.join(tags) or 'none'})"
            )
        if tag_cfg.get("quick_gelu", False):
            kwargs["quick_gelu"] = True  # OpenAI weights were trained with QuickGELU
    if image_size is not None:
        kwargs["vision_cfg"] = dict(kwargs["vision_cfg"], image_size=int(image_size))

    if tag_cfg is not None:
        try:
            return open_clip.create_model(
                name, pretrained=pretrained, device=device, weights_only=True, **kwargs
            )
        except Exception as exc:  # download failures surface as RuntimeError / OSError
            raise CheckpointError(
                f"could not obtain open_clip weights {name}/{pretrained} ({one_line(exc, 160)}); "
                f"without internet, download them elsewhere and set MODEL.CLIP.PRETRAINED to the "
                f"local file (see MODEL_ZOO.md)"
            ) from None

    model = open_clip.create_model(name, pretrained=None, device=device, **kwargs)
    if pretrained:
        load_clip_checkpoint(model, pretrained, name)
    return model


def load_clip_checkpoint(model: nn.Module, path: str, arch: str) -> None:
    """Load a local open_clip / OpenAI-format checkpoint strictly, with one-line errors."""
    if not os.path.isfile(path):
        raise CheckpointError(f"CLIP checkpoint {path} does not exist (MODEL.CLIP.PRETRAINED)")
    import open_clip

    verify_checksum(path, "CLIP checkpoint")  # published SHA-256 of OpenAI's files
    try:
        open_clip.load_checkpoint(model, path, strict=True, weights_only=True, device="cpu")
    except Exception as exc:
        raise CheckpointError(
            f"CLIP checkpoint {path} does not fit open_clip architecture {arch} "
            f"(MODEL.CLIP.NAME / ARCH_OVERRIDES): {_describe_mismatch(model, path) or one_line(exc, 300)}"
        ) from None


def _describe_mismatch(model: nn.Module, path: str) -> str:
    """What differs between ``model`` and the weights in ``path``, in one short line ("" if unreadable)."""
    from open_clip.factory import load_state_dict

    try:
        state = load_state_dict(path, weights_only=True)
    except Exception:
        return ""
    # open_clip resizes the image tower's positional embedding to the model's input size.
    resized = "visual.positional_embedding"
    model_state = {k: v for k, v in model.state_dict().items() if k != resized}
    file_state = {k: v for k, v in state.items() if k != resized and isinstance(v, torch.Tensor)}
    return describe_mismatch(model_state, file_state) or ""


class CLIPBackbone(nn.Module):
    """Dense CLIP image features over rotations, and prompt-ensembled text embeddings.

    Args:
        clip_model: an open_clip ``CLIP`` with a ViT image tower.
        tokenizer: the open_clip tokenizer of that model.
        image_size: side S the image is resized to before the image tower.
        pixel_mean, pixel_std: normalisation on the 0..255 scale (3 values each).
        rotations: degrees, multiples of 90 (paper: 0, 90, 180, 270).
        batch_rotations: one forward over all rotations (True) or one per rotation.
        templates: prompt templates with one ``{}`` for the class name.
        guidance_layers: 0-based image-tower blocks whose outputs :meth:`forward` also returns
            (used only when CLIP features guide the head, the paper's Baseline).
        dense_features: ``"value"`` (CAT-Seg: :func:`value_dense_tokens`) or ``"tokens"`` (the
            ordinary output tokens of the last block), both through ``ln_post`` and ``proj``.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        tokenizer,
        *,
        image_size: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        rotations: Sequence[int] = (0, 90, 180, 270),
        batch_rotations: bool = True,
        templates: Sequence[str] = ("A photo of a {}.",),
        guidance_layers: Sequence[int] = (),
        dense_features: str = "value",
    ):
        super().__init__()
        if dense_features not in DENSE_FEATURE_MODES:
            raise ConfigError(
                f"MODEL.CLIP.DENSE_FEATURES={dense_features!r}: expected one of {DENSE_FEATURE_MODES}"
            )
        self.dense_features = dense_features
        self.clip = clip_model
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.rotations = tuple(int(r) for r in rotations)
        rotation_steps(self.rotations)  # validates
        self.batch_rotations = bool(batch_rotations)
        if not templates or any(t.count("{}") != 1 for t in templates):
            raise ConfigError(
                f"MODEL.CLIP.PROMPT_TEMPLATES={list(templates)!r}: expected a non-empty list of "
                f"templates, each with exactly one '{{}}' for the class name"
            )
        self.templates = tuple(templates)
        depth = len(self.clip.visual.transformer.resblocks)
        bad = [i for i in guidance_layers if not 0 <= int(i) < depth]
        if bad:
            raise ConfigError(
                f"MODEL.CLIP.GUIDANCE_LAYERS={list(guidance_layers)}: blocks {bad} do not exist "
                f"(the image tower has blocks 0..{depth - 1})"
            )
        self.guidance_layers = tuple(int(i) for i in guidance_layers)
        if dense_features == "value":
            _check_value_path_supported(self.clip.visual.transformer.resblocks[-1])
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), False)

    # ------------------------------------------------------------------ properties
    @property
    def patch_size(self) -> int:
        return int(self.clip.visual.patch_size[0])

    @property
    def grid_size(self) -> int:
        """Side h = w of the dense feature map."""
        return self.image_size // self.patch_size

    @property
    def embed_dim(self) -> int:
        """Dimension D of the joint image-text space."""
        return int(self.clip.visual.proj.shape[1])

    @property
    def width(self) -> int:
        """Channels of the image tower's intermediate tokens."""
        return int(self.clip.visual.transformer.width)

    @property
    def num_templates(self) -> int:
        return len(self.templates)

    @property
    def num_rotations(self) -> int:
        return len(self.rotations)

    # ------------------------------------------------------------------ image side
    def preprocess(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """List of (3, H, W) RGB images on the 0..255 scale -> normalized (B, 3, S, S)."""
        resized = [
            F.interpolate(
                img[None].float(), size=(self.image_size,) * 2, mode="bilinear",
                align_corners=False, antialias=img.shape[-1] > self.image_size,
            )
            for img in images
        ]
        x = torch.cat(resized, dim=0).to(self.pixel_mean.device)
        return (x - self.pixel_mean) / self.pixel_std

    def _dense_tokens(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(N, 3, S, S) -> [projected dense features (N, D, h, w), *guidance layers (N, W, h, w)]."""
        visual = self.clip.visual
        blocks = visual.transformer.resblocks
        last = len(blocks) - 1
        batch_first = getattr(visual.transformer, "batch_first", True)
        tokens = visual._embeds(x)  # (N, 1 + h*w, W), class token first
        tokens = tokens if batch_first else tokens.transpose(0, 1)
        taps: Dict[int, torch.Tensor] = {}
        for i, block in enumerate(blocks[:-1]):
            tokens = block(tokens)
            if i in self.guidance_layers:
                taps[i] = tokens
        if self.dense_features == "tokens" or last in self.guidance_layers:
            taps[last] = blocks[-1](tokens)
        if not batch_first:
            taps = {i: t.transpose(0, 1) for i, t in taps.items()}
            tokens = tokens.transpose(0, 1)
        if self.dense_features == "value":
            final = value_dense_tokens(blocks[-1], tokens)
        else:
            final = taps[last]
        # ln_post and proj, exactly what the pooled token goes through, so the dense features
        # live in the text embedding space.
        dense = visual.ln_post(final[:, 1:]) @ visual.proj
        n, length, _ = dense.shape
        side = int(round(length ** 0.5))

        def to_map(t: torch.Tensor) -> torch.Tensor:
            return t.transpose(1, 2).reshape(n, t.shape[-1], side, side)

        return [to_map(dense)] + [to_map(taps[i][:, 1:]) for i in self.guidance_layers]

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Dense features of every rotation, aligned with the unrotated image.

        Args:
            images: (B, 3, S, S), normalized by :meth:`preprocess`.
        Returns:
            ``{"dense": (B, R, D, h, w), "intermediates": [(B, R, W, h, w), ...]}``
        """
        outs = multi_rotation_features(
            self._dense_tokens, images, self.rotations, batched=self.batch_rotations
        )
        return {"dense": outs[0], "intermediates": outs[1:]}

    # ------------------------------------------------------------------ text side
    def encode_text(self, class_names: Sequence[str]) -> torch.Tensor:
        """Text embeddings of every class under every template (Eq. 2).

        Returns:
            (T, P, D), L2-normalized along D.
        """
        prompts = [t.format(name) for name in class_names for t in self.templates]
        context_length = getattr(self.clip, "context_length", 77)
        tokens = self.tokenizer(prompts, context_length=context_length)
        tokens = tokens.to(self.pixel_mean.device)
        emb = self.clip.encode_text(tokens, normalize=True)
        return emb.view(len(class_names), len(self.templates), -1)


def value_dense_tokens(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CAT-Seg's dense pass through a transformer block, without token mixing.

    Every token skips attention: its value projection goes through the output projection, the
    block input's class token is the residual, then the block's MLP residual follows:
    ``y_i = out_proj(W_v ln_1(x_i) + b_v) + x_cls``, ``z_i = y_i + mlp(ln_2(y_i))``. This is
    ``forward_dense`` of CAT-Seg's ``model_vpt.py`` (also used by OVRS) on open_clip's modules.
    W_q, W_k (and their biases) of this block therefore get no gradient.

    Args:
        block: an open_clip ``ResidualAttentionBlock`` (``nn.MultiheadAttention`` inside).
        x: (N, 1 + L, W) block input, batch first, class token first.
    Returns:
        (N, 1 + L, W) output tokens (the class token goes through the same computation).
    """
    attn = block.attn
    width = x.shape[-1]
    # The packed (possibly re-parametrized) in-projection: rows [2W, 3W) are W_v.
    w_v = attn.in_proj_weight[2 * width:]
    b_v = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
    values = F.linear(block.ln_1(x), w_v, b_v)
    y = block.ls_1(attn.out_proj(values)) + x[:, :1]
    return y + block.ls_2(block.mlp(block.ln_2(y)))


def _check_value_path_supported(block: nn.Module) -> None:
    attn = getattr(block, "attn", None)
    needed = ("ln_1", "ln_2", "mlp", "ls_1", "ls_2")
    if (not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim
            or not all(hasattr(block, n) for n in needed)):
        raise ConfigError(
            f"MODEL.CLIP.DENSE_FEATURES='value' needs open_clip's standard ResidualAttentionBlock with "
            f"nn.MultiheadAttention in the image tower, got {type(block).__name__}; use 'tokens'"
        )


def _configure_finetuning(clip_model: nn.Module, mode: str, dense_features: str = "value") -> None:
    """Set requires_grad of the CLIP model for ``mode`` (see MODEL.CLIP.FINETUNE).

    The packed attention projections are always split into q/k/v so the state-dict layout does
    not depend on the fine-tuning mode (a model trained with q/v tuning loads into a frozen one).
    ``"attention_qv"`` trains the q and v projection weights (not the packed biases), as the
    paper and CAT-Seg. With ``dense_features="value"`` the image tower's last W_q cannot affect
    the output (:func:`value_dense_tokens`), so it is frozen too: DDP (without
    ``find_unused_parameters``) would otherwise fail on a parameter that never gets a gradient.
    """
    if mode not in _FINETUNE_MODES:
        raise ConfigError(f"MODEL.CLIP.FINETUNE={mode!r}: expected one of {_FINETUNE_MODES}")
    clip_model.requires_grad_(mode == "full")
    trainable = {"none": (), "attention_qv": ("q", "v"), "full": ("q", "k", "v")}[mode]
    split_qkv_for_finetuning(clip_model, trainable=trainable, train_biases=mode == "full")
    if mode == "attention_qv" and dense_features == "value":
        last_attn = clip_model.visual.transformer.resblocks[-1].attn
        last_attn.parametrizations.in_proj_weight.original0.requires_grad_(False)  # W_q


def build_clip_backbone(cfg, guidance_layers: Sequence[int] = ()) -> CLIPBackbone:
    """Build the backbone described by ``cfg.MODEL.CLIP``."""
    c = cfg.MODEL.CLIP
    if c.ROTATION_BATCHING not in ("batched", "sequential"):
        raise ConfigError(
            f"MODEL.CLIP.ROTATION_BATCHING={c.ROTATION_BATCHING!r}: expected 'batched' or 'sequential'"
        )
    try:
        rotation_steps(c.ROTATIONS)
    except ValueError as exc:
        raise ConfigError(f"MODEL.CLIP.ROTATIONS={list(c.ROTATIONS)}: {exc}") from None
    overrides = _to_dict(c.ARCH_OVERRIDES)
    clip_model = build_clip_model(c.NAME, c.PRETRAINED, c.IMAGE_SIZE, overrides)
    _configure_finetuning(clip_model, c.FINETUNE, c.DENSE_FEATURES)
    tokenizer = clip_tokenizer(c.NAME)
    backbone = CLIPBackbone(
        clip_model,
        tokenizer,
        image_size=c.IMAGE_SIZE,
        pixel_mean=c.PIXEL_MEAN,
        pixel_std=c.PIXEL_STD,
        rotations=c.ROTATIONS,
        batch_rotations=c.ROTATION_BATCHING == "batched",
        templates=c.PROMPT_TEMPLATES,
        guidance_layers=guidance_layers,
        dense_features=c.DENSE_FEATURES,
    )
    if c.IMAGE_SIZE % backbone.patch_size != 0:
        raise ConfigError(
            f"MODEL.CLIP.IMAGE_SIZE={c.IMAGE_SIZE} is not a multiple of the patch size "
            f"{backbone.patch_size} of {c.NAME}"
        )
    return backbone


@functools.lru_cache(maxsize=None)
def clip_tokenizer(name: str):
    """open_clip's tokenizer of architecture ``name``, built once per process.

    Building it reads and parses the BPE vocabulary (0.2 s, most of the time of building a small
    model); it holds no per-model state, so every backbone of the same architecture shares it.
    """
    import open_clip

    return open_clip.get_tokenizer(name)


def _to_dict(node) -> dict:
    """CfgNode (possibly nested) -> plain dict."""
    return {k: _to_dict(v) if isinstance(v, dict) else v for k, v in dict(node).items()}
