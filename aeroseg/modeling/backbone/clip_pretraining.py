"""Contrastive pretraining of a small open_clip model on synthetic aerial image-caption pairs.

AerOSeg segments classes it never saw in segmentation training because CLIP's image and text
towers were aligned beforehand on web-scale image-caption pairs. The CPU demo cannot download
such weights, so it makes them: :func:`pretrain_clip` trains the demo's tiny open_clip model as
CLIP was trained (open_clip's model, tokenizer and symmetric InfoNCE ``ClipLoss`` with its
learnable temperature) on captioned crops of the synthetic world
(:mod:`aeroseg.data.datasets.synthetic_captions`), whose captions name the two classes that the
segmentation demo holds out, as web captions name water and cars.

:func:`synthetic_aerial_clip` is what ``MODEL.CLIP.PRETRAINED: "synthetic_aerial"`` resolves to:
the path of an ordinary open_clip checkpoint, cached under
``$AEROSEG_DATASETS/synthetic_aerial_clip/`` beside the synthetic dataset, with a JSON record of
the parameters, the file's SHA-256 and the zero-shot accuracy. It is rebuilt when the parameters
change or the file does not match its record (truncated, corrupted); the same parameters give a
byte-identical file. ``tools/pretrain_clip.py`` runs the same recipe from the command line.
"""
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import time
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from ...config.aeroseg_config import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD, REMOTE_SENSING_TEMPLATES
from ...data.datasets.synthetic import GENERATOR_VERSION, SYNTHETIC_CLASSES
from ...data.datasets.synthetic_captions import CAPTION_VERSION, make_caption_pairs, make_zero_shot_crops
from ...utils.io import folder_lock, write_bytes_atomic
from .clip_backbone import SYNTHETIC_AERIAL_TAG, build_clip_model, clip_tokenizer

__all__ = [
    "SYNTHETIC_AERIAL_TAG",
    "PretrainingParams",
    "pretrain_clip",
    "zero_shot_accuracy",
    "synthetic_aerial_clip",
    "write_pretrained_clip",
    "dense_zero_shot_iou",
]

logger = logging.getLogger(__name__)

CACHE_FOLDER = "synthetic_aerial_clip"
CHECKPOINT_NAME = "open_clip.pt"
RECORD_NAME = "open_clip.json"


@dataclasses.dataclass(frozen=True)
class PretrainingParams:
    """Everything that determines the pretrained weights (recorded beside the cached file)."""

    num_scenes: int = 1200           # generated scenes (each gives crops_per_scene pairs)
    crops_per_scene: int = 6         # the whole scene + random crops (+ crops around a car)
    crop_sides: tuple = (12, 48)     # random crops' side range, in scene pixels
    car_crop_fraction: float = 0.15  # chance that a crop is taken around a car
    single_class_fraction: float = 0.6  # chance that a crop is the most single-class of 8 random ones
    image_size: int = 64             # pretraining input side (the model resizes its positions)
    epochs: int = 6
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    seed: int = 0
    zero_shot_per_class: int = 60    # held-out crops per class for the zero-shot accuracy


def _normalize(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) uint8 -> CLIP-normalised float (OpenAI's mean / std, as MODEL.CLIP.PIXEL_*)."""
    mean = torch.tensor(CLIP_PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_PIXEL_STD).view(1, 3, 1, 1)
    return (images.float() - mean) / std


@torch.no_grad()
def zero_shot_accuracy(model: nn.Module, tokenizer, images: torch.Tensor, classes: torch.Tensor,
                       class_names: Sequence[str], templates: Sequence[str] = REMOTE_SENSING_TEMPLATES,
                       batch_size: int = 256) -> Dict[str, float]:
    """Accuracy (%) per class of classifying ``images`` by the names of ``class_names``.

    Each class is represented by its prompt-ensembled text embedding (mean over ``templates`` of
    the unit embeddings, re-normalised, as CAT-Seg and AerOSeg's text guidance); an image is
    assigned the class of highest cosine similarity with its (pooled) image embedding.

    Args:
        images: (N, 3, S, S) uint8; classes: (N,) indices into ``class_names``.
    """
    was_training = model.training
    model.eval()
    prompts = [t.format(name) for name in class_names for t in templates]
    text = model.encode_text(tokenizer(prompts), normalize=True).view(len(class_names), len(templates), -1)
    text = nn.functional.normalize(text.mean(dim=1), dim=-1)
    predictions = []
    for start in range(0, len(images), batch_size):
        feats = model.encode_image(_normalize(images[start:start + batch_size]), normalize=True)
        predictions.append((feats @ text.T).argmax(dim=1))
    predicted = torch.cat(predictions)
    model.train(was_training)
    return {name: float((predicted[classes == c] == c).float().mean() * 100) if (classes == c).any() else float("nan")
            for c, name in enumerate(class_names)}


def _param_groups(model: nn.Module, weight_decay: float) -> List[dict]:
    """open_clip's training recipe: no weight decay on gains, biases, embeddings and the temperature."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        exclude = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        exclude = exclude or "embedding" in name or name.endswith("class_embedding")
        (no_decay if exclude else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def pretrain_clip(model: nn.Module, tokenizer, params: PretrainingParams, progress: bool = True) -> Dict[str, object]:
    """Train ``model`` (an open_clip ``CLIP``) in place with CLIP's contrastive loss.

    Generates ``params.num_scenes`` captioned scenes (:func:`make_caption_pairs`), trains
    ``params.epochs`` epochs of AdamW with linear warm-up and cosine decay, the temperature
    learnable and clamped to at most 100 as in open_clip's training loop, and logs one line per
    epoch with the mean loss and the zero-shot accuracy on held-out single-class crops.
    Deterministic for the same parameters (and thread count): all randomness is seeded from
    ``params.seed``.

    Returns:
        ``{"zero_shot": {class: accuracy %}, "history": [per-epoch dicts], "pairs": N, "seconds": s}``
    """
    import open_clip
    from tqdm import tqdm

    start = time.perf_counter()
    images, captions = make_caption_pairs(params.num_scenes, params.crops_per_scene, params.image_size,
                                          seed=params.seed, crop_sides=params.crop_sides,
                                          car_crop_fraction=params.car_crop_fraction,
                                          single_class_fraction=params.single_class_fraction)
    tokens = tokenizer(captions)
    zs_images, zs_classes = make_zero_shot_crops(params.zero_shot_per_class, params.image_size, seed=params.seed)
    steps_per_epoch = len(images) // params.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"pretraining: {len(images)} pairs are fewer than one batch of {params.batch_size}")
    total = steps_per_epoch * params.epochs
    optimizer = torch.optim.AdamW(_param_groups(model, params.weight_decay), lr=params.lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < params.warmup_steps:
            return params.lr * (step + 1) / params.warmup_steps
        t = (step - params.warmup_steps) / max(1, total - params.warmup_steps)
        return 0.5 * params.lr * (1 + math.cos(math.pi * t))

    loss_fn = open_clip.ClipLoss()
    generator = torch.Generator().manual_seed(params.seed)
    history = []
    model.train()
    bar = tqdm(total=total, desc="pretraining CLIP", unit="step", disable=not progress, leave=False)
    step = 0
    for epoch in range(params.epochs):
        order = torch.randperm(len(images), generator=generator)
        losses = []
        for i in range(steps_per_epoch):
            batch = order[i * params.batch_size:(i + 1) * params.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            image_features, text_features, logit_scale = model(_normalize(images[batch]), tokens[batch])
            loss = loss_fn(image_features, text_features, logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        accuracy = zero_shot_accuracy(model, tokenizer, zs_images, zs_classes, SYNTHETIC_CLASSES)
        record = {"epoch": epoch + 1, "loss": sum(losses) / len(losses),
                  "temperature": float(model.logit_scale.detach().exp()), "zero_shot": accuracy}
        history.append(record)
        logger.info("pretraining CLIP epoch %d/%d: loss %.4f  logit scale %.1f  zero-shot accuracy %s (mean %.1f%%)",
                    epoch + 1, params.epochs, record["loss"], record["temperature"],
                    "  ".join(f"{k} {v:.0f}%" for k, v in accuracy.items()), sum(accuracy.values()) / len(accuracy))
    bar.close()
    model.eval()
    return {"zero_shot": history[-1]["zero_shot"], "history": history, "pairs": len(images),
            "seconds": time.perf_counter() - start}


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_pretrained_clip(name: str, arch_overrides: Optional[dict], params: PretrainingParams, path: str,
                          progress: bool = True) -> dict:
    """Build the open_clip model ``name`` (+ ``arch_overrides``), pretrain it, and save it at ``path``.

    Writes the state dict (an ordinary open_clip checkpoint) and ``<path minus suffix>.json``
    (parameters, SHA-256 of the file, zero-shot accuracy, history), each atomically, the record
    last. Returns the record.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        model = build_clip_model(name, "", params.image_size, arch_overrides, device=torch.device("cpu"))
    result = pretrain_clip(model, clip_tokenizer(name), params, progress=progress)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    # Serialised in memory: torch.save names the archive after the file it writes, so saving to a
    # temporary name would make the bytes depend on it (and on the PID in it).
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(path, buffer.getvalue(), durable=True)
    record = {"recipe": _recipe(name, arch_overrides, params), "sha256": _sha256(path),
              "zero_shot_accuracy": result["zero_shot"], "history": result["history"], "pairs": result["pairs"],
              "seconds": round(result["seconds"], 1)}

    write_bytes_atomic(_record_path(path), json.dumps(record, indent=1, sort_keys=True).encode("utf-8"), durable=True)
    return record


def _record_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def _recipe(name: str, arch_overrides: Optional[dict], params: PretrainingParams) -> dict:
    """What the cached file depends on: architecture, data generator and captions, parameters."""
    recipe = {"arch": name, "arch_overrides": arch_overrides or {}, "generator_version": GENERATOR_VERSION,
              "caption_version": CAPTION_VERSION, "params": dataclasses.asdict(params)}
    return json.loads(json.dumps(recipe, sort_keys=True))  # as read back from the record (tuples -> lists)


def _cache_state(path: str, recipe: dict) -> str:
    """``"ok"``, ``"missing"``, ``"changed"`` (other parameters) or ``"damaged"`` (file != record)."""
    try:
        with open(_record_path(path), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return "missing" if not os.path.exists(path) else "damaged"
    if record.get("recipe") != recipe:
        return "changed"
    if not os.path.isfile(path) or _sha256(path) != record.get("sha256"):
        return "damaged"
    return "ok"


def synthetic_aerial_clip(name: str, arch_overrides: Optional[dict] = None, root: Optional[str] = None,
                          params: Optional[PretrainingParams] = None, progress: bool = True,
                          force: bool = False) -> str:
    """Path of the synthetic-aerial pretrained checkpoint of ``name`` (+ overrides), built if needed.

    ``root`` defaults to ``$AEROSEG_DATASETS`` (the file is ``root/synthetic_aerial_clip/open_clip.pt``).
    A cached file is used when its record names the same recipe and its SHA-256 matches; a
    damaged one is rebuilt with a warning, one of other parameters is rebuilt with a log line;
    ``force`` rebuilds it anyway.
    """
    params = params or PretrainingParams()
    folder = os.path.join(root if root is not None else _default_root(), CACHE_FOLDER)
    path = os.path.join(folder, CHECKPOINT_NAME)
    recipe = _recipe(name, arch_overrides, params)
    if not force and _cache_state(path, recipe) == "ok":
        return path
    os.makedirs(folder, exist_ok=True)
    with folder_lock(folder):
        state = _cache_state(path, recipe)  # another process may have finished meanwhile
        if state == "ok" and not force:
            return path
        if state == "damaged":
            logger.warning("pretrained CLIP %s does not match its record %s (truncated or corrupted); rebuilding it",
                           path, _record_path(path))
        elif state == "changed":
            logger.info("pretrained CLIP %s was made with other parameters; rebuilding it", path)
        logger.info("Pretraining the tiny CLIP on synthetic aerial image-caption pairs into %s "
                    "(once; later runs load it)", path)
        record = write_pretrained_clip(name, arch_overrides, params, path, progress=progress)
        logger.info("Pretrained CLIP written in %.0f s; zero-shot accuracy on held-out crops: %s", record["seconds"],
                    ", ".join(f"{k} {v:.0f}%" for k, v in record["zero_shot_accuracy"].items()))
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``tools/pretrain_clip.py``: pretrain a config's CLIP on synthetic aerial pairs (see ``--help``)."""
    import argparse
    import sys

    from ...config import get_cfg
    from ...utils.errors import AerOSegError, ConfigError

    defaults = PretrainingParams()
    parser = argparse.ArgumentParser(
        description="Pretrain the CLIP of a config (default: the CPU demo's tiny CLIP) contrastively on synthetic "
                    "aerial image-caption pairs, as MODEL.CLIP.PRETRAINED \"synthetic_aerial\" does on first use.")
    parser.add_argument("--config-file", default="", help="config whose MODEL.CLIP.NAME / ARCH_OVERRIDES are trained "
                        "(default: configs/demo/tiny_cpu.yaml)")
    parser.add_argument("--output", default="", help="write the checkpoint (and its .json record) here instead of "
                        "the cache $AEROSEG_DATASETS/synthetic_aerial_clip/open_clip.pt that the demo loads")
    parser.add_argument("--force", action="store_true", help="rebuild the cache / overwrite --output")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--scenes", type=int, default=defaults.num_scenes, help="generated scenes (each gives "
                        f"{defaults.crops_per_scene} captioned crops)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers and not logger.handlers:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s]: %(message)s", datefmt="%m/%d %H:%M:%S")
    try:
        for key in ("epochs", "batch_size", "scenes"):
            if getattr(args, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')}={getattr(args, key)}: expected a positive integer")
        if not args.lr > 0:
            raise ConfigError(f"--lr={args.lr}: expected a positive learning rate")
        cfg = get_cfg()
        if args.config_file:
            if not os.path.isfile(args.config_file):
                raise ConfigError(f"config file {args.config_file} does not exist")
            cfg.merge_from_file(args.config_file)
        else:
            from ...model_zoo import get_config_file

            cfg.merge_from_file(get_config_file("demo/tiny_cpu.yaml"))
        cfg.merge_from_list(args.opts or [])
        from .clip_backbone import _to_dict

        name, overrides = cfg.MODEL.CLIP.NAME, _to_dict(cfg.MODEL.CLIP.ARCH_OVERRIDES)
        params = dataclasses.replace(defaults, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                     num_scenes=args.scenes, seed=args.seed)
        if args.output:
            if os.path.exists(args.output) and not args.force:
                raise ConfigError(f"--output {args.output} exists; pass --force to overwrite it")
            path = args.output
            record = write_pretrained_clip(name, overrides, params, path)
        else:
            path = synthetic_aerial_clip(name, overrides, params=params, force=args.force)
            with open(_record_path(path), encoding="utf-8") as f:
                record = json.load(f)
    except (AerOSegError, ValueError, KeyError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"{path}: {record['pairs']} image-caption pairs, {record['seconds']:.0f} s")
    print("zero-shot accuracy on held-out single-class crops:")
    for cls, acc in record["zero_shot_accuracy"].items():
        print(f"  {cls:16s} {acc:5.1f}%")
    print(f"use it with MODEL.CLIP.PRETRAINED {path}" if args.output else
          "the demo (MODEL.CLIP.PRETRAINED \"synthetic_aerial\") loads it")
    return 0


def _default_root() -> str:
    from ...data.datasets.builtin import datasets_root

    return datasets_root()


@torch.no_grad()
def dense_zero_shot_iou(backbone, images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor],
                        class_names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """IoU (%) of segmenting ``images`` with a CLIP's dense features alone, per rotation.

    What AerOSeg transfers from: every pixel gets the class whose prompt-averaged text embedding
    (re-normalised mean over the backbone's templates) has the highest cosine similarity with the
    dense feature at that pixel (bilinearly upsampled similarities); no segmentation training.
    Each rotation's features are used as :class:`~.clip_backbone.CLIPBackbone` returns them,
    rotated back, so a rotation that is not undone scores like a random guess.

    Args:
        backbone: a :class:`~.clip_backbone.CLIPBackbone`.
        images: (3, H, W) uint8 tensors; labels: (H, W) class indices into ``class_names`` (255 ignored).
    Returns:
        ``{"rotation <deg>": {class: IoU}, ..., "mean of rotations": {class: IoU}}``
    """
    was_training = backbone.training
    backbone.eval()
    text = nn.functional.normalize(backbone.encode_text(class_names).mean(dim=1), dim=-1)  # (T, D)
    k = len(class_names)
    names = [f"rotation {r}" for r in backbone.rotations] + ["mean of rotations"]
    confusion = {n: torch.zeros(k, k, dtype=torch.long) for n in names}
    for image, label in zip(images, labels):
        dense = nn.functional.normalize(backbone(backbone.preprocess([image]))["dense"][0], dim=1)  # (R, D, h, w)
        variants = list(dense) + [nn.functional.normalize(dense.mean(dim=0), dim=0)]
        valid = label != 255
        for name, features in zip(names, variants):
            scores = torch.einsum("dhw,td->thw", features, text)[None]
            scores = nn.functional.interpolate(scores, size=tuple(label.shape), mode="bilinear", align_corners=False)
            predicted = scores[0].argmax(dim=0)
            confusion[name] += torch.bincount(label[valid] * k + predicted[valid], minlength=k * k).view(k, k)
    backbone.train(was_training)
    out = {}
    for name, cm in confusion.items():
        union = cm.sum(0) + cm.sum(1) - cm.diag()
        out[name] = {c: float(cm[i, i] * 100 / union[i]) if union[i] > 0 else float("nan")
                     for i, c in enumerate(class_names)}
    return out
