"""AerOSeg: open-vocabulary semantic segmentation of remote-sensing imagery.

Importing the package registers what a detectron2 project registers on import, as Mask2Former
and CAT-Seg do: the ``AerOSeg`` meta-architecture (in detectron2's ``META_ARCH_REGISTRY`` when
detectron2 is installed) and the built-in datasets (iSAID, DLRSD, OpenEarthMap, the synthetic demo
set; in detectron2's ``DatasetCatalog`` when it is installed). A detectron2 user writes::

    from detectron2.config import get_cfg
    from aeroseg import add_aeroseg_config
    cfg = get_cfg(); add_aeroseg_config(cfg); cfg.merge_from_file("configs/isaid/aeroseg_vitb.yaml")
"""
from . import data, modeling  # noqa: F401  (registrations happen on import)
from .config import add_aeroseg_config, get_cfg
from .modeling import AerOSeg

__version__ = "0.1.0"

__all__ = ["AerOSeg", "add_aeroseg_config", "get_cfg"]
