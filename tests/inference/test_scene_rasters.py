"""Rasters as GIS users have them: nodata (GeoTIFF nodata, mask bands, PNG alpha, palettes), float
rasters with NaN, 16-bit PNGs, declared band order and --bands (aeroseg/inference/scene_io.py)."""
import json

import numpy as np
import pytest
from PIL import Image

from aeroseg.inference import SceneReader, SlidingWindowPredictor, segment_scene
from aeroseg.inference.scene_io import NODATA_LABEL, SceneReadError, parse_bands
from aeroseg.inference.visualize import NODATA_OVERLAY_COLOUR
from conftest import TINY_CONFIG, PointwiseModel

rasterio = pytest.importorskip("rasterio")
from rasterio.enums import ColorInterp  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

H, W = 60, 80


class CountingModel(PointwiseModel):
    """PointwiseModel counting the windows it is given."""

    def __init__(self):
        super().__init__()
        self.windows = 0

    def forward(self, inputs):
        self.windows += len(inputs)
        return super().forward(inputs)


def _geotiff(path, data, **profile):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs="EPSG:25832", transform=from_origin(356000, 5645000, 0.5, 0.5),
                       **profile) as dst:
        dst.write(data)
    return path


def _image(dtype="uint8", high=255, seed=0, bands=3):
    return np.random.default_rng(seed).integers(1, high, (bands, H, W)).astype(dtype)


def _expected_labels(rgb_uint8):
    """PointwiseModel's labels: class 1 where blue > red * green (0..1 scale)."""
    img = rgb_uint8.astype(np.float32) / 255
    return (img[2] > img[0] * img[1]).astype(np.uint8)


def _segment(path, tmp_path, model=None, tile=32, **kwargs):
    model = model or CountingModel()
    predictor = SlidingWindowPredictor(model, tile=tile, overlap=0.0, batch_size=4)
    (tmp_path / "out").mkdir(exist_ok=True)
    segment_scene(predictor, path, tmp_path / "out", "scene", save_scores=True, **kwargs)
    return model, predictor


@pytest.mark.parametrize("how", ["nodata_value", "mask_band", "alpha_band"])
def test_geotiff_nodata_gets_no_class_and_is_shown_as_such(tmp_path, how):
    data = _image()
    valid = np.ones((H, W), bool)
    valid[:, :40] = False  # the left half is not image
    path = tmp_path / "scene.tif"
    if how == "nodata_value":
        data[:, ~valid] = 0
        _geotiff(path, data, nodata=0)
    elif how == "mask_band":
        _geotiff(path, data)
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
            dst.write_mask(np.where(valid, 255, 0).astype(np.uint8))
    else:
        alpha = np.where(valid, 255, 0).astype(np.uint8)[None]
        _geotiff(path, np.concatenate([data, alpha]), photometric="RGB", alpha="YES")
    model, predictor = _segment(path, tmp_path)
    # 2 of the 6 windows (32 px at x = 0, 32, 48; y = 0, 28) hold no image: not run
    assert predictor.num_windows(H, W) == 6 and model.windows == 4
    out = tmp_path / "out"
    with rasterio.open(out / "scene_labels.tif") as src:
        assert src.nodata == NODATA_LABEL
        labels = src.read(1)
        assert src.colormap(1)[NODATA_LABEL][3] == 0  # transparent in a GIS
    assert (labels[~valid] == NODATA_LABEL).all()
    np.testing.assert_array_equal(labels[valid], _expected_labels(data[:3])[valid])
    with rasterio.open(out / "scene_color.tif") as src:
        np.testing.assert_array_equal(src.read_masks(1) > 0, valid)
        assert (src.read()[:, ~valid] == 0).all()
    with rasterio.open(out / "scene_scores.tif") as src:
        np.testing.assert_array_equal(src.read_masks(1) > 0, valid)
    overlay = np.asarray(Image.open(out / "scene_overlay.png").convert("RGB"))
    # 80 x 60 is enlarged 4x for the preview: the nodata half is grey, the legend names it
    assert (overlay[10, 10] == NODATA_OVERLAY_COLOUR).all() and not (overlay[10, 300] == NODATA_OVERLAY_COLOUR).all()
    info = json.loads((out / "scene_classes.json").read_text())
    assert info["nodata_label"] == NODATA_LABEL and info["nodata_pixels"] == int((~valid).sum())


def test_png_alpha_and_transparent_palette_entries_are_nodata(tmp_path):
    data = _image()
    rgba = np.dstack([data.transpose(1, 2, 0), np.full((H, W), 255, np.uint8)])
    rgba[:20, :, 3] = 0  # the top third transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "scene.png")
    model, _ = _segment(tmp_path / "scene.png", tmp_path)
    out = tmp_path / "out"
    labels = np.asarray(Image.open(out / "scene_labels.png"))
    assert (labels[:20] == NODATA_LABEL).all()
    np.testing.assert_array_equal(labels[20:], _expected_labels(data)[20:])
    colour = np.asarray(Image.open(out / "scene_color.png"))
    assert colour.shape == (H, W, 4) and (colour[:20, :, 3] == 0).all() and (colour[20:, :, 3] == 255).all()
    assert np.isnan(np.load(out / "scene_scores.npy", allow_pickle=False).astype(np.float32)).sum() == 0  # uint8: 0
    # a paletted PNG: index 3 is transparent (tRNS)
    index = (np.arange(H * W).reshape(H, W) % 4).astype(np.uint8)
    palette_image = Image.fromarray(index, "P")
    palette_image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    palette_image.save(tmp_path / "palette.png", transparency=3)
    with SceneReader(tmp_path / "palette.png") as reader:
        image, valid = reader.read_rows(0, H)
    np.testing.assert_array_equal(valid, index != 3)
    np.testing.assert_array_equal(image[:, index == 2][:, 0], [0, 0, 255])  # expanded through the colour table


def test_float_rasters_with_nan_are_stretched_over_valid_pixels_only(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.uniform(0.0, 0.4, (3, H, W)).astype(np.float32)  # reflectances
    data[:, :, :30] = np.nan
    data[0, 5, 50] = np.inf  # never enters the stretch either
    _geotiff(tmp_path / "float.tif", data)
    with SceneReader(tmp_path / "float.tif") as reader:
        image, valid = reader.read_rows(0, H)
        scaling = reader.scaling
    assert not valid[:, :30].any() and not valid[5, 50] and valid[:, 30:].sum() == H * 50 - 1
    finite = data[:, valid]
    lo, hi = np.percentile(finite, [2, 98], axis=1)
    np.testing.assert_allclose(scaling["low"], lo, rtol=1e-5)
    np.testing.assert_allclose(scaling["high"], hi, rtol=1e-5)
    expected = np.clip(np.rint((finite - lo[:, None]) / (hi - lo)[:, None] * 255), 0, 255)
    np.testing.assert_allclose(image[:, valid], expected, atol=1)  # not an all-black image
    assert image[:, valid].mean() > 100 and (image[:, ~valid] == 0).all()
    # predicted: no class where the raster is NaN
    _segment(tmp_path / "float.tif", tmp_path)
    with rasterio.open(tmp_path / "out" / "scene_labels.tif") as src:
        assert (src.read(1)[:, :30] == NODATA_LABEL).all() and (src.read(1)[:, 30:] != NODATA_LABEL).sum() > 0


def test_16_bit_png_is_stretched_not_saturated(tmp_path):
    gray = np.tile(np.linspace(0, 40000, W).astype(np.uint16), (H, 1))
    Image.fromarray(gray).save(tmp_path / "gray16.png")
    with SceneReader(tmp_path / "gray16.png") as reader:
        image, valid = reader.read_rows(0, H)
        assert reader.scaling["method"] == "percentile"
    assert valid.all() and (image[0] == image[1]).all() and (image[0] == image[2]).all()
    row = image[0, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and 100 < row[W // 2] < 155  # a ramp, not white
    assert (np.diff(row) >= 0).all()
    # an explicit range instead of the stretch: 0..40000 -> 0..255
    with SceneReader(tmp_path / "gray16.png", value_range=(0, 40000)) as reader:
        image, _ = reader.read_rows(0, 1)
    np.testing.assert_allclose(image[0, 0], np.rint(gray[0] / 40000 * 255), atol=0)


def test_declared_band_order_and_explicit_bands(tmp_path):
    data = _image(bands=4)
    path = _geotiff(tmp_path / "bgr.tif", data)
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    with SceneReader(path) as reader:
        image, _ = reader.read_rows(0, H)
    np.testing.assert_array_equal(image, data[[2, 1, 0]])  # red is band 3, as declared
    with SceneReader(path, bands=[4, 3, 2]) as reader:
        np.testing.assert_array_equal(reader.read_rows(0, H)[0], data[[3, 2, 1]])
    with SceneReader(path, bands=[4, 4, 4]) as reader:
        np.testing.assert_array_equal(reader.read_rows(0, H)[0], data[[3, 3, 3]])
    with pytest.raises(SceneReadError, match="--bands 5,1,1 does not fit its 4 band"):
        SceneReader(path, bands=[5, 1, 1])
    assert parse_bands("3,2,1") == [3, 2, 1] and parse_bands("4") == [4]
    for bad in ("0,1,2", "1,2", "a,b,c"):
        with pytest.raises(SceneReadError, match="--bands"):
            parse_bands(bad)
    two = _geotiff(tmp_path / "two.tif", _image(bands=2))
    with pytest.raises(SceneReadError, match="2 bands without alpha"):
        SceneReader(two)
    with SceneReader(two, bands=[2]) as reader:
        assert reader.band_indexes == [2, 2, 2]


def test_predict_command_line_takes_bands_and_value_range(tmp_path, capsys):
    from aeroseg.inference import cli as predict

    data = _image("uint16", 4000, bands=4)
    data[:, :, :40] = 0
    _geotiff(tmp_path / "ms.tif", data, nodata=0)
    args = ["--config-file", str(TINY_CONFIG), "--input", str(tmp_path / "ms.tif"), "--output", str(tmp_path / "o"),
            "--classes", "building, road", "--tile", "64", "--bands", "3,2,1", "--value-range", "0", "4000"]
    assert predict.main(args + ["MODEL.DEVICE", "cpu"]) == 0
    info = json.loads((tmp_path / "o" / "ms_classes.json").read_text())
    assert info["bands"] == [3, 2, 1] and info["value_scaling"]["low"] == [0.0] * 3
    assert info["nodata_pixels"] == H * 40
    with rasterio.open(tmp_path / "o" / "ms_labels.tif") as src:
        labels = src.read(1)
    assert (labels[:, :40] == NODATA_LABEL).all() and (labels[:, 40:] < 2).all()
    for extra, text in ((["--bands", "0,1,2"], "--bands 0,1,2"), (["--value-range", "5", "5"], "--value-range 5 5")):
        assert predict.main(args + ["--overwrite", *extra, "MODEL.DEVICE", "cpu"]) == 2
        assert text in capsys.readouterr().err
