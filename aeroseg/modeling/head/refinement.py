"""Correlation feature refinement block = spatial refinement + class refinement (paper Sec. 3.1)."""
from typing import Optional, Sequence

import torch
from torch import nn

from .class_refinement import ClassRefinementBlock
from .spatial_refinement import SpatialRefinementBlock

__all__ = ["CorrelationRefinementBlock"]


class CorrelationRefinementBlock(nn.Module):
    """phi -> T_sp(phi, P_v(F3)) -> T_cls(., P_t(E_t)) (CAT-Seg's ``AggregatorLayer``).

    Args:
        dim: d_F.
        spatial_guidance_dim, text_guidance_dim: channels of the projected guidances.
        spatial_heads, window_size: Swin attention of the spatial block.
        class_heads: heads of the class block's linear attention.
        mlp_ratio: hidden/in ratio of both blocks' MLPs.
        class_pooling_size, class_pad_len: see :class:`ClassRefinementBlock`.
        spatial_guidance_norm, relative_position_bias: see :class:`SpatialRefinementBlock`.

    ``forward(x, spatial_guidance, text_guidance)``: x (B, T, d_F, h, w), spatial_guidance
    (B, C_g, h, w), text_guidance (B or 1, T, C_t) -> (B, T, d_F, h, w).
    """

    def __init__(self, dim: int, spatial_guidance_dim: int, text_guidance_dim: int,
                 spatial_heads: int = 4, window_size: int = 12, class_heads: int = 4,
                 mlp_ratio: float = 4.0, class_pooling_size: Optional[Sequence[int]] = (2, 2),
                 class_pad_len: int = 256, spatial_guidance_norm: bool = True,
                 relative_position_bias: bool = False):
        super().__init__()
        self.spatial = SpatialRefinementBlock(dim, spatial_guidance_dim, spatial_heads, window_size, mlp_ratio,
                                              spatial_guidance_norm, relative_position_bias)
        self.classes = ClassRefinementBlock(dim, text_guidance_dim, class_heads, mlp_ratio,
                                            class_pooling_size, class_pad_len)

    def forward(self, x: torch.Tensor, spatial_guidance: torch.Tensor, text_guidance: torch.Tensor) -> torch.Tensor:
        # The spatial block works channels-last; the class block pools (B*T, C, h, w) maps, which
        # accepts the channels-last view as is, so no layout copy is made between the two.
        y = self.spatial.forward_channels_last(x.permute(0, 1, 3, 4, 2), spatial_guidance)
        return self.classes(y.permute(0, 1, 4, 2, 3), text_guidance)
