"""CPU_ALLOCATOR: "retain" keeps freed tensors' memory in the process, so reusing it costs no page faults."""
import json
import platform
import subprocess
import sys

import pytest

from aeroseg.utils.cpu_allocator import configure_cpu_allocator
from aeroseg.utils.errors import ConfigError
from conftest import REPO

# Allocates and frees a 64 MiB tensor ten times after the first and counts the minor page faults of
# those ten: glibc mmaps such a block and unmaps it on free (16384 fresh pages each time), unless
# the allocator retains it.
_PROBE = """
import json, resource, sys
import torch
applied = False
if sys.argv[1] != "untouched":
    from aeroseg.utils.cpu_allocator import configure_cpu_allocator
    applied = configure_cpu_allocator(sys.argv[1])
torch.ones(16 * 2 ** 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 * 2 ** 20)
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(mode):
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], cwd=REPO, capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_retain_removes_the_page_faults_of_reallocating_a_large_tensor():
    system, retain = _probe("untouched"), _probe("retain")
    assert system["applied"] is False and retain["applied"] is True
    pages = 10 * 64 * 2 ** 20 // 4096
    assert system["faults"] > 0.9 * pages  # every reallocation touches fresh pages
    assert retain["faults"] < 0.3 * pages  # the freed block is reused (the heap may grow once or twice)


def test_system_changes_nothing_and_unknown_modes_are_one_line_config_errors():
    assert configure_cpu_allocator("system") is False
    with pytest.raises(ConfigError, match=r"CPU_ALLOCATOR='jemalloc': expected one of \('retain', 'system'\)"):
        configure_cpu_allocator("jemalloc")
