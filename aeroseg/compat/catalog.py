"""``DatasetCatalog`` / ``MetadataCatalog`` with detectron2's interface, for environments without it.

With detectron2 installed, :mod:`aeroseg.compat` gives detectron2's own catalogs instead, so
datasets registered by AerOSeg are visible to detectron2's trainer and vice versa.
"""
from typing import Any, Callable, Dict, List

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata"]


class _DatasetCatalog:
    """Name -> function returning a list of dataset dicts (called lazily by :meth:`get`)."""

    def __init__(self):
        self._loaders: Dict[str, Callable[[], List[dict]]] = {}

    def register(self, name: str, func: Callable[[], List[dict]]) -> None:
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register('{name}', ...) needs a callable")
        if name in self._loaders:
            raise AssertionError(f"Dataset '{name}' is already registered!")
        self._loaders[name] = func

    def get(self, name: str) -> List[dict]:
        if name not in self._loaders:
            raise KeyError(f"Dataset '{name}' is not registered! Available datasets are: "
                           f"{', '.join(sorted(self._loaders))}")
        return self._loaders[name]()

    def list(self) -> List[str]:
        return list(self._loaders)

    def remove(self, name: str) -> None:
        self._loaders.pop(name)

    def clear(self) -> None:
        self._loaders.clear()

    def __contains__(self, name: str) -> bool:
        return name in self._loaders

    def keys(self):
        return self._loaders.keys()


class Metadata:
    """Attribute bag describing a dataset (``stuff_classes``, ``ignore_label``, ...).

    Like detectron2's: an attribute, once set, may only be set again to an equal value, so two
    registrations cannot silently disagree; :meth:`get` returns a default for missing keys.
    """

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)

    def __getattr__(self, key: str) -> Any:
        raise AttributeError(f"Metadata of dataset '{self.name}' has no attribute '{key}' "
                             f"(available: {', '.join(sorted(self.__dict__))})")

    def __setattr__(self, key: str, value: Any) -> None:
        if key in self.__dict__ and self.__dict__[key] != value:
            raise AssertionError(f"Attribute '{key}' of metadata '{self.name}' cannot be set to a "
                                 f"different value ({self.__dict__[key]!r} != {value!r})")
        object.__setattr__(self, key, value)

    def set(self, **kwargs) -> "Metadata":
        for key, value in kwargs.items():
            setattr(self, key, value)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


class _MetadataCatalog:
    def __init__(self):
        self._metadata: Dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        if name not in self._metadata:
            self._metadata[name] = Metadata(name)
        return self._metadata[name]

    def list(self) -> List[str]:
        return list(self._metadata)

    def remove(self, name: str) -> None:
        self._metadata.pop(name)

    def clear(self) -> None:
        self._metadata.clear()


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()
