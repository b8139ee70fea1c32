"""Attention-aware upsampling decoder (paper Eqs. 8-11, following OVRS)."""
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AttentionAwareUpsampling", "AttentionAwareUpsamplingDecoder"]


class AttentionAwareUpsampling(nn.Module):
    """One x2 stage: upsample class features, modulate guidance with attention, fuse.

    1. phi'_2x = ConvTranspose(phi)                 per class, (B*T, C_out, 2h, 2w)
    2. m = mean over classes of phi'_2x             (B, C_out, 2h, 2w)
    3. A_ch = sigmoid(conv1x1(spatial mean of m))   channel attention, (B, C_g, 1, 1)
       A_sp = sigmoid(conv1x1(channel mean of m))   spatial attention, (B, 1, 2h, 2w)
    4. g = up(P(F_g), 2); g' = A_ch * g + A_sp * g + g   (Eq. 10)
    5. out = conv([phi'_2x, g'])                    (Eq. 11), g' shared by all classes

    Args:
        in_dim: channels of the incoming class features.
        out_dim: channels after this stage.
        guidance_in_dim: channels of the raw guidance feature map.
        guidance_dim: channels it is projected to.

    ``forward(x, guidance)``: x (B, T, in_dim, h, w), guidance (B, guidance_in_dim, H_g, W_g)
    (resized to h x w before projection) -> (B, T, out_dim, 2h, 2w).
    """

    def __init__(self, in_dim: int, out_dim: int, guidance_in_dim: int, guidance_dim: int):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_dim, out_dim, kernel_size=2, stride=2)
        self.guidance_proj = nn.Sequential(nn.Conv2d(guidance_in_dim, guidance_dim, 1), nn.ReLU())
        self.channel_attention = nn.Conv2d(out_dim, guidance_dim, 1)
        self.spatial_attention = nn.Conv2d(1, 1, 1)
        self.fuse = nn.Sequential(
            nn.Conv2d(out_dim + guidance_dim, out_dim, 3, padding=1),
            nn.GroupNorm(_groups(out_dim), out_dim),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        b, t, _, h, w = x.shape
        up = self.upsample(x.flatten(0, 1))  # (B*T, C_out, 2h, 2w)
        mean_over_classes = up.view(b, t, *up.shape[1:]).mean(dim=1)
        a_ch = torch.sigmoid(self.channel_attention(mean_over_classes.mean(dim=(2, 3), keepdim=True)))
        a_sp = torch.sigmoid(self.spatial_attention(mean_over_classes.mean(dim=1, keepdim=True)))
        g = _resize(guidance, (h, w))
        g = F.interpolate(self.guidance_proj(g), scale_factor=2.0, mode="nearest")
        g = a_ch * g + a_sp * g + g  # (B, C_g, 2h, 2w)
        g = g.unsqueeze(1).expand(b, t, *g.shape[1:]).flatten(0, 1)
        out = self.fuse(torch.cat([up, g], dim=1))
        return out.view(b, t, *out.shape[1:])


class AttentionAwareUpsamplingDecoder(nn.Module):
    """Stacked :class:`AttentionAwareUpsampling` stages, then a conv to one logit per class.

    Args:
        in_dim: d_F.
        dims: output channels of each stage (paper: two stages, 24 -> 48 -> 96).
        guidance_in_dims: raw channels of each stage's guidance.
        guidance_dims: projected guidance channels of each stage.

    ``forward(x, guidances)``: x (B, T, d_F, h, w), one guidance map per stage ->
    logits (B, T, h * 2^S, w * 2^S). Bilinear upsampling to the label size is left to the caller.
    """

    def __init__(self, in_dim: int, dims: Sequence[int], guidance_in_dims: Sequence[int],
                 guidance_dims: Sequence[int]):
        super().__init__()
        if not (len(dims) == len(guidance_in_dims) == len(guidance_dims)):
            raise ValueError("decoder dims, guidance channels and guidance dims need one entry per stage")
        stages, prev = [], in_dim
        for out_dim, g_in, g_dim in zip(dims, guidance_in_dims, guidance_dims):
            stages.append(AttentionAwareUpsampling(prev, out_dim, g_in, g_dim))
            prev = out_dim
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(prev, 1, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, guidances: List[torch.Tensor]) -> torch.Tensor:
        for stage, guidance in zip(self.stages, guidances):
            x = stage(x, guidance)
        b, t = x.shape[:2]
        return self.head(x.flatten(0, 1)).view(b, t, *x.shape[-2:])


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0 and channels // g >= 2:
            return g
    return 1


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    downsample = x.shape[-1] > size[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=downsample)
