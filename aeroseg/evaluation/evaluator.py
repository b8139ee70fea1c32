"""Evaluator base class and the inference loop (detectron2's interface; docs/DESIGN.md).

An evaluator has three methods: :meth:`~DatasetEvaluator.reset` before a pass over a dataset,
:meth:`~DatasetEvaluator.process` after every model call with that call's inputs and outputs, and
:meth:`~DatasetEvaluator.evaluate` at the end, which returns ``{task: {metric: value}}`` (on the
main process; other processes may return ``{}`` or ``None``).

With detectron2 installed, :class:`DatasetEvaluator` and :class:`DatasetEvaluators` *are*
detectron2's, so AerOSeg's evaluators plug into detectron2's trainer and detectron2's evaluators
into :func:`inference_on_dataset`. Without it, small classes with the same methods are used
(:mod:`aeroseg.compat`).
"""
import datetime
import logging
import time
from contextlib import ExitStack
from typing import Callable, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn

from ..utils import comm
from ..compat import DatasetEvaluator, DatasetEvaluators

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "inference_on_dataset"]

logger = logging.getLogger(__name__)


def _sync_cuda() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _length(data_loader) -> Optional[int]:
    try:
        return len(data_loader)
    except TypeError:
        return None


def inference_on_dataset(
    model: Union[nn.Module, Callable[[List[dict]], List[dict]]],
    data_loader: Iterable[List[dict]],
    evaluator: Union[DatasetEvaluator, Sequence[DatasetEvaluator], None],
    *,
    warmup_iters: int = 5,
    description: str = "inference",
):
    """Run ``model`` over every batch of ``data_loader`` and evaluate it.

    ``data_loader`` yields lists of model-input dicts (any iterable works, a list included);
    ``evaluator`` is a :class:`DatasetEvaluator`, a list of them or ``None`` (inference only).
    The model runs in eval mode under ``torch.no_grad()``; its previous training mode is restored
    afterwards, also when an exception interrupts the loop. Progress is shown with tqdm on the
    main process, and the total time and the time per iteration (excluding the first
    ``warmup_iters`` iterations, which include lazy initialisation) are logged.

    Returns the evaluator's results (``{}`` on non-main processes or without an evaluator).
    """
    from tqdm import tqdm

    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif isinstance(evaluator, (list, tuple)):
        evaluator = DatasetEvaluators(list(evaluator))
    num_batches = _length(data_loader)
    world = comm.get_world_size()
    logger.info("Start %s on %s batches", description, num_batches if num_batches is not None else "?")
    evaluator.reset()

    warmup = min(warmup_iters, max((num_batches or 0) - 1, 0))
    count = 0
    compute_time = 0.0
    start = time.perf_counter()
    timed_start = start
    with ExitStack() as stack:
        if isinstance(model, nn.Module):
            was_training = model.training
            model.eval()
            stack.callback(model.train, was_training)
        stack.enter_context(torch.no_grad())
        progress = stack.enter_context(
            tqdm(total=num_batches, desc=description, unit="batch", disable=not comm.is_main_process(),
                 dynamic_ncols=True, leave=False)
        )
        for inputs in data_loader:
            if count == warmup:  # restart the clocks once warm-up is over
                _sync_cuda()
                timed_start = time.perf_counter()
                compute_time = 0.0
            tic = time.perf_counter()
            outputs = model(inputs)
            _sync_cuda()
            compute_time += time.perf_counter() - tic
            evaluator.process(inputs, outputs)
            count += 1
            progress.update(1)

    _sync_cuda()
    total = time.perf_counter() - start
    timed = max(count - warmup, 0)
    logger.info("Total %s time: %s (%.4f s / batch per device, on %d device%s)", description,
                datetime.timedelta(seconds=int(round(total))),
                (time.perf_counter() - timed_start) / timed if timed else float("nan"),
                world, "" if world == 1 else "s")
    logger.info("Total %s pure compute time: %s (%.4f s / batch per device, on %d device%s)", description,
                datetime.timedelta(seconds=int(round(compute_time))),
                compute_time / timed if timed else float("nan"), world, "" if world == 1 else "s")

    results = evaluator.evaluate()
    # An evaluator may return None on non-main processes (detectron2's convention).
    return {} if results is None else results
