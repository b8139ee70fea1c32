"""Semantic back-projection module (paper Eq. 7, Fig. 4)."""
import torch
from einops import rearrange
from torch import nn

__all__ = ["SemanticBackProjection"]


class SemanticBackProjection(nn.Module):
    """Reconstruct guidance (SAM) features from the refined correlation features of all classes.

    The T class feature vectors of each pixel are concatenated (T * d_F values) and mapped by
    three linear layers with GELU to the target's channels. Because of the concatenation the
    number of classes is fixed at construction: the training vocabulary's size. The module is
    only used for the training loss, so inference works with any vocabulary.

    Args:
        num_classes: T of the training vocabulary.
        dim: d_F.
        hidden_dim: width of the two hidden layers.
        out_dim: channels of the reconstruction target.

    ``forward(x)``: (B, T, d_F, h, w) -> (B, out_dim, h, w).
    """

    def __init__(self, num_classes: int, dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.num_classes = int(num_classes)
        self.mlp = nn.Sequential(
            nn.Linear(num_classes * dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.num_classes:
            raise ValueError(
                f"the back-projection was built for {self.num_classes} training classes but the "
                f"vocabulary has {x.shape[1]}; set MODEL.SEM_SEG_HEAD.NUM_CLASSES to the size of "
                f"the training vocabulary"
            )
        y = self.mlp(rearrange(x, "b t c h w -> b h w (t c)"))
        return rearrange(y, "b h w c -> b c h w")
