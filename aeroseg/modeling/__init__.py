"""AerOSeg network: one file per module of the paper (Sec. 3.1).

    backbone/            CLIP (open_clip): rotated dense features, prompt-ensembled text
    guidance/            guidance encoders: SAM image encoder (paper) or CLIP's own layers
    head/                the correlation head: correlation embedding, spatial and class refinement,
                         attention-aware upsampling decoder, semantic back-projection
    losses.py            BCE + L_sem
    meta_arch.py         AerOSeg, wiring it all (registered in META_ARCH_REGISTRY)
"""
from .build import META_ARCH_REGISTRY, build_model, count_parameters
from .meta_arch import AerOSeg

__all__ = ["AerOSeg", "META_ARCH_REGISTRY", "build_model", "count_parameters"]
