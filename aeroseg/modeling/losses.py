"""Training losses: per-class BCE (paper Eq. 12) and semantic back-projection (Eq. 13)."""
from typing import Sequence

import torch
import torch.nn.functional as F

from ..utils.labels import invalid_label_mask

__all__ = ["segmentation_bce_loss", "semantic_back_projection_loss"]


def segmentation_bce_loss(
    logits: torch.Tensor, targets: Sequence[torch.Tensor], ignore_value: int = 255, ignored: str = "negative"
) -> torch.Tensor:
    """Binary cross-entropy of every class map against the one-hot label.

    Args:
        logits: (B, T, h, w) per-class logits; upsampled bilinearly to each label's size.
        targets: B label maps (H_i, W_i) of class indices in [0, T) or ``ignore_value``.
        ignored: what pixels labelled ``ignore_value`` (background, unknown, and in training the
            unseen classes) contribute. ``"negative"`` (CAT-Seg / OVRS): an all-zero target, so
            every seen class learns to stay low there; ``"exclude"``: nothing.

    Returns:
        Mean over classes and counted pixels (CAT-Seg's normalisation; Eq. 12 writes a sum over
        classes, which only rescales the loss by T).
    """
    if ignored not in ("negative", "exclude"):
        raise ValueError(f"ignored={ignored!r}: expected 'negative' or 'exclude'")
    num_classes = logits.shape[1]
    total = logits.new_zeros(())
    count = 0
    for logit, target in zip(logits, targets):
        if tuple(logit.shape[-2:]) != tuple(target.shape[-2:]):
            logit = F.interpolate(logit[None], size=target.shape[-2:], mode="bilinear", align_corners=False)[0]
        valid = target != ignore_value
        invalid = invalid_label_mask(target, num_classes, ignore_value)
        if bool(invalid.any()):
            bad = int(target[invalid][0])
            raise ValueError(f"label value {bad} is outside the vocabulary of {num_classes} classes "
                             f"(and is not the ignore value {ignore_value})")
        pixel_logits = logit.permute(1, 2, 0)  # (H, W, T)
        if ignored == "exclude":
            pixel_logits = pixel_logits[valid]  # (N_valid, T)
            onehot = F.one_hot(target[valid].long(), num_classes).to(pixel_logits.dtype)
        else:
            # ignore_value -> class index T, whose one-hot column is dropped: an all-zero row.
            labels = torch.where(valid, target.long(), torch.full_like(target.long(), num_classes))
            onehot = F.one_hot(labels, num_classes + 1)[..., :num_classes].to(pixel_logits.dtype)
        total = total + F.binary_cross_entropy_with_logits(pixel_logits, onehot, reduction="sum")
        count += onehot.numel()
    return total / max(count, 1)


def semantic_back_projection_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_sem = || psi - sg(F3) ||^2, as a mean over elements; the target gets no gradient."""
    return F.mse_loss(reconstruction, target.detach())
