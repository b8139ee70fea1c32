"""Fine-tune only the query and value projections of packed-QKV attention layers.

open_clip's transformers use ``nn.MultiheadAttention``, which stores W_q, W_k, W_v stacked in a
single ``in_proj_weight`` (3D, D) (and ``in_proj_bias`` (3D,)). Freezing "k but not q/v" cannot
be done with ``requires_grad`` on one tensor, and masking its gradient is not enough (AdamW's
decoupled weight decay would still shrink W_k). So the packed tensor is re-parametrized as the
concatenation of three separate tensors, of which only q and v are trainable parameters.
The packed bias is split the same way; the paper ("query and value projection matrices") and
CAT-Seg train only the weights, so the biases stay frozen unless ``train_biases`` is set.
"""
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["PackedQKV", "split_qkv_for_finetuning", "iter_qkv_originals"]


class PackedQKV(nn.Module):
    """Parametrization ``in_proj_* = cat([q, k, v])`` with q, k, v stored separately."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.cat([q, k, v], dim=0)

    def right_inverse(self, packed: torch.Tensor) -> Sequence[torch.Tensor]:
        q, k, v = packed.chunk(3, dim=0)
        return q.clone(), k.clone(), v.clone()


def split_qkv_for_finetuning(
    module: nn.Module, trainable: Sequence[str] = ("q", "v"), train_biases: bool = False
) -> int:
    """Re-parametrize every ``nn.MultiheadAttention`` below ``module``.

    After the call, ``attn.parametrizations.in_proj_weight.original{0,1,2}`` hold W_q, W_k, W_v;
    those named in ``trainable`` have ``requires_grad=True``, the others ``False``. The biases
    b_q, b_k, b_v (``in_proj_bias.original{0,1,2}``) follow ``trainable`` only if
    ``train_biases``, else they are frozen. Returns the number of attention layers changed.
    Other parameters are untouched.
    """
    names = ("q", "k", "v")
    count = 0
    for attn in module.modules():
        if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
            continue
        for tensor_name in ("in_proj_weight", "in_proj_bias"):
            if getattr(attn, tensor_name, None) is None:
                continue
            if not parametrize.is_parametrized(attn, tensor_name):
                parametrize.register_parametrization(attn, tensor_name, PackedQKV(), unsafe=True)
            originals = attn.parametrizations[tensor_name]
            train_this = tensor_name == "in_proj_weight" or train_biases
            for i, name in enumerate(names):
                getattr(originals, f"original{i}").requires_grad_(train_this and name in trainable)
        count += 1
    return count


def iter_qkv_originals(module: nn.Module) -> Iterator[tuple]:
    """Yield ``(qualified_name, which, tensor)`` with which in {"q","k","v"} for split layers."""
    for name, param in module.named_parameters():
        marker = ".parametrizations.in_proj_"
        if marker in name and ".original" in name:
            yield name, "qkv"[int(name[-1])], param
