"""Training losses: per-class BCE (paper Eq. 12) and semantic back-projection (Eq. 13)."""
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["segmentation_bce_loss", "semantic_back_projection_loss"]


def segmentation_bce_loss(logits: torch.Tensor, targets: Sequence[torch.Tensor], ignore_value: int = 255) -> torch.Tensor:
    """Binary cross-entropy of every class map against the one-hot label, ignore pixels excluded.

    Args:
        logits: (B, T, h, w) per-class logits; upsampled bilinearly to each label's size.
        targets: B label maps (H_i, W_i) of class indices in [0, T) or ``ignore_value``.

    Returns:
        Mean over classes and non-ignored pixels (CAT-Seg's normalisation; Eq. 12 writes a sum
        over classes, which only rescales the loss by T). Pixels labelled ``ignore_value`` do
        not contribute (CAT-Seg counts them as negatives for every class; we do not, so unseen
        classes mapped to ignore during training are not pushed towards "no class").
    """
    num_classes = logits.shape[1]
    total = logits.new_zeros(())
    count = 0
    for logit, target in zip(logits, targets):
        if tuple(logit.shape[-2:]) != tuple(target.shape[-2:]):
            logit = F.interpolate(logit[None], size=target.shape[-2:], mode="bilinear", align_corners=False)[0]
        valid = target != ignore_value
        if bool(((target < 0) | (target >= num_classes))[valid].any()):
            bad = int(target[valid & ((target < 0) | (target >= num_classes))][0])
            raise ValueError(f"label value {bad} is outside the vocabulary of {num_classes} classes "
                             f"(and is not the ignore value {ignore_value})")
        labels = target[valid].long()
        pixel_logits = logit.permute(1, 2, 0)[valid]  # (N_valid, T)
        onehot = F.one_hot(labels, num_classes).to(pixel_logits.dtype)
        total = total + F.binary_cross_entropy_with_logits(pixel_logits, onehot, reduction="sum")
        count += labels.numel() * num_classes
    return total / max(count, 1)


def semantic_back_projection_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_sem = || psi - sg(F3) ||^2, as a mean over elements; the target gets no gradient."""
    return F.mse_loss(reconstruction, target.detach())
