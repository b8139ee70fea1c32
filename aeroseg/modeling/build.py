"""Model registry and ``build_model``."""
import logging

import torch
from fvcore.common.registry import Registry

from ..utils.detectron2_compat import detectron2_available
from ..utils.errors import ConfigError

__all__ = ["META_ARCH_REGISTRY", "build_model", "count_parameters"]

logger = logging.getLogger(__name__)

if detectron2_available():  # pragma: no cover - exercised only where detectron2 is installed
    # Registering in detectron2's own registry makes MODEL.META_ARCHITECTURE: AerOSeg work in
    # detectron2's DefaultTrainer too.
    from detectron2.modeling import META_ARCH_REGISTRY
else:
    META_ARCH_REGISTRY = Registry("META_ARCH")
    META_ARCH_REGISTRY.__doc__ = "Meta-architectures, selected by MODEL.META_ARCHITECTURE."


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def build_model(cfg) -> torch.nn.Module:
    """Build ``cfg.MODEL.META_ARCHITECTURE`` and move it to ``cfg.MODEL.DEVICE``.

    Inside ``with torch.device("meta"):`` the model is built without memory (for counting).
    """
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in META_ARCH_REGISTRY:
        raise ConfigError(f"MODEL.META_ARCHITECTURE={name!r} is not registered (known: "
                          f"{sorted(k for k, _ in META_ARCH_REGISTRY)})")
    device = torch.device(cfg.MODEL.DEVICE)
    on_meta = torch.get_default_device().type == "meta"
    if device.type == "cuda" and not on_meta and not torch.cuda.is_available():
        raise ConfigError(f"MODEL.DEVICE={cfg.MODEL.DEVICE!r} but no CUDA device is available; "
                          f"add 'MODEL.DEVICE cpu' to run on the CPU")
    model = META_ARCH_REGISTRY.get(name)(cfg)
    if not on_meta:
        model.to(device)
    logger.info("Built %s: %.2fM parameters, %.2fM trainable", name,
                count_parameters(model) / 1e6, count_parameters(model, True) / 1e6)
    return model
