"""Correlation feature refinement block = spatial refinement + class refinement (paper Sec. 3.1)."""
import torch
from torch import nn

from .class_refinement import ClassRefinementBlock
from .spatial_refinement import SpatialRefinementBlock

__all__ = ["CorrelationRefinementBlock"]


class CorrelationRefinementBlock(nn.Module):
    """phi -> T_sp(phi, P_v(F3)) -> T_cls(., P_t(E_t)).

    ``forward(x, spatial_guidance, text_guidance)``: x (B, T, d_F, h, w), spatial_guidance
    (B, C_g, h, w), text_guidance (B or 1, T, C_t) -> (B, T, d_F, h, w).
    """

    def __init__(self, dim: int, spatial_guidance_dim: int, text_guidance_dim: int,
                 spatial_heads: int = 4, window_size: int = 12, class_heads: int = 4,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.spatial = SpatialRefinementBlock(dim, spatial_guidance_dim, spatial_heads, window_size, mlp_ratio)
        self.classes = ClassRefinementBlock(dim, text_guidance_dim, class_heads, mlp_ratio)

    def forward(self, x: torch.Tensor, spatial_guidance: torch.Tensor, text_guidance: torch.Tensor) -> torch.Tensor:
        return self.classes(self.spatial(x, spatial_guidance), text_guidance)
