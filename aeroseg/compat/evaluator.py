"""detectron2's evaluator interface (``DatasetEvaluator``, ``DatasetEvaluators``), for environments without it.

With detectron2 installed, :mod:`aeroseg.compat` gives detectron2's own classes instead.
"""
from collections import OrderedDict
from typing import List, Sequence

from ..utils import comm

__all__ = ["DatasetEvaluator", "DatasetEvaluators"]


class DatasetEvaluator:
    """Base class: accumulate over :meth:`process` calls, summarise in :meth:`evaluate`."""

    def reset(self) -> None:
        """Forget everything processed so far (called before each pass over a dataset)."""

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        """Take one model call: ``inputs`` as given to the model, ``outputs`` as it returned."""

    def evaluate(self):
        """``{task: {metric: value}}`` over everything processed since :meth:`reset`."""


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators run as one; their result dicts are merged (task names must differ)."""

    def __init__(self, evaluators: Sequence[DatasetEvaluator]):
        super().__init__()
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs, outputs) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self):
        results = OrderedDict()
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if comm.is_main_process() and result is not None:
                for task, metrics in result.items():
                    if task in results:
                        raise ValueError(f"two evaluators both report results for task '{task}'")
                    results[task] = metrics
        return results
