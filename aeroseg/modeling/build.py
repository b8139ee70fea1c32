"""Model registry and ``build_model``."""
import logging
from typing import Sequence

import torch
from ..compat import META_ARCH_REGISTRY
from ..utils.errors import ConfigError

__all__ = ["META_ARCH_REGISTRY", "build_model", "compile_blocks", "count_parameters"]

logger = logging.getLogger(__name__)

def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# Attribute paths (from the model) of the module lists / modules whose members are compiled one by one.
_COMPILED_PARTS = (
    "clip_backbone.clip.visual.transformer.resblocks",
    "guidance_encoder.encoder.blocks",  # SAM
    "guidance_encoder.trunk.blocks",  # SAM 2
    "head.correlation_embed",
    "head.refinement",
    "head.decoder",
)


def compile_blocks(model: torch.nn.Module, backend: str = "inductor", parts: Sequence[str] = _COMPILED_PARTS) -> list:
    """``torch.compile`` the model's transformer blocks and head modules in place.

    Each block is compiled on its own (``nn.Module.compile``): the model's Python-level code
    (lists of images, rotations, vocabulary) stays eager, identical blocks share the compiled
    code, and parameter names and state dicts do not change (checkpoints stay compatible).
    ``parts``: attribute paths of the modules (or module lists) to compile, default all of them.
    Compilation happens lazily at the first call. Returns the qualified names of the compiled modules.
    """
    if not hasattr(torch, "compile"):
        raise ConfigError(f"MODEL.COMPILE needs torch.compile (torch >= 2.0), found torch {torch.__version__}")
    compiled = []
    for path in parts:
        target = model
        for attr in path.split("."):
            target = getattr(target, attr, None)
            if target is None:
                break
        if target is None:
            continue
        members = list(target.named_children()) if isinstance(target, torch.nn.ModuleList) else [("", target)]
        for name, module in members:
            module.compile(backend=backend)
            compiled.append(f"{path}.{name}" if name else path)
    return compiled


def build_model(cfg) -> torch.nn.Module:
    """Build ``cfg.MODEL.META_ARCHITECTURE`` and move it to ``cfg.MODEL.DEVICE``.

    Inside ``with torch.device("meta"):`` the model is built without memory (for counting).
    With ``MODEL.COMPILE`` its blocks are compiled (:func:`compile_blocks`).
    """
    name = cfg.MODEL.META_ARCHITECTURE
    if name == "GeneralizedRCNN":
        # detectron2's default: the config did not inherit AerOSeg's values (with detectron2
        # installed it is registered, and would silently build a Faster R-CNN)
        raise ConfigError("MODEL.META_ARCHITECTURE='GeneralizedRCNN' is detectron2's default, not set by the "
                          "config: start it with _BASE_: pointing at configs/Base-AerOSeg.yaml")
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
        if cfg.MODEL.COMPILE:
            compiled = compile_blocks(model, cfg.MODEL.COMPILE_BACKEND)
            logger.info("torch.compile (%s) of %d modules", cfg.MODEL.COMPILE_BACKEND, len(compiled))
    logger.info("Built %s: %.2fM parameters, %.2fM trainable", name,
                count_parameters(model) / 1e6, count_parameters(model, True) / 1e6)
    return model
