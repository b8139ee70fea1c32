"""CLIP's own features as guidance: the paper's Baseline (Table 3, row I).

No extra encoder: the intermediate blocks of the CLIP image tower (``MODEL.CLIP.GUIDANCE_LAYERS``)
guide the decoder stages and the dense projected CLIP features guide spatial refinement, as in
CAT-Seg / OVRS. The unrotated view's features are used.
"""
from typing import Dict, List, Sequence

import torch
from torch import nn

__all__ = ["CLIPGuidance"]


class CLIPGuidance(nn.Module):
    """Guidance taken from the CLIP backbone's outputs (no parameters).

    ``forward(images, clip_features)`` returns ``{"taps": [L_a, L_b, ..., dense], "target": None}``
    where ``L_*`` are (B, W, h, w) intermediate block outputs and ``dense`` the (B, D, h, w)
    projected features, all of the first rotation in ``MODEL.CLIP.ROTATIONS``.
    """

    def __init__(self, *, layer_channels: Sequence[int], dense_channels: int):
        super().__init__()
        self._channels = [int(c) for c in layer_channels] + [int(dense_channels)]

    @property
    def channels(self) -> List[int]:
        return list(self._channels)

    def forward(self, images, clip_features: Dict[str, torch.Tensor]) -> Dict[str, object]:
        taps = [t[:, 0] for t in clip_features["intermediates"]] + [clip_features["dense"][:, 0]]
        return {"taps": taps, "target": None}
