"""Whether detectron2 can be imported, decided once.

AerOSeg is detectron2-native when detectron2 is installed and self-sufficient when it is not
(docs/DESIGN.md, "detectron2: native when installed"). Every place that integrates with
detectron2 asks :func:`detectron2_available` instead of importing it blindly.
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
