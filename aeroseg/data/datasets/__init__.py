from .builtin import datasets_root, register_all_builtin
from .builtin_meta import BUILTIN_DATASETS, DLRSD_CLASSES, ISAID_CLASSES, ISAID_PALETTE, OEM_CLASSES
from .sem_seg_folder import (
    DatasetError,
    load_sem_seg_folder,
    read_class_file,
    register_datasets_from_config,
    register_folder_dataset,
    register_sem_seg_dataset,
)

register_all_builtin()
