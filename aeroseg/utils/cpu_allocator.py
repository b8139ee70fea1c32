"""Process-wide setting of the C allocator for CPU runs (``CPU_ALLOCATOR``).

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves every request above
its mmap threshold (128 KiB, adapting up to 32 MiB) with a fresh ``mmap`` and gives it back to
the kernel with ``munmap`` when the tensor dies. The next tensor of that size then page-faults on
every 4 KiB page, and the kernel zeroes each page first. AerOSeg's large activations (SAM-L at
1024 px: 134 MB per block activation and 537 MB MLP hidden state per 8 images) are allocated
and freed in every block, so at batch 8 the kernel spent half of the process' CPU time in page
faults (measured: 4.5 of 13.5 CPU minutes; see docs/PERFORMANCE.md).

``"retain"`` turns that off with ``mallopt``: no mmap for large blocks (``M_MMAP_MAX`` = 0) and
up to 2 GiB of free memory at the top of the heap kept instead of trimmed (``M_TRIM_THRESHOLD``),
so freed activations are reused without faults. The process' resident memory then stays near its
peak instead of falling between steps. This is the effect that Intel's and PyTorch's CPU
performance guides get by preloading jemalloc or tcmalloc; it needs no extra library.
``"system"`` leaves the allocator alone. Other C libraries (musl, macOS, Windows) are left alone.
"""
import ctypes
import ctypes.util
import logging
import platform

from .errors import ConfigError

__all__ = ["CPU_ALLOCATOR_MODES", "configure_cpu_allocator"]

logger = logging.getLogger(__name__)

CPU_ALLOCATOR_MODES = ("retain", "system")
# glibc's <malloc.h> parameter numbers
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# mallopt takes an int: 2 GiB - 1 is the largest trim threshold it can set
_TRIM_THRESHOLD = 2 ** 31 - 1


def configure_cpu_allocator(mode: str) -> bool:
    """Apply ``CPU_ALLOCATOR`` ``mode`` to this process; True if glibc's settings were changed.

    ``"system"`` changes nothing. ``"retain"`` is applied where the C library is glibc; elsewhere
    it is skipped with a log line. It cannot be undone within the process (glibc stops adapting its
    mmap threshold once it is set), so call it at start-up, from the entry points.
    """
    if mode not in CPU_ALLOCATOR_MODES:
        raise ConfigError(f"CPU_ALLOCATOR={mode!r}: expected one of {CPU_ALLOCATOR_MODES}")
    if mode == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        logger.info("CPU_ALLOCATOR=retain applies to glibc only; %s/%s left alone", platform.system(),
                    platform.libc_ver()[0] or "unknown libc")
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    applied = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    if not applied:
        logger.warning("CPU_ALLOCATOR=retain: glibc refused mallopt; the allocator keeps its defaults")
    return applied
