"""Class lists with synonyms: ``"tree|forest, building|roof|house"`` (as SegEarth-OV's class files)."""
from typing import List, Sequence, Union

import torch

from ..utils.names import ClassNameError, check_unique_names

__all__ = ["ClassNames", "parse_classes", "read_classes_file"]


ClassNamesError = ClassNameError  # (the name this module had)


class ClassNames:
    """Output classes, each one or more names; a class's score is the max over its names.

    ``ClassNames(["tree|forest", ["building", "roof"], "water"])``: ``display_names`` are the
    first names (``["tree", "building", "water"]``), ``all_names`` the flat list the model
    segments, and :meth:`reduce` turns scores over ``all_names`` into scores over the classes.
    """

    def __init__(self, classes: Sequence[Union[str, Sequence[str]]], source: str = "classes"):
        groups = []
        for entry in classes:
            names = [n.strip() for n in (entry.split("|") if isinstance(entry, str) else list(entry))]
            if not names or not all(names):
                raise ClassNamesError(f"{source}: empty class name in {entry!r}")
            groups.append(names)
        if not groups:
            raise ClassNamesError(f"{source}: no class names (expected e.g. \"building, road|street, tree\")")
        flat = check_unique_names([n for g in groups for n in g], source)  # also across synonyms
        self.groups: List[List[str]] = groups
        self.all_names: List[str] = flat
        self.display_names: List[str] = [g[0] for g in groups]
        self.has_synonyms = len(flat) > len(groups)
        # channel of each class's names in all_names
        self._index, start = [], 0
        for g in groups:
            self._index.append(list(range(start, start + len(g))))
            start += len(g)

    def __len__(self) -> int:
        return len(self.groups)

    def reduce(self, scores: torch.Tensor) -> torch.Tensor:
        """(len(all_names), H, W) per-name scores -> (len(self), H, W): max over each class's names."""
        if scores.shape[0] != len(self.all_names):
            raise ValueError(f"scores have {scores.shape[0]} channels, "
                             f"expected {len(self.all_names)} ({self.all_names})")
        return torch.stack([scores[idx].amax(0) for idx in self._index])

    def to_text(self) -> str:
        return ", ".join("|".join(g) for g in self.groups)


def parse_classes(text: str, source: str = "--classes") -> ClassNames:
    """``"tree|forest, building"`` -> :class:`ClassNames` (empty text is an error)."""
    return ClassNames([c for c in text.split(",") if c.strip()], source=f"{source} {text!r}")


def read_classes_file(path: str) -> ClassNames:
    """One class per line, synonyms separated by ``|``; blank lines and ``#`` comments ignored."""
    from ..data import read_class_file

    return ClassNames(read_class_file(path), source=f"class file {path}")
