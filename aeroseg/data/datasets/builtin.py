"""Register iSAID, DLRSD and OpenEarthMap (train / val) under ``$AEROSEG_DATASETS``."""
import os

from ...compat import DatasetCatalog
from .builtin_meta import BUILTIN_DATASETS, PREPARE_COMMANDS
from .sem_seg_folder import load_sem_seg_folder, register_sem_seg_dataset

__all__ = ["datasets_root", "register_all_builtin"]


def datasets_root() -> str:
    """``$AEROSEG_DATASETS``, default ``./datasets`` (resolved when a dataset is loaded)."""
    return os.environ.get("AEROSEG_DATASETS", "datasets")


def register_all_builtin() -> None:
    """Register ``isaid_train``, ``isaid_val``, ``dlrsd_*`` and ``oem_*`` (lazily, idempotently)."""
    for dataset, (classes, unseen) in BUILTIN_DATASETS.items():
        for split in ("train", "val"):
            name = f"{dataset}_{split}"
            if name in DatasetCatalog:
                continue

            def load(dataset=dataset, split=split):
                root = os.path.join(datasets_root(), dataset)
                folder = os.path.join(root, split)
                hint = PREPARE_COMMANDS[dataset].format(root=root)
                return load_sem_seg_folder(os.path.join(folder, "images"), os.path.join(folder, "labels"), hint,
                                           require_manifest=True)

            register_sem_seg_dataset(
                name,
                image_dir=os.path.join("$AEROSEG_DATASETS", dataset, split, "images"),
                label_dir=os.path.join("$AEROSEG_DATASETS", dataset, split, "labels"),
                classes=classes,
                unseen_classes=unseen,
                loader=load,
            )
