from .clip_backbone import CLIPBackbone, build_clip_backbone, build_clip_model, value_dense_tokens
from .qv_finetune import split_qkv_for_finetuning
from .rotation import multi_rotation_features

__all__ = [
    "CLIPBackbone",
    "build_clip_backbone",
    "build_clip_model",
    "multi_rotation_features",
    "split_qkv_for_finetuning",
    "value_dense_tokens",
]
