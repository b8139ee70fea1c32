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
from typing import Callable, Dict, List, Optional, Sequence, Union

from PIL import Image

from ...utils.errors import DatasetError
from ...compat import DatasetCatalog, MetadataCatalog
from ...utils.io import is_temp_name
from ...utils.names import check_unique_names, read_text_lines
from .manifest import MANIFEST_NAME, read_manifest, split_stems

__all__ = [
    "DatasetError",
    "load_sem_seg_folder",
    "pair_split_files",
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
    pairs, problems = pair_split_files(image_dir, label_dir)
    if problems:
        raise DatasetError(problems[0] + (hint if not pairs else ""))
    return [{"file_name": os.path.join(image_dir, image), "sem_seg_file_name": os.path.join(label_dir, label),
             **_image_size(os.path.join(image_dir, image))} for image, label in pairs.values()]


def read_class_file(path: Union[str, Path]) -> List[str]:
    """One class name per line; blank lines and ``#`` comments ignored.

    UTF-8 with or without a byte-order mark, any line ending; names that differ only in case or
    spaces are refused (:func:`aeroseg.utils.names.check_unique_names`).
    """
    if not os.path.isfile(path):
        raise DatasetError(f"class list {path} does not exist (expected one class name per line)")
    names = [line.split("#", 1)[0].strip() for line in read_text_lines(path, error=DatasetError)]
    names = [n for n in names if n]
    if not names:
        raise DatasetError(f"class list {path} names no classes")
    return check_unique_names(names, f"class list {path}", error=DatasetError)


def image_files_by_stem(image_dir: str) -> Dict[str, List[str]]:
    """{stem: [file names]} of the images (any of ``IMAGE_EXTENSIONS``) in ``image_dir``."""
    images: Dict[str, List[str]] = {}
    for name in sorted(os.listdir(image_dir)):
        if name.lower().endswith(IMAGE_EXTENSIONS) and not is_temp_name(name):
            images.setdefault(Path(name).stem, []).append(name)
    return images


def duplicate_image_problem(image_dir: str, stem: str, names: Sequence[str]) -> str:
    return (f"image {stem} is in {image_dir} {len(names)} times ({', '.join(names)}): keep one, each image needs "
            f"exactly one file")


def pair_split_files(image_dir: str, label_dir: str):
    """``({stem: (image name, label name)}, problems)`` of a split's ``images/`` and ``labels/``.

    The one rule for pairing files, used by training (which raises the first problem) and by
    ``tools/check_dataset.py`` (which reports them all): images (any of ``IMAGE_EXTENSIONS``) and
    label PNGs pair by file stem; a stem present with two image extensions (``a.png`` and
    ``a.jpg``: which one is meant?), an image without a label, a label without an image and a
    split without images are problems.
    """
    problems: List[str] = []
    labels = {Path(f).stem: f for f in sorted(os.listdir(label_dir)) if f.lower().endswith(".png")}
    images = image_files_by_stem(image_dir)
    pairs = {}
    for stem, names in sorted(images.items()):
        if len(names) > 1:
            problems.append(duplicate_image_problem(image_dir, stem, names))
            continue
        if stem not in labels:
            problems.append(f"image {os.path.join(image_dir, names[0])} has no label {stem}.png in {label_dir}")
            continue
        pairs[stem] = (names[0], labels[stem])
    orphans = sorted(stem for stem in labels if stem not in images)
    if orphans:
        problems.append(f"label {os.path.join(label_dir, labels[orphans[0]])} has no image {orphans[0]}.* in "
                        f"{image_dir} ({len(orphans)} label(s) without image): restore the image(s) or remove the "
                        f"label(s)")
    if not images:
        problems.append(f"dataset folder {image_dir} contains no images")
    return pairs, problems


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
    check_unique_names(classes, f"dataset {name}", error=DatasetError)
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
