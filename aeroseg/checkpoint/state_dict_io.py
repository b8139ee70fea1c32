"""Reading weight files safely and describing how a state dict misses a model, in one line."""
import hashlib
import os
from typing import Dict, Iterable, Optional

import torch

from ..utils.errors import CheckpointError, describe_exception

__all__ = ["read_state_dict", "describe_mismatch", "verify_checksum", "KNOWN_SHA256", "SKIP_CHECKSUM_ENV"]

# Third-party weight files whose SHA-256 the publisher states, keyed by the published file name
# (MODEL_ZOO.md lists every file, where each checksum comes from, and which have none). OpenAI
# publishes its CLIP checksums as a folder of the download address (its clip.load verifies them).
KNOWN_SHA256 = {
    "ViT-B-16.pt": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
    "ViT-L-14.pt": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
}
# Set to 1 to load a listed file whose checksum differs (e.g. a deliberately modified copy).
SKIP_CHECKSUM_ENV = "AEROSEG_SKIP_CHECKSUM"
_verified: Dict[tuple, str] = {}  # (path, size, mtime) -> sha256: each file is hashed once per process


def verify_checksum(path: str, what: str, table: Optional[Dict[str, str]] = None) -> Optional[str]:
    """Check ``path`` against the published SHA-256 of its file name, if one is known.

    Returns the verified digest, or None when the name is not in ``table`` (default
    :data:`KNOWN_SHA256`) or ``$AEROSEG_SKIP_CHECKSUM`` is 1. A mismatch is a one-line
    :class:`CheckpointError` (a truncated or different download).
    """
    table = KNOWN_SHA256 if table is None else table
    expected = table.get(os.path.basename(path))
    if expected is None or os.environ.get(SKIP_CHECKSUM_ENV, "") == "1":
        return None
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _verified[key] = digest.hexdigest()
    actual = _verified[key]
    if actual != expected.lower():
        raise CheckpointError(
            f"{what} {path}: SHA-256 {actual[:16]}... differs from the published {expected[:16]}... of "
            f"{os.path.basename(path)} (a truncated or different file: download it again, or set "
            f"{SKIP_CHECKSUM_ENV}=1 to load it anyway)")
    return actual


def read_state_dict(path: str, what: str, config_key: str = "") -> Dict[str, torch.Tensor]:
    """Tensors of a ``.pt``/``.pth`` (``torch.load(weights_only=True)``) or ``.safetensors`` file.

    A ``{"model": {...}}`` wrapper (SAM 2 / fvcore files) is unwrapped. ``what`` names the file
    in errors ("SAM checkpoint"), ``config_key`` the key that pointed to it.
    """
    if not os.path.isfile(path):
        where = f" ({config_key})" if config_key else ""
        raise CheckpointError(f"{what} {path} does not exist{where}")
    verify_checksum(path, what)
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = "it is empty (0 bytes)" if os.path.getsize(path) == 0 else describe_exception(exc)
        raise CheckpointError(f"{what} {path} could not be read: {reason}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{what} {path} is not a state dict of tensors")
    return state


def describe_mismatch(model_state: Dict[str, torch.Tensor], file_state: Dict[str, torch.Tensor],
                      ignore_prefixes: Iterable[str] = ()) -> Optional[str]:
    """None if ``file_state`` fits ``model_state`` (keys and shapes), else what differs."""
    ignore = tuple(ignore_prefixes)
    keep = lambda k: not (ignore and k.startswith(ignore))  # noqa: E731
    missing = sorted(k for k in model_state if k not in file_state and keep(k))
    unexpected = sorted(k for k in file_state if k not in model_state and keep(k))
    wrong = sorted(k for k in file_state if k in model_state and keep(k)
                   and tuple(file_state[k].shape) != tuple(model_state[k].shape))
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(file_state[k].shape)} vs "
                     f"model {tuple(model_state[k].shape)})")
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    return "; ".join(parts) or None
