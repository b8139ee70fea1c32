"""The image encodings of the last scene, so that a new class list skips CLIP's image tower and SAM.

AerOSeg's forward splits into what depends on the image only (:meth:`AerOSeg.encode_images`:
CLIP's dense features of every rotation and the guidance taps) and what depends on the class
names (:meth:`AerOSeg.segment_encoded`: the text embeddings and the correlation head). A
:class:`SlidingWindowPredictor` given ``cache_mb`` keeps the encodings of the windows of the
last scene it segmented, keyed by the windows' pixels: segmenting the same scene again, with any
classes, reuses them and gives exactly the numbers of a fresh run.
"""
import hashlib
from collections import OrderedDict
from typing import Hashable, Optional, Sequence

import torch

__all__ = ["EncodingCache", "batch_key", "weights_version"]


def weights_version(model: torch.nn.Module) -> Hashable:
    """Changes whenever a parameter or buffer of ``model`` is replaced or modified in place.

    Uses each tensor's version counter (what autograd checks in-place changes with): loading a
    checkpoint (``copy_``) and optimizer steps increment it.
    """
    tensors = [*model.parameters(), *model.buffers()]
    return id(model), tuple((id(t), t._version) for t in tensors)


def batch_key(crops: Sequence[torch.Tensor]) -> Hashable:
    """A key of a batch of windows: their shapes, dtypes and a BLAKE2 digest of their pixels.

    The whole batch is one key (not each window alone): a batch's encodings may differ in the
    last bits from the same windows encoded in other batches, and a re-run batches alike.
    """
    digest = hashlib.blake2b(digest_size=20)
    shapes = []
    for crop in crops:
        crop = crop.detach().cpu().contiguous()
        shapes.append((tuple(crop.shape), str(crop.dtype)))
        digest.update(crop.reshape(-1).view(torch.uint8).numpy().tobytes())
    return tuple(shapes), digest.hexdigest()


class EncodingCache:
    """Encodings of the last scene's window batches, at most ``max_bytes`` in all.

    :meth:`begin` starts a scene: the encodings kept so far become the previous scene's (all are
    dropped if the model's :func:`weights_version` changed since they were made). While
    the new scene's batches are found among them they are moved over; the first batch that is
    not (another image) drops all of the previous scene's. New encodings are kept while the total
    stays within ``max_bytes`` (the first windows of a scene larger than that; the others are
    encoded again on the next run). So memory holds at most ``max_bytes`` of encodings.
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes}: expected >= 0")
        self.max_bytes = int(max_bytes)
        self._current: "OrderedDict[Hashable, object]" = OrderedDict()
        self._previous: "OrderedDict[Hashable, object]" = OrderedDict()
        self._sizes = {}
        self.nbytes = 0
        self.hits = self.misses = 0
        self._weights = None

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def begin(self, weights: Hashable = None) -> None:
        """A new scene starts (its batches are looked up among the last scene's); ``weights``:
        the model's :func:`weights_version` (another one drops every encoding)."""
        if weights != self._weights:
            self.clear()
            self._weights = weights
        self._previous.update(self._current)
        self._current = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Optional[object]:
        encoding = self._previous.pop(key, None)
        if encoding is None:
            encoding = self._current.get(key)
        if encoding is None:
            self.misses += 1
            self._drop(self._previous)  # another image: the last one's encodings are of no use
            return None
        self._current[key] = encoding
        self.hits += 1
        return encoding

    def put(self, key: Hashable, encoding, nbytes: int) -> bool:
        """Keep ``encoding`` if it fits in what is left of ``max_bytes``; whether it was kept."""
        if key in self._current or self.nbytes + nbytes > self.max_bytes:
            return False
        self._current[key] = encoding
        self._sizes[key] = int(nbytes)
        self.nbytes += int(nbytes)
        return True

    def clear(self) -> None:
        self._drop(self._previous)
        self._drop(self._current)

    def _drop(self, entries: "OrderedDict[Hashable, object]") -> None:
        for key in entries:
            self.nbytes -= self._sizes.pop(key)
        entries.clear()
