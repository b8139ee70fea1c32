"""CPU_ALLOCATOR: "retain" keeps freed memory in the process, so reusing it costs no page faults."""
import platform
import subprocess
import sys

import pytest

from aeroseg.utils.cpu_allocator import configure_cpu_allocator
from aeroseg.utils.errors import ConfigError

# Allocates and frees a 64 MiB block ten times after the first, writing every page as a tensor's
# first use does, and counts the minor page faults of those ten: glibc mmaps such a block and
# unmaps it on free (16384 fresh pages each time), unless the allocator retains it.
_MEASURE = """
def reuse_faults():
    import ctypes, resource
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 * 2 ** 20

    def use_once():
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)

    use_once()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        use_once()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
"""
PAGES = 10 * 64 * 2 ** 20 // 4096
glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc only")


@glibc_only
def test_glibc_defaults_fault_on_every_reuse():
    # a fresh process with the C library's defaults (no torch, no aeroseg)
    out = subprocess.run([sys.executable, "-c", _MEASURE + "print(reuse_faults())"], capture_output=True,
                         text=True, check=True)
    assert int(out.stdout) > 0.9 * PAGES


@glibc_only
def test_retain_removes_the_page_faults_of_reusing_a_large_block():
    # In this process: the setting is process-wide and cannot be undone, and the tools (the
    # benchmark CLI test among them) apply it here anyway.
    assert configure_cpu_allocator("retain") is True
    namespace = {}
    exec(_MEASURE, namespace)
    assert namespace["reuse_faults"]() < 0.3 * PAGES  # the freed block is reused (the heap may grow once)


def test_system_changes_nothing_and_unknown_modes_are_one_line_config_errors():
    assert configure_cpu_allocator("system") is False
    with pytest.raises(ConfigError, match=r"CPU_ALLOCATOR='jemalloc': expected one of \('retain', 'system'\)"):
        configure_cpu_allocator("jemalloc")
