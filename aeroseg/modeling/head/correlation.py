"""Correlation feature computation (paper Eqs. 3-4)."""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["correlation_volume", "CorrelationEmbedding"]


def correlation_volume(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pixel, rotation, class and prompt (Eq. 3).

    Args:
        image_features: (B, R, D, h, w) dense features of R rotations (rotated back).
        text_features: (T, P, D) embeddings of T classes under P prompt templates.

    Returns:
        (B, T, R*P, h, w): C^theta(x, n, i) with the channel index = rotation * P + prompt.
    """
    img = F.normalize(image_features, dim=2)
    txt = F.normalize(text_features, dim=-1)
    # Computed channels-last, (B, T, h, w, R*P) in memory, as the head's convolutions and
    # transformer blocks consume it; returned as a (B, T, R*P, h, w) view of that.
    corr = torch.einsum("brdhw,tpd->bthwrp", img, txt)
    b, t, h, w, r, p = corr.shape
    return corr.reshape(b, t, h, w, r * p).permute(0, 1, 4, 2, 3)


class CorrelationEmbedding(nn.Module):
    """Conv embedding of the concatenated correlation maps into d_F channels (Eq. 4).

    The same conv is applied to every class (classes are folded into the batch), so the
    embedding is independent of the number and order of classes.

    Args:
        in_channels: R * P, the number of (rotation, prompt) correlation maps.
        out_channels: d_F.
        kernel_size: spatial kernel (CAT-Seg uses 7).

    Shapes: (B, T, R*P, h, w) -> (B, T, d_F, h, w).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, corr: torch.Tensor) -> torch.Tensor:
        b, t = corr.shape[:2]
        x = self.conv(corr.flatten(0, 1))
        return x.view(b, t, *x.shape[1:])
