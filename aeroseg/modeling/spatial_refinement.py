"""Spatial refinement block: guided Swin W-MSA + SW-MSA applied per class (paper Eq. 5).

Each class's correlation map is refined independently (classes are folded into the batch).
Queries and keys see the correlation features concatenated with the projected guidance
features (SAM F3 in the paper); values come from the correlation features only.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = [
    "GuidedWindowAttention",
    "GuidedSwinBlock",
    "SpatialRefinementBlock",
    "relative_position_index",
    "shifted_window_mask",
]


def relative_position_index(window_size: int) -> torch.Tensor:
    """(L, L) index into a ((2w-1)^2)-entry bias table, L = w*w (Swin's relative position bias)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)  # (2, L)
    rel = coords[:, :, None] - coords[:, None, :] + (window_size - 1)  # (2, L, L), each in [0, 2w-2]
    return rel[0] * (2 * window_size - 1) + rel[1]


def shifted_window_mask(height: int, width: int, window_size: int, shift: int, device=None) -> torch.Tensor:
    """Additive mask (num_windows, L, L): -inf between tokens that the cyclic shift made neighbours.

    After rolling the map by ``-shift``, the windows along the bottom/right border contain tokens
    from opposite sides of the image; they are labelled by region and may only attend within
    their own region.
    """
    region = torch.zeros(height, width, dtype=torch.long, device=device)
    bounds = (slice(0, -window_size), slice(-window_size, -shift), slice(-shift, None))
    label = 0
    for hs in bounds:
        for ws in bounds:
            region[hs, ws] = label
            label += 1
    windows = rearrange(region, "(h p) (w q) -> (h w) (p q)", p=window_size, q=window_size)
    same = windows[:, :, None] == windows[:, None, :]
    mask = torch.zeros(same.shape, device=device)
    return mask.masked_fill(~same, float("-inf"))


class GuidedWindowAttention(nn.Module):
    """Window multi-head attention with guidance in the queries and keys.

    Args:
        dim: C, channels of the correlation features (values and output).
        guidance_dim: C_g, channels of the guidance features concatenated to q/k inputs.
        num_heads: attention heads (C divisible by it).
        window_size: w, tokens per window side (relative position bias of (2w-1)^2 entries).

    ``forward(x, g, mask)`` with x (N, nW, L, C), g (N, nW, L, C_g), mask (nW, L, L) or None,
    L = w*w, returns (N, nW, L, C).
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, window_size: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.window_size = window_size
        self.qk = nn.Linear(dim + guidance_dim, 2 * dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)

    def forward(self, x: torch.Tensor, g: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        q, k = self.qk(torch.cat([x, g], dim=-1)).chunk(2, dim=-1)
        split = lambda t: rearrange(t, "n w l (h d) -> n w h l d", h=self.num_heads)  # noqa: E731
        q, k, v = split(q), split(k), split(self.v(x))
        length = x.shape[-2]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(length, length, self.num_heads).permute(2, 0, 1)  # (heads, L, L)
        attn_mask = bias.unsqueeze(0) if mask is None else bias.unsqueeze(0) + mask.unsqueeze(1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype))
        return self.proj(rearrange(out, "n w h l d -> n w l (h d)"))


class GuidedSwinBlock(nn.Module):
    """One Swin transformer block (pre-norm attention + MLP) with guided (shifted) windows.

    ``forward(x, g)``: x (N, H, W, C), g (N, H, W, C_g) -> (N, H, W, C).
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, window_size: int,
                 shift_size: int = 0, mlp_ratio: float = 4.0):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GuidedWindowAttention(dim, guidance_dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        n, height, width, _ = x.shape
        ws, shift = self.window_size, self.shift_size
        if min(height, width) <= ws:  # the whole map fits in one window: no shifting (as in Swin)
            ws, shift = min(height, width), 0
        if ws != self.window_size:
            raise ValueError(
                f"feature map {height}x{width} is smaller than the Swin window {self.window_size}; "
                f"lower MODEL.AEROSEG.WINDOW_SIZE"
            )
        shortcut = x
        x = self.norm1(x)
        pad_h, pad_w = (-height) % ws, (-width) % ws
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
            g = F.pad(g, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = height + pad_h, width + pad_w
        mask = None
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            g = torch.roll(g, shifts=(-shift, -shift), dims=(1, 2))
            mask = shifted_window_mask(hp, wp, ws, shift, device=x.device)
        to_windows = lambda t: rearrange(t, "n (h p) (w q) c -> n (h w) (p q) c", p=ws, q=ws)  # noqa: E731
        out = self.attn(to_windows(x), to_windows(g), mask)
        out = rearrange(out, "n (h w) (p q) c -> n (h p) (w q) c", h=hp // ws, p=ws)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        x = shortcut + out[:, :height, :width]
        return x + self.mlp(self.norm2(x))


class SpatialRefinementBlock(nn.Module):
    """W-MSA then SW-MSA Swin blocks, applied to every class independently, guided by F_g.

    Args:
        dim: d_F.
        guidance_dim: channels of the projected guidance P_v(F3).
        num_heads, window_size, mlp_ratio: Swin hyper-parameters.

    ``forward(x, guidance)``: x (B, T, d_F, h, w), guidance (B, C_g, h, w) -> (B, T, d_F, h, w).
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int = 4, window_size: int = 12,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.blocks = nn.ModuleList([
            GuidedSwinBlock(dim, guidance_dim, num_heads, window_size, 0, mlp_ratio),
            GuidedSwinBlock(dim, guidance_dim, num_heads, window_size, window_size // 2, mlp_ratio),
        ])

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        y = rearrange(x, "b t c h w -> (b t) h w c")
        g = rearrange(guidance, "b c h w -> b h w c")
        g = g.unsqueeze(1).expand(b, t, *g.shape[1:]).flatten(0, 1)
        for block in self.blocks:
            y = block(y, g)
        return rearrange(y, "(b t) h w c -> b t c h w", b=b)
