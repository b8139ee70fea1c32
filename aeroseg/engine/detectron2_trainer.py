"""Run AerOSeg on detectron2's ``DefaultTrainer`` (only importable with detectron2 installed).

The model (registered in detectron2's META_ARCH_REGISTRY), data loaders, evaluator, optimizer
and schedule are AerOSeg's; detectron2 contributes its loop, hooks, event storage and writers.
Checkpoints have the same format as the own engine's.
"""
import os

from detectron2.engine import DefaultTrainer

from ..data import build_test_loader, build_train_loader
from ..evaluation import build_evaluator
from ..solver import build_lr_scheduler, build_optimizer
from .trainer import Trainer

__all__ = ["Detectron2Trainer"]


class Detectron2Trainer(DefaultTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        return build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name))

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        # The vocabulary must switch to each test set's classes: AerOSeg's test does that.
        return Trainer.test(cfg, getattr(model, "module", model), evaluators)
