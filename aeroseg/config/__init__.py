"""Configs: detectron2-style fvcore ``CfgNode`` with AerOSeg's keys added."""
from fvcore.common.config import CfgNode

from ..compat import base_config, configurable
from .aeroseg_config import (
    GENERIC_TEMPLATES,
    REMOTE_SENSING_TEMPLATES,
    add_aeroseg_config,
)


def get_cfg() -> CfgNode:
    """A fresh config holding detectron2's standard keys (with detectron2's defaults) and every
    AerOSeg key (with the paper's defaults).

    With detectron2 installed this is ``detectron2.config.get_cfg()`` extended by
    :func:`add_aeroseg_config`; otherwise the same keys and values come from
    :mod:`aeroseg.compat.config_defaults`. AerOSeg's values of detectron2's keys (the meta-architecture,
    RGB input, the solver) are in ``configs/Base-AerOSeg.yaml``, which every config inherits:
    merge a config file before use. ``merge_from_file`` understands ``_BASE_`` and
    ``merge_from_list`` takes command-line ``opts``.
    """
    cfg = base_config()
    add_aeroseg_config(cfg)
    return cfg


__all__ = [
    "CfgNode",
    "GENERIC_TEMPLATES",
    "REMOTE_SENSING_TEMPLATES",
    "add_aeroseg_config",
    "configurable",
    "get_cfg",
]
