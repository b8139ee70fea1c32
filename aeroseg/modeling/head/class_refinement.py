"""Class refinement block: linear transformer across classes, guided by text (paper Eq. 6).

For every (pooled) pixel the T class features form a set; attention across them uses no
positional embedding, so the block is permutation-equivariant in the classes and works for any T.
Queries and keys see the features concatenated with the projected prompt-averaged text embedding.

Where the paper is silent the block is CAT-Seg's ``ClassTransformerLayer``: average pooling of
the map before the attention and bilinear (align_corners=True) upsampling after it, a pre-norm
linear-attention layer without output projection, a ReLU MLP, and the class axis padded to a
fixed length (256) with one learnable padding token and one learnable padding guidance, so that
the linear attention's normaliser does not depend on the number of classes (training and testing
vocabularies differ in size).

The padding is never materialised. All padding tokens are the same vector, and everything that
happens to a token before the attention (LayerNorm, the q/k/v projections of the token
concatenated with its guidance) is per token, so every padding key and value is the same:
their share of the linear-attention sums ``sum_s phi(k_s) v_s^T`` and ``sum_s phi(k_s)`` is
``n_pad`` times one term, computed once for the whole batch. The padded positions' own outputs
are discarded by CAT-Seg, so they are never computed. The result (and its gradients, including
those of the padding parameters) equals the explicitly padded computation
(``materialize_padding=True``, kept for tests and benchmarks).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ...utils.errors import ConfigError

__all__ = ["LinearClassAttention", "ClassRefinementBlock"]


def _elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1 (Katharopoulos et al.; CAT-Seg's ``elu_feature_map``)."""
    return F.elu(x) + 1


class LinearClassAttention(nn.Module):
    """Multi-head linear attention over classes with text guidance in queries and keys.

    ``q = W_q [x, g] + b_q``, ``k = W_k [x, g] + b_k``, ``v = W_v x + b_v`` (q and k are packed in
    :attr:`qk`, rows ``[:dim]`` = q), ``out_t = phi(q_t)^T S / (phi(q_t)^T z + eps)`` with
    ``S = sum_s phi(k_s) v_s^T`` and ``z = sum_s phi(k_s)``; no output projection (CAT-Seg's
    ``AttentionLayer`` + ``LinearAttention``).

    ``forward(x, g, pad=None)``: x (B, P, T, C) normalised class features of P pixels, g (B or 1,
    T, C_g) guidance (the same for every pixel), pad an optional ``(x_pad (C,), g_pad (C_g,),
    n_pad)``: ``n_pad`` extra keys/values built from one padding token -> (B, P, T, C).
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int = 4, eps: float = 1e-6):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.eps = eps
        self.qk = nn.Linear(dim + guidance_dim, 2 * dim)
        self.v = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, g: torch.Tensor,
                pad: Optional[Tuple[torch.Tensor, torch.Tensor, int]] = None) -> torch.Tensor:
        dim, heads = self.dim, self.num_heads
        # [x, g] W^T = x W_x^T + g W_g^T: the guidance half depends on the class only, so it is
        # computed once per class instead of once per (pixel, class).
        w_x, w_g = self.qk.weight[:, :dim], self.qk.weight[:, dim:]
        qk = F.linear(x, w_x) + F.linear(g, w_g, self.qk.bias).unsqueeze(1)  # (B, P, T, 2C)
        split = lambda t: t.unflatten(-1, (heads, -1))  # noqa: E731  (..., C) -> (..., H, D)
        q = _elu_feature_map(split(qk[..., :dim]))
        k = _elu_feature_map(split(qk[..., dim:]))
        v = split(self.v(x))
        kv = torch.einsum("bpthd,bpthe->bphde", k, v)
        k_sum = k.sum(dim=2)  # (B, P, H, D)
        if pad is not None and pad[2] > 0:
            x_pad, g_pad, n_pad = pad
            k_pad = _elu_feature_map(split(self.qk(torch.cat([x_pad, g_pad]))[dim:]))  # (H, D)
            v_pad = split(self.v(x_pad))  # (H, D)
            kv = kv + n_pad * torch.einsum("hd,he->hde", k_pad, v_pad)
            k_sum = k_sum + n_pad * k_pad
        numerator = torch.einsum("bpthd,bphde->bpthe", q, kv)
        denominator = torch.einsum("bpthd,bphd->bpth", q, k_sum) + self.eps
        return (numerator / denominator.unsqueeze(-1)).flatten(-2)


class ClassRefinementBlock(nn.Module):
    """CAT-Seg's class transformer layer: pool, pre-norm linear attention + ReLU MLP, upsample.

    ``y = pool(x)``; ``y = y + A(LN1(y), g)``; ``y = y + MLP(LN2(y))``; ``out = x + up(y)``
    (the residual adds the whole upsampled pooled branch, as CAT-Seg; without pooling the
    output is therefore ``2x + delta``, which is also what CAT-Seg computes).

    Args:
        dim: d_F.
        guidance_dim: channels of the projected text guidance.
        num_heads: heads of the linear attention.
        mlp_ratio: hidden/in ratio of the ReLU MLP (CAT-Seg: 4).
        pooling_size: (ph, pw) average-pooling window before the attention (CAT-Seg ViT-B/L:
            (2, 2)); None or (1, 1) disables pooling and upsampling.
        pad_len: length the class axis is padded to with a learnable token (CAT-Seg: 256);
            0 disables padding. Vocabularies longer than ``pad_len`` are not padded.
        materialize_padding: concatenate the padding tokens explicitly (slow; the reference
            computation for tests and benchmarks) instead of the closed form.

    ``forward(x, text)``: x (B, T, d_F, h, w), text (B or 1, T, C_t) -> (B, T, d_F, h, w).
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int = 4, mlp_ratio: float = 4.0,
                 pooling_size: Optional[Sequence[int]] = (2, 2), pad_len: int = 256,
                 materialize_padding: bool = False):
        super().__init__()
        pooling = tuple(int(p) for p in pooling_size) if pooling_size else (1, 1)
        if len(pooling) != 2 or min(pooling) < 1:
            raise ConfigError(f"MODEL.AEROSEG.CLASS_POOLING_SIZE={list(pooling_size)!r}: expected two "
                              f"positive integers, e.g. [2, 2]")
        if int(pad_len) < 0:
            raise ConfigError(f"MODEL.AEROSEG.CLASS_PAD_LEN={pad_len}: expected 0 (no padding) or a positive length")
        self.pooling_size = pooling
        self.pad_len = int(pad_len)
        self.materialize_padding = bool(materialize_padding)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LinearClassAttention(dim, guidance_dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        if self.pad_len > 0:
            # CAT-Seg initialises both to zeros.
            self.padding_token = nn.Parameter(torch.zeros(dim))
            self.padding_guidance = nn.Parameter(torch.zeros(guidance_dim))
        else:
            self.register_parameter("padding_token", None)
            self.register_parameter("padding_guidance", None)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        pooled = x.flatten(0, 1)
        if self.pooling_size != (1, 1):
            pooled = F.avg_pool2d(pooled, self.pooling_size)
        hp, wp = pooled.shape[-2:]
        y = rearrange(pooled, "(b t) c h w -> b (h w) t c", b=b)  # (B, P, T, C)
        g = text.expand(b, t, text.shape[-1]) if text.shape[0] != b else text
        n_pad = self.pad_len - t if self.pad_len > t else 0

        if n_pad and self.materialize_padding:
            y = torch.cat([y, self.padding_token.expand(b, y.shape[1], n_pad, c)], dim=2)
            g = torch.cat([g, self.padding_guidance.expand(b, n_pad, g.shape[-1])], dim=1)
            y = y + self.attn(self.norm1(y), g)
            y = y + self.mlp(self.norm2(y))
            y = y[:, :, :t]
        else:
            pad = (self.norm1(self.padding_token), self.padding_guidance, n_pad) if n_pad else None
            y = y + self.attn(self.norm1(y), g, pad)
            y = y + self.mlp(self.norm2(y))

        # Back to (B*T, C, hp, wp) as a channels-last view of (B, T, hp, wp, C) memory: the
        # upsampling keeps that layout, and so does the residual sum when x is channels-last too
        # (it is: the spatial block's output), which is the layout the next blocks read.
        y = rearrange(y, "b (h w) t c -> b t h w c", h=hp).flatten(0, 1).permute(0, 3, 1, 2)
        if (hp, wp) != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=True)
        return x + y.view(b, t, c, h, w)
