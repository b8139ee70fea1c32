"""Register a semantic-segmentation dataset stored as ``images/`` + ``labels/`` folders.

This is both how the built-in datasets are registered and how users add their own:

    from aeroseg.data import register_folder_dataset
    register_folder_dataset("mycity", "/data/mycity", classes="/data/mycity/classes.txt",
                            unseen="/data/mycity/unseen.txt")
    # -> "mycity_train", "mycity_val" (one per split folder that exists)

or, in a config, ``DATASETS.CUSTOM: [{NAME: mycity, ROOT: /data/mycity, CLASSES: classes.txt,
UNSEEN: unseen.txt}]`` (relative paths are relative to ROOT).
"""
import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

from PIL import Image

from ...utils.errors import AerOSegError
from ..catalog import DatasetCatalog, MetadataCatalog

__all__ = [
    "DatasetError",
    "load_sem_seg_folder",
    "read_class_file",
    "register_folder_dataset",
    "register_sem_seg_dataset",
    "register_datasets_from_config",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SPLITS = ("train", "val", "test")


class DatasetError(AerOSegError, FileNotFoundError):
    """A dataset folder or file is missing or malformed."""


def load_sem_seg_folder(image_dir: str, label_dir: str, prepare_hint: str = "") -> List[dict]:
    """Dataset dicts (``file_name``, ``sem_seg_file_name``, ``height``, ``width``) of a folder pair.

    Images and labels are paired by file stem; an image without a label is an error.
    """
    hint = f"; create it with: {prepare_hint}" if prepare_hint else ""
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise DatasetError(
                f"dataset folder {folder} does not exist: expected {Path(image_dir).parent}/"
                f"{{images,labels}}/*.png (images and single-channel label PNGs sharing a file stem){hint}"
            )
    labels = {Path(f).stem: f for f in os.listdir(label_dir) if f.lower().endswith(".png")}
    dicts = []
    for name in sorted(os.listdir(image_dir)):
        if not name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        stem = Path(name).stem
        if stem not in labels:
            raise DatasetError(f"image {os.path.join(image_dir, name)} has no label {stem}.png in {label_dir}")
        path = os.path.join(image_dir, name)
        with Image.open(path) as img:  # reads the header only
            width, height = img.size
        dicts.append({"file_name": path, "sem_seg_file_name": os.path.join(label_dir, labels[stem]),
                      "height": height, "width": width})
    if not dicts:
        raise DatasetError(f"dataset folder {image_dir} contains no images{hint}")
    return dicts


def read_class_file(path: Union[str, Path]) -> List[str]:
    """One class name per line; blank lines and ``#`` comments ignored."""
    if not os.path.isfile(path):
        raise DatasetError(f"class list {path} does not exist (expected one class name per line)")
    with open(path, encoding="utf-8") as f:
        names = [line.split("#", 1)[0].strip() for line in f]
    names = [n for n in names if n]
    if not names:
        raise DatasetError(f"class list {path} names no classes")
    return names


def register_sem_seg_dataset(
    name: str,
    image_dir: str,
    label_dir: str,
    classes: Sequence[str],
    unseen_classes: Sequence[str] = (),
    ignore_label: int = 255,
    prepare_hint: str = "",
    loader: Optional[Callable[[], List[dict]]] = None,
) -> None:
    """Register ``name`` in the catalogs; the folders are only read when the dataset is used."""
    classes = list(classes)
    unknown = [c for c in unseen_classes if c not in classes]
    if unknown:
        raise DatasetError(f"dataset {name}: unseen classes {unknown} are not among its classes {classes}")
    if len(set(classes)) != len(classes):
        raise DatasetError(f"dataset {name}: duplicate class names in {classes}")
    DatasetCatalog.register(
        name, loader or (lambda: load_sem_seg_folder(image_dir, label_dir, prepare_hint))
    )
    MetadataCatalog.get(name).set(
        stuff_classes=classes,
        seen_classes=[c for c in classes if c not in unseen_classes],
        unseen_classes=[c for c in classes if c in unseen_classes],
        ignore_label=ignore_label,
        evaluator_type="sem_seg_open_vocab",
        image_root=image_dir,
        sem_seg_root=label_dir,
    )


def _as_class_list(value, root: str) -> List[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    path = value if os.path.isabs(value) else os.path.join(root, value)
    return read_class_file(path)


def register_folder_dataset(name: str, root: str, classes, unseen=None, ignore_label: int = 255) -> List[str]:
    """Register a dataset at ``root`` laid out like the built-ins; returns the registered names.

    ``root/{train,val,test}/{images,labels}`` registers ``name_train``, ... for every split that
    exists; ``root/{images,labels}`` registers ``name`` itself. ``classes`` / ``unseen`` are lists
    or class-list files (relative to ``root``).
    """
    if not os.path.isdir(root):
        raise DatasetError(f"dataset {name}: folder {root} does not exist")
    class_list, unseen_list = _as_class_list(classes, root), _as_class_list(unseen, root)
    if not class_list:
        raise DatasetError(f"dataset {name}: no classes given")
    layouts = [(f"{name}_{s}", os.path.join(root, s)) for s in SPLITS if os.path.isdir(os.path.join(root, s))]
    if not layouts and os.path.isdir(os.path.join(root, "images")):
        layouts = [(name, root)]
    if not layouts:
        raise DatasetError(f"dataset {name}: {root} has neither split folders ({', '.join(SPLITS)}) "
                           f"nor images/ and labels/")
    for full_name, folder in layouts:
        register_sem_seg_dataset(full_name, os.path.join(folder, "images"), os.path.join(folder, "labels"),
                                 class_list, unseen_list, ignore_label)
    return [n for n, _ in layouts]


def register_datasets_from_config(cfg) -> List[str]:
    """Register every entry of ``cfg.DATASETS.CUSTOM`` (dicts with NAME, ROOT, CLASSES, UNSEEN)."""
    names = []
    for i, entry in enumerate(cfg.DATASETS.CUSTOM):
        entry = {str(k).upper(): v for k, v in dict(entry).items()}
        missing = [k for k in ("NAME", "ROOT", "CLASSES") if k not in entry]
        if missing:
            raise DatasetError(f"DATASETS.CUSTOM[{i}] lacks {missing} (expected NAME, ROOT, CLASSES[, UNSEEN])")
        names += register_folder_dataset(entry["NAME"], entry["ROOT"], entry["CLASSES"], entry.get("UNSEEN"),
                                         cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
    return names
