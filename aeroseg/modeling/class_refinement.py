"""Class refinement block: linear transformer across classes, guided by text (paper Eq. 6).

For every pixel the T class features form a set; attention across them uses no positional
embedding, so the block is permutation-equivariant in the classes and works for any T. Queries
and keys see the features concatenated with the projected prompt-averaged text embedding.
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["LinearClassAttention", "ClassRefinementBlock"]


class LinearClassAttention(nn.Module):
    """Multi-head linear attention (Katharopoulos et al., phi(x) = elu(x) + 1) over classes.

    ``forward(x, g)``: x (N, T, C), g (N, T, C_g) -> (N, T, C). Cost is linear in T.
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int = 4, eps: float = 1e-6):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.eps = eps
        self.qk = nn.Linear(dim + guidance_dim, 2 * dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        q, k = self.qk(torch.cat([x, g], dim=-1)).chunk(2, dim=-1)
        split = lambda t: rearrange(t, "n t (h d) -> n h t d", h=self.num_heads)  # noqa: E731
        q, k, v = F.elu(split(q)) + 1, F.elu(split(k)) + 1, split(self.v(x))
        kv = torch.einsum("nhtd,nhte->nhde", k, v)
        normaliser = torch.einsum("nhtd,nhd->nht", q, k.sum(dim=2)) + self.eps
        out = torch.einsum("nhtd,nhde->nhte", q, kv) / normaliser.unsqueeze(-1)
        return self.proj(rearrange(out, "n h t d -> n t (h d)"))


class ClassRefinementBlock(nn.Module):
    """Pre-norm linear-attention transformer layer across classes, per pixel.

    ``forward(x, text)``: x (B, T, d_F, h, w), text (B or 1, T, C_t) -> (B, T, d_F, h, w).
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int = 4, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LinearClassAttention(dim, guidance_dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, t, _, h, w = x.shape
        y = rearrange(x, "b t c h w -> (b h w) t c")
        g = text.expand(b, t, text.shape[-1])[:, None].expand(b, h * w, t, text.shape[-1]).flatten(0, 1)
        y = y + self.attn(self.norm1(y), g)
        y = y + self.mlp(self.norm2(y))
        return rearrange(y, "(b h w) t c -> b t c h w", b=b, h=h)
