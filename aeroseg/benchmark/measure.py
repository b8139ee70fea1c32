"""Measuring AerOSeg against the hardware: time, memory, FLOPs and model FLOP utilisation.

The pieces ``tools/benchmark.py`` is made of, usable on any ``nn.Module``:

* :func:`count_flops` counts floating-point operations with ``torch.utils.flop_counter``
  (it counts matmuls, convolutions and attention kernels; fvcore's JIT tracer fails on AerOSeg and
  misses attention). **FLOPs are 2 x multiply-adds** everywhere here (a (m, k) @ (k, n) matmul is
  2mkn FLOPs), the convention of ``FlopCounterMode`` and of GEMM peak figures.
* :func:`matmul_peak_flops` measures the machine's dense matmul throughput (FLOP/s) with a large
  square GEMM in a given dtype: the denominator of the model FLOP utilisation (MFU),
  ``achieved FLOP/s / matmul peak``. A ratio to a peak *measured in the same run* holds across
  machines and thread counts, unlike seconds.
* :class:`ModuleTimer` times groups of submodules with forward hooks (CPU: wall clock; CUDA: CUDA
  events, so timing does not add synchronisations) and module-level functions by wrapping them.
* :func:`peak_memory_reset` / :func:`peak_memory_bytes`: the CUDA allocator's peak on CUDA, the
  process' peak resident set size on the CPU (Linux ``VmHWM``, reset through ``clear_refs``).
"""
import contextlib
import math
import os
import resource
import statistics
import time
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "AEROSEG_MODULE_GROUPS",
    "ModuleTimer",
    "PRECISIONS",
    "autocast_context",
    "count_flops",
    "flop_counter",
    "group_flops",
    "matmul_peak_flops",
    "peak_memory_bytes",
    "peak_memory_reset",
    "summarize_times",
    "synchronize",
    "time_runs",
]

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Groups of an AerOSeg forward reported separately: group -> predicate on (qualified name, module).
# Matched top-down: a module inside a matched module is not matched again, so groups are disjoint.
# Class names are tested as well as attribute names so that a renamed attribute still lands in its
# group.
AEROSEG_MODULE_GROUPS: Dict[str, Callable[[str, nn.Module], bool]] = {
    "clip": lambda n, m: n == "clip_backbone",
    "guidance_encoder": lambda n, m: n == "guidance_encoder",
    "correlation": lambda n, m: n == "correlation_embed",
    "guidance_projections": lambda n, m: n in ("spatial_guidance_proj", "text_guidance_proj"),
    # Its Swin blocks, not SpatialRefinementBlock: the refinement block calls that one's
    # forward_channels_last, which no module hook sees.
    "spatial_refinement": lambda n, m: type(m).__name__ == "GuidedSwinBlock",
    "class_refinement": lambda n, m: "ClassRefinement" in type(m).__name__,
    "decoder": lambda n, m: n == "decoder",
    "back_projection": lambda n, m: n == "back_projection",
}
# Module-level functions timed/counted with a group: group -> "module:function" of the places the
# model calls them from (the name is looked up in that module's namespace at call time).
AEROSEG_FUNCTION_GROUPS: Dict[str, Tuple[str, ...]] = {
    "correlation": ("aeroseg.modeling.head.correlation_head:correlation_volume",),
    "losses": ("aeroseg.modeling.meta_arch:segmentation_bce_loss",
               "aeroseg.modeling.meta_arch:semantic_back_projection_loss"),
}
# The correlation head (what CAT-Seg-style heads compute): its share of the forward is reported.
HEAD_GROUPS = ("correlation", "guidance_projections", "spatial_refinement", "class_refinement", "decoder")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_context(device: torch.device, precision: str):
    """``torch.autocast`` for "bf16"/"fp16", a null context for "fp32"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {sorted(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


# --------------------------------------------------------------------------- matmul peak
def matmul_peak_flops(device: torch.device, precision: str = "fp32", size: int = 2048,
                      repeats: int = 5, min_seconds: float = 0.2) -> dict:
    """Dense matmul throughput: the best of ``repeats`` timings of a (size x size) @ (size x size) GEMM.

    Each timing multiplies the same operands enough times to last at least ``min_seconds``; fewer
    than ``repeats`` timings are made once ``5 * min_seconds`` have passed.
    Returns ``{"flops_per_s", "size", "dtype", "seconds_per_gemm"}`` with 2 * size**3 FLOPs per GEMM.
    """
    dtype = PRECISIONS[precision]
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up (thread pools, cuBLAS handles, kernel selection)
    synchronize(device)
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    synchronize(device)
    reps = max(1, math.ceil(min_seconds / max(time.perf_counter() - start, 1e-9)))
    best = math.inf
    budget = time.perf_counter() + 5 * min_seconds  # a slow dtype (bf16 without hardware support) stops early
    for i in range(repeats):
        if i and time.perf_counter() > budget:
            break
        synchronize(device)
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / reps)
    return {"flops_per_s": 2.0 * size ** 3 / best, "size": size, "dtype": precision, "seconds_per_gemm": best}


# --------------------------------------------------------------------------- FLOPs
def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args,
                                  out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _native_multi_head_attention_flops(query_shape, key_shape, value_shape, embed_dim, num_heads,
                                       *args, out_shape=None, **kwargs) -> int:
    """``nn.MultiheadAttention``'s inference fast path: in-projections, attention, out-projection.

    query (B, L, E), key/value (B, S, E): 2 x (L E E + 2 S E E) for q, k, v; 2 x 2 B L S E for
    q k^T and attn v; 2 x L E E for the output projection.
    """
    b, length, embed = query_shape
    source = key_shape[1]
    projections = 2 * b * embed * embed * (2 * length + 2 * source)
    return projections + 4 * b * length * source * embed


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` that also counts two fused CPU kernels it has no formula for.

    ``torch.utils.flop_counter`` has formulas for the CUDA attention kernels but not for
    ``aten._scaled_dot_product_flash_attention_for_cpu`` (what ``F.scaled_dot_product_attention``
    runs on the CPU), which would count attention as free; the same formulas apply to it. Nor has
    it one for ``aten._native_multi_head_attention``, the fused kernel ``nn.MultiheadAttention``
    runs at inference (open_clip's CLIP towers): without it a CLIP block's attention and its
    projections (40% of ViT-B's FLOPs) count as free at inference but not in training.
    """
    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_native_multi_head_attention"):
        mapping[aten._native_multi_head_attention] = _native_multi_head_attention_flops
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_attention_flops
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_attention_backward_flops
    return FlopCounterMode(display=False, depth=None, custom_mapping=mapping)


def _top_level_matches(model: nn.Module, groups: Dict[str, Callable[[str, nn.Module], bool]]
                       ) -> Dict[str, List[str]]:
    """group -> qualified names of the outermost submodules it matches (disjoint across groups)."""
    matched: Dict[str, List[str]] = defaultdict(list)
    taken: List[str] = []
    for name, module in model.named_modules():
        if not name or any(name == t or name.startswith(t + ".") for t in taken):
            continue
        leaf = name.rsplit(".", 1)[-1]
        for group, predicate in groups.items():
            if predicate(leaf, module):
                matched[group].append(name)
                taken.append(name)
                break
    return dict(matched)


def count_flops(fn: Callable[[], object]) -> Tuple[int, Dict[str, int]]:
    """Run ``fn()`` under ``FlopCounterMode``; return (total FLOPs, {module qualified name: FLOPs}).

    Module names are ``FlopCounterMode``'s: the root's class name, then dotted attribute paths
    (``"AerOSeg.clip_backbone"``); each module's count includes its children's and, if ``fn``
    runs a backward pass, the backward operations attributed to it.
    """
    counter = flop_counter()
    with counter:
        fn()
    per_module = {name: int(sum(ops.values())) for name, ops in counter.get_flop_counts().items()}
    return int(counter.get_total_flops()), per_module


def group_flops(model: nn.Module, per_module: Dict[str, int],
                groups: Dict[str, Callable[[str, nn.Module], bool]]) -> Dict[str, int]:
    """Sum the per-module FLOPs of :func:`count_flops` into ``groups`` (see :data:`AEROSEG_MODULE_GROUPS`)."""
    root = type(model).__name__
    out = {}
    for group, names in _top_level_matches(model, groups).items():
        out[group] = sum(per_module.get(f"{root}.{n}", 0) for n in names)
    return out


# --------------------------------------------------------------------------- timing
class ModuleTimer:
    """Time groups of submodules (forward hooks) and module-level functions (wrappers).

    ``with ModuleTimer(model, groups, functions) as timer: ...`` installs the hooks/wrappers;
    :meth:`start_run` / :meth:`end_run` delimit one measured run; :meth:`runs` gives per run
    ``{group: seconds}``. On CUDA, events are recorded (no synchronisation) and read at
    :meth:`end_run`, after the caller has synchronised. When ``flop_counter`` is set to an active
    ``FlopCounterMode``, the FLOPs inside wrapped functions are attributed to their groups too
    (:attr:`function_flops`): ``FlopCounterMode`` attributes FLOPs to modules only.
    """

    def __init__(self, model: nn.Module, groups: Dict[str, Callable[[str, nn.Module], bool]],
                 functions: Optional[Dict[str, Sequence[Tuple[object, str]]]] = None,
                 device: Optional[torch.device] = None):
        self.model = model
        self.device = device or next(model.parameters()).device
        self.groups = _top_level_matches(model, groups)
        self.functions = functions or {}
        self._handles: List = []
        self._patched: List[Tuple[object, str, Optional[Callable]]] = []
        self._pending: List[Tuple[str, object, object]] = []  # (group, start, end) of this run
        self._open: Dict[int, object] = {}
        self._runs: List[Dict[str, float]] = []
        self.flop_counter: Optional[FlopCounterMode] = None
        self.function_flops: Dict[str, int] = defaultdict(int)
        self._depth: Dict[str, int] = defaultdict(int)  # re-entrancy guard per group

    # -- clock
    def _now(self):
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _elapsed(self, start, end) -> float:
        if self.device.type == "cuda":
            return start.elapsed_time(end) / 1e3
        return end - start

    # -- install / remove
    def __enter__(self) -> "ModuleTimer":
        modules = dict(self.model.named_modules())
        for group, names in self.groups.items():
            for name in names:
                module = modules[name]
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(group)))
                self._handles.append(module.register_forward_hook(self._post_hook(group)))
        for group, targets in self.functions.items():
            for owner, attr in targets:
                original = getattr(owner, attr, None)
                if original is None:
                    continue
                own = attr in vars(owner)  # False for a method wrapped on an instance
                setattr(owner, attr, self._wrap(group, original))
                self._patched.append((owner, attr, original if own else None))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        for owner, attr, original in reversed(self._patched):
            if original is None:
                delattr(owner, attr)  # the class' method shows through again
            else:
                setattr(owner, attr, original)
        self._handles.clear()
        self._patched.clear()

    def _pre_hook(self, group):
        def hook(module, args):
            self._open[id(module)] = self._now()
        return hook

    def _post_hook(self, group):
        def hook(module, args, output):
            start = self._open.pop(id(module), None)
            if start is not None:
                self._pending.append((group, start, self._now()))
        return hook

    def _wrap(self, group: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            if self._depth[group]:
                return fn(*args, **kwargs)
            self._depth[group] += 1
            flops_before = self.flop_counter.get_total_flops() if self.flop_counter is not None else 0
            start = self._now()
            try:
                return fn(*args, **kwargs)
            finally:
                self._pending.append((group, start, self._now()))
                if self.flop_counter is not None:
                    self.function_flops[group] += self.flop_counter.get_total_flops() - flops_before
                self._depth[group] -= 1
        timed.__wrapped__ = fn
        return timed

    # -- runs
    def record(self, group: str):
        """Context manager timing a code region (e.g. the backward pass) as ``group``."""
        timer = self

        class _Region:
            def __enter__(self_inner):
                self_inner.start = timer._now()

            def __exit__(self_inner, *exc):
                timer._pending.append((group, self_inner.start, timer._now()))

        return _Region()

    def start_run(self) -> None:
        self._pending = []
        self._open = {}

    def end_run(self, keep: bool = True) -> Dict[str, float]:
        """Close the run (after synchronising on CUDA): ``{group: seconds}`` summed over its calls."""
        synchronize(self.device)
        totals: Dict[str, float] = defaultdict(float)
        for group, start, end in self._pending:
            totals[group] += self._elapsed(start, end)
        self._pending = []
        if keep:
            self._runs.append(dict(totals))
        return dict(totals)

    @property
    def runs(self) -> List[Dict[str, float]]:
        return list(self._runs)


def summarize_times(seconds: Sequence[float]) -> dict:
    """Median and spread of run times: ``{"median_s", "min_s", "max_s", "iqr_s", "runs"}``."""
    s = sorted(float(x) for x in seconds)
    if not s:
        return {"median_s": float("nan"), "min_s": float("nan"), "max_s": float("nan"), "iqr_s": 0.0, "runs": 0}
    if len(s) >= 4:
        q = statistics.quantiles(s, n=4)
        iqr = q[2] - q[0]
    else:
        iqr = s[-1] - s[0]
    return {"median_s": statistics.median(s), "min_s": s[0], "max_s": s[-1], "iqr_s": iqr, "runs": len(s)}


def time_runs(fn: Callable[[], object], runs: int, warmup: int, device: torch.device,
              timer: Optional[ModuleTimer] = None) -> List[float]:
    """Wall-clock seconds of ``runs`` calls of ``fn`` after ``warmup`` untimed ones (synchronised)."""
    for _ in range(warmup):
        if timer is not None:
            timer.start_run()
        fn()
        if timer is not None:
            timer.end_run(keep=False)
    times = []
    for _ in range(runs):
        synchronize(device)
        if timer is not None:
            timer.start_run()
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
        if timer is not None:
            timer.end_run()
    return times


# --------------------------------------------------------------------------- memory
_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def peak_memory_reset(device: torch.device) -> str:
    """Reset the peak-memory counter; returns what :func:`peak_memory_bytes` will report.

    CUDA: the caching allocator's peak (``"cuda_max_allocated"``). CPU on Linux: the process' peak
    resident set size, reset by writing 5 to ``/proc/self/clear_refs`` (``"cpu_peak_rss"``); where
    that is impossible, ``ru_maxrss`` (``"cpu_peak_rss_since_start"``, the peak of the whole
    process, which cannot be reset).
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda_max_allocated"
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return "cpu_peak_rss"
    except OSError:
        return "cpu_peak_rss_since_start"


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def environment() -> dict:
    """What the numbers depend on: torch version, threads, CPU/GPU names."""
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        info["load_average_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    return info
