"""The correlation head (paper Sec. 3.1, CAT-Seg's aggregator + OVRS's decoder): one module per file.

    correlation.py         cosine correlation volume + conv embedding
    spatial_refinement.py  guided Swin W-MSA / SW-MSA per class
    class_refinement.py    linear transformer across classes with text guidance
    refinement.py          the two together (x NUM_REFINEMENT_BLOCKS)
    decoder.py             attention-aware upsampling decoder
    back_projection.py     semantic back-projection MLP (training only)
    correlation_head.py    CorrelationHead: all of them, built from a config
"""
from .correlation_head import BACK_PROJECTION_TARGETS, CorrelationHead

__all__ = ["BACK_PROJECTION_TARGETS", "CorrelationHead"]
