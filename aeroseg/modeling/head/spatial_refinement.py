"""Spatial refinement block: guided Swin W-MSA + SW-MSA applied per class (paper Eq. 5).

Each class's correlation map is refined independently (classes are folded into the batch).
Queries and keys see the correlation features concatenated with the projected guidance
features (SAM F3 in the paper); values come from the correlation features only.

Where the paper is silent the block is CAT-Seg's ``SwinTransformerBlockWrapper``: the projected
guidance goes through a LayerNorm (one per refinement block, shared by its two Swin blocks)
before it joins q/k; each Swin block is pre-norm window attention (separate q/k/v projections
with bias, output projection) + GELU MLP, no relative-position bias. Swin's relative-position
bias is an option (``relative_position_bias=True``).

The guidance is the same for every class: its share of the q/k projections is computed once per
image and broadcast over the classes instead of being repeated T times.
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

    ``q = W_q [x, g] + b_q``, ``k = W_k [x, g] + b_k`` (packed in :attr:`qk`, rows ``[:dim]`` = q),
    ``v = W_v x + b_v``; softmax(q k^T / sqrt(d) + bias + mask) v; output projection.

    Args:
        dim: C, channels of the correlation features (values and output).
        guidance_dim: C_g, channels of the guidance features concatenated to q/k inputs.
        num_heads: attention heads (C divisible by it).
        window_size: w, tokens per window side.
        relative_position_bias: add Swin's learned (2w-1)^2-entry relative-position bias
            (not in CAT-Seg).

    :meth:`project` maps tokens to packed q|k|v; :meth:`attend` runs the windowed attention;
    ``forward(x, g, mask)`` with x (N, nW, L, C), g (N, nW, L, C_g), mask (nW, L, L) or None,
    L = w*w, returns (N, nW, L, C).
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, window_size: int,
                 relative_position_bias: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.qk = nn.Linear(dim + guidance_dim, 2 * dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        if relative_position_bias:
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
            self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        else:
            self.relative_position_bias_table = None

    def guidance_terms(self, g: torch.Tensor) -> torch.Tensor:
        """(..., C_g) guidance -> (..., 3C): its share of q|k plus all biases (v gets its bias)."""
        qk = F.linear(g, self.qk.weight[:, self.dim:], self.qk.bias)
        return torch.cat([qk, self.v.bias.expand(*qk.shape[:-1], self.dim)], dim=-1)

    def token_terms(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) tokens -> (..., 3C): their share of q|k|v (one matmul, no biases)."""
        weight = torch.cat([self.qk.weight[:, :self.dim], self.v.weight], dim=0)
        return F.linear(x, weight)

    def attend(self, qkv: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """qkv (N, nW, L, 3C) -> attention output after the projection (N, nW, L, C)."""
        n, num_windows, length, _ = qkv.shape
        heads = self.num_heads
        bias = None
        if self.relative_position_bias_table is not None:
            bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
            bias = bias.view(length, length, heads).permute(2, 0, 1).to(qkv.dtype)  # (heads, L, L)
        if mask is None:
            # windows fold into the batch: q/k/v are strided views of qkv (no copy) and the
            # optional bias is a (1, heads, L, L) mask
            q, k, v = qkv.view(n * num_windows, length, 3, heads, -1).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias[None])
            out = out.transpose(1, 2).reshape(n, num_windows, length, -1)
            return self.proj(out)
        # a per-window mask: windows x heads fold into one axis so that the mask is 4-d
        # (1, nW*heads, L, L), which PyTorch's fused CPU/GPU kernels take (5-d inputs or a 3-d mask
        # fall back to the unfused math path, about 4x slower on CPU).
        q, k, v = rearrange(qkv, "n w l (s h d) -> s n (w h) l d", s=3, h=heads)
        attn_mask = mask[:, None].to(qkv.dtype).expand(num_windows, heads, length, length)
        if bias is not None:
            attn_mask = attn_mask + bias
        attn_mask = attn_mask.reshape(1, num_windows * heads, length, length)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(rearrange(out, "n (w h) l d -> n w l (h d)", h=heads))

    def forward(self, x: torch.Tensor, g: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.attend(self.token_terms(x) + self.guidance_terms(g), mask)


class GuidedSwinBlock(nn.Module):
    """One Swin transformer block (pre-norm attention + GELU MLP) with guided (shifted) windows.

    ``forward(x, g)``: x (B, T, H, W, C) features of T classes, g (B, H, W, C_g) guidance (the
    same for every class) -> (B, T, H, W, C).
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, window_size: int,
                 shift_size: int = 0, mlp_ratio: float = 4.0, relative_position_bias: bool = False):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GuidedWindowAttention(dim, guidance_dim, num_heads, window_size, relative_position_bias)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        b, t, height, width, _ = x.shape
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
        if pad_h or pad_w:  # zero tokens after the norm, as Swin pads
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
            g = F.pad(g, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = height + pad_h, width + pad_w
        to_windows, from_windows, mask = self._windowing(hp, wp, ws, shift, x.device)
        # The cyclic shift and the window partition are one gather of the (normalised) tokens;
        # q|k|v = per-class token part + per-image guidance part broadcast over the classes.
        x = x.reshape(b, t, hp * wp, -1).index_select(2, to_windows)
        g = g.reshape(b, hp * wp, -1).index_select(1, to_windows)
        qkv = self.attn.token_terms(x).add_(self.attn.guidance_terms(g).unsqueeze(1))  # (B, T, hp*wp, 3C)
        out = self.attn.attend(qkv.view(b * t, (hp // ws) * (wp // ws), ws * ws, -1), mask)
        out = out.view(b, t, hp * wp, -1).index_select(2, from_windows).view(b, t, hp, wp, -1)
        if pad_h or pad_w:
            out = out[:, :, :height, :width]
        x = shortcut + out
        return x + self.mlp(self.norm2(x))

    def _windowing(self, height: int, width: int, window_size: int, shift: int, device):
        """Token orders and mask of the (shifted) window partition of a height x width map.

        Returns ``to_windows`` (height*width,): the source token of each (window, position) slot
        after rolling the map by ``-shift``; ``from_windows``: its inverse permutation; the
        shifted-window mask (nW, L, L) or None. Cached per size and device.
        """
        key = (height, width, window_size, shift, str(device))
        cache = self.__dict__.setdefault("_windowing_cache", {})
        if key not in cache:
            grid = torch.arange(height * width, device=device).view(height, width)
            if shift:
                grid = torch.roll(grid, shifts=(-shift, -shift), dims=(0, 1))
            to_windows = rearrange(grid, "(h p) (w q) -> (h w p q)", p=window_size, q=window_size)
            from_windows = torch.argsort(to_windows)
            mask = shifted_window_mask(height, width, window_size, shift, device=device) if shift else None
            cache[key] = (to_windows, from_windows, mask)
        return cache[key]


class SpatialRefinementBlock(nn.Module):
    """W-MSA then SW-MSA Swin blocks, applied to every class independently, guided by F_g.

    Args:
        dim: d_F.
        guidance_dim: channels of the projected guidance P_v(F3).
        num_heads, window_size, mlp_ratio: Swin hyper-parameters.
        guidance_norm: LayerNorm on the guidance before it joins q/k (CAT-Seg).
        relative_position_bias: Swin's relative-position bias in both blocks (not in CAT-Seg).

    ``forward(x, guidance)``: x (B, T, d_F, h, w), guidance (B, C_g, h, w) -> (B, T, d_F, h, w).
    :meth:`forward_channels_last` works on (B, T, h, w, d_F) and skips the two layout copies.
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int = 4, window_size: int = 12,
                 mlp_ratio: float = 4.0, guidance_norm: bool = True, relative_position_bias: bool = False):
        super().__init__()
        self.guidance_norm = nn.LayerNorm(guidance_dim) if guidance_norm else nn.Identity()
        self.blocks = nn.ModuleList([
            GuidedSwinBlock(dim, guidance_dim, num_heads, window_size, 0, mlp_ratio, relative_position_bias),
            GuidedSwinBlock(dim, guidance_dim, num_heads, window_size, window_size // 2, mlp_ratio,
                            relative_position_bias),
        ])

    def forward_channels_last(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        g = self.guidance_norm(guidance.permute(0, 2, 3, 1))  # (B, h, w, C_g), once per image
        for block in self.blocks:
            x = block(x, g)
        return x

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        y = self.forward_channels_last(x.permute(0, 1, 3, 4, 2), guidance)
        return y.permute(0, 1, 4, 2, 3).contiguous()
