"""Speed, memory, FLOPs and model FLOP utilisation (MFU) of AerOSeg models.

* :mod:`.measure`: FLOP counting (``torch.utils.flop_counter`` plus the attention kernels it
  misses), the matmul peak, per-module timers and peak memory;
* :mod:`.runner`: :func:`benchmark_config`, which builds a config's model and measures it;
* :mod:`.cli`: ``tools/benchmark.py`` (``python -m aeroseg.benchmark.cli``).
"""
from .runner import MODES, benchmark_config, random_init_config

__all__ = ["MODES", "benchmark_config", "random_init_config"]
