"""Class names and the text files they come in: one rule wherever names enter.

Two names are the same class when they differ only in case or in white space around or inside
them (``"Road"``, ``"road "``, ``"ROAD"``): CLIP's tokenizer lower-cases and splits on white
space, so the model cannot tell them apart and one of them could never be predicted. Lists with
such duplicates are refused with one line naming them, wherever names enter: class lists and
class files of ``aeroseg-predict``, dataset class lists (``classes.txt``, ``DATASETS.CUSTOM``),
``MODEL.AEROSEG.VOCABULARY`` and the model's vocabulary.

Text files (class lists) are read as UTF-8 with an optional byte-order mark and any line ending
(``\\n``, ``\\r\\n``, ``\\r``).
"""
from collections import defaultdict
from pathlib import Path
from typing import Iterable, List, Union

from .errors import AerOSegError

__all__ = ["ClassNameError", "check_unique_names", "name_key", "read_text_lines"]


class ClassNameError(AerOSegError, ValueError):
    """A list of class names that the model cannot use (duplicates, empty names)."""


def name_key(name: str) -> str:
    """What makes two names the same class: case-folded, white space collapsed and stripped."""
    return " ".join(str(name).split()).casefold()


def check_unique_names(names: Iterable[str], source: str, error=ClassNameError) -> List[str]:
    """``names`` as a list; raises ``error`` (one line naming ``source`` and the names) if two of them
    are the same class (see :func:`name_key`)."""
    names = list(names)
    groups = defaultdict(list)
    for name in names:
        groups[name_key(name)].append(name)
    clashes = [group for group in groups.values() if len(group) > 1]
    if clashes:
        shown = "; ".join(" = ".join(repr(n) for n in group) for group in clashes[:5])
        raise error(f"{source}: duplicate class names ({shown}; names that differ only in case or spaces are the "
                    f"same class to the model): keep one of each")
    return names


def read_text_lines(path: Union[str, Path], error=AerOSegError) -> List[str]:
    """The lines of the UTF-8 text file ``path`` (an optional BOM dropped, any line ending)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
                    f"save it as UTF-8") from None
    return content.splitlines()
