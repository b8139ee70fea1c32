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

from .synthetic import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_UNSEEN,
    generate_synthetic_aerial_dataset,
    register_synthetic_dataset,
)

register_all_builtin()
register_synthetic_dataset()  # synthetic_aerial_{train,val}: the demo's data, generated on first use
