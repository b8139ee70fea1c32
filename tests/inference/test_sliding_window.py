"""Sliding-window inference: blending, streaming, class synonyms (aeroseg.inference)."""
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

from aeroseg.inference import ClassNames, SlidingWindowPredictor, blend_profile, parse_classes, window_offsets
from aeroseg.inference.scene_io import segment_scene
from conftest import PointwiseModel


class WindowEdgeModel(nn.Module):
    """Class 0 scores the red channel; class 1 is 0.5 minus a penalty near the window's edges
    (as a network's padding degrades its borders): the result depends on the window grid."""

    vocabulary = ["a", "b"]

    def forward(self, inputs):
        out = []
        for item in inputs:
            img = item["image"].float() / 255
            h, w = img.shape[1:]
            dy = torch.minimum(torch.arange(h), torch.arange(h).flip(0)).float()
            dx = torch.minimum(torch.arange(w), torch.arange(w).flip(0)).float()
            edge = torch.minimum(dy[:, None], dx[None, :])
            out.append({"sem_seg": torch.stack([img[0], 0.5 - 0.4 * torch.exp(-edge / 3)])})
        return out


def test_window_offsets_cover_the_scene_and_end_at_the_border():
    assert window_offsets(100, 256, 192) == [0]
    assert window_offsets(1000, 256, 192) == [0, 192, 384, 576, 744]
    assert window_offsets(512, 256, 256) == [0, 256]


def test_cosine_blend_profile_values():
    ramp_up = [0.5 - 0.5 * np.cos(np.pi * 0.5 / 2), 0.5 - 0.5 * np.cos(np.pi * 1.5 / 2)]
    np.testing.assert_allclose(blend_profile(6, 2), ramp_up + [1, 1] + ramp_up[::-1], rtol=1e-6)
    # neighbours overlapping by the ramp cross-fade to exactly 1; no weight is 0 (scene edges covered)
    p = blend_profile(256, 64)
    np.testing.assert_allclose(p[192:] + p[:64], 1, rtol=1e-6)
    for mode in ("cosine", "gaussian", "uniform"):
        assert blend_profile(256, 64, mode).min() > 0
    assert blend_profile(5, 0).tolist() == [1] * 5


@pytest.mark.parametrize("blend", ["cosine", "gaussian", "uniform"])
@pytest.mark.parametrize("size", [(40, 50), (300, 700), (257, 256)])
def test_sliding_window_equals_whole_image_for_a_pointwise_model(size, blend):
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8)
    model = PointwiseModel().train()
    scores = SlidingWindowPredictor(model, tile=128, overlap=0.3, batch_size=3, blend=blend)(image)
    expected = model([{"image": image}])[0]["sem_seg"]
    torch.testing.assert_close(scores, expected)
    assert model.training  # the mode is restored


def test_overlapping_windows_are_weighted():
    class CallIndexModel(nn.Module):  # scores equal the window's call index
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, inputs):
            outs = []
            for item in inputs:
                self.calls += 1
                outs.append({"sem_seg": torch.full((1, *item["image"].shape[1:]), float(self.calls))})
            return outs

    image = torch.zeros(3, 1, 8, dtype=torch.uint8)
    # windows start at 0, 2, 4 (values 1, 2, 3), tile 4, stride 2
    uniform = SlidingWindowPredictor(CallIndexModel(), tile=4, overlap=0.5, batch_size=1, blend="uniform")(image)
    assert uniform[0, 0].tolist() == [1, 1, 1.5, 1.5, 2.5, 2.5, 3, 3]
    cosine = SlidingWindowPredictor(CallIndexModel(), tile=4, overlap=0.5, batch_size=2)(image)
    lo, hi = 0.5 - 0.5 * np.cos(np.pi / 4), 0.5 - 0.5 * np.cos(3 * np.pi / 4)  # ramp weights 0.146, 0.854
    expected = [1, 1, (hi * 1 + lo * 2) / (hi + lo), (lo * 1 + hi * 2) / (hi + lo),
                (hi * 2 + lo * 3) / (hi + lo), (lo * 2 + hi * 3) / (hi + lo), 3, 3]
    np.testing.assert_allclose(cosine[0, 0].numpy(), expected, rtol=1e-6)


def _seam_and_other_change_rates(labels: np.ndarray, tile: int, stride: int, margin: int = 16):
    """Fraction of columns whose label changes between rows r and r + 1, averaged over the row
    pairs straddling an interior window border (seams) and over all other row pairs. Rows within
    ``margin`` of the scene's top and bottom are left out: there a single window's edge is all
    the data there is (no blending can help), which is not a seam."""
    height = labels.shape[0]
    changes = (labels[1:] != labels[:-1]).mean(1)  # changes[r]: between rows r and r + 1
    borders = {b for y in window_offsets(height, tile, stride) for b in (y, y + tile) if 0 < b < height}
    seams = sorted(b - 1 for b in borders)
    others = [r for r in range(margin, height - 1 - margin) if r not in seams]
    return changes[seams].mean(), changes[others].mean()


def test_blending_removes_the_window_seams():
    # red varies along x only: any change from one row to the next comes from the window grid
    g = np.random.default_rng(0)
    red = np.tile(g.integers(0, 256, (1, 256)), (256, 1))
    image = torch.from_numpy(np.stack([red, red, red]).astype(np.uint8))
    rates = {}
    for blend in ("uniform", "cosine", "gaussian"):
        scores = SlidingWindowPredictor(WindowEdgeModel(), tile=64, overlap=0.25, batch_size=8, blend=blend)(image)
        rates[blend] = _seam_and_other_change_rates(scores.argmax(0).numpy(), 64, 48)
    baseline_seam, baseline_other = rates["uniform"]
    # plain averaging piles changes up on the seams (16% of the columns, 30x the rate elsewhere)
    assert baseline_seam > 0.1 and baseline_seam > 10 * baseline_other, rates
    for blend in ("cosine", "gaussian"):
        # blended: at most 2 of 256 columns change on a seam row (a window's edge weight is tiny, not 0)
        seam, other = rates[blend]
        assert seam < 0.01 and seam < baseline_seam / 10, rates


def test_window_batching_and_prefetch_do_not_change_the_result():
    image = torch.randint(0, 256, (3, 150, 170), dtype=torch.uint8)
    one = SlidingWindowPredictor(WindowEdgeModel(), tile=64, overlap=0.4, batch_size=1)(image)
    many = SlidingWindowPredictor(WindowEdgeModel(), tile=64, overlap=0.4, batch_size=7)(image)
    torch.testing.assert_close(one, many)


def test_class_synonyms_take_the_max_over_their_names():
    class NameScoreModel(nn.Module):  # every name scores a fixed value everywhere
        SCORE = {"tree": 0.2, "forest": 0.7, "building": 0.6, "roof": 0.1, "house": 0.3, "water": 0.4}

        def set_vocabulary(self, names):
            self.vocabulary = list(names)

        def forward(self, inputs):
            return [{"sem_seg": torch.stack([torch.full(item["image"].shape[1:], self.SCORE[n])
                                             for n in self.vocabulary])} for item in inputs]

    model = NameScoreModel()
    predictor = SlidingWindowPredictor(model, tile=16)
    classes = parse_classes("tree|forest, building| roof |house, water")
    scores = predictor(torch.zeros(3, 20, 24, dtype=torch.uint8), classes=classes)
    assert model.vocabulary == ["tree", "forest", "building", "roof", "house", "water"]
    assert predictor.class_names == ["tree", "building", "water"]
    assert scores.shape == (3, 20, 24)
    np.testing.assert_allclose(scores[:, 0, 0].numpy(), [0.7, 0.6, 0.4], rtol=1e-6)
    assert (scores.argmax(0) == 0).all()  # "forest" wins for the tree class


@pytest.mark.parametrize("text", ["", " , ", "tree|, road", "tree, road|tree"])
def test_bad_class_lists_are_one_line_errors(text):
    with pytest.raises(ValueError) as info:
        parse_classes(text)
    assert "\n" not in str(info.value) and "--classes" in str(info.value)


def test_class_names_from_lists():
    c = ClassNames([["tree", "forest"], "road|street"])
    assert c.groups == [["tree", "forest"], ["road", "street"]] and c.to_text() == "tree|forest, road|street"


def _geotiff(path, height, width, seed=0):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    transform = from_origin(356000.0, 5645000.0, 0.5, 0.5)
    rows = np.random.default_rng(seed).integers(0, 256, (3, 64, width), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                       crs="EPSG:25832", transform=transform, tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate") as dst:
        for y in range(0, height, 64):  # written in bands too: the test itself stays small
            dst.write(np.roll(rows, y, axis=2)[:, : min(64, height - y)],
                      window=rasterio.windows.Window(0, y, width, min(64, height - y)))
    return transform


def _peak_traced_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streaming_memory_does_not_grow_with_the_scene_height(tmp_path):
    """A 2048 x 512 scene, tile 128, 2 classes, scores saved: the peak of Python-traced memory
    (numpy buffers, rasterio reads) stays under the 8 MB the whole score map would take at
    float32 alone, and within 25% of the peak on a scene 4 times less high."""
    peaks = {}
    for height in (512, 2048):
        scene = tmp_path / f"scene{height}.tif"
        _geotiff(scene, height, 512)
        predictor = SlidingWindowPredictor(PointwiseModel(), tile=128, overlap=0.25, batch_size=4)
        out = tmp_path / f"out{height}"
        out.mkdir()
        peaks[height] = _peak_traced_bytes(lambda: segment_scene(
            predictor, scene, out, "s", save_scores=True, preview_max_side=256))
    whole_scores = 2 * 2048 * 512 * 4
    assert peaks[2048] < whole_scores / 2, peaks
    assert peaks[2048] < 1.25 * peaks[512], peaks


def test_streamed_file_equals_the_in_memory_path(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    scene = tmp_path / "scene.tif"
    transform = _geotiff(scene, 300, 280, seed=3)
    with rasterio.open(scene) as src:
        image = torch.from_numpy(src.read())
    predictor = SlidingWindowPredictor(WindowEdgeModel(), tile=64, overlap=0.25, batch_size=3)
    in_memory = predictor(image).numpy()
    segment_scene(predictor, scene, tmp_path, "s", save_scores=True, scores_dtype="float16")
    with rasterio.open(tmp_path / "s_labels.tif") as src:
        assert src.transform == transform and src.crs.to_epsg() == 25832
        np.testing.assert_array_equal(src.read(1), in_memory.argmax(0))
    with rasterio.open(tmp_path / "s_scores.tif") as src:
        np.testing.assert_array_equal(src.read(), in_memory)


def test_from_config_loads_the_weights_and_uses_the_training_crop(tmp_path):
    from conftest import TINY_CONFIG, build_tiny

    trained = build_tiny(seed=1)
    path = tmp_path / "model_final.pth"
    torch.save({"model": trained.state_dict()}, path)
    opts = ["DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]
    predictor = SlidingWindowPredictor.from_config_file(str(TINY_CONFIG), str(path), opts=opts)
    assert predictor.tile == 64  # INPUT.CROP.SIZE of the tiny config
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(predictor.model.state_dict()[name], value, msg=name)
    image = torch.randint(0, 256, (3, 80, 100), dtype=torch.uint8)
    scores = predictor(image, classes=["building|roof", "road"])
    assert scores.shape == (2, 80, 100) and predictor.class_names == ["building", "road"]
    assert 0 <= scores.min() and scores.max() <= 1
