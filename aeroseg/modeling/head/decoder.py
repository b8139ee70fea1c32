"""Attention-aware upsampling decoder (paper Eqs. 8-11, following OVRS's ``Up``)."""
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.errors import ConfigError

__all__ = ["AttentionAwareUpsampling", "AttentionAwareUpsamplingDecoder", "DECODER_ATTENTION_ACTIVATIONS",
           "resize_feature_map"]

DECODER_ATTENTION_ACTIVATIONS = ("none", "sigmoid")


class AttentionAwareUpsampling(nn.Module):
    """One x2 stage: upsample class features, modulate the guidance with attention, fuse.

    1. phi'_2x = ConvTranspose2x2(phi)              per class, (B*T, in_dim - C_g, 2h, 2w)
    2. m = mean over classes of phi'_2x             (B, in_dim - C_g, 2h, 2w)
    3. A_ch = conv1x1(spatial mean of m)            Eq. 8, (B, C_g, 1, 1)
       A_sp = conv1x1(channel mean of m)            Eq. 9, (B, 1, 2h, 2w)
       (used directly as weights, as the paper and OVRS; ``attention_activation="sigmoid"``
       squashes them to (0, 1))
    4. g = up(P(F_g), 2); g' = A_ch * g + A_sp * g + g   Eq. 10; F_g resized to h x w,
       P = conv3x3 + ReLU (the reference's decoder guidance projection; applied before the
       nearest x2 upsampling, 4x cheaper than after), up = nearest x2
    5. out = DoubleConv([phi'_2x, g'])             Eq. 11; DoubleConv = (conv3x3 + GN + ReLU) x 2
       without conv biases, GN with C_out // 16 groups (OVRS/CAT-Seg ``Up``)

    The transposed conv outputs ``in_dim - guidance_dim`` channels so that the concatenation has
    ``in_dim`` (as the reference ``Up``). g' is the same for every class: the first conv's
    guidance half is applied once per image and broadcast over the classes (the conv has no
    bias, so this equals convolving the concatenation).

    Args:
        in_dim: channels of the incoming class features.
        out_dim: channels after this stage.
        guidance_in_dim: channels of the raw guidance feature map.
        guidance_dim: C_g, channels it is projected to (< in_dim).
        attention_activation: "none" (paper, OVRS) or "sigmoid".

    ``forward(x, guidance)``: x (B, T, in_dim, h, w), guidance (B, guidance_in_dim, H_g, W_g)
    -> (B, T, out_dim, 2h, 2w). :meth:`fuse` is the reference ``Up`` on projected guidance.
    """

    def __init__(self, in_dim: int, out_dim: int, guidance_in_dim: int, guidance_dim: int,
                 attention_activation: str = "none"):
        super().__init__()
        if not 0 < guidance_dim < in_dim:
            raise ConfigError(
                f"MODEL.AEROSEG.DECODER_GUIDANCE_DIMS: {guidance_dim} guidance channels for a stage with "
                f"{in_dim} input channels; expected 0 < guidance channels < input channels (FEATURE_DIM, "
                f"then the previous DECODER_DIMS entry)"
            )
        if attention_activation not in DECODER_ATTENTION_ACTIVATIONS:
            raise ConfigError(f"MODEL.AEROSEG.DECODER_ATTENTION_ACTIVATION={attention_activation!r}: expected "
                              f"one of {DECODER_ATTENTION_ACTIVATIONS}")
        up_dim = in_dim - guidance_dim
        self.attention_activation = attention_activation
        self.upsample = nn.ConvTranspose2d(in_dim, up_dim, kernel_size=2, stride=2)
        self.guidance_proj = nn.Sequential(nn.Conv2d(guidance_in_dim, guidance_dim, 3, padding=1), nn.ReLU())
        self.channel_attention = nn.Conv2d(up_dim, guidance_dim, 1)
        self.spatial_attention = nn.Conv2d(1, 1, 1)
        groups = _groups(out_dim)
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, out_dim)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, out_dim)

    def fuse(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """Steps 1-3, 5 and Eq. 10's modulation on projected guidance.

        x (B*T, in_dim, h, w) class features, guidance (B, C_g, 2h, 2w) projected guidance ->
        (B*T, out_dim, 2h, 2w).
        """
        # Channels-last throughout: oneDNN's convolutions run 1.6-3x faster on NHWC than on NCHW
        # here (docs/PERFORMANCE.md); the refinement blocks already hand over NHWC features.
        up = self.upsample(x.contiguous(memory_format=torch.channels_last))
        guidance = guidance.contiguous(memory_format=torch.channels_last)
        b = guidance.shape[0]
        mean_over_classes = _mean_over_classes(up, b)
        a_ch = self.channel_attention(mean_over_classes.mean(dim=(2, 3), keepdim=True))
        a_sp = self.spatial_attention(mean_over_classes.mean(dim=1, keepdim=True))
        if self.attention_activation == "sigmoid":
            a_ch, a_sp = torch.sigmoid(a_ch), torch.sigmoid(a_sp)
        g = a_ch * guidance + a_sp * guidance + guidance  # (B, C_g, 2h, 2w)
        up_dim = up.shape[1]
        y = F.conv2d(up, self.conv1.weight[:, :up_dim], padding=1)
        y_g = F.conv2d(g, self.conv1.weight[:, up_dim:], padding=1)
        y.view(b, -1, *y.shape[1:]).add_(y_g.unsqueeze(1))  # in place: keeps y's channels-last layout
        y = F.relu(self.norm1(y), inplace=True)
        return F.relu(self.norm2(self.conv2(y)), inplace=True)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        b, t, _, h, w = x.shape
        g = self.guidance_proj(resize_feature_map(guidance, (h, w)).contiguous(memory_format=torch.channels_last))
        out = self.fuse(x.flatten(0, 1), F.interpolate(g, scale_factor=2.0, mode="nearest"))
        return out.view(b, t, *out.shape[1:])


class AttentionAwareUpsamplingDecoder(nn.Module):
    """Stacked :class:`AttentionAwareUpsampling` stages, then a conv3x3 to one logit per class.

    Args:
        in_dim: d_F.
        dims: output channels of each stage (CAT-Seg/OVRS: 64, 32).
        guidance_in_dims: raw channels of each stage's guidance.
        guidance_dims: projected guidance channels of each stage (CAT-Seg/OVRS: 32, 16).
        attention_activation: see :class:`AttentionAwareUpsampling`.

    ``forward(x, guidances)``: x (B, T, d_F, h, w), one guidance map per stage ->
    logits (B, T, h * 2^S, w * 2^S). Bilinear upsampling to the label size is left to the caller.
    """

    def __init__(self, in_dim: int, dims: Sequence[int], guidance_in_dims: Sequence[int],
                 guidance_dims: Sequence[int], attention_activation: str = "none"):
        super().__init__()
        if not (len(dims) == len(guidance_in_dims) == len(guidance_dims)):
            raise ValueError("decoder dims, guidance channels and guidance dims need one entry per stage")
        stages, prev = [], in_dim
        for out_dim, g_in, g_dim in zip(dims, guidance_in_dims, guidance_dims):
            stages.append(AttentionAwareUpsampling(prev, out_dim, g_in, g_dim, attention_activation))
            prev = out_dim
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(prev, 1, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, guidances: List[torch.Tensor]) -> torch.Tensor:
        for stage, guidance in zip(self.stages, guidances):
            x = stage(x, guidance)
        b, t = x.shape[:2]
        return self.head(x.flatten(0, 1)).view(b, t, *x.shape[-2:])


def _mean_over_classes(x: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*T, C, H, W) -> (B, C, H, W), the mean over each image's T class maps.

    Reduced as (B, T, H*W*C) rows of channels-last memory: the same mean taken over the strided
    class axis of a (B, T, C, H, W) view measured 9x slower.
    """
    n, c, h, w = x.shape
    flat = x.permute(0, 2, 3, 1).reshape(batch, n // batch, h * w * c)
    return flat.mean(dim=1).view(batch, h, w, c).permute(0, 3, 1, 2)


def _groups(channels: int) -> int:
    """GroupNorm groups: channels // 16 as the reference DoubleConv, at least 1, dividing channels."""
    groups = max(1, channels // 16)
    while channels % groups:
        groups -= 1
    return groups


def resize_feature_map(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of (B, C, H, W) maps to ``size``, antialiased when it shrinks them.

    Shrinking runs on NCHW memory: PyTorch's antialiased kernel measured 1.5-4x slower on
    channels-last input (the layout SAM's taps arrive in), more than the copy costs.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    downsample = x.shape[-1] > size[-1]
    if downsample:
        x = x.contiguous()
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=downsample)
