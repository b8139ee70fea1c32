"""What the CPU can do, from ``/proc/cpuinfo`` (Linux); empty answers elsewhere."""
import functools
from typing import FrozenSet

__all__ = ["cpu_flags", "has_native_bf16"]

_CPUINFO = "/proc/cpuinfo"


@functools.lru_cache(maxsize=None)
def cpu_flags(path: str = _CPUINFO) -> FrozenSet[str]:
    """The instruction-set flags of the first CPU in ``path`` (e.g. ``"avx2"``), empty if unreadable."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_native_bf16(path: str = _CPUINFO) -> bool:
    """True if the CPU computes bf16 matmuls in hardware (AVX512-BF16 or AMX-BF16).

    Without them oneDNN emulates bf16, and autocast runs far slower than fp32: on an AVX2 EPYC a
    1024^3 GEMM ran 85x and SAM-L blocks 4.4x slower (docs/PERFORMANCE.md).
    """
    return bool(cpu_flags(path) & {"avx512_bf16", "amx_bf16"})
