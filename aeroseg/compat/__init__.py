"""detectron2 when installed, AerOSeg's own equivalents when not: the one place that decides.

AerOSeg is detectron2-native when detectron2 is installed and self-sufficient when it is not
(docs/DESIGN.md, "detectron2: native when installed"). This package is the only code that asks
:func:`detectron2_available`, once, and binds each shared name to detectron2's object or to the
fallback with the same interface in this package:

==========================  ==========================================  =========================
name                        with detectron2                             without (this package)
==========================  ==========================================  =========================
``DatasetCatalog``,         ``detectron2.data`` catalogs (datasets      ``catalog.py``
``MetadataCatalog``,        registered by either side are seen by both)
``Metadata``
``configurable``            ``detectron2.config.configurable``          ``config_decorator.py``
``DatasetEvaluator``,       ``detectron2.evaluation`` base classes      ``evaluator.py``
``DatasetEvaluators``
``META_ARCH_REGISTRY``      ``detectron2.modeling.META_ARCH_REGISTRY``  an fvcore ``Registry``
``base_config()``           ``detectron2.config.get_cfg()``             ``config_defaults.py``
``create_local_process_     detectron2's per-machine process group      nothing to do
group``
==========================  ==========================================  =========================

Code elsewhere imports these names from here and never branches on detectron2 itself (the
engine choice, ``--engine detectron2``, asks :func:`detectron2_available` to refuse it early).
"""
import functools
import importlib.util
import warnings


@functools.lru_cache(maxsize=None)
def detectron2_available() -> bool:
    """True if ``import detectron2`` works in this environment."""
    if importlib.util.find_spec("detectron2") is None:
        return False
    try:
        with warnings.catch_warnings():
            # fvcore.nn (imported by detectron2.modeling) calls torch.jit.script at import time,
            # which recent torch answers with a FutureWarning on stderr of every tool.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
            import detectron2.config  # noqa: F401
            import detectron2.modeling  # noqa: F401
    except Exception:  # a broken install (e.g. compiled for another torch) counts as absent
        return False
    return True


if detectron2_available():  # pragma: no cover - exercised only where detectron2 is installed
    from detectron2.config import configurable
    from detectron2.config import get_cfg as _detectron2_get_cfg
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.catalog import Metadata
    from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
    from detectron2.modeling import META_ARCH_REGISTRY
else:
    from fvcore.common.registry import Registry

    from .catalog import DatasetCatalog, Metadata, MetadataCatalog
    from .config_decorator import configurable
    from .evaluator import DatasetEvaluator, DatasetEvaluators

    META_ARCH_REGISTRY = Registry("META_ARCH")
    META_ARCH_REGISTRY.__doc__ = "Meta-architectures, selected by MODEL.META_ARCHITECTURE."


def base_config():
    """A fresh config with detectron2's standard keys and default values (no AerOSeg keys).

    ``detectron2.config.get_cfg()`` where detectron2 is installed, else the same keys and
    values from :mod:`aeroseg.compat.config_defaults`.
    """
    if detectron2_available():  # pragma: no cover - exercised only where detectron2 is installed
        return _detectron2_get_cfg()
    from .config_defaults import _C

    return _C.clone()


def create_local_process_group(processes_per_machine: int) -> None:
    """Create detectron2's per-machine ("local") process group, which its trainer, DDP wrapper and
    evaluators ask for (``comm.get_local_rank()``); its ``launch()`` does the same. Without
    detectron2 nothing needs it."""
    if detectron2_available():  # pragma: no cover - exercised only where detectron2 is installed
        from detectron2.utils import comm as d2_comm

        d2_comm.create_local_process_group(processes_per_machine)


def forget_local_process_group() -> None:
    """Drop detectron2's reference to its local group before the world is destroyed (detectron2
    has no public reset; the group dies with the world)."""
    if detectron2_available():  # pragma: no cover - exercised only where detectron2 is installed
        from detectron2.utils import comm as d2_comm

        d2_comm._LOCAL_PROCESS_GROUP = None


__all__ = [
    "DatasetCatalog",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "META_ARCH_REGISTRY",
    "Metadata",
    "MetadataCatalog",
    "base_config",
    "configurable",
    "create_local_process_group",
    "detectron2_available",
    "forget_local_process_group",
]
