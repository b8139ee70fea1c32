"""SAM 2 / SAM 2.1 Hiera trunk as the guidance encoder (paper Table 6).

Builds the ``sam2`` package's Hiera trunk (``sam2.modeling.backbones.hieradet.Hiera``, the image
encoder's backbone without its FPN neck) and returns the outputs of selected trunk blocks, as
:class:`~aeroseg.modeling.guidance.sam_encoder.SAMGuidanceEncoder` does for SAM's ViT. By default
the taps sit at 1/3, 2/3 and 3/3 of the trunk depth, the depths of SAM ViT-L's blocks 8/16/24 of
24 (Hiera-B+, 24 blocks: 8, 16, 24).

Unlike a ViT, Hiera is hierarchical: every stage after the first halves the resolution and
doubles the channels, so taps in different stages differ in size and width (Hiera-B+ at 1024 px:
blocks 8 and 16 are in stage 3, 448 channels at 64x64; block 24 ends stage 4, 896 at 32x32).

SAM 2 and SAM 2.1 share the trunk architecture (their ``configs/sam2`` and ``configs/sam2.1``
YAMLs have the same trunk entries); only the weights (``MODEL.SAM2.CHECKPOINT``) differ.

``sam2`` is an optional dependency: it is imported only when a trunk is built.
"""
import math
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ...checkpoint.state_dict_io import describe_mismatch, read_state_dict
from ...utils.errors import CheckpointError, ConfigError, one_line
from .base import ImageGuidanceEncoder, run_blocks_with_taps, validate_taps

__all__ = ["SAM2_VARIANTS", "SAM2GuidanceEncoder", "build_hiera_trunk", "default_tap_blocks",
           "load_sam2_checkpoint"]

# Hiera trunks of the released SAM 2 / 2.1 models (sam2/configs/sam2{,.1}/sam2*_hiera_*.yaml; the
# b+ YAMLs rely on Hiera's defaults, written out here). global_att_blocks are 0-based block indices
# (sam2's convention), unlike MODEL.SAM2.TAP_BLOCKS which counts blocks from 1.
_HIERA_COMMON = dict(q_pool=3, q_stride=(2, 2), dim_mul=2.0, head_mul=2.0, drop_path_rate=0.0,
                     window_spec=(8, 4, 14, 7))
SAM2_VARIANTS: Dict[str, dict] = {
    "hiera_t": dict(_HIERA_COMMON, embed_dim=96, num_heads=1, stages=(1, 2, 7, 2),
                    global_att_blocks=(5, 7, 9), window_pos_embed_bkg_spatial_size=(7, 7)),
    "hiera_s": dict(_HIERA_COMMON, embed_dim=96, num_heads=1, stages=(1, 2, 11, 2),
                    global_att_blocks=(7, 10, 13), window_pos_embed_bkg_spatial_size=(7, 7)),
    "hiera_b+": dict(_HIERA_COMMON, embed_dim=112, num_heads=2, stages=(2, 3, 16, 3),
                     global_att_blocks=(12, 16, 20), window_pos_embed_bkg_spatial_size=(14, 14)),
    "hiera_l": dict(_HIERA_COMMON, embed_dim=144, num_heads=2, stages=(2, 6, 36, 4),
                    global_att_blocks=(23, 33, 43), window_pos_embed_bkg_spatial_size=(7, 7),
                    window_spec=(8, 4, 16, 8)),
}
_TUPLE_ARGS = ("q_stride", "stages", "global_att_blocks", "window_pos_embed_bkg_spatial_size", "window_spec")

INSTALL_HINT = "pip install sam2 (SAM2_BUILD_CUDA=0 skips its optional CUDA extension)"


class _LinspaceOnCPU(TorchFunctionMode):
    """Runs ``torch.linspace`` on the CPU.

    ``Hiera.__init__`` reads its stochastic-depth rates with ``torch.linspace(...)[i].item()``,
    which fails on the meta device; the rates are plain floats, so computing them on the CPU
    lets the trunk be built under ``with torch.device("meta")`` (parameter counts, no memory).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.linspace:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def build_hiera_trunk(variant: str, overrides: Optional[dict] = None) -> nn.Module:
    """sam2's Hiera trunk of ``variant`` (a key of :data:`SAM2_VARIANTS`), random init.

    ``overrides`` replace entries of the variant (e.g. a tiny test trunk); allowed keys are
    Hiera's architecture arguments listed in :data:`SAM2_VARIANTS`.
    """
    if variant not in SAM2_VARIANTS:
        raise ConfigError(f"MODEL.SAM2.VARIANT={variant!r}: expected one of {sorted(SAM2_VARIANTS)}")
    args = dict(SAM2_VARIANTS[variant])
    unknown = sorted(set(overrides or {}) - set(args))
    if unknown:
        raise ConfigError(
            f"MODEL.SAM2.ARCH_OVERRIDES has unknown Hiera arguments {unknown}: expected some of {sorted(args)}"
        )
    args.update(overrides or {})
    for key in _TUPLE_ARGS:
        args[key] = tuple(int(v) for v in args[key])
    stages = args["stages"]
    if len(stages) != len(args["window_spec"]) or not 0 <= int(args["q_pool"]) < len(stages):
        raise ConfigError(
            f"MODEL.SAM2.ARCH_OVERRIDES: stages {list(stages)} need one window_spec entry per stage "
            f"(got {list(args['window_spec'])}) and 0 <= q_pool < {len(stages)} (got {args['q_pool']})"
        )
    bad = [b for b in args["global_att_blocks"] if not 0 <= b < sum(stages)]
    if bad:
        raise ConfigError(
            f"MODEL.SAM2.ARCH_OVERRIDES: global_att_blocks {bad} are not 0-based block indices "
            f"in 0..{sum(stages) - 1}"
        )
    try:
        from sam2.modeling.backbones.hieradet import Hiera
    except ImportError as exc:
        raise ConfigError(
            f"MODEL.GUIDANCE.ENCODER='SAM2' needs the sam2 package ({one_line(exc, 120)}): {INSTALL_HINT}"
        ) from None
    with _LinspaceOnCPU():
        return Hiera(**args)


def default_tap_blocks(depth: int) -> List[int]:
    """1-based blocks at 1/3, 2/3 and 3/3 of ``depth`` (24 blocks: 8, 16, 24, as SAM ViT-L's)."""
    taps = [max(1, round(depth * k / 3)) for k in (1, 2, 3)]
    return sorted(set(taps))


def load_sam2_checkpoint(trunk: nn.Module, path: str, variant: str = "") -> None:
    """Load the Hiera trunk's weights from a SAM 2 / SAM 2.1 checkpoint into ``trunk``.

    Accepts a released file (``{"model": state_dict}`` of the whole SAM 2 model, trunk keys
    ``image_encoder.trunk.*``; the rest is ignored), an image-encoder state dict (``trunk.*``)
    or a trunk-only state dict, as ``.pt``/``.pth`` or ``.safetensors``. Hiera resizes its
    positional embedding to the input at run time, so no weight depends on the input size.

    Uses ``torch.load(weights_only=True)``; a missing file, unreadable file, missing/unexpected
    key or shape mismatch raises :class:`CheckpointError` with one line.
    """
    state = read_state_dict(path, "SAM 2 checkpoint", "MODEL.SAM2.CHECKPOINT")
    for prefix in ("image_encoder.trunk.", "trunk."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    target = trunk.state_dict()
    name = f"the Hiera trunk {variant!r}" if variant else "the Hiera trunk"
    if not set(state) & set(target):
        raise CheckpointError(
            f"SAM 2 checkpoint {path} holds no Hiera trunk weights (expected 'image_encoder.trunk.*' keys "
            f"or a trunk state dict, found e.g. {sorted(state)[0]!r})"
        )
    problems = describe_mismatch(target, state)
    if problems:
        raise CheckpointError(f"SAM 2 checkpoint {path} does not match {name}: {problems}")
    trunk.load_state_dict(state, strict=True)


class SAM2GuidanceEncoder(ImageGuidanceEncoder):
    encoder_attr = "trunk"

    """Frozen (by default) SAM 2 Hiera trunk returning the outputs of selected blocks.

    Args:
        trunk: sam2 ``Hiera`` (see :func:`build_hiera_trunk`).
        tap_blocks: 1-based trunk blocks whose outputs are returned, in this order; None = 1/3,
            2/3 and 3/3 of the depth (:func:`default_tap_blocks`).
        frozen: no gradients and always eval mode (paper); False lets it be fine-tuned.
        pixel_mean, pixel_std: SAM 2's normalisation on the 0..255 scale (ImageNet statistics).
        input_size: side of the square the images are resized to (SAM 2: 1024).

    ``forward(images)`` takes a list of (3, H, W) RGB images (0..255) and returns
    ``{"taps": [...], "target": taps[-1]}``, tap i of shape (B, channels[i], S / strides[i],
    S / strides[i]) with S = ``input_size``.
    """

    def __init__(
        self,
        trunk: nn.Module,
        *,
        tap_blocks: Optional[Sequence[int]] = None,
        frozen: bool = True,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        input_size: int = 1024,
    ):
        super().__init__(input_size=input_size, pixel_mean=pixel_mean, pixel_std=pixel_std, frozen=frozen)
        depth = len(trunk.blocks)
        if tap_blocks is None or len(tap_blocks) == 0:
            tap_blocks = default_tap_blocks(depth)
        self.tap_blocks = validate_taps(tap_blocks, depth, "MODEL.SAM2.TAP_BLOCKS")
        self.trunk = trunk
        # The tokens must tile by the first-stage window (positional embedding) and halve evenly
        # at every pooling stage.
        patch = int(trunk.patch_embed.proj.stride[0])
        pooled = 1
        for block in trunk.blocks:
            if block.q_stride:
                pooled *= int(block.q_stride[0])
        unit = math.lcm(patch * int(trunk.window_spec[0]), patch * pooled)
        if self.input_size <= 0 or self.input_size % unit:
            raise ConfigError(
                f"MODEL.SAM2.INPUT_SIZE={input_size} is not a positive multiple of {unit} (Hiera: patch "
                f"stride {patch} x first window {trunk.window_spec[0]} and x total pooling {pooled})"
            )
        self._apply_freezing()

    @property
    def channels(self) -> List[int]:
        """Channels of each tap, in ``tap_blocks`` order."""
        return [int(self.trunk.blocks[t - 1].dim_out) for t in self.tap_blocks]

    @property
    def strides(self) -> List[int]:
        """Downsampling factor of each tap relative to the (resized) input, in ``tap_blocks`` order."""
        out = []
        for t in self.tap_blocks:
            stride = int(self.trunk.patch_embed.proj.stride[0])
            for block in self.trunk.blocks[:t]:
                if block.q_stride:
                    stride *= int(block.q_stride[0])
            out.append(stride)
        return out

    def forward(self, images: Sequence[torch.Tensor], clip_features=None) -> Dict[str, object]:
        with self.grad_context():
            x = self.trunk.patch_embed(self.preprocess(images))  # (B, S/4, S/4, C)
            x = x + self.trunk._get_pos_embed(x.shape[1:3])  # resized to the token grid by Hiera
            taps = run_blocks_with_taps(self.trunk.blocks, x, self.tap_blocks)
        return {"taps": taps, "target": taps[-1]}

    @classmethod
    def build_from_config(cls, cfg) -> "SAM2GuidanceEncoder":
        """The trunk ``cfg.MODEL.SAM2`` describes, with its checkpoint loaded (an instance)."""
        s = cfg.MODEL.SAM2
        overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(s.ARCH_OVERRIDES).items()}
        guidance = cls(
            build_hiera_trunk(s.VARIANT, overrides),
            tap_blocks=list(s.TAP_BLOCKS) or None,
            frozen=s.FROZEN,
            pixel_mean=s.PIXEL_MEAN,
            pixel_std=s.PIXEL_STD,
            input_size=s.INPUT_SIZE,
        )
        if s.CHECKPOINT:
            load_sam2_checkpoint(guidance.trunk, s.CHECKPOINT, s.VARIANT)
        return guidance
