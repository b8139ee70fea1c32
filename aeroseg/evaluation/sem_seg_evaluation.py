"""Open-vocabulary semantic-segmentation evaluator: mIoU and its seen / unseen / harmonic split.

Metrics (docs/DESIGN.md, "Metrics"), computed from one (K, K) confusion matrix over all K classes of the
dataset (rows = ground truth, columns = prediction), accumulated on the full-resolution label
with ignore pixels excluded:

* per-class IoU = TP / (TP + FP + FN); a class absent from both ground truth and prediction
  (TP + FP + FN = 0) has IoU NaN and is skipped in every mean. A class predicted but absent from
  the ground truth has IoU 0.
* ``mIoU`` over all classes, ``s-mIoU`` over the seen and ``u-mIoU`` over the unseen classes,
  ``h-mIoU = 2·s·u / (s + u)`` (0 when both are 0; NaN when the dataset has no seen or no unseen
  classes, which the log and the JSON file say).
* ``fwIoU`` (IoU weighted by ground-truth frequency), ``pACC`` (pixel accuracy) and ``mACC``
  (mean over classes present in the ground truth of TP / ground-truth pixels).

All values are percentages, like detectron2's ``SemSegEvaluator``.
"""
import json
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..compat import MetadataCatalog
from ..utils import comm
from ..utils.errors import AerOSegError, one_line
from ..utils.io import write_text_atomic
from .evaluator import DatasetEvaluator

__all__ = [
    "RESULTS_FILE",
    "inference_dir",
    "results_path",
    "EVALUATOR_TYPE",
    "EvaluationError",
    "OpenVocabSemSegEvaluator",
    "build_evaluator",
    "metrics_from_confusion_matrix",
]

logger = logging.getLogger(__name__)

EVALUATOR_TYPE = "sem_seg_open_vocab"
RESULTS_FILE = "sem_seg_results.json"


def inference_dir(output_dir, dataset_name: str) -> str:
    """Where a run's evaluation of ``dataset_name`` writes its files: ``<output_dir>/inference/<name>``."""
    return os.path.join(output_dir, "inference", dataset_name)


def results_path(output_dir, dataset_name: str) -> str:
    """``<output_dir>/inference/<name>/sem_seg_results.json``: the results file of one evaluation."""
    return os.path.join(inference_dir(output_dir, dataset_name), RESULTS_FILE)


class EvaluationError(AerOSegError, ValueError):
    """A label, prediction or dataset setting the evaluator cannot use (one-line message)."""


def _mean(values: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN if there are none."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def metrics_from_confusion_matrix(
    conf: np.ndarray,
    class_names: Sequence[str],
    seen_classes: Sequence[str] = (),
    unseen_classes: Sequence[str] = (),
) -> Dict[str, object]:
    """All metrics of a (K, K) confusion matrix (rows = ground truth, columns = prediction).

    Returns ``{"summary": OrderedDict(mIoU, s-mIoU, u-mIoU, h-mIoU, fwIoU, pACC, mACC)``,
    ``"iou": (K,)``, ``"acc": (K,)``, ``"gt_pixels": (K,)``, ``"pred_pixels": (K,)``,
    ``"notes": [str]}``; IoU/accuracy values are fractions in [0, 1] (NaN = undefined), the
    summary is in percent.
    """
    conf = np.asarray(conf, dtype=np.float64)
    k = len(class_names)
    if conf.shape != (k, k):
        raise EvaluationError(f"confusion matrix has shape {conf.shape}, expected ({k}, {k})")
    tp = np.diag(conf)
    gt = conf.sum(axis=1)
    pred = conf.sum(axis=0)
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    total = gt.sum()
    index = {name: i for i, name in enumerate(class_names)}
    seen_idx = np.array([index[c] for c in seen_classes], dtype=np.int64)
    unseen_idx = np.array([index[c] for c in unseen_classes], dtype=np.int64)

    notes: List[str] = []
    if total == 0:
        notes.append("no labelled pixels were evaluated: every metric is NaN")
    m_iou = _mean(iou)
    s_iou = _mean(iou[seen_idx])
    u_iou = _mean(iou[unseen_idx])
    for side, idx, value in (("seen", seen_idx, s_iou), ("unseen", unseen_idx, u_iou)):
        if idx.size == 0:
            notes.append(f"the dataset has no {side} classes: {side[0]}-mIoU and h-mIoU are NaN")
        elif math.isnan(value) and total > 0:
            notes.append(f"no {side} class occurs in the ground truth or the prediction: "
                         f"{side[0]}-mIoU and h-mIoU are NaN")
    if math.isnan(s_iou) or math.isnan(u_iou):
        h_iou = float("nan")
    elif s_iou + u_iou == 0:
        h_iou = 0.0
    else:
        h_iou = 2 * s_iou * u_iou / (s_iou + u_iou)
    if total > 0:
        present = union > 0  # gt > 0 implies union > 0, so NaN IoUs have zero weight
        fw_iou = float((gt[present] / total * iou[present]).sum())
        p_acc = float(tp.sum() / total)
    else:
        fw_iou = p_acc = float("nan")
    m_acc = _mean(acc)

    summary = OrderedDict(
        [("mIoU", m_iou), ("s-mIoU", s_iou), ("u-mIoU", u_iou), ("h-mIoU", h_iou),
         ("fwIoU", fw_iou), ("pACC", p_acc), ("mACC", m_acc)]
    )
    summary = OrderedDict((key, 100.0 * value) for key, value in summary.items())
    return {"summary": summary, "iou": iou, "acc": acc, "gt_pixels": gt.astype(np.int64),
            "pred_pixels": pred.astype(np.int64), "notes": notes}


def _json_number(value):
    """JSON has no NaN: undefined values are written as null."""
    value = float(value)
    return None if math.isnan(value) else value


def _write_json_atomically(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=False), durable=True)


class OpenVocabSemSegEvaluator(DatasetEvaluator):
    """mIoU / s-mIoU / u-mIoU / h-mIoU, fwIoU, pACC and mACC of a semantic-segmentation model.

    Args:
        dataset_name: a name registered in ``MetadataCatalog`` whose metadata has
            ``stuff_classes`` (the K class names, in label-index order) and optionally
            ``seen_classes``, ``unseen_classes`` (default: all seen, none unseen) and
            ``ignore_label`` (default 255).
        output_dir: if given, :meth:`evaluate` writes ``output_dir/sem_seg_results.json``
            (callers pass ``os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)``).
        distributed: sum the confusion matrices of all processes in :meth:`evaluate` (when
            ``torch.distributed`` is initialised); only the main process then returns results,
            the others return ``{}``. If False, every process evaluates what it processed.
        seen_classes, unseen_classes: override the metadata's split (class names). Giving one
            makes the other "all remaining classes" unless it is given too.

    :meth:`process` takes the model's input dicts (each with ``sem_seg``, a (H, W) integer
    ground truth at the original resolution, or else ``sem_seg_file_name``) and its outputs
    ``[{"sem_seg": (K, h, w) scores}]``; the prediction is the argmax over K after bilinear
    resizing of the scores to (H, W) when the sizes differ.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        seen_classes: Optional[Sequence[str]] = None,
        unseen_classes: Optional[Sequence[str]] = None,
    ):
        super().__init__()
        meta = MetadataCatalog.get(dataset_name)
        classes = meta.get("stuff_classes")
        if not classes:
            raise EvaluationError(f"dataset '{dataset_name}' has no stuff_classes in its metadata "
                                  f"(is it registered?)")
        self.dataset_name = dataset_name
        self.class_names: List[str] = [str(c) for c in classes]
        self.num_classes = len(self.class_names)
        self.ignore_label = int(meta.get("ignore_label", 255))
        self.output_dir = output_dir
        self.distributed = distributed
        self.seen_classes, self.unseen_classes = self._resolve_split(meta, seen_classes, unseen_classes)
        self.reset()

    # ------------------------------------------------------------------ set-up
    def _resolve_split(self, meta, seen, unseen):
        classes = self.class_names
        if seen is None and unseen is None:
            unseen = list(meta.get("unseen_classes", None) or [])
            seen = meta.get("seen_classes", None)
            if seen is None:
                seen = [c for c in classes if c not in unseen]
        elif seen is None:
            seen = [c for c in classes if c not in unseen]
        elif unseen is None:
            unseen = [c for c in classes if c not in seen]
        seen, unseen = [str(c) for c in seen], [str(c) for c in unseen]
        for side, names in (("seen", seen), ("unseen", unseen)):
            unknown = [c for c in names if c not in classes]
            if unknown:
                raise EvaluationError(f"dataset '{self.dataset_name}': {side} classes {unknown} are not among "
                                      f"its classes {classes}")
        both = sorted(set(seen) & set(unseen))
        if both:
            raise EvaluationError(f"dataset '{self.dataset_name}': classes {both} are both seen and unseen")
        # keep the dataset's class order
        return [c for c in classes if c in seen], [c for c in classes if c in unseen]

    # ------------------------------------------------------------------ accumulation
    def reset(self) -> None:
        self._conf = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self._num_images = 0
        # DATALOADER.OUT_OF_RANGE_LABELS ignore: files and pixels whose label values were mapped to ignore
        self._out_of_range = [0, 0]

    def _ground_truth(self, item: dict, where: str) -> torch.Tensor:
        if "sem_seg" in item and item["sem_seg"] is not None:
            label = item["sem_seg"]
            label = label if isinstance(label, torch.Tensor) else torch.as_tensor(np.asarray(label))
        elif item.get("sem_seg_file_name"):
            from ..data.dataset_mapper import read_label

            label = torch.from_numpy(read_label(item["sem_seg_file_name"]).astype(np.int64))
        else:
            raise EvaluationError(f"{where}: input has neither 'sem_seg' nor 'sem_seg_file_name' "
                                  f"(the evaluator needs the ground truth)")
        if label.dim() == 3 and label.shape[0] == 1:
            label = label[0]
        if label.dim() != 2 or label.is_floating_point() or label.is_complex():
            raise EvaluationError(f"{where}: ground truth must be an integer (H, W) map, got "
                                  f"{tuple(label.shape)} {label.dtype}")
        return label.long()

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        if len(inputs) != len(outputs):
            raise EvaluationError(f"process() got {len(inputs)} inputs but {len(outputs)} outputs")
        k = self.num_classes
        for item, output in zip(inputs, outputs):
            where = item.get("sem_seg_file_name") or item.get("file_name") or f"image #{self._num_images}"
            scores = output["sem_seg"]
            if not isinstance(scores, torch.Tensor) or scores.dim() != 3 or scores.shape[0] != k:
                shape = tuple(scores.shape) if hasattr(scores, "shape") else type(scores).__name__
                raise EvaluationError(f"{where}: prediction 'sem_seg' must be ({k}, H, W) scores for the "
                                      f"{k} classes of {self.dataset_name}, got {shape}")
            label = self._ground_truth(item, where).to(scores.device)
            if tuple(scores.shape[-2:]) != tuple(label.shape):
                scores = F.interpolate(scores[None].float(), size=tuple(label.shape), mode="bilinear",
                                       align_corners=False)[0]
            pred = scores.argmax(dim=0)
            valid = label != self.ignore_label
            bad = valid & ((label < 0) | (label >= k))
            if bool(bad.any()):
                value = int(label[bad][0])
                raise EvaluationError(one_line(
                    f"{where}: ground-truth value {value} is not a class index of {self.dataset_name} "
                    f"(0..{k - 1}) nor the ignore label {self.ignore_label}"))
            index = label[valid] * k + pred[valid]
            counts = torch.bincount(index, minlength=k * k)
            self._conf += counts.view(k, k).to(device="cpu", dtype=torch.int64)
            self._num_images += 1
            mapped = int(item.get("out_of_range_pixels", 0) or 0)  # set by the mapper (OUT_OF_RANGE_LABELS ignore)
            if mapped:
                self._out_of_range[0] += 1
                self._out_of_range[1] += mapped

    # ------------------------------------------------------------------ results
    def _reduced(self):
        """(confusion matrix, number of images, [files, pixels] mapped to ignore), summed over processes
        when distributed."""
        conf, num_images, out_of_range = self._conf, self._num_images, list(self._out_of_range)
        if self.distributed and comm.get_world_size() > 1:
            device = torch.device("cpu")
            if dist.get_backend() == "nccl":
                device = torch.device("cuda", torch.cuda.current_device())
            extra = torch.tensor([num_images, *out_of_range], dtype=torch.int64)
            flat = torch.cat([conf.flatten(), extra]).to(device)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat = flat.cpu()
            conf, num_images, out_of_range = flat[:-3].view_as(conf), int(flat[-3]), flat[-2:].tolist()
        return conf, num_images, out_of_range

    def evaluate(self):
        conf, num_images, out_of_range = self._reduced()
        if self.distributed and not comm.is_main_process():
            return {}
        metrics = metrics_from_confusion_matrix(conf.numpy(), self.class_names, self.seen_classes,
                                                self.unseen_classes)
        results = OrderedDict(metrics["summary"])
        for name, value in zip(self.class_names, metrics["iou"]):
            results[f"IoU-{name}"] = 100.0 * float(value)
        for name, value in zip(self.class_names, metrics["acc"]):
            results[f"ACC-{name}"] = 100.0 * float(value)
        for note in metrics["notes"]:
            logger.warning("%s: %s", self.dataset_name, note)
        self._log_table(metrics)
        if out_of_range[0]:
            logger.warning("%s: %d label pixels in %d of %d file(s) had values outside 0..%d and were mapped to "
                           "ignore (DATALOADER.OUT_OF_RANGE_LABELS ignore); they are not in the metrics",
                           self.dataset_name, out_of_range[1], out_of_range[0], num_images, self.num_classes - 1)
        if self.output_dir:
            path = os.path.join(self.output_dir, RESULTS_FILE)
            payload = self._json_payload(conf, num_images, metrics)
            payload["out_of_range_labels"] = {
                "files": int(out_of_range[0]), "pixels": int(out_of_range[1]),
                "meaning": f"label values outside 0..{self.num_classes - 1} (other than {self.ignore_label}) "
                           f"mapped to ignore (DATALOADER.OUT_OF_RANGE_LABELS ignore)"}
            _write_json_atomically(path, payload)
            logger.info("Wrote %s", path)
        return OrderedDict([("sem_seg", results)])

    def _split_of(self, name: str) -> str:
        if name in self.unseen_classes:
            return "unseen"
        return "seen" if name in self.seen_classes else "-"

    def _json_payload(self, conf: torch.Tensor, num_images: int, metrics: dict) -> dict:
        per_class = [
            {"class": name, "split": self._split_of(name), "IoU": _json_number(100.0 * metrics["iou"][i]),
             "ACC": _json_number(100.0 * metrics["acc"][i]), "gt_pixels": int(metrics["gt_pixels"][i]),
             "pred_pixels": int(metrics["pred_pixels"][i])}
            for i, name in enumerate(self.class_names)
        ]
        return {
            "dataset": self.dataset_name,
            "num_images": num_images,
            "metrics": {key: _json_number(value) for key, value in metrics["summary"].items()},
            "notes": metrics["notes"],
            "classes": list(self.class_names),
            "seen_classes": list(self.seen_classes),
            "unseen_classes": list(self.unseen_classes),
            "ignore_label": self.ignore_label,
            "per_class": per_class,
            "confusion_matrix": {
                "layout": "rows = ground truth, columns = prediction, in the order of 'classes'; "
                          "ignore pixels excluded",
                "matrix": conf.tolist(),
            },
        }

    def _log_table(self, metrics: dict) -> None:
        from tabulate import tabulate

        def fmt(value):
            return "nan" if math.isnan(value) else f"{value:.2f}"

        rows = [
            [name, self._split_of(name), fmt(100.0 * metrics["iou"][i]), fmt(100.0 * metrics["acc"][i]),
             int(metrics["gt_pixels"][i]), int(metrics["pred_pixels"][i])]
            for i, name in enumerate(self.class_names)
        ]
        table = tabulate(rows, headers=["class", "split", "IoU", "ACC", "GT pixels", "pred pixels"],
                         tablefmt="pipe", stralign="left", numalign="right")
        summary = "  ".join(f"{key} {fmt(value)}" for key, value in metrics["summary"].items())
        logger.info("Semantic segmentation results on %s:\n%s\n%s", self.dataset_name, table, summary)


def build_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None) -> OpenVocabSemSegEvaluator:
    """The evaluator for ``dataset_name`` according to its metadata's ``evaluator_type``.

    Only ``"sem_seg_open_vocab"`` is known. ``output_dir`` is where ``sem_seg_results.json`` goes
    (typically ``os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)``); None writes no file.
    ``cfg`` is accepted for detectron2's ``build_evaluator(cfg, dataset_name, output_folder)``
    signature; nothing in it changes the evaluator.
    """
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type != EVALUATOR_TYPE:
        raise EvaluationError(f"dataset '{dataset_name}' has evaluator_type {evaluator_type!r}; AerOSeg only "
                              f"evaluates '{EVALUATOR_TYPE}' datasets (register it with "
                              f"aeroseg.data.register_sem_seg_dataset)")
    return OpenVocabSemSegEvaluator(dataset_name, output_dir=output_dir, distributed=True)
