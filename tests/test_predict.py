import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from aeroseg.engine.predictor import SlidingWindowPredictor, classes_from_text, window_offsets
from conftest import REPO, TINY_CONFIG

sys.path.insert(0, str(REPO / "tools"))
import predict  # noqa: E402


class PointwiseModel(nn.Module):
    """Scores depend on each pixel only: stitched windows must equal the whole-image result."""

    vocabulary = ["a", "b"]

    def forward(self, inputs):
        out = []
        for item in inputs:
            img = item["image"].float() / 255
            out.append({"sem_seg": torch.stack([img[0] * img[1], img[2]])})
        return out


def test_window_offsets_cover_the_scene_and_end_at_the_border():
    assert window_offsets(100, 256, 192) == [0]
    assert window_offsets(1000, 256, 192) == [0, 192, 384, 576, 744]
    assert window_offsets(512, 256, 256) == [0, 256]


@pytest.mark.parametrize("size", [(40, 50), (300, 700), (257, 256)])
def test_sliding_window_equals_whole_image_for_a_pointwise_model(size):
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8)
    model = PointwiseModel().train()
    scores = SlidingWindowPredictor(model, tile=128, overlap=0.3, batch_size=3)(image)
    expected = model([{"image": image}])[0]["sem_seg"]
    torch.testing.assert_close(scores, expected)
    assert model.training  # the mode is restored


def test_overlapping_windows_are_averaged():
    class PositionModel(nn.Module):  # scores equal the window's call index: overlaps average them
        calls = 0

        def forward(self, inputs):
            outs = []
            for item in inputs:
                PositionModel.calls += 1
                outs.append({"sem_seg": torch.full((1, *item["image"].shape[1:]), float(PositionModel.calls))})
            return outs

    scores = SlidingWindowPredictor(PositionModel(), tile=4, overlap=0.5, batch_size=1)(torch.zeros(3, 1, 8, dtype=torch.uint8))
    # windows start at 0, 2, 4 (values 1, 2, 3): columns 0-1 -> 1, 2-3 -> 1.5, 4-5 -> 2.5, 6-7 -> 3
    assert scores[0, 0].tolist() == [1, 1, 1.5, 1.5, 2.5, 2.5, 3, 3]


def test_classes_from_text():
    assert classes_from_text(" building, road ,, swimming pool ") == ["building", "road", "swimming pool"]


def test_predict_cli_png_and_georeferenced_tif(tmp_path, capsys):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    png = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(png)
    tif = tmp_path / "geo.tif"
    transform = from_origin(356000.0, 5645000.0, 0.5, 0.5)
    data = np.random.default_rng(1).integers(0, 4000, (3, 60, 80)).astype(np.uint16)  # 16-bit sensor
    with rasterio.open(tif, "w", driver="GTiff", width=80, height=60, count=3, dtype="uint16",
                       crs="EPSG:25832", transform=transform) as dst:
        dst.write(data)
    out = tmp_path / "out"
    args = ["--config-file", str(TINY_CONFIG), "--input", str(png), str(tif), "--output", str(out),
            "--classes", "building, road, swimming pool", "--tile", "64", "--save-scores", "MODEL.DEVICE", "cpu"]
    assert predict.main(args) == 0
    classes = json.loads((out / "classes.json").read_text())
    assert [c["name"] for c in classes] == ["building", "road", "swimming pool"]
    labels = np.asarray(Image.open(out / "scene_labels.png"))
    assert labels.shape == (70, 90) and labels.max() < 3
    scores = np.load(out / "scene_scores.npy")
    assert scores.shape == (3, 70, 90)
    # the labels are the argmax of the (float16-saved) scores, up to float16 rounding of near ties
    chosen = np.take_along_axis(scores.astype(np.float32), labels[None].astype(np.int64), 0)[0]
    assert (chosen >= scores.max(0).astype(np.float32) - 1e-3).all()
    with rasterio.open(out / "geo_labels.tif") as src:
        assert src.crs.to_epsg() == 25832 and src.transform == transform and src.count == 1
        assert src.read(1).shape == (60, 80) and src.read(1).max() < 3
    assert np.asarray(Image.open(out / "geo_color.png")).shape == (60, 80, 3)

    # nothing already written is replaced without --overwrite
    before = (out / "scene_labels.png").read_bytes()
    assert predict.main(args) == 2
    assert "scene_labels.png exists (use --overwrite" in capsys.readouterr().err
    assert (out / "scene_labels.png").read_bytes() == before
    assert predict.main(["--overwrite"] + args) == 0


def test_predict_cli_errors(tmp_path, capsys):
    assert predict.main(["--config-file", str(TINY_CONFIG), "--input", str(tmp_path / "nope.png"),
                         "--output", str(tmp_path / "o")]) == 2
    assert "nope.png: no such file or folder" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert predict.main(["--config-file", str(TINY_CONFIG), "--input", str(bad), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "bad.png: cannot read the image" in err and "\n" not in err
