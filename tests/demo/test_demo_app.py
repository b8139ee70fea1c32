"""The web demo without a browser: its page logic through Gradio's own client, and its command line."""
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from aeroseg.demo import DemoSession, image_size
from aeroseg.demo.app import PRESETS, legend_html, main, preset_classes
from aeroseg.inference import SlidingWindowPredictor
from aeroseg.inference.visualize import class_palette
from conftest import DEMO_MAX_PIXELS, DEMO_CONFIG, error_line, synthetic_scene


@pytest.fixture(scope="module")
def client(demo_server):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(demo_server[0], verbose=False)


def _segment(client, image, classes, alpha=0.5):
    from gradio_client import handle_file

    overlay, legend, chart, labels, classes_json, status = client.predict(
        handle_file(str(image)), classes, alpha, api_name="/segment")
    return {"overlay": overlay, "legend": legend, "chart": chart, "labels": labels, "classes": classes_json,
            "status": status}


def _direct_labels(session, image: np.ndarray, classes) -> np.ndarray:
    """What the predictor gives without the page (same model and windows, no kept encodings)."""
    p = session.predictor
    fresh = SlidingWindowPredictor(p.model, tile=p.tile, overlap=1 - p.stride / p.tile, batch_size=p.batch_size)
    return fresh(torch.from_numpy(image.transpose(2, 0, 1).copy()), classes=classes).argmax(0).numpy()


def test_segment_returns_overlay_legend_shares_and_downloads(client, demo_server, tmp_path):
    image = synthetic_scene(tmp_path / "scene.png", rows=2, cols=3, seed=1)  # 128 x 192
    out = _segment(client, tmp_path / "scene.png", "building|roof, road, swimming pool")
    assert out["status"].startswith("192×128 px, 3 classes, 12 windows")  # 3 x 4 windows of 64 px
    labels = np.asarray(Image.open(out["labels"]))
    assert labels.shape == (128, 192)  # the image's size, one class index per pixel
    # the page's answer is the predictor's (one inference path), window for window
    expected = _direct_labels(demo_server[1], image, ["building|roof", "road", "swimming pool"])
    np.testing.assert_array_equal(labels, expected)
    info = json.loads(open(out["classes"]).read())
    assert [c["name"] for c in info["classes"]] == ["building", "road", "swimming pool"]
    assert info["classes"][0]["synonyms"] == ["building", "roof"]
    # legend: names, synonyms and colours in class order; shares as the labels count them
    palette = class_palette(["building", "road", "swimming pool"])
    shares = np.bincount(labels.ravel(), minlength=3) / labels.size
    for i, name in enumerate(["building", "road", "swimming pool"]):
        assert f'data-color="#{palette[i][0]:02x}{palette[i][1]:02x}{palette[i][2]:02x}"' in out["legend"]
        assert f'<span class="aeroseg-name">{name}</span>' in out["legend"]
        assert f"{100 * shares[i]:.1f}%" in out["legend"]
    assert '<span class="aeroseg-synonyms">(roof)</span>' in out["legend"]
    chart = {row[0]: row[1] for row in out["chart"]["value"]["data"]}
    assert chart == pytest.approx({n: 100 * s for n, s in zip(["building", "road", "swimming pool"], shares)},
                                  abs=0.01)
    overlay = Image.open(out["overlay"])
    assert overlay.width > overlay.height * 192 / 128  # the image and, to its right, the legend strip


def test_a_new_class_list_on_the_same_image_reuses_its_encodings(client, demo_server, tmp_path):
    image = synthetic_scene(tmp_path / "requery.png", rows=2, cols=2, seed=2)
    first = _segment(client, tmp_path / "requery.png", "building, road, tree")
    assert "(image encoded)" in first["status"]
    again = _segment(client, tmp_path / "requery.png", "tree|forest, water, car, road")
    assert "image encodings reused: only the classes were recomputed" in again["status"]
    labels = np.asarray(Image.open(again["labels"]))
    np.testing.assert_array_equal(labels, _direct_labels(demo_server[1], image, ["tree|forest", "water", "car",
                                                                                  "road"]))


def test_a_geotiff_gives_georeferenced_labels_with_a_colour_table(client, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    image = synthetic_scene(tmp_path / "tile.png", rows=1, cols=2, seed=3)
    profile = dict(driver="GTiff", width=128, height=64, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000))
    with rasterio.open(tmp_path / "tile.tif", "w", **profile) as dst:
        dst.write(image.transpose(2, 0, 1))
    out = _segment(client, tmp_path / "tile.tif", "building, road")
    with rasterio.open(out["labels"]) as src:
        assert (src.height, src.width) == (64, 128) and src.crs.to_epsg() == 32633
        assert src.transform == profile["transform"]
        assert src.colormap(1)[1][:3] == tuple(int(v) for v in class_palette(["building", "road"])[1])
        assert src.read(1).max() <= 1


@pytest.mark.parametrize("case,classes,message", [
    ("unreadable", "building", "broken.png: cannot read the image (UnidentifiedImageError: cannot identify image "
                               "file 'broken.png'); expected a PNG, JPEG or GeoTIFF"),
    ("empty classes", " , ", "classes ' , ': no class names (expected e.g. \"building, road|street, tree\")"),
    ("duplicates", "road, tree|road", "classes 'road, tree|road': duplicate class names ('road' = 'road'; names "
                                      "that differ only in case or spaces are the same class to the model): keep "
                                      "one of each"),
    ("too large", "building", "large.png is 250×200 px (50,000 pixels): this demo segments images of up to "
                              "40,000 pixels (--max-pixels); crop or downsample it, or use aeroseg-predict"),
])
def test_bad_input_is_a_message_on_the_page(client, tmp_path, case, classes, message):
    synthetic_scene(tmp_path / "ok.png", rows=1, cols=1)
    (tmp_path / "broken.png").write_bytes(b"this is no image")
    Image.new("RGB", (250, 200)).save(tmp_path / "large.png")  # 50,000 px > DEMO_MAX_PIXELS
    assert 250 * 200 > DEMO_MAX_PIXELS
    image = {"unreadable": "broken.png", "too large": "large.png"}.get(case, "ok.png")
    out = _segment(client, tmp_path / image, classes)
    assert out["status"] == f"**Error:** {message}"
    assert out["overlay"] is None and out["labels"] is None and out["classes"] is None and out["legend"] == ""


def test_the_session_reports_what_is_missing_before_running_the_model(tmp_path, demo_server):
    session = demo_server[1]
    from aeroseg.demo import DemoInputError

    with pytest.raises(DemoInputError, match="no image: upload a PNG, JPEG or GeoTIFF first"):
        session.segment(None, "road")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DemoInputError, match=r"notes.txt: expected a PNG, JPEG or GeoTIFF image \(.png"):
        session.segment(tmp_path / "notes.txt", "road")
    synthetic_scene(tmp_path / "ok.png", rows=1, cols=1)
    with pytest.raises(DemoInputError, match=r"opacity 1.5: expected a value in \[0, 1\]"):
        session.segment(tmp_path / "ok.png", "road", alpha=1.5)
    assert image_size(tmp_path / "ok.png") == (64, 64)


def test_opacity_re_renders_the_overlay_without_the_model(tmp_path, demo_server, monkeypatch):
    session = demo_server[1]
    image = synthetic_scene(tmp_path / "alpha.png", rows=1, cols=1, seed=4)  # 64 px: shown 4x enlarged
    result = session.segment(tmp_path / "alpha.png", "building, road, tree")
    monkeypatch.setattr(session.predictor.model, "forward", None)  # the model must not run again
    clear = np.asarray(session.overlay(result, 0.0))[:256, :256]
    solid = np.asarray(session.overlay(result, 1.0))[:256, :256]
    enlarged = np.asarray(Image.fromarray(image).resize((256, 256), Image.NEAREST))
    np.testing.assert_array_equal(clear, enlarged)
    np.testing.assert_array_equal(solid, result.palette[result.preview["labels"]])


def test_presets_are_the_datasets_vocabularies():
    from aeroseg.data.datasets.builtin_meta import DLRSD_CLASSES, ISAID_CLASSES, OEM_CLASSES

    assert preset_classes("iSAID (15 classes)") == ", ".join(ISAID_CLASSES)
    assert preset_classes("DLRSD (17 classes)").split(", ") == DLRSD_CLASSES
    assert preset_classes("OpenEarthMap (8 classes)").split(", ") == OEM_CLASSES
    assert len(PRESETS) == 4


def test_legend_escapes_class_names():
    session_result = type("R", (), {"names": ["<b>pool</b>"], "groups": [["<b>pool</b>", "a&b"]],
                                    "palette": np.array([[1, 2, 3]], np.uint8), "shares": [1.0]})
    html = legend_html(session_result)
    assert "&lt;b&gt;pool&lt;/b&gt;" in html and "(a&amp;b)" in html and "<b>" not in html


# ----------------------------------------------------------------------------- command line
def test_help_and_a_one_line_error_without_gradio(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--max-pixels" in capsys.readouterr().out
    assert main(["--config-file", str(DEMO_CONFIG)]) == 2
    assert error_line(capsys) == ('error: the web demo needs Gradio, which is not installed: '
                                  'pip install "aeroseg[demo]"')


@pytest.mark.parametrize("args,message", [
    (["--config-file", "missing.yaml"], "error: config file missing.yaml does not exist"),
    (["--config-file", str(DEMO_CONFIG), "--max-pixels", "0"], "error: --max-pixels 0: expected a number > 0"),
    (["--config-file", str(DEMO_CONFIG), "MODEL.NO_SUCH_KEY", "1"],
     "tiny_cpu.yaml: Non-existent key: MODEL.NO_SUCH_KEY"),
])
def test_command_line_errors_are_one_line(capsys, args, message):
    pytest.importorskip("gradio")
    assert main(args) == 2
    assert message in error_line(capsys)


def test_session_limits_are_checked():
    with pytest.raises(ValueError, match="max_pixels=0"):
        DemoSession(predictor=None, max_pixels=0)


def test_the_classes_box_starts_with_the_test_datasets_classes(tmp_path):
    from types import SimpleNamespace

    from aeroseg.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.TRAIN", "('synthetic_aerial_train',)", "DATASETS.TEST", "('synthetic_aerial_val',)"])
    model = SimpleNamespace(vocabulary=["building", "road", "tree", "low vegetation"])  # the seen classes
    session = DemoSession(SimpleNamespace(cfg=cfg, model=model), work_dir=str(tmp_path))
    assert session.default_classes == "building, road, tree, water, low vegetation, car"  # unseen ones too
    cfg.merge_from_list(["DATASETS.TEST", "()"])
    assert session.default_classes == "building, road, tree, low vegetation"


def test_an_image_with_nodata_is_shown_with_its_nodata(tmp_path):
    """The session works without Gradio; transparent pixels get no class, and the overlay at any
    opacity shows them (it indexed the palette with the nodata label)."""
    from aeroseg.inference.scene_io import NODATA_LABEL
    from aeroseg.inference.visualize import NODATA_OVERLAY_COLOUR
    from conftest import TINY_CONFIG

    predictor = SlidingWindowPredictor.from_config_file(str(TINY_CONFIG), opts=["DATASETS.TRAIN", "()",
                                                                                 "DATASETS.TEST", "()"])
    session = DemoSession(predictor, max_pixels=DEMO_MAX_PIXELS, work_dir=str(tmp_path / "work"))
    rgba = np.dstack([synthetic_scene(tmp_path / "scene.png", rows=1, cols=1), np.full((64, 64), 255, np.uint8)])
    rgba[:, :32, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    result = session.segment(tmp_path / "half.png", "building, road")
    labels = result.preview["labels"]
    assert (labels[:, : labels.shape[1] // 2] == NODATA_LABEL).all()
    assert sum(result.shares) == pytest.approx(0.5)  # the classes' shares of the image, nodata excluded
    for alpha in (0.0, 1.0):
        overlay = np.asarray(session.overlay(result, alpha))
        assert (overlay[10, 10] == NODATA_OVERLAY_COLOUR).all()
    session.close()
