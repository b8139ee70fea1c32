"""Evaluation: the open-vocabulary semantic-segmentation evaluator and the inference loop."""
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from .sem_seg_evaluation import (
    EVALUATOR_TYPE,
    EvaluationError,
    OpenVocabSemSegEvaluator,
    build_evaluator,
    metrics_from_confusion_matrix,
)

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "EVALUATOR_TYPE",
    "EvaluationError",
    "OpenVocabSemSegEvaluator",
    "build_evaluator",
    "inference_on_dataset",
    "metrics_from_confusion_matrix",
]
