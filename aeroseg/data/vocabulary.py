"""The training vocabulary: which classes, in which order, training labels index.

One owner for a fact that the dataset mapper (renumbering training labels) and the model (its
text embeddings and back-projection) must agree on: the seen classes of the training datasets,
in the datasets' class order. Unseen classes are not in it; their pixels become ignore.
"""
from typing import List, Optional, Sequence

from ..compat import MetadataCatalog

__all__ = ["training_vocabulary"]


def training_vocabulary(dataset_names: Sequence[str]) -> Optional[List[str]]:
    """The seen classes of the first training dataset (all its classes if it names no split).

    Returns None when no dataset is named (the model then takes ``MODEL.AEROSEG.VOCABULARY``).
    """
    if not dataset_names:
        return None
    meta = MetadataCatalog.get(dataset_names[0])
    seen = meta.get("seen_classes", None)
    if seen is not None:
        return list(seen)
    classes = meta.get("stuff_classes", None)
    return list(classes) if classes else None
