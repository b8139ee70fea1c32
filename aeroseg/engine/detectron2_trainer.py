"""Run AerOSeg on detectron2's ``DefaultTrainer`` (only importable with detectron2 installed).

The two engines are interchangeable: the same config gives the same weights on either one.
detectron2 contributes its loop, hook system, event storage and writers; AerOSeg contributes
what decides the numbers, so that they cannot drift apart:

* the training step is the one both engines run (:class:`aeroseg.engine.train_step.TrainingStep`): bf16 autocast
  where supported (CPU included; fp16 + gradient scaler only on GPUs without bf16) instead of
  detectron2's fp16 ``AMPTrainer``, and ``SOLVER.CLIP_GRADIENTS`` with the same modes;
* DDP is created by the same builder as the own engine's (``build_ddp_model``; detectron2's
  ``create_ddp_model`` would pass a GPU index to a CPU model);
* checkpoints are the own engine's files, written at the same iterations, with the data position
  and the RNG states, and ``--resume`` continues either engine's checkpoint exactly (the training
  loader restarts at ``iteration x IMS_PER_BATCH``) or refuses with a one-line error;
* evaluation switches the model's vocabulary to each test set's classes, through this class'
  (or a subclass') ``build_test_loader`` / ``build_evaluator``, with any ``DatasetEvaluator``
  (detectron2's ``SemSegEvaluator`` included).
"""
import inspect
import logging
import time
from collections import OrderedDict

import torch
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.evaluation import DatasetEvaluator, print_csv_format
from detectron2.utils import comm as d2_comm
from detectron2.utils.logger import setup_logger as d2_setup_logger

from ..checkpoint import AerOSegCheckpointer, periodic_checkpoint_name
from ..data import MetadataCatalog, build_test_loader, build_train_loader
from ..evaluation import build_evaluator, inference_on_dataset
from ..evaluation.sem_seg_evaluation import inference_dir
from ..solver import build_lr_scheduler, build_optimizer
from ..utils.errors import ConfigError
from .defaults import all_ranks_rng_state
from .resume import resume_or_load
from .train_step import TrainingStep, build_ddp_model

__all__ = ["Detectron2Trainer"]

logger = logging.getLogger("aeroseg")


class _AerOSegStep(SimpleTrainer):
    """detectron2's ``SimpleTrainer`` (the loop's data iterator, metric gathering and event storage)
    whose update is :class:`~aeroseg.engine.train_step.TrainingStep`, the one both engines run."""

    def __init__(self, cfg, model, data_loader, optimizer):
        super().__init__(model, data_loader, optimizer)
        device = getattr(model, "module", model).device
        self.step = TrainingStep(**TrainingStep.from_config(cfg, model, optimizer, device))

    def run_step(self):
        assert self.model.training, "[AerOSeg step] the model was switched to eval mode"
        start = time.perf_counter()
        batch = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        losses = self.step(batch)  # already averaged over processes
        self._write_metrics({k: torch.tensor(v) for k, v in losses.items() if k != "total_loss"}, data_time)


class _CheckpointHook(hooks.HookBase):
    """Save when the own engine does (every CHECKPOINT_PERIOD iterations, ``model_final`` at the end),
    in its format: model, optimizer, scheduler, [grad_scaler], iteration and RNG states."""

    def __init__(self, period: int):
        self.period = int(period)

    def after_step(self):
        iteration = self.trainer.iter
        name = periodic_checkpoint_name(iteration, self.period, self.trainer.max_iter)
        if name:
            states = all_ranks_rng_state()  # collective: every rank runs this hook, rank 0 writes
            if d2_comm.is_main_process():
                self.trainer.checkpointer.save(name, iteration=iteration, rng=states[0], rng_all_ranks=states)


class Detectron2Trainer(DefaultTrainer):
    def __init__(self, cfg):
        # DefaultTrainer.__init__ with three substitutions (step, DDP arguments, checkpointer) and
        # without auto_scale_workers: SOLVER.REFERENCE_WORLD_SIZE rescaling is not applied by the own
        # engine either, so the same config trains the same schedule on both.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            d2_setup_logger()
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = build_ddp_model(model, cfg)  # the own engine's DDP (create_ddp_model would pass a GPU index)
        self._trainer = _AerOSegStep(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        checkpointables = {"optimizer": optimizer, "scheduler": self.scheduler}
        if self._trainer.step.grad_scaler.is_enabled():
            checkpointables["grad_scaler"] = self._trainer.step.grad_scaler
        self.checkpointer = AerOSegCheckpointer(model, cfg.OUTPUT_DIR, **checkpointables)
        self.checkpointer.save_to_disk = d2_comm.is_main_process()
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------ state
    def resume_or_load(self, resume: bool = True) -> None:
        """The own engine's resume (same files, same checks, RNG restored), then the training
        loader is rebuilt to continue at the checkpoint's data position."""
        self.start_iter = resume_or_load(self.checkpointer, self.cfg, resume)
        if self.start_iter > 0:
            builder = type(self).build_train_loader
            if "start_iter" not in inspect.signature(builder).parameters:
                raise ConfigError(
                    f"--resume at iteration {self.start_iter}: {type(self).__name__}.build_train_loader(cfg) "
                    f"takes no start_iter, so the data stream would restart at its first sample; give it a "
                    f"start_iter argument (see aeroseg.data.build_train_loader)")
            self._trainer.reset_data_loader(lambda: builder(self.cfg, start_iter=self.start_iter))

    def build_hooks(self):
        """detectron2's hooks, with its PeriodicCheckpointer replaced by the own engine's schedule.

        detectron2 adds its checkpointer hook on the main process only; ours gathers every rank's
        RNG state (a collective), so it runs on every process, where detectron2's stood (after
        PreciseBN, before the evaluation hook).
        """
        built = [h for h in super().build_hooks() if not isinstance(h, hooks.PeriodicCheckpointer)]
        position = next((i for i, h in enumerate(built) if isinstance(h, hooks.EvalHook)), len(built))
        built.insert(position, _CheckpointHook(self.cfg.SOLVER.CHECKPOINT_PERIOD))
        return built

    # ------------------------------------------------------------------ builders
    @classmethod
    def build_train_loader(cls, cfg, start_iter: int = 0):
        return build_train_loader(cfg, start_iter=start_iter)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or inference_dir(cfg.OUTPUT_DIR, dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    # ------------------------------------------------------------------ evaluation
    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate ``model`` on every dataset of ``DATASETS.TEST`` with all of its classes.

        ``DefaultTrainer.test`` plus the vocabulary switch: the model segments each test set's
        ``stuff_classes`` (the training vocabulary is restored afterwards). Loaders and evaluators
        come from ``cls.build_test_loader`` / ``cls.build_evaluator`` unless ``evaluators`` (one
        per test set) is given. Returns ``{dataset: results}``, or the inner dict for one dataset.
        """
        model = getattr(model, "module", model)
        if isinstance(evaluators, DatasetEvaluator):
            evaluators = [evaluators]
        if evaluators is not None and len(evaluators) != len(cfg.DATASETS.TEST):
            raise ValueError(f"{len(evaluators)} evaluators for {len(cfg.DATASETS.TEST)} datasets in DATASETS.TEST")
        results = OrderedDict()
        for idx, name in enumerate(cfg.DATASETS.TEST):
            evaluator = evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, name)
            with model.vocabulary_as(MetadataCatalog.get(name).stuff_classes):
                results[name] = inference_on_dataset(model, cls.build_test_loader(cfg, name), evaluator)
            if d2_comm.is_main_process() and results[name]:
                logger.info("Evaluation results for %s in csv format:", name)
                print_csv_format(results[name])
        return results[next(iter(results))] if len(results) == 1 else results
