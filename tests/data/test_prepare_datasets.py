"""Tests of the dataset preparation scripts in ``datasets/``.

Each test writes a small synthetic raw release in the official layout (iSAID
colour masks, DLRSD class folders, OpenEarthMap GeoTIFFs with split lists),
runs the script's ``main(argv)`` in-process (a few runs go through a
subprocess to check the command line and exit codes) and checks the tiles.
Tests on the real sample files (``$AEROSEG_SAMPLES``, default ``../shared/data/samples``)
skip when that folder is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, require_samples
from aeroseg.data.datasets import builtin_meta
from aeroseg.data.prepare import dlrsd as prepare_dlrsd
from aeroseg.data.prepare import isaid as prepare_isaid
from aeroseg.data.prepare import oem as prepare_oem
from aeroseg.data.prepare.errors import PrepareError
from aeroseg.data.prepare.output import write_png_atomic
from aeroseg.data.prepare.reading import remap_label_values
from aeroseg.data.prepare.tiling import tile_origins

DATASETS_DIR = REPO / "datasets"


HARBOR = builtin_meta.ISAID_PALETTE[builtin_meta.ISAID_CLASSES.index("harbor")]
SHIP = builtin_meta.ISAID_PALETTE[builtin_meta.ISAID_CLASSES.index("ship")]
STORAGE_TANK = builtin_meta.ISAID_PALETTE[builtin_meta.ISAID_CLASSES.index("storage tank")]
UNKNOWN_COLOUR = (10, 20, 30)


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def snapshot(root: Path) -> dict:
    """Every file below ``root`` (hidden ones included) mapped to its bytes."""
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def stems(folder: Path) -> set:
    return {p.stem for p in folder.glob("*.png")}


def noise_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def error_line(captured_err: str) -> str:
    """The single stderr line that is not a progress bar redraw."""
    lines = [line for line in captured_err.replace("\r", "\n").splitlines()
             if line.strip() and "image/s" not in line and "|" not in line]
    assert len(lines) == 1, captured_err
    return lines[0]


# --------------------------------------------------------------------------- #
# Shared helpers
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("length, stride, expected", [
    (1000, 256, [0, 256, 512, 744]),
    (512, 256, [0, 256]),
    (256, 256, [0]),
    (200, 256, [0]),
    (300, 128, [0, 44]),
    (600, 200, [0, 200, 344]),
])
def test_tile_origins_shift_last_tile_back(length, stride, expected):
    assert tile_origins(length, 256, stride) == expected


def test_remap_label_values():
    raw = np.array([[0, 1, 8]], np.uint8)
    assert remap_label_values(raw, 8, Path("x")).tolist() == [[255, 0, 7]]
    with pytest.raises(PrepareError, match=r"x: unknown label value\(s\) 9, 200"):
        remap_label_values(np.array([[9, 200, 1]], np.uint16), 8, Path("x"))


def test_write_png_atomic_leaves_nothing_on_failure(tmp_path, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_png_atomic(np.zeros((4, 4), np.uint8), tmp_path / "tile.png")
    assert list(tmp_path.iterdir()) == []


def test_class_constants_are_consistent():
    assert len(builtin_meta.ISAID_CLASSES) == len(builtin_meta.ISAID_PALETTE) == 15
    assert len(set(builtin_meta.ISAID_PALETTE)) == 15
    assert len(builtin_meta.DLRSD_CLASSES) == 17 and len(builtin_meta.OEM_CLASSES) == 8
    for classes, unseen in [(builtin_meta.ISAID_CLASSES, builtin_meta.ISAID_UNSEEN),
                            (builtin_meta.DLRSD_CLASSES, builtin_meta.DLRSD_UNSEEN),
                            (builtin_meta.OEM_CLASSES, builtin_meta.OEM_UNSEEN)]:
        assert set(unseen) < set(classes)


# --------------------------------------------------------------------------- #
# iSAID
# --------------------------------------------------------------------------- #


@pytest.fixture
def isaid_raw(tmp_path):
    """Synthetic iSAID release: train P0001 (300x600), val P0002 (200x180, padded)."""
    raw = tmp_path / "iSAID"
    # train/P0001: harbor top-left, ship bottom-right, an unknown colour in between.
    image = noise_image(300, 600, seed=1)
    mask = np.zeros((300, 600, 3), np.uint8)
    mask[0:20, 0:20] = HARBOR
    mask[280:300, 590:600] = SHIP
    mask[100:111, 100:111] = UNKNOWN_COLOUR
    save_png(image, raw / "train" / "images" / "P0001.png")
    save_png(mask, raw / "train" / "Semantic_masks" / "images" / "P0001_instance_color_RGB.png")
    # Instance-id masks of the devkit must be ignored.
    save_png(noise_image(300, 600, seed=9),
             raw / "train" / "Instance_masks" / "images" / "P0001_instance_id_RGB.png")
    # val/P0002: smaller than a tile.
    image = noise_image(200, 180, seed=2)
    mask = np.zeros((200, 180, 3), np.uint8)
    mask[5:15, 5:15] = STORAGE_TANK
    save_png(image, raw / "val" / "images" / "P0002.png")
    save_png(mask, raw / "val" / "Semantic_masks" / "images" / "P0002_instance_color_RGB.png")
    return raw


def run_isaid(raw, dst, *extra):
    return prepare_isaid.main(["--src", str(raw), "--dst", str(dst), "--workers", "0", *extra])


def test_isaid_colour_mapping_covers_palette():
    colours = list(builtin_meta.ISAID_PALETTE) + [(0, 0, 0), (1, 2, 3), (1, 2, 3)]
    mask = np.array([colours], np.uint8)
    label, unknown = prepare_isaid.colour_mask_to_index(mask, chunk_rows=1)
    assert label[0].tolist() == list(range(15)) + [255, 255, 255]
    assert unknown == {"(1, 2, 3)": 2}


def test_isaid_tiles_labels_and_summary(isaid_raw, tmp_path, capsys):
    dst = tmp_path / "out"
    assert run_isaid(isaid_raw, dst) == 0
    out = capsys.readouterr().out

    # 300x600 -> rows [0, 44] x cols [0, 256, 344]; only two tiles hold labels.
    assert stems(dst / "train" / "images") == {"P0001_y00000_x00000", "P0001_y00044_x00344"}
    assert stems(dst / "train" / "labels") == stems(dst / "train" / "images")
    assert stems(dst / "val" / "labels") == {"P0002_y00000_x00000"}

    source = read_png(isaid_raw / "train" / "images" / "P0001.png")
    first = read_png(dst / "train" / "labels" / "P0001_y00000_x00000.png")
    assert first.shape == (256, 256) and first.dtype == np.uint8
    assert first[10, 10] == 14                        # harbor
    assert first[50, 50] == 255                       # background -> ignore
    assert first[105, 105] == 255                     # unknown colour -> ignore
    last = read_png(dst / "train" / "labels" / "P0001_y00044_x00344.png")
    assert last[290 - 44, 595 - 344] == 0             # ship, in the shifted edge tile
    image_tile = read_png(dst / "train" / "images" / "P0001_y00044_x00344.png")
    assert image_tile.shape == (256, 256, 3)
    np.testing.assert_array_equal(image_tile, source[44:300, 344:600])

    # Val image is smaller than a tile: padded with black / ignore.
    val_label = read_png(dst / "val" / "labels" / "P0002_y00000_x00000.png")
    val_image = read_png(dst / "val" / "images" / "P0002_y00000_x00000.png")
    assert val_label[10, 10] == 1 and val_label[100, 100] == 255
    assert val_label[250, 250] == 255 and val_label[199, 179] == 255
    assert (val_image[200:, :] == 0).all() and (val_image[:, 180:] == 0).all()
    np.testing.assert_array_equal(val_image[:200, :180],
                                  read_png(isaid_raw / "val" / "images" / "P0002.png"))

    assert "harbor" in out and "storage tank" in out
    assert "(10, 20, 30): 121" in out                 # unknown colour counted
    assert "padded" in out
    train_row = next(line for line in out.splitlines() if line.strip().startswith("train"))
    assert train_row.split() == ["train", "1", "2", "4"]  # images, tiles, dropped empty


def test_isaid_keep_empty_writes_every_tile(isaid_raw, tmp_path):
    dst = tmp_path / "out"
    assert run_isaid(isaid_raw, dst, "--keep-empty") == 0
    expected = {f"P0001_y{y:05d}_x{x:05d}" for y in (0, 44) for x in (0, 256, 344)}
    assert stems(dst / "train" / "images") == expected
    assert (read_png(dst / "train" / "labels" / "P0001_y00044_x00000.png") == 255).all()


def test_isaid_run_with_other_options_is_refused_or_rebuilds(isaid_raw, tmp_path, capsys):
    dst = tmp_path / "out"
    assert run_isaid(isaid_raw, dst, "--keep-empty") == 0
    first = snapshot(dst)
    capsys.readouterr()
    assert run_isaid(isaid_raw, dst) == 2   # other options into the same folder: refused
    err = error_line(capsys.readouterr().err)
    assert str(dst / "manifest.json") in err and "keep_empty True -> False" in err and "--overwrite" in err
    assert snapshot(dst) == first           # nothing touched
    assert run_isaid(isaid_raw, dst, "--overwrite") == 0
    assert len(stems(dst / "train" / "images")) == 2   # rebuilt: no file of the earlier run left
    manifest = json.loads((dst / "manifest.json").read_text())
    assert manifest["options"]["keep_empty"] is False
    assert sorted(manifest["splits"]["train"]["files"]) == sorted(stems(dst / "train" / "images"))


def test_isaid_rerun_is_idempotent_and_workers_agree(isaid_raw, tmp_path):
    dst = tmp_path / "out"
    assert run_isaid(isaid_raw, dst) == 0
    first = snapshot(dst)
    # A temp file from an interrupted run is cleaned up.
    (dst / "train" / "images" / ".P0001_y00000_x00000.png.tmp.4242.0badcafe.png").write_bytes(b"junk")
    assert run_isaid(isaid_raw, dst) == 0
    assert snapshot(dst) == first
    assert not [name for name in first if Path(name).name.startswith(".")]

    parallel = tmp_path / "parallel"
    assert prepare_isaid.main(["--src", str(isaid_raw), "--dst", str(parallel),
                               "--workers", "2"]) == 0
    assert snapshot(parallel) == first


def test_isaid_size_mismatch_is_one_line_error(isaid_raw, tmp_path, capsys):
    bad_mask = isaid_raw / "val" / "Semantic_masks" / "images" / "P0002_instance_color_RGB.png"
    save_png(np.zeros((100, 100, 3), np.uint8), bad_mask)
    assert run_isaid(isaid_raw, tmp_path / "out") == 2
    line = error_line(capsys.readouterr().err)
    assert line == (f"error: {bad_mask}: label size 100x100 (WxH) differs from "
                    f"image size 180x200")


def test_isaid_error_in_worker_pool_stops_cleanly(isaid_raw, tmp_path, capsys):
    bad_mask = isaid_raw / "val" / "Semantic_masks" / "images" / "P0002_instance_color_RGB.png"
    save_png(np.zeros((100, 100, 3), np.uint8), bad_mask)
    dst = tmp_path / "out"
    assert run_isaid(isaid_raw, dst, "--workers", "2") == 2
    assert error_line(capsys.readouterr().err).startswith(f"error: {bad_mask}: label size")
    # no temp file is left; the marker says the folder is incomplete (and there is no manifest)
    assert [p.name for p in dst.rglob("*") if p.name.startswith(".")] == [".prepare_in_progress"]
    assert not (dst / "manifest.json").exists()


def test_isaid_skip_bad_counts_and_continues(isaid_raw, tmp_path, capsys):
    save_png(np.zeros((100, 100, 3), np.uint8),
             isaid_raw / "val" / "Semantic_masks" / "images" / "P0002_instance_color_RGB.png")
    (isaid_raw / "train" / "images" / "P0007.png").write_bytes(b"not a png")
    save_png(np.zeros((10, 10, 3), np.uint8),
             isaid_raw / "train" / "Semantic_masks" / "images" / "P0007_instance_color_RGB.png")
    save_png(noise_image(10, 10, 3), isaid_raw / "train" / "images" / "P0008.png")  # no mask
    dst = tmp_path / "out"
    assert run_isaid(isaid_raw, dst, "--skip-bad") == 0
    out = capsys.readouterr().out
    assert "skipped 3 bad input(s)" in out
    assert "P0008.png: no semantic mask P0008_instance_color_RGB.png" in out
    assert "P0007.png: cannot read image" in out
    assert len(stems(dst / "train" / "images")) == 2
    assert stems(dst / "val" / "images") == set()


@pytest.mark.parametrize("breakage, message", [
    ("unreadable", "P0002.png: cannot read image"),
    ("no_mask", "P0002.png: no semantic mask P0002_instance_color_RGB.png found below"),
    ("no_val", "val: missing split folder"),
])
def test_isaid_malformed_inputs(isaid_raw, tmp_path, capsys, breakage, message):
    if breakage == "unreadable":
        (isaid_raw / "val" / "images" / "P0002.png").write_bytes(b"\x89PNG broken")
    elif breakage == "no_mask":
        (isaid_raw / "val" / "Semantic_masks" / "images" / "P0002_instance_color_RGB.png").unlink()
    else:
        os.rename(isaid_raw / "val", isaid_raw / "validation")
    assert run_isaid(isaid_raw, tmp_path / "out") == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith("error: ") and message in line


def test_isaid_cli_exit_code_and_single_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(DATASETS_DIR / "prepare_isaid.py"),
         "--src", str(tmp_path / "missing"), "--dst", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing'}: not a folder (expected the iSAID root with "
        f"train/ and val/)"]
    assert "Traceback" not in result.stderr


# In-process (the scripts' main(argv)); running them as scripts is covered by the iSAID CLI test above.
@pytest.mark.parametrize("script, words", [
    (prepare_isaid, ["--keep-empty", "--skip-bad", "harbor", "shifted back"]),
    (prepare_dlrsd, ["--seed", "train.txt", "256x253", "water"]),
    (prepare_oem, ["rasterio", "--workers", "agriculture land", "744"]),
])
def test_cli_help(script, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in words:
        assert word in out


# --------------------------------------------------------------------------- #
# DLRSD
# --------------------------------------------------------------------------- #


def save_label_png(values: np.ndarray, path: Path, palette: bool) -> None:
    """Save raw label values as a palette ('P') or grayscale ('L') PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = values.shape
    if palette:
        img = Image.frombytes("P", (width, height), values.astype(np.uint8).tobytes())
        img.putpalette([c for i in range(256) for c in (i * 7 % 256, i * 13 % 256, i * 29 % 256)])
    else:
        img = Image.fromarray(values.astype(np.uint8))
    img.save(path)


def dlrsd_label(height: int, width: int, fill: int) -> np.ndarray:
    label = np.full((height, width), fill, np.uint8)
    label[0, 0], label[0, 1], label[0, 2] = 1, 17, 0
    return label


@pytest.fixture
def dlrsd_raw(tmp_path):
    """Two scene classes x 5 images; airplane03 is 256 wide x 253 high, airplane04 260x256."""
    images, labels = tmp_path / "UCMerced_LandUse" / "Images", tmp_path / "DLRSD" / "Labels"
    sizes = {"airplane03": (253, 256), "airplane04": (256, 260)}
    for class_index, scene in enumerate(["agricultural", "airplane"]):
        for i in range(5):
            name = f"{scene}{i:02d}"
            height, width = sizes.get(name, (256, 256))
            (images / scene).mkdir(parents=True, exist_ok=True)
            Image.fromarray(noise_image(height, width, seed=10 * class_index + i)).save(
                images / scene / f"{name}.tif")
            save_label_png(dlrsd_label(height, width, fill=8 + class_index),
                           labels / scene / f"{name}.png", palette=bool(i % 2))
    return images, labels


def run_dlrsd(raw, dst, *extra):
    images, labels = raw
    return prepare_dlrsd.main(["--images", str(images), "--labels", str(labels),
                               "--dst", str(dst), "--workers", "0", *extra])


def test_dlrsd_split_labels_and_sizes(dlrsd_raw, tmp_path, capsys):
    dst = tmp_path / "out"
    assert run_dlrsd(dlrsd_raw, dst) == 0
    out = capsys.readouterr().out
    train = (dst / "train.txt").read_text().split()
    val = (dst / "val.txt").read_text().split()
    assert len(train) == 8 and len(val) == 2
    assert {name[:-2] for name in val} == {"agricultural", "airplane"}  # stratified
    assert set(train) | set(val) == {f"{s}{i:02d}" for s in ("agricultural", "airplane")
                                     for i in range(5)}
    assert stems(dst / "train" / "images") == set(train) == stems(dst / "train" / "labels")
    assert stems(dst / "val" / "images") == set(val)

    split_of = {name: "train" for name in train} | {name: "val" for name in val}
    for name, split in split_of.items():
        label = read_png(dst / split / "labels" / f"{name}.png")
        image = read_png(dst / split / "images" / f"{name}.png")
        assert label.shape == (256, 256) and image.shape == (256, 256, 3)
        assert label[0, 0] == 0 and label[0, 1] == 16 and label[0, 2] == 255
        assert label[100, 100] == (7 if name.startswith("agricultural") else 8)
    short = split_of["airplane03"]
    label = read_png(dst / short / "labels" / "airplane03.png")
    image = read_png(dst / short / "images" / "airplane03.png")
    assert (label[253:] == 255).all() and label[252, 5] == 8
    assert (image[253:] == 0).all()
    wide = read_png(dst / split_of["airplane04"] / "images" / "airplane04.png")
    source = np.asarray(Image.open(dlrsd_raw[0] / "airplane" / "airplane04.tif"))
    np.testing.assert_array_equal(wide, source[:, :256])
    assert "padded to 256x256" in out and "cropped to 256x256" in out
    assert "mobile home" in out


def test_dlrsd_split_is_deterministic_and_seeded():
    per_class = {"a": [Path(f"a/a{i:02d}.tif") for i in range(100)],
                 "b": [Path(f"b/b{i:02d}.tif") for i in range(100)]}
    first = prepare_dlrsd.split_images(per_class, 0.2, seed=0)
    assert first == prepare_dlrsd.split_images(per_class, 0.2, seed=0)
    assert len(first["train"]) == 160 and len(first["val"]) == 40
    assert first != prepare_dlrsd.split_images(per_class, 0.2, seed=1)


def test_dlrsd_rerun_is_idempotent(dlrsd_raw, tmp_path):
    dst = tmp_path / "out"
    assert run_dlrsd(dlrsd_raw, dst, "--seed", "3") == 0
    first = snapshot(dst)
    assert run_dlrsd(dlrsd_raw, dst, "--seed", "3") == 0
    assert snapshot(dst) == first


def test_dlrsd_unknown_value_error_and_skip_bad(dlrsd_raw, tmp_path, capsys):
    bad = dlrsd_raw[1] / "agricultural" / "agricultural02.png"
    values = dlrsd_label(256, 256, fill=3)
    values[5, 5] = 18
    save_label_png(values, bad, palette=False)
    assert run_dlrsd(dlrsd_raw, tmp_path / "out") == 2
    assert error_line(capsys.readouterr().err) == (
        f"error: {bad}: unknown label value(s) 18 (expected 0 = unlabelled or 1..17)")

    dst = tmp_path / "skipped"
    assert run_dlrsd(dlrsd_raw, dst, "--skip-bad") == 0
    assert "skipped 1 bad input(s)" in capsys.readouterr().out
    written = stems(dst / "train" / "images") | stems(dst / "val" / "images")
    assert len(written) == 9 and "agricultural02" not in written


@pytest.mark.parametrize("breakage, message", [
    ("rgb_label", "expected a single-channel (palette or grayscale) label image, got mode RGB"),
    ("missing_label", "no DLRSD label"),
    ("size", "label size 200x200 (WxH) differs from image size 256x256"),
])
def test_dlrsd_malformed_inputs(dlrsd_raw, tmp_path, capsys, breakage, message):
    label = dlrsd_raw[1] / "airplane" / "airplane01.png"
    if breakage == "rgb_label":
        save_png(np.ones((256, 256, 3), np.uint8), label)
    elif breakage == "missing_label":
        label.unlink()
    else:
        save_label_png(dlrsd_label(200, 200, fill=2), label, palette=True)
    assert run_dlrsd(dlrsd_raw, tmp_path / "out") == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith("error: ") and "airplane01" in line and message in line


def test_dlrsd_wrong_folder(tmp_path, capsys):
    assert prepare_dlrsd.main(["--images", str(tmp_path / "nope"), "--labels", str(tmp_path),
                               "--dst", str(tmp_path / "out")]) == 2
    assert "nope: not a folder" in error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- #
# OpenEarthMap
# --------------------------------------------------------------------------- #


def write_geotiff(path: Path, bands: np.ndarray) -> None:
    """Write ``(bands, H, W)`` as a deflate-compressed, internally tiled GeoTIFF."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = bands.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count,
                       dtype=bands.dtype, crs="EPSG:25832",
                       transform=Affine(0.5, 0.0, 356000.0, 0.0, -0.5, 5645000.0),
                       compress="deflate", tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(bands)


def oem_label(size: int, fill: int) -> np.ndarray:
    label = np.full((size, size), fill, np.uint8)
    label[0, 0], label[0, 1], label[0, 2] = 1, 8, 0
    return label


@pytest.fixture
def oem_raw(tmp_path):
    """aachen_1, koeln_1 (300x300, train) and aachen_2 (600x600, val, mostly unknown)."""
    pytest.importorskip("rasterio")
    raw = tmp_path / "OpenEarthMap_wo_xBD"
    for region, name, size, seed in [("aachen", "aachen_1", 300, 1), ("koeln", "koeln_1", 300, 2),
                                     ("aachen", "aachen_2", 600, 3)]:
        write_geotiff(raw / region / "images" / f"{name}.tif",
                      noise_image(size, size, seed).transpose(2, 0, 1).copy())
        label = oem_label(size, fill=4)
        if name == "aachen_2":
            label[100:] = 0
            label[:, 100:] = 0                   # only the top-left tile is labelled
        write_geotiff(raw / region / "labels" / f"{name}.tif", label[None])
    (raw / "train.txt").write_text("aachen_1.tif\nkoeln_1.tif\n")
    (raw / "val.txt").write_text("aachen_2.tif\n")
    (raw / "test.txt").write_text("aachen_9.tif\n")
    return raw


def run_oem(raw, dst, *extra):
    return prepare_oem.main(["--src", str(raw), "--dst", str(dst), "--workers", "0", *extra])


def test_oem_tiles_and_labels(oem_raw, tmp_path, capsys):
    dst = tmp_path / "out"
    assert run_oem(oem_raw, dst) == 0
    out = capsys.readouterr().out
    grid = {f"y{y:05d}_x{x:05d}" for y in (0, 44) for x in (0, 44)}
    assert stems(dst / "train" / "images") == {f"{n}_{g}" for n in ("aachen_1", "koeln_1")
                                               for g in grid}
    assert stems(dst / "val" / "labels") == {"aachen_2_y00000_x00000"}  # 8 empty dropped
    label = read_png(dst / "train" / "labels" / "aachen_1_y00000_x00000.png")
    assert label[0, 0] == 0 and label[0, 1] == 7 and label[0, 2] == 255 and label[9, 9] == 3
    edge = read_png(dst / "train" / "images" / "koeln_1_y00044_x00044.png")
    np.testing.assert_array_equal(edge, noise_image(300, 300, 2)[44:, 44:])
    assert "agriculture land" in out
    val_row = next(line for line in out.splitlines() if line.strip().startswith("val"))
    assert val_row.split() == ["val", "1", "1", "8"]


def test_oem_keep_empty_and_idempotent(oem_raw, tmp_path):
    dst = tmp_path / "out"
    assert run_oem(oem_raw, dst, "--keep-empty") == 0
    assert len(stems(dst / "val" / "images")) == 9
    first = snapshot(dst)
    assert run_oem(oem_raw, dst, "--keep-empty") == 0
    assert snapshot(dst) == first


def test_oem_unknown_value_and_missing_file(oem_raw, tmp_path, capsys):
    bad = oem_raw / "koeln" / "labels" / "koeln_1.tif"
    label = oem_label(300, fill=9)
    write_geotiff(bad, label[None])
    assert run_oem(oem_raw, tmp_path / "out") == 2
    assert error_line(capsys.readouterr().err) == (
        f"error: {bad}: unknown label value(s) 9 (expected 0 = unlabelled or 1..8)")

    (oem_raw / "train.txt").write_text("aachen_1.tif\nkoeln_1.tif\nchiclayo_3.tif\n")
    assert run_oem(oem_raw, tmp_path / "out") == 2
    line = error_line(capsys.readouterr().err)
    assert "chiclayo_3.tif: listed in train.txt but not found" in line

    dst = tmp_path / "skipped"
    assert run_oem(oem_raw, dst, "--skip-bad") == 0
    assert "skipped 2 bad input(s)" in capsys.readouterr().out
    assert {s.split("_y")[0] for s in stems(dst / "train" / "images")} == {"aachen_1"}


def test_oem_unreadable_geotiff(oem_raw, tmp_path, capsys):
    broken = oem_raw / "aachen" / "images" / "aachen_2.tif"
    broken.write_bytes(b"II*\x00garbage")
    assert run_oem(oem_raw, tmp_path / "out") == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {broken}: cannot read GeoTIFF")


# --------------------------------------------------------------------------- #
# Real samples ($AEROSEG_SAMPLES, default ../shared/data/samples; see conftest.py)
# --------------------------------------------------------------------------- #


def label_values(folder: Path) -> set:
    return set().union(*(np.unique(read_png(p)).tolist() for p in folder.glob("*.png")))


def test_real_isaid_sample(tmp_path, capsys):
    samples = require_samples("isaid")
    raw = tmp_path / "iSAID"
    for split, name in [("val", "P0003"), ("train", "P0004")]:
        (raw / split / "images").mkdir(parents=True)
        (raw / split / "Semantic_masks" / "images").mkdir(parents=True)
        (raw / split / "images" / f"{name}.png").symlink_to(samples / f"{name}.png")
        (raw / split / "Semantic_masks" / "images" / f"{name}_instance_color_RGB.png").symlink_to(
            samples / f"{name}_instance_color_RGB.png")
    dst = tmp_path / "out"
    assert run_isaid(raw, dst) == 0
    out = capsys.readouterr().out
    assert "unknown colours" not in out       # the real masks use exact palette colours
    storage_tank, large_vehicle, small_vehicle = 1, 7, 8
    val_values = label_values(dst / "val" / "labels")
    assert {storage_tank, large_vehicle, small_vehicle} <= val_values
    assert val_values <= {storage_tank, large_vehicle, small_vehicle, 255}
    assert label_values(dst / "train" / "labels") == {large_vehicle, small_vehicle, 255}
    # P0003 is 1147x1023: 5 columns x 4 rows of tile positions, some without labels.
    val_row = next(line for line in out.splitlines() if line.strip().startswith("val"))
    _, images, tiles, dropped = val_row.split()
    assert (images, int(tiles) + int(dropped)) == ("1", 20)
    mask = np.asarray(Image.open(samples / "P0003_instance_color_RGB.png").convert("RGB"))
    expected, _ = prepare_isaid.colour_mask_to_index(mask)
    for path in (dst / "val" / "labels").glob("*.png"):
        y, x = int(path.stem.split("_y")[1][:5]), int(path.stem.split("_x")[1])
        np.testing.assert_array_equal(read_png(path), expected[y:y + 256, x:x + 256])


def test_real_oem_sample(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    samples = require_samples("openearthmap")
    raw = tmp_path / "OpenEarthMap_wo_xBD"
    (raw / "koeln" / "images").mkdir(parents=True)
    (raw / "koeln" / "labels").mkdir(parents=True)
    (raw / "koeln" / "images" / "koeln_50.tif").symlink_to(samples / "koeln_50_image.tif")
    (raw / "koeln" / "labels" / "koeln_50.tif").symlink_to(samples / "koeln_50_label.tif")
    (raw / "train.txt").write_text("koeln_50.tif\n")
    (raw / "val.txt").write_text("koeln_50.tif\n")
    dst = tmp_path / "out"
    assert run_oem(raw, dst, "--splits", "val") == 0
    tiles = sorted((dst / "val" / "labels").glob("*.png"))
    assert len(tiles) == 16                   # 1000x1000 -> offsets 0, 256, 512, 744
    values = label_values(dst / "val" / "labels")
    assert values <= set(range(8)) | {255}
    assert {1, 2, 3, 4, 6, 7} <= values       # raw values 2, 3, 4, 5, 7, 8
    with rasterio.open(samples / "koeln_50_label.tif") as ds:
        raw_label = ds.read(1)
    corner = read_png(dst / "val" / "labels" / "koeln_50_y00744_x00744.png")
    np.testing.assert_array_equal(corner, raw_label[744:, 744:].astype(np.int16) - 1)
    assert not (dst / "train").exists()


# --------------------------------------------------------------------------- #
# Manifest: completion and run identity
# --------------------------------------------------------------------------- #


def test_dlrsd_rerun_with_another_seed_never_mixes_train_and_val(dlrsd_raw, tmp_path, capsys):
    from aeroseg.data.datasets.manifest import files_checksum

    dst = tmp_path / "out"
    assert run_dlrsd(dlrsd_raw, dst, "--seed", "0") == 0
    manifest = json.loads((dst / "manifest.json").read_text())
    train, val = manifest["splits"]["train"]["files"], manifest["splits"]["val"]["files"]
    assert manifest["seed"] == 0 and manifest["dataset"] == "dlrsd"
    assert manifest["splits"]["train"]["count"] == 8 and manifest["splits"]["val"]["count"] == 2
    assert manifest["source"]["images"] == str(dlrsd_raw[0].resolve())
    assert manifest["checksum"] == files_checksum({"train": train, "val": val})
    assert not (dst / ".prepare_in_progress").exists()
    first = snapshot(dst)
    capsys.readouterr()
    assert run_dlrsd(dlrsd_raw, dst, "--seed", "3") == 2   # seed 3 puts other images in val
    err = error_line(capsys.readouterr().err)
    assert "seed 0 -> 3" in err and "train and val" in err
    assert snapshot(dst) == first
    assert run_dlrsd(dlrsd_raw, dst, "--seed", "3", "--overwrite") == 0
    train_on_disk, val_on_disk = stems(dst / "train" / "images"), stems(dst / "val" / "images")
    assert not train_on_disk & val_on_disk and len(train_on_disk | val_on_disk) == 10
    manifest = json.loads((dst / "manifest.json").read_text())
    assert manifest["seed"] == 3 and set(manifest["splits"]["val"]["files"]) == val_on_disk
    assert set(manifest["splits"]["val"]["files"]) != set(val)  # the seed changed the split


def test_interrupted_prepare_run_is_refused_by_registration_and_rerun_completes(dlrsd_raw, tmp_path,
                                                                              monkeypatch, capsys):
    from aeroseg.data import DatasetCatalog, DatasetError, MetadataCatalog, register_folder_dataset

    dst = tmp_path / "dlrsd"
    original, calls = prepare_dlrsd.process_image, {"n": 0}

    def die_after_three(job):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return original(job)

    monkeypatch.setattr(prepare_dlrsd, "process_image", die_after_three)
    assert run_dlrsd(dlrsd_raw, dst) == 130
    assert len(stems(dst / "train" / "images")) == 3 and not (dst / "manifest.json").exists()
    name = f"partial{abs(hash(str(tmp_path))) % 10 ** 8}"
    register_folder_dataset(name, str(dst), builtin_meta.DLRSD_CLASSES)
    try:
        with pytest.raises(DatasetError, match="incomplete.*re-run"):
            DatasetCatalog.get(f"{name}_train")
        # the built-in name says which command to re-run
        monkeypatch.setenv("AEROSEG_DATASETS", str(tmp_path))
        with pytest.raises(DatasetError, match="prepare_dlrsd.py"):
            DatasetCatalog.get("dlrsd_train")
        monkeypatch.setattr(prepare_dlrsd, "process_image", original)
        assert run_dlrsd(dlrsd_raw, dst) == 0
        assert len(DatasetCatalog.get(f"{name}_train")) == 8 and len(DatasetCatalog.get("dlrsd_val")) == 2
    finally:
        for split in ("train", "val"):
            DatasetCatalog.remove(f"{name}_{split}")
            MetadataCatalog.remove(f"{name}_{split}")


def test_builtin_dataset_without_manifest_is_refused(dlrsd_raw, tmp_path, monkeypatch):
    from aeroseg.data import DatasetCatalog, DatasetError

    dst = tmp_path / "dlrsd"
    assert run_dlrsd(dlrsd_raw, dst) == 0
    monkeypatch.setenv("AEROSEG_DATASETS", str(tmp_path))
    assert len(DatasetCatalog.get("dlrsd_train")) == 8
    (dst / "manifest.json").unlink()
    with pytest.raises(DatasetError, match="no manifest.json.*re-run: python datasets/prepare_dlrsd.py"):
        DatasetCatalog.get("dlrsd_train")
