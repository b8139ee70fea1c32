"""AerOSeg's own training loop: a small loop over well-kept parts (docs/DESIGN.md, "detectron2: native when installed").

Iteration-based, like detectron2: data from an endless loader, AdamW with per-part learning
rates, an fvcore-based schedule, optional mixed precision and gradient clipping, DDP across
processes, periodic checkpoints (``model_0004999.pth`` ... ``model_final.pth``), periodic and
final evaluation, metrics to the console, ``metrics.json`` and tensorboard.
"""
import logging
import os
import time
from collections import OrderedDict
from typing import Dict, List

import torch

from ..checkpoint import AerOSegCheckpointer, periodic_checkpoint_name
from ..data import MetadataCatalog, build_test_loader, build_train_loader, check_datasets
from ..modeling import build_model
from ..solver import build_lr_scheduler, build_optimizer
from ..utils import comm, cpu_info
from .defaults import all_ranks_rng_state
from .metrics import MetricsWriter
from .preemption import TrainingInterrupted, stop_window
from .resume import resume_or_load
from .train_step import TrainingStep, build_ddp_model

__all__ = ["Trainer", "flatten_results"]

logger = logging.getLogger("aeroseg")


def flatten_results(results: Dict) -> Dict[str, float]:
    """{"isaid_val": {"sem_seg": {"mIoU": ..}}} -> {"isaid_val/sem_seg/mIoU": ..}."""
    flat = {}
    for key, value in results.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": v for k, v in flatten_results(value).items()})
        else:
            flat[key] = value
    return flat


class Trainer:
    """Train ``cfg``'s model on ``cfg.DATASETS.TRAIN``; evaluate on ``cfg.DATASETS.TEST``."""

    def __init__(self, cfg):
        self.cfg = cfg
        check_datasets(cfg, train=True)  # a wrong name or folder fails now, not after training
        self.model = build_model(cfg)
        self.train_vocabulary = self.model.vocabulary
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.device = self.model.device
        self.ddp_model = build_ddp_model(self.model, cfg)
        self.step = TrainingStep(**TrainingStep.from_config(cfg, self.ddp_model, self.optimizer, self.device))
        if self.step.amp and self.device.type == "cpu" and not cpu_info.has_native_bf16():
            logger.warning("SOLVER.AMP.ENABLED on a CPU without AVX512-BF16/AMX: bf16 is emulated and "
                           "measured 4-85x slower than fp32 (docs/PERFORMANCE.md); SOLVER.AMP.ENABLED False "
                           "trains faster here")
        checkpointables = {"optimizer": self.optimizer, "scheduler": self.scheduler}
        if self.grad_scaler.is_enabled():
            checkpointables["grad_scaler"] = self.grad_scaler
        self.checkpointer = AerOSegCheckpointer(self.model, cfg.OUTPUT_DIR, **checkpointables)
        self.checkpointer.save_to_disk = comm.is_main_process()
        self.start_iter = 0
        self.iter = 0  # the iteration running (as detectron2's trainers)
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.last_results: Dict = {}
        self.skipped_samples: List[str] = []  # DATALOADER.SKIP_BAD_SAMPLES: errors of skipped samples
        self.out_of_range_pixels = 0  # DATALOADER.OUT_OF_RANGE_LABELS ignore: pixels mapped to ignore
        self._stops = stop_window()  # a scheduler's stop requests (preemption.py); inert in plain runs

    # ------------------------------------------------------------------ state
    def resume_or_load(self, resume: bool = True) -> None:
        """``resume`` and ``OUTPUT_DIR/last_checkpoint`` exists: continue it (model, optimizer,
        scheduler, iteration, RNG). Otherwise load only the model from ``MODEL.WEIGHTS`` (if set)."""
        self.start_iter = resume_or_load(self.checkpointer, self.cfg, resume)

    def _save(self, name: str, iteration: int) -> None:
        states = all_ranks_rng_state()  # collective: every rank saves, rank 0 writes
        self.checkpointer.save(name, iteration=iteration, rng=states[0], rng_all_ranks=states)

    # ------------------------------------------------------------------ training
    @property
    def grad_scaler(self) -> torch.amp.GradScaler:
        """The step's GradScaler (enabled for fp16 AMP only; checkpointed then)."""
        return self.step.grad_scaler

    def run_step(self, batch) -> Dict[str, float]:
        """One update (:class:`~aeroseg.engine.train_step.TrainingStep`); the losses averaged over processes."""
        return self.step(batch)

    def train(self) -> Dict:
        """Run iterations ``start_iter .. MAX_ITER-1``; returns the last evaluation results.

        In a scheduler's job (:mod:`.preemption`) a stop request during the iterations ends the
        run after the current one, with its training state saved (:class:`TrainingInterrupted`).
        """
        cfg = self.cfg
        if self.start_iter >= self.max_iter:
            logger.info("Starting training from iteration %d to %d", self.start_iter, self.max_iter)
            logger.info("Nothing to train: the checkpoint is already at iteration %d", self.start_iter)
            missing = self.missing_results()
            if missing:  # e.g. the run died during its final evaluation
                logger.info("No evaluation results of this finished run for %s: evaluating it now", ", ".join(missing))
                self.last_results = self.test(cfg, self.model)
                writer = MetricsWriter(cfg.OUTPUT_DIR, self.max_iter, enabled=comm.is_main_process(),
                                       start_iter=self.max_iter)
                writer.write_scalars(self.max_iter - 1, flatten_results(self.last_results))
                writer.close()
            return self.last_results
        self._stops = stop_window()
        with self._stops:  # from here a scheduler's stop request waits for the end of the iteration
            logger.info("Starting training from iteration %d to %d", self.start_iter, self.max_iter)
            writer = MetricsWriter(cfg.OUTPUT_DIR, self.max_iter, enabled=comm.is_main_process(),
                                   start_iter=self.start_iter)
            try:
                loader = iter(build_train_loader(cfg, start_iter=self.start_iter))
                self.model.set_vocabulary(self.train_vocabulary)
                self.ddp_model.train()
                for iteration in range(self.start_iter, self.max_iter):
                    self.iter = iteration
                    start = time.perf_counter()
                    batch = next(loader)
                    data_time = time.perf_counter() - start
                    self._count_data_problems(batch, iteration)
                    losses = self.run_step(batch)
                    lr = max(g["lr"] for g in self.optimizer.param_groups)
                    self.scheduler.step()
                    writer.put(iteration, time.perf_counter() - start, data_time=data_time, lr=lr, **losses)
                    self._after_step(iteration, writer)
            finally:
                writer.close()
                self._report_data_problems()
        return self.last_results

    def missing_results(self):
        """Names of ``DATASETS.TEST`` without ``OUTPUT_DIR/inference/<name>/sem_seg_results.json``."""
        from ..evaluation.sem_seg_evaluation import results_path

        return [name for name in self.cfg.DATASETS.TEST if not os.path.isfile(results_path(self.cfg.OUTPUT_DIR, name))]

    def _count_data_problems(self, batch, iteration: int) -> None:
        for item in batch:
            for message in item.get("skipped_bad_samples", ()):
                logger.warning("Skipped a bad sample at iteration %d (DATALOADER.SKIP_BAD_SAMPLES): %s",
                               iteration, message)
                self.skipped_samples.append(message)
            self.out_of_range_pixels += int(item.get("out_of_range_pixels", 0))

    def _report_data_problems(self) -> None:
        if self.skipped_samples:
            unique = sorted(set(self.skipped_samples))
            logger.warning("Skipped %d bad sample(s) in training (%d distinct file(s), DATALOADER.SKIP_BAD_SAMPLES),"
                           " e.g. %s", len(self.skipped_samples), len(unique), unique[0])
        if self.out_of_range_pixels:
            logger.warning("%d label pixels outside the class range were mapped to ignore in training "
                           "(DATALOADER.OUT_OF_RANGE_LABELS ignore)", self.out_of_range_pixels)

    def _after_step(self, iteration: int, writer: MetricsWriter) -> None:
        cfg = self.cfg
        final = iteration == self.max_iter - 1
        name = periodic_checkpoint_name(iteration, cfg.SOLVER.CHECKPOINT_PERIOD, self.max_iter)
        if name:
            self._save(name, iteration)
        if final:
            self._stops.close()  # model_final is saved: a stop from now on hands over at once
        eval_period = cfg.TEST.EVAL_PERIOD
        if cfg.DATASETS.TEST and (final or (eval_period > 0 and (iteration + 1) % eval_period == 0)):
            self.last_results = self.test(cfg, self.model)
            writer.write_scalars(iteration, flatten_results(self.last_results))
            self.model.set_vocabulary(self.train_vocabulary)
            self.ddp_model.train()
        comm.synchronize()
        if not final and self._stops.requested():
            self._stop(iteration, saved=name)

    def _stop(self, iteration: int, saved) -> None:
        """A scheduler asked the run to stop: save this iteration's whole training state (unless
        its periodic checkpoint just did), the one ``--resume`` continues exactly, and leave."""
        name = saved or f"model_{iteration:07d}"  # the periodic checkpoints' naming
        if not saved:
            self._save(name, iteration)
        comm.synchronize()
        logger.info("Stopped after iteration %d on the scheduler's request; %s.pth holds the training state "
                    "that --resume continues", iteration, name)
        raise TrainingInterrupted(iteration, f"{name}.pth")

    # ------------------------------------------------------------------ evaluation
    @classmethod
    def test(cls, cfg, model, evaluators=None) -> Dict:
        """Evaluate ``model`` on every dataset of ``DATASETS.TEST`` with all of its classes.

        Returns ``{dataset: {"sem_seg": {...}}}``, or the inner dict when there is one dataset
        (as detectron2). The model's vocabulary is restored afterwards.
        """
        from ..evaluation import build_evaluator, inference_on_dataset
        from ..evaluation.sem_seg_evaluation import inference_dir

        results = OrderedDict()
        for i, name in enumerate(cfg.DATASETS.TEST):
            evaluator = (evaluators[i] if evaluators else
                         build_evaluator(cfg, name, inference_dir(cfg.OUTPUT_DIR, name)))
            with model.vocabulary_as(MetadataCatalog.get(name).stuff_classes):
                results[name] = inference_on_dataset(model, build_test_loader(cfg, name), evaluator)
            if comm.is_main_process() and results[name]:
                m = results[name]["sem_seg"]
                logger.info("%s: s-mIoU %.2f  u-mIoU %.2f  h-mIoU %.2f  mIoU %.2f", name,
                            m["s-mIoU"], m["u-mIoU"], m["h-mIoU"], m["mIoU"])
        return results[next(iter(results))] if len(results) == 1 else results
