"""What every image-encoder guidance (SAM, SAM 2) shares: input normalisation, freezing, taps."""
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.errors import ConfigError

__all__ = ["ImageGuidanceEncoder", "validate_taps", "run_blocks_with_taps"]


def validate_taps(taps: Sequence[int], depth: int, key: str) -> tuple:
    """Distinct 1-based block numbers in 1..depth, else a one-line ConfigError naming ``key``."""
    bad = [t for t in taps if not 1 <= int(t) <= depth]
    if bad or not taps or len(set(taps)) != len(taps):
        raise ConfigError(f"{key}={list(taps)}: expected distinct block numbers in 1..{depth}")
    return tuple(int(t) for t in taps)


def run_blocks_with_taps(blocks: Sequence[nn.Module], x: torch.Tensor, taps: Sequence[int]) -> List[torch.Tensor]:
    """Run ``blocks`` on channels-last ``x`` (B, H, W, C) up to the deepest tap.

    Returns the outputs after the 1-based blocks ``taps`` as (B, C, H, W), in ``taps`` order.
    """
    wanted = set(taps)
    outputs: Dict[int, torch.Tensor] = {}
    for i, block in enumerate(blocks[: max(taps)], start=1):
        x = block(x)
        if i in wanted:
            outputs[i] = x.permute(0, 3, 1, 2)
    return [outputs[t] for t in taps]


class ImageGuidanceEncoder(nn.Module):
    """Base of guidance encoders wrapping a pretrained image encoder (``self.<encoder_attr>``).

    Provides the resize + normalisation of the raw (3, H, W) 0..255 RGB images to a square
    ``input_size``, and keeps a frozen encoder frozen: no gradients and always in eval mode,
    whatever ``train()`` is called on the surrounding model.
    """

    encoder_attr = "encoder"

    def __init__(self, *, input_size: int, pixel_mean: Sequence[float], pixel_std: Sequence[float], frozen: bool):
        super().__init__()
        self.input_size = int(input_size)
        self.frozen = bool(frozen)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), False)

    def _apply_freezing(self) -> None:
        """Call once the wrapped encoder is assigned."""
        if self.frozen:
            encoder = getattr(self, self.encoder_attr)
            encoder.requires_grad_(False)
            encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            getattr(self, self.encoder_attr).eval()
        return self

    def preprocess(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """List of (3, H, W) RGB images on the 0..255 scale -> normalized (B, 3, S, S)."""
        size = (self.input_size, self.input_size)
        x = torch.cat([
            F.interpolate(img[None].float(), size=size, mode="bilinear", align_corners=False,
                          antialias=img.shape[-1] > self.input_size)
            for img in images
        ]).to(self.pixel_mean.device)
        return (x - self.pixel_mean) / self.pixel_std

    def grad_context(self):
        """Gradients through the encoder only when it is trained."""
        return torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen)
