"""CPU settings: CPU_ALLOCATOR ("retain" keeps freed memory in the process, so reusing it costs no page
faults) and the CPU feature check behind the bf16 warning."""
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


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    from aeroseg.utils.cpu_info import cpu_flags, has_native_bf16

    def cpuinfo(flags):
        path = tmp_path / f"cpuinfo_{len(flags)}"
        path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
        return str(path)

    assert cpu_flags(cpuinfo("fpu sse2 avx2 fma")) == {"fpu", "sse2", "avx2", "fma"}
    assert not has_native_bf16(cpuinfo("fpu sse2 avx2 fma"))  # this AMD EPYC
    assert has_native_bf16(cpuinfo("avx2 avx512f avx512_bf16"))  # Cooper Lake, Zen 4
    assert has_native_bf16(cpuinfo("avx2 avx512f amx_bf16 amx_tile"))  # Sapphire Rapids
    assert not has_native_bf16(str(tmp_path / "missing"))  # not Linux: no claim
