"""AerOSeg network: one file per module of the paper (Sec. 3.1).

    backbone/            CLIP (open_clip): rotated dense features, prompt-ensembled text
    guidance/            guidance encoders: SAM image encoder (paper) or CLIP's own layers
    correlation.py       cosine correlation volume + conv embedding
    spatial_refinement.py  guided Swin W-MSA / SW-MSA per class
    class_refinement.py  linear transformer across classes with text guidance
    refinement.py        the two together (x NUM_REFINEMENT_BLOCKS)
    back_projection.py   semantic back-projection MLP
    decoder.py           attention-aware upsampling decoder
    losses.py            BCE + L_sem
    meta_arch.py         AerOSeg, wiring it all (registered in META_ARCH_REGISTRY)
"""
from .build import META_ARCH_REGISTRY, build_model, count_parameters
from .meta_arch import AerOSeg

__all__ = ["AerOSeg", "META_ARCH_REGISTRY", "build_model", "count_parameters"]
