"""Register a semantic-segmentation dataset stored as ``images/`` + ``labels/`` folders.

This is both how the built-in datasets are registered and how users add their own:

    from aeroseg.data import register_folder_dataset
    register_folder_dataset("mycity", "/data/mycity", classes="/data/mycity/classes.txt",
                            unseen="/data/mycity/unseen.txt")
    # -> "mycity_train", "mycity_val" (one per split folder that exists)

or, in a config, ``DATASETS.CUSTOM: [{NAME: mycity, ROOT: /data/mycity, CLASSES: classes.txt,
UNSEEN: unseen.txt}]`` (relative paths are relative to ROOT).
"""
import difflib
import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

from PIL import Image

from ...utils.errors import DatasetError
from ...compat import DatasetCatalog, MetadataCatalog
from .manifest import MANIFEST_NAME, read_manifest, split_stems

__all__ = [
    "DatasetError",
    "load_sem_seg_folder",
    "read_class_file",
    "register_folder_dataset",
    "register_sem_seg_dataset",
    "register_datasets_from_config",
]

# Keys of a DATASETS.CUSTOM entry (any other key is a typo and an error).
CUSTOM_KEYS = ("NAME", "ROOT", "CLASSES", "UNSEEN")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SPLITS = ("train", "val", "test")


def _image_size(path: str) -> dict:
    """``{"height", "width"}`` from the image header, or {} if unreadable (reported when mapped)."""
    try:
        with Image.open(path) as img:  # reads the header only
            width, height = img.size
    except Exception:
        return {}
    return {"height": height, "width": width}


def load_sem_seg_folder(image_dir: str, label_dir: str, prepare_hint: str = "",
                        require_manifest: bool = False) -> List[dict]:
    """Dataset dicts (``file_name``, ``sem_seg_file_name``[, ``height``, ``width``]) of a folder pair.

    When the split folder's parent holds a ``manifest.json`` (:mod:`.manifest`), the samples are
    exactly the ones it lists (a listed file that is missing is reported when it is read);
    otherwise images and labels are paired by file stem, and an image without a label or a label
    without an image is an error. A folder whose prepare run did not finish is an error, and so is
    a folder without manifest when ``require_manifest``.
    """
    hint = f"; create it with: {prepare_hint}" if prepare_hint else ""
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise DatasetError(
                f"dataset folder {folder} does not exist: expected {Path(image_dir).parent}/"
                f"{{images,labels}}/*.png (images and single-channel label PNGs sharing a file stem){hint}"
            )
    split_dir = Path(image_dir).parent
    root, split = str(split_dir.parent), split_dir.name
    manifest = read_manifest(root, prepare_hint) if split in SPLITS else None
    if manifest is not None:
        if split not in manifest["splits"]:
            raise DatasetError(f"{os.path.join(root, MANIFEST_NAME)} lists no split '{split}' "
                               f"(it has {', '.join(manifest['splits'])})")
        dicts = [{"file_name": os.path.join(image_dir, f"{stem}.png"),
                  "sem_seg_file_name": os.path.join(label_dir, f"{stem}.png"),
                  **_image_size(os.path.join(image_dir, f"{stem}.png"))}
                 for stem in split_stems(manifest, split)]
        if not dicts:
            raise DatasetError(f"dataset folder {image_dir}: its manifest lists no samples{hint}")
        return dicts
    if require_manifest:
        again = f"; re-run: {prepare_hint}" if prepare_hint else ""
        raise DatasetError(f"dataset folder {root} has no {MANIFEST_NAME}: its prepare run did not finish "
                           f"(or predates manifests){again}")
    labels = {Path(f).stem: f for f in os.listdir(label_dir) if f.lower().endswith(".png")}
    images = {Path(f).stem: f for f in sorted(os.listdir(image_dir)) if f.lower().endswith(IMAGE_EXTENSIONS)}
    dicts = []
    for stem, name in sorted(images.items()):
        if stem not in labels:
            raise DatasetError(f"image {os.path.join(image_dir, name)} has no label {stem}.png in {label_dir}")
        path = os.path.join(image_dir, name)
        dicts.append({"file_name": path, "sem_seg_file_name": os.path.join(label_dir, labels[stem]),
                      **_image_size(path)})
    orphans = sorted(stem for stem in labels if stem not in images)
    if orphans:
        raise DatasetError(f"label {os.path.join(label_dir, labels[orphans[0]])} has no image {orphans[0]}.* in "
                           f"{image_dir} ({len(orphans)} label(s) without image): restore the image(s) or "
                           f"remove the label(s)")
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
        image_dir = os.path.join(folder, "images")
        if full_name in DatasetCatalog:  # e.g. a second run in the same process: same dataset is fine
            meta = MetadataCatalog.get(full_name)
            if meta.get("image_root") == image_dir and meta.get("stuff_classes") == class_list \
                    and meta.get("unseen_classes") == [c for c in class_list if c in unseen_list]:
                continue
            raise DatasetError(f"dataset {full_name} is already registered with other files or classes "
                               f"(image root {meta.get('image_root')}): choose another NAME")
        register_sem_seg_dataset(full_name, os.path.join(folder, "images"), os.path.join(folder, "labels"),
                                 class_list, unseen_list, ignore_label)
    return [n for n, _ in layouts]


def register_datasets_from_config(cfg) -> List[str]:
    """Register every entry of ``cfg.DATASETS.CUSTOM`` (dicts with NAME, ROOT, CLASSES, UNSEEN)."""
    names = []
    for i, entry in enumerate(cfg.DATASETS.CUSTOM):
        entry = {str(k).upper(): v for k, v in dict(entry).items()}
        unknown = [k for k in entry if k not in CUSTOM_KEYS]
        if unknown:
            close = difflib.get_close_matches(unknown[0], CUSTOM_KEYS, n=1)
            suggestion = f"did you mean {close[0]}? " if close else ""
            raise DatasetError(f"DATASETS.CUSTOM[{i}] has unknown key {unknown[0]}: {suggestion}"
                               f"(expected {', '.join(CUSTOM_KEYS)})")
        missing = [k for k in ("NAME", "ROOT", "CLASSES") if k not in entry]
        if missing:
            raise DatasetError(f"DATASETS.CUSTOM[{i}] lacks {missing} (expected NAME, ROOT, CLASSES[, UNSEEN])")
        names += register_folder_dataset(entry["NAME"], entry["ROOT"], entry["CLASSES"], entry.get("UNSEEN"),
                                         cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
    return names
