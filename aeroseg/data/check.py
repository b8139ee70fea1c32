"""Check every dataset a run names before anything expensive is built (issue: fail in seconds).

A typo in ``DATASETS.TEST`` used to surface only after training; a missing folder only when the
first batch was read. :func:`check_datasets` lists every dataset of the config up front: the name
is registered (else a close match is suggested), its files can be listed (folders exist, a
prepared dataset is complete) and its class lists are usable.
"""
import difflib
from typing import Dict, List

from ..utils.errors import DatasetError
from ..compat import DatasetCatalog, MetadataCatalog

__all__ = ["check_dataset_names", "check_datasets"]


def _check_name(key: str, name: str) -> None:
    if name in DatasetCatalog:
        return
    registered = sorted(DatasetCatalog.keys())
    close = difflib.get_close_matches(name, registered, n=1)
    suggestion = f"did you mean '{close[0]}'? " if close else ""
    raise DatasetError(f"{key}: dataset '{name}' is not registered; {suggestion}(registered: "
                       f"{', '.join(registered)}; add your own with DATASETS.CUSTOM)")


def check_dataset_names(cfg, train: bool = True) -> None:
    """Every name in ``DATASETS.TRAIN`` (when ``train``) and ``DATASETS.TEST`` is registered (no file is read)."""
    for key in (("DATASETS.TRAIN", "DATASETS.TEST") if train else ("DATASETS.TEST",)):
        for name in cfg.DATASETS[key.split(".")[1]]:
            _check_name(key, name)


def check_datasets(cfg, train: bool = True) -> Dict[str, int]:
    """Validate ``DATASETS.TRAIN`` (when ``train``) and ``DATASETS.TEST``; returns {name: #samples}.

    Raises a one-line :class:`DatasetError` for an unregistered name, a folder that is missing or
    incomplete, a dataset without classes, training datasets without seen classes or with
    different class lists.
    """
    keys: List = ([("DATASETS.TRAIN", n) for n in cfg.DATASETS.TRAIN] if train else []) + \
        [("DATASETS.TEST", n) for n in cfg.DATASETS.TEST]
    for key, name in keys:
        _check_name(key, name)
    sizes = {}
    for key, name in keys:
        meta = MetadataCatalog.get(name)
        classes = meta.get("stuff_classes")
        if not classes:
            raise DatasetError(f"{key}: dataset '{name}' has no class list (metadata stuff_classes)")
        if key == "DATASETS.TRAIN" and not meta.get("seen_classes", classes):
            raise DatasetError(f"{key}: dataset '{name}' has no seen classes to train on (all of "
                               f"{classes} are unseen)")
        if name not in sizes:
            sizes[name] = len(DatasetCatalog.get(name))  # folders exist, manifest complete
    if train and cfg.DATASETS.TRAIN:
        first = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).stuff_classes
        for other in cfg.DATASETS.TRAIN[1:]:
            if MetadataCatalog.get(other).stuff_classes != first:
                raise DatasetError(f"DATASETS.TRAIN: datasets {cfg.DATASETS.TRAIN[0]} and {other} have "
                                   f"different class lists")
    return sizes
