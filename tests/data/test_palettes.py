"""Class orders, palettes, label values and seen/unseen splits pinned against their official sources.

The expected tables are written out here as literals, copied by hand from the sources cited, and
NOT derived from the package's constants: a wrong colour, a swapped pair of classes or an
off-by-one label value silently corrupts every number of a paper table, and a test that reads
the same constant as the code cannot see it.
"""

import numpy as np
import pytest
from PIL import Image

from aeroseg.data.dataset_mapper import training_label_map
from aeroseg.data.datasets import builtin_meta
from conftest import REPO, require_samples

from aeroseg.data.prepare import isaid as prepare_isaid
from aeroseg.data.prepare.errors import PrepareError
from aeroseg.data.prepare.reading import remap_label_values

# iSAID devkit (CAPTAIN-WHU/iSAID_Devkit @ f2b9197a,
# preprocess/cityscapesScripts/cityscapesscripts/helpers/labels.py): name, id, trainId, colour of
# the semantic masks (*_instance_color_RGB.png, read as RGB). "unlabeled" (0, 0, 0) has trainId 255.
ISAID_DEVKIT = [
    ("ship", 1, 0, (0, 0, 63)),
    ("storage_tank", 2, 1, (0, 63, 63)),
    ("baseball_diamond", 3, 2, (0, 63, 0)),
    ("tennis_court", 4, 3, (0, 63, 127)),
    ("basketball_court", 5, 4, (0, 63, 191)),
    ("Ground_Track_Field", 6, 5, (0, 63, 255)),
    ("Bridge", 7, 6, (0, 127, 63)),
    ("Large_Vehicle", 8, 7, (0, 127, 127)),
    ("Small_Vehicle", 9, 8, (0, 0, 127)),
    ("Helicopter", 10, 9, (0, 0, 191)),
    ("Swimming_pool", 11, 10, (0, 0, 255)),
    ("Roundabout", 12, 11, (0, 191, 127)),
    ("Soccer_ball_field", 13, 12, (0, 127, 191)),
    ("plane", 14, 13, (0, 127, 255)),
    ("Harbor", 15, 14, (0, 100, 155)),
]

# DLRSD (Shao et al., "Performance evaluation of single-label and multi-label remote sensing image
# retrieval using a dense labeling dataset", Remote Sensing 2018; release README): label PNG value
# -> class, 0 = unlabelled. Our index = value - 1.
DLRSD_OFFICIAL = {
    1: "airplane", 2: "bare soil", 3: "buildings", 4: "cars", 5: "chaparral", 6: "court", 7: "dock",
    8: "field", 9: "grass", 10: "mobile home", 11: "pavement", 12: "sand", 13: "sea", 14: "ship",
    15: "tanks", 16: "trees", 17: "water",
}

# OpenEarthMap (Xia et al., WACV 2023; open-earth-map.org class table): label GeoTIFF value ->
# class, 0 = unknown. Our index = value - 1.
OEM_OFFICIAL = {
    1: "bareland", 2: "rangeland", 3: "developed space", 4: "road", 5: "tree", 6: "water",
    7: "agriculture land", 8: "building",
}

# The paper's Table 1: classes only encountered at inference (unseen).
PAPER_UNSEEN = {
    "isaid": ["tennis court", "bridge", "small vehicle", "helicopter", "soccer ball field", "harbor"],
    "dlrsd": ["airplane", "bare soil", "buildings", "cars", "pavement", "sea", "trees"],
    "oem": ["developed space", "tree", "water", "agriculture land"],
}


def _devkit_name(name: str) -> str:
    return name.lower().replace("_", " ")


# ----------------------------------------------------------------------------- iSAID
@pytest.mark.parametrize("name,devkit_id,train_id,colour", ISAID_DEVKIT, ids=[r[0] for r in ISAID_DEVKIT])
def test_isaid_class_and_colour_match_the_devkit(name, devkit_id, train_id, colour):
    assert builtin_meta.ISAID_CLASSES[train_id] == _devkit_name(name)
    assert tuple(builtin_meta.ISAID_PALETTE[train_id]) == colour
    assert train_id == devkit_id - 1


def test_isaid_has_exactly_the_devkit_classes():
    assert len(builtin_meta.ISAID_CLASSES) == len(builtin_meta.ISAID_PALETTE) == len(ISAID_DEVKIT) == 15


def test_isaid_colour_masks_convert_to_the_devkit_train_ids():
    """One pixel of every devkit colour, background, an unknown colour and the BGR-swapped ship."""
    colours = [c for _, _, _, c in ISAID_DEVKIT] + [(0, 0, 0), (0, 63, 64), (63, 0, 0)]
    expected = [t for _, _, t, _ in ISAID_DEVKIT] + [255, 255, 255]
    mask = np.array(colours, dtype=np.uint8).reshape(1, -1, 3)
    label, unknown = prepare_isaid.colour_mask_to_index(mask)
    assert label.tolist() == [expected]
    assert unknown == {"(0, 63, 64)": 1, "(63, 0, 0)": 1}  # background is not "unknown"


def test_real_isaid_mask_uses_only_devkit_colours():
    """The devkit's own sample mask P0003 (SOURCES.md: background, small vehicle, storage tank,
    large vehicle) contains only table colours, and those three classes."""
    path = require_samples("isaid", "P0003_instance_color_RGB.png")
    mask = np.asarray(Image.open(path).convert("RGB"))
    packed = np.unique((mask[..., 0].astype(np.int64) << 16) | (mask[..., 1].astype(np.int64) << 8) | mask[..., 2])
    colours = {(int(k) >> 16, (int(k) >> 8) & 255, int(k) & 255) for k in packed}
    by_colour = {c: _devkit_name(n) for n, _, _, c in ISAID_DEVKIT}
    assert colours - {(0, 0, 0)} <= set(by_colour)
    assert {by_colour[c] for c in colours if c in by_colour} == {"small vehicle", "storage tank", "large vehicle"}
    label, unknown = prepare_isaid.colour_mask_to_index(mask)
    assert not unknown
    small_vehicle = np.all(mask == (0, 0, 127), axis=-1)
    assert small_vehicle.any() and (label[small_vehicle] == 8).all()
    assert (label[np.all(mask == 0, axis=-1)] == 255).all()


# ----------------------------------------------------------------------------- DLRSD / OEM
def test_dlrsd_class_order_and_values():
    assert builtin_meta.DLRSD_CLASSES == [DLRSD_OFFICIAL[v] for v in range(1, 18)]
    raw = np.arange(18, dtype=np.uint8).reshape(3, 6)
    label = remap_label_values(raw, len(builtin_meta.DLRSD_CLASSES), REPO / "x.png")
    assert label.flatten().tolist() == [255] + list(range(17))  # value v -> v - 1, 0 -> ignore
    with pytest.raises(PrepareError, match="18"):
        remap_label_values(np.array([[18]], np.uint8), 17, REPO / "x.png")


def test_oem_class_order_and_values(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from aeroseg.data.prepare import oem as prepare_oem

    assert builtin_meta.OEM_CLASSES == [OEM_OFFICIAL[v] for v in range(1, 9)]
    raw = np.arange(9, dtype=np.uint8).reshape(1, 9)
    path = tmp_path / "label.tif"
    with rasterio.open(path, "w", driver="GTiff", width=9, height=1, count=1, dtype="uint8",
                       transform=rasterio.Affine(1, 0, 0, 0, -1, 1), crs="EPSG:32632") as ds:
        ds.write(raw, 1)
    assert prepare_oem.read_geotiff_label(path).tolist() == [[255, 0, 1, 2, 3, 4, 5, 6, 7]]


def test_real_oem_label_values():
    pytest.importorskip("rasterio")
    from aeroseg.data.prepare import oem as prepare_oem

    path = require_samples("openearthmap", "koeln_50_label.tif")
    label = prepare_oem.read_geotiff_label(path)
    # SOURCES.md: raw values 2, 3, 4, 5, 7, 8 present -> rangeland, developed space, road, tree,
    # agriculture land, building
    present = {builtin_meta.OEM_CLASSES[v] for v in np.unique(label).tolist() if v != 255}
    assert present == {OEM_OFFICIAL[v] for v in (2, 3, 4, 5, 7, 8)}


# ----------------------------------------------------------------------------- splits
@pytest.mark.parametrize("dataset", ["isaid", "dlrsd", "oem"])
def test_unseen_classes_are_the_papers_table_1(dataset):
    classes, unseen = builtin_meta.BUILTIN_DATASETS[dataset]
    assert unseen == PAPER_UNSEEN[dataset]
    assert set(unseen) < set(classes)


def test_registered_isaid_metadata_and_training_label_map():
    from aeroseg.data import MetadataCatalog
    from aeroseg.data.datasets import register_all_builtin

    register_all_builtin()
    meta = MetadataCatalog.get("isaid_train")
    assert meta.stuff_classes == [_devkit_name(n) for n, _, _, _ in ISAID_DEVKIT]
    seen = ["ship", "storage tank", "baseball diamond", "basketball court", "ground track field",
            "large vehicle", "swimming pool", "roundabout", "plane"]
    assert meta.seen_classes == seen and meta.unseen_classes == PAPER_UNSEEN["isaid"]
    # dataset index -> training index: seen classes renumbered in order, unseen ones ignored
    lut = training_label_map(meta.stuff_classes, meta.seen_classes, 255)
    assert lut[:15].tolist() == [0, 1, 2, 255, 3, 4, 255, 5, 255, 255, 6, 7, 255, 8, 255]
    assert lut[255] == 255


def test_openearthmap_display_palette():
    """The colours predict.py draws for OpenEarthMap classes: the release's colour table
    (OpenEarthMap paper / dataset figures: bareland #800000, rangeland #00FF24, developed space
    #949494, road #FFFFFF, tree #226126, water #0045FF, agriculture land #4BB549, building
    #DE1F07), class by class, written as literals here."""
    from aeroseg.data.datasets.builtin_meta import OEM_CLASSES
    from aeroseg.inference.visualize import class_palette

    official = {"bareland": (128, 0, 0), "rangeland": (0, 255, 36), "developed space": (148, 148, 148),
                "road": (255, 255, 255), "tree": (34, 97, 38), "water": (0, 69, 255),
                "agriculture land": (75, 181, 73), "building": (222, 31, 7)}
    assert list(OEM_CLASSES) == list(official)
    palette = class_palette(list(official))
    for name, rgb in zip(official, palette):
        assert tuple(int(v) for v in rgb) == official[name], name
