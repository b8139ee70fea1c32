"""The last scene's window encodings (aeroseg.inference.encoding_cache): a new class list on the
same scene skips CLIP's image tower and SAM and gives exactly a fresh run's numbers."""
import pytest
import torch

from aeroseg.inference import SlidingWindowPredictor
from aeroseg.inference.encoding_cache import EncodingCache
from conftest import build_tiny


def _counting(model, monkeypatch):
    calls = []
    original = model.encode_images
    monkeypatch.setattr(model, "encode_images", lambda crops: calls.append(len(crops)) or original(crops))
    return calls


def _image(seed, size=(3, 150, 150)):
    return torch.randint(0, 256, size, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_a_new_class_list_on_the_same_scene_reuses_the_encodings_and_equals_a_fresh_run(monkeypatch):
    predictor = SlidingWindowPredictor(build_tiny(), tile=64, overlap=0.25, batch_size=2, cache_mb=16)
    calls = _counting(predictor.model, monkeypatch)
    image = _image(0)  # 150 x 150: 3 x 3 windows of 64 (stride 48); per row a batch of 2 and one of 1
    first = predictor(image, classes=["building", "road", "tree"])
    assert sum(calls) == 9 and len(predictor.cache) == 6 and predictor.cache.misses == 6
    calls.clear()
    classes = ["swimming pool|pool", "road", "ship", "tree"]
    again = predictor(image, classes=classes)
    assert calls == [] and predictor.cache.hits == 6 and predictor.cache.misses == 0  # CLIP and SAM skipped
    fresh = SlidingWindowPredictor(build_tiny(), tile=64, overlap=0.25, batch_size=2)(image, classes=classes)
    assert torch.equal(again, fresh)  # bit for bit
    assert again.shape[0] == 4 and first.shape[0] == 3


def test_another_scene_is_encoded_and_replaces_the_last_one(monkeypatch):
    predictor = SlidingWindowPredictor(build_tiny(), tile=64, overlap=0.25, batch_size=2, cache_mb=16)
    calls = _counting(predictor.model, monkeypatch)
    predictor(_image(0), classes=["building", "road"])
    other = _image(1)
    other[:, :64, :64] = _image(0)[:, :64, :64]  # same first window, but not the same first batch
    calls.clear()
    scores = predictor(other, classes=["building", "road"])
    assert sum(calls) == 9 and predictor.cache.hits == 0
    assert len(predictor.cache) == 6  # only the new scene's batches are kept
    fresh = SlidingWindowPredictor(build_tiny(), tile=64, overlap=0.25, batch_size=2)(
        other, classes=["building", "road"])
    assert torch.equal(scores, fresh)


def test_memory_stays_within_the_budget_and_a_partial_cache_still_helps(monkeypatch):
    model = build_tiny()
    per_batch = model.eval().encode_images([_image(0)[:, :64, :64]] * 2).nbytes
    budget_mb = 1.6 * per_batch / 2 ** 20  # room for the first row: a batch of two windows and one of one
    predictor = SlidingWindowPredictor(model, tile=64, overlap=0.25, batch_size=2, cache_mb=budget_mb)
    calls = _counting(model, monkeypatch)
    image = _image(2)
    predictor(image, classes=["building", "road"])
    assert len(predictor.cache) == 2 and predictor.cache.nbytes <= predictor.cache.max_bytes
    calls.clear()
    again = predictor(image, classes=["tree", "water"])
    assert predictor.cache.hits == 2 and sum(calls) == 9 - 3
    assert predictor.cache.nbytes <= predictor.cache.max_bytes
    fresh = SlidingWindowPredictor(build_tiny(), tile=64, overlap=0.25, batch_size=2)(image, classes=["tree", "water"])
    assert torch.equal(again, fresh)


def test_new_weights_drop_the_kept_encodings(monkeypatch):
    predictor = SlidingWindowPredictor(build_tiny(), tile=64, overlap=0.25, batch_size=2, cache_mb=16)
    image = _image(0)
    predictor(image, classes=["building", "road"])
    predictor.model.load_state_dict(build_tiny(seed=1).state_dict())  # e.g. another checkpoint
    calls = _counting(predictor.model, monkeypatch)
    scores = predictor(image, classes=["building", "road"])
    assert sum(calls) == 9 and predictor.cache.hits == 0
    fresh = SlidingWindowPredictor(build_tiny(seed=1), tile=64, overlap=0.25, batch_size=2)(
        image, classes=["building", "road"])
    assert torch.equal(scores, fresh)


def test_without_cache_mb_nothing_is_kept():
    predictor = SlidingWindowPredictor(build_tiny(), tile=64, overlap=0.25, batch_size=2)
    scores = predictor(_image(0), classes=["building"])
    assert predictor.cache is None
    cached = SlidingWindowPredictor(build_tiny(), tile=64, overlap=0.25, batch_size=2, cache_mb=16)
    assert torch.equal(cached(_image(0), classes=["building"]), scores)
    with pytest.raises(ValueError, match="cache_mb=-1"):
        SlidingWindowPredictor(build_tiny(), cache_mb=-1)


def test_encoding_cache_bookkeeping():
    cache = EncodingCache(max_bytes=10)
    cache.begin("w")
    assert cache.put("a", "A", 4) and cache.put("b", "B", 4) and not cache.put("c", "C", 4)  # over 10 bytes
    assert cache.nbytes == 8
    cache.begin("w")
    assert cache.get("a") == "A" and cache.get("b") == "B" and cache.hits == 2
    cache.begin("w")
    assert cache.get("x") is None and len(cache) == 0 and cache.nbytes == 0  # another image: all dropped
    assert cache.put("c", "C", 10)
    cache.begin("other weights")
    assert len(cache) == 0 and cache.nbytes == 0
