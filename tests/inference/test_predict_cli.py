"""aeroseg-predict / tools/predict.py: GIS outputs, overlays, and a batch that nothing breaks silently."""
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from aeroseg.inference import class_palette
from aeroseg.inference.visualize import DEFAULT_COLOURS, OEM_PALETTE
from aeroseg.data.datasets.builtin_meta import ISAID_PALETTE
from conftest import REPO, TINY_CONFIG

from aeroseg.inference import cli as predict

rasterio = pytest.importorskip("rasterio")


def _png(path, size=(70, 90), seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _tif(path, dtype="uint16", seed=1):
    from rasterio.transform import from_origin

    transform = from_origin(356000.0, 5645000.0, 0.5, 0.5)
    high = 4000 if dtype == "uint16" else 255
    data = np.random.default_rng(seed).integers(0, high, (3, 60, 80)).astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", width=80, height=60, count=3, dtype=dtype,
                       crs="EPSG:25832", transform=transform) as dst:
        dst.write(data)
    return transform


def _args(inputs, out, *extra, classes="building, road|street, swimming pool"):
    return (["--config-file", str(TINY_CONFIG), "--input", *map(str, inputs), "--output", str(out)]
            + (["--classes", classes] if classes is not None else []) + ["--tile", "64", *extra, "MODEL.DEVICE", "cpu"])


def test_georeferenced_outputs_a_gis_opens_directly(tmp_path):
    tif = tmp_path / "geo.tif"
    transform = _tif(tif)
    out = tmp_path / "out"
    assert predict.main(_args([tif], out, "--save-scores")) == 0
    names = ["building", "road", "swimming pool"]
    with rasterio.open(out / "geo_labels.tif") as src:
        assert src.crs.to_epsg() == 25832 and src.transform == transform and src.count == 1
        labels = src.read(1)
        assert labels.shape == (60, 80) and labels.max() < 3
        cmap = src.colormap(1)
        palette = class_palette(names)
        assert [cmap[i][:3] for i in range(3)] == [tuple(int(v) for v in c) for c in palette]
        assert json.loads(src.tags()["CLASS_NAMES"]) == names
        assert [src.tags(1)[f"CLASS_{i}"] for i in range(3)] == names
        assert "1=road" in src.descriptions[0]
    pam = ET.parse(out / "geo_labels.tif.aux.xml").getroot()
    assert [c.text for c in pam.iter("Category")] == names
    qml = ET.parse(out / "geo_labels.qml").getroot()
    assert [(e.get("value"), e.get("label")) for e in qml.iter("paletteEntry")] == [("0", "building"), ("1", "road"),
                                                                                   ("2", "swimming pool")]
    with rasterio.open(out / "geo_color.tif") as src:
        assert src.crs.to_epsg() == 25832 and src.transform == transform and src.count == 3
        np.testing.assert_array_equal(src.read().transpose(1, 2, 0), palette[labels])
    with rasterio.open(out / "geo_scores.tif") as src:  # uint8 probabilities x 255
        assert src.transform == transform and src.count == 3 and src.dtypes[0] == "uint8"
        assert list(src.descriptions) == names
        scores = src.read().astype(np.int32)
        chosen = np.take_along_axis(scores, labels[None].astype(np.int64), 0)[0]
        assert (chosen >= scores.max(0) - 1).all()  # labels = argmax up to uint8 rounding
    record = json.loads((out / "geo_classes.json").read_text())
    assert [c["name"] for c in record["classes"]] == names
    assert record["classes"][1]["synonyms"] == ["road", "street"]
    assert record["scores"] == {"dtype": "uint8", "scale": 255}
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_png_outputs_overlay_and_legend(tmp_path):
    png = _png(tmp_path / "scene.png")
    out = tmp_path / "out"
    assert predict.main(_args([png], out, "--save-scores", "--scores-dtype", "float16", "--alpha", "1")) == 0
    labels = np.asarray(Image.open(out / "scene_labels.png"))
    assert labels.shape == (70, 90) and labels.max() < 3
    scores = np.load(out / "scene_scores.npy")
    assert scores.shape == (3, 70, 90) and scores.dtype == np.float16
    chosen = np.take_along_axis(scores.astype(np.float32), labels[None].astype(np.int64), 0)[0]
    assert (chosen >= scores.max(0).astype(np.float32) - 1e-3).all()
    palette = class_palette(["building", "road", "swimming pool"])
    np.testing.assert_array_equal(np.asarray(Image.open(out / "scene_color.png")), palette[labels])
    overlay = np.asarray(Image.open(out / "scene_overlay.png").convert("RGB"))
    # a small scene is enlarged by a whole factor (70 x 90 -> 140 x 180) so that the legend fits
    assert overlay.shape[0] == 140 and overlay.shape[1] > 180 + 40  # image + legend strip
    np.testing.assert_array_equal(overlay[:, :180], palette[labels].repeat(2, 0).repeat(2, 1))  # alpha 1: mask only
    legend = overlay[:, 180:].reshape(-1, 3)
    for colour in palette:  # every class has its swatch, even where absent from the mask
        assert (legend == colour).all(1).sum() >= 100


def test_overlay_of_a_large_scene_is_downsampled(tmp_path):
    png = _png(tmp_path / "big.png", size=(200, 130))
    assert predict.main(_args([png], tmp_path / "o", "--preview-max-side", "100", "--tile", "128")) == 0
    overlay = Image.open(tmp_path / "o" / "big_overlay.png")
    assert overlay.height == 100 and overlay.width - 65 > 40  # 200x130 -> 100x65 + legend
    assert np.asarray(Image.open(tmp_path / "o" / "big_labels.png")).shape == (200, 130)  # labels stay full size


def test_dataset_palettes_for_known_class_names():
    isaid = class_palette(["plane", "ship", "something else"])
    assert isaid[:2].tolist() == [list(ISAID_PALETTE[13]), list(ISAID_PALETTE[0])]
    assert isaid[2].tolist() == list(DEFAULT_COLOURS[0])
    assert class_palette(["building", "road", "tree"]).tolist() == [list(OEM_PALETTE[7]), list(OEM_PALETTE[3]),
                                                                    list(OEM_PALETTE[4])]
    many = class_palette([f"c{i}" for i in range(30)])
    assert len({tuple(c) for c in many}) == 30  # distinct beyond the default list


# ---------------------------------------------------------------- a batch nothing breaks silently
def test_inputs_sharing_a_stem_get_separate_outputs(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = _png(tmp_path / "a" / "scene.png", seed=1)
    second = _png(tmp_path / "b" / "scene.png", seed=2)
    third = _png(tmp_path / "a" / "scene.jpg", seed=3)
    out = tmp_path / "out"
    assert predict.main(_args([first, second, third], out)) == 0
    assert len(list(out.glob("*_labels.png"))) == 3  # none overwrote another
    for stem, src in (("a__scene_png", first), ("b__scene_png", second), ("a__scene_jpg", third)):
        record = json.loads((out / f"{stem}_classes.json").read_text())
        assert record["input"] == str(src.resolve())
        assert (out / f"{stem}_labels.png").exists()
    assert not (out / "scene_labels.png").exists()


def test_each_output_keeps_its_own_class_list(tmp_path, capsys):
    out = tmp_path / "out"
    assert predict.main(_args([_png(tmp_path / "one.png")], out, classes="water, tree")) == 0
    assert predict.main(_args([_png(tmp_path / "two.png")], out, classes="car, road, building")) == 0
    assert [c["name"] for c in json.loads((out / "one_classes.json").read_text())["classes"]] == ["water", "tree"]
    assert [c["name"] for c in json.loads((out / "two_classes.json").read_text())["classes"]] == ["car", "road",
                                                                                                 "building"]
    assert not (out / "classes.json").exists()  # no shared legend a later run could replace
    # resuming into the same folder with other classes is refused, the earlier legend kept
    before = (out / "one_classes.json").read_bytes()
    assert predict.main(_args([tmp_path / "one.png"], out, "--skip-existing", classes="car")) == 2
    assert "one.png was segmented into other classes" in capsys.readouterr().err
    # the same without --classes: the config's vocabulary is not water, tree either
    assert predict.main(_args([tmp_path / "one.png"], out, "--skip-existing", classes=None)) == 2
    assert "one.png was segmented into other classes" in capsys.readouterr().err
    assert (out / "one_classes.json").read_bytes() == before


@pytest.mark.parametrize("classes", ["", " ,, "])
def test_empty_classes_are_an_error(tmp_path, capsys, classes):
    assert predict.main(_args([_png(tmp_path / "x.png")], tmp_path / "o", classes=classes)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --classes") and "no class names" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_unreadable_inputs_are_reported_and_skipped(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    good = _png(tmp_path / "good.png")
    out = tmp_path / "out"
    assert predict.main(_args([bad, good], out)) == 1
    err = capsys.readouterr().err
    assert "bad.png: cannot read the image" in err and "1 of 2 inputs could not be read" in err
    assert (out / "good_labels.png").exists() and (out / "good_classes.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith("bad")]


def test_skip_existing_resumes_a_batch(tmp_path, capsys):
    first, second = _png(tmp_path / "first.png", seed=1), _png(tmp_path / "second.png", seed=2)
    out = tmp_path / "out"
    args = _args([first], out)
    assert predict.main(args) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # an interrupted second input: an output exists but not its class file (written last)
    (out / "second_color.png").write_bytes(b"partial")
    both = _args([first, second], out)
    assert predict.main(both) == 2  # without an option nothing existing is touched
    assert "first_labels.png exists (use --overwrite" in capsys.readouterr().err
    assert predict.main(_args([first, second], out, "--skip-existing")) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in before} == before
    assert (out / "second_classes.json").exists()
    assert np.asarray(Image.open(out / "second_color.png")).shape == (70, 90, 3)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert predict.main(_args([tmp_path / "nope.png"], tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "nope.png: no such file or folder" in err and err.count("\n") == 1
    png = _png(tmp_path / "x.png")
    for extra, text in ((("--threads", "0"), "--threads 0"), (("--threads", "-1"), "--threads -1"),
                        (("--tile", "0"), "--tile 0: expected a window side >= 1"), (("--tile", "-64"), "--tile -64"),
                        (("--overlap", "1"), "--overlap 1.0"), (("--overlap", "nan"), "--overlap nan"),
                        (("--batch-size", "0"), "--batch-size 0"), (("--preview-max-side", "0"), "--preview-max-side"),
                        (("--alpha", "2"), "--alpha 2.0"), (("MODEL.AEROSEG.FEATURE_DIM", "0"), "FEATURE_DIM=0"),
                        (("SOLVER.IMS_PER_BATCH",), "KEY VALUE pairs")):
        assert predict.main(_args([png], tmp_path / "o", *extra)) == 2, extra  # (the last --tile wins)
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1, (extra, err)
    assert not (tmp_path / "o").exists()
    # without --tile the window comes from the config; a config without one is told to pass --tile
    no_tile = [a for a in _args([png], tmp_path / "o") if a not in ("--tile", "64")]
    assert predict.main(no_tile + ["INPUT.CROP.ENABLED", "False", "INPUT.MIN_SIZE_TEST", "0"]) == 2
    assert "pass --tile" in capsys.readouterr().err


def test_real_openearthmap_geotiff_streams_with_its_georeferencing(tmp_path):
    sample = REPO.parent.parent / "shared" / "data" / "samples" / "openearthmap" / "koeln_50_image.tif"
    if not sample.exists():
        sample = REPO.parent / "shared" / "data" / "samples" / "openearthmap" / "koeln_50_image.tif"
    if not sample.exists():
        pytest.skip(f"real samples not found ({sample})")
    from aeroseg.inference import SlidingWindowPredictor, segment_scene
    from conftest import PointwiseModel

    predictor = SlidingWindowPredictor(PointwiseModel(), tile=256, overlap=0.25, batch_size=8)
    segment_scene(predictor, sample, tmp_path, "koeln", preview_max_side=300)
    with rasterio.open(sample) as src, rasterio.open(tmp_path / "koeln_labels.tif") as out:
        assert out.crs == src.crs and out.transform == src.transform and out.shape == src.shape
        image = src.read().astype(np.float32) / 255
        np.testing.assert_array_equal(out.read(1), (image[2] > image[0] * image[1]).astype(np.uint8))
    assert Image.open(tmp_path / "koeln_overlay.png").height == 300  # 1000 x 1000 -> 300 x 300 + legend


def test_config_errors_are_one_line(tmp_path, capsys):
    png = _png(tmp_path / "x.png")
    assert predict.main(["--config-file", str(tmp_path / "none.yaml"), "--input", str(png), "--output",
                         str(tmp_path / "o"), "--classes", "a"]) == 2
    assert "config file" in capsys.readouterr().err
    assert predict.main(_args([png], tmp_path / "o", "MODEL.NO_SUCH_KEY", "1")) == 2
    err = capsys.readouterr().err
    assert TINY_CONFIG.name in err and "NO_SUCH_KEY" in err and err.count("\n") == 1
