"""Datasets (catalog, built-in registrations), the mapper and the data loaders."""
from . import datasets  # noqa: F401  (registers the built-in datasets)
from .build import build_test_loader, build_train_loader, get_dataset_dicts
from ..compat import DatasetCatalog, MetadataCatalog
from .check import check_datasets
from .dataset_mapper import SemSegDatasetMapper
from .datasets import (
    DatasetError,
    read_class_file,
    register_datasets_from_config,
    register_folder_dataset,
    register_sem_seg_dataset,
)

__all__ = [
    "DatasetCatalog",
    "DatasetError",
    "MetadataCatalog",
    "SemSegDatasetMapper",
    "build_test_loader",
    "build_train_loader",
    "check_datasets",
    "get_dataset_dicts",
    "read_class_file",
    "register_datasets_from_config",
    "register_folder_dataset",
    "register_sem_seg_dataset",
]
