"""Class names: one rule wherever they enter (aeroseg/utils/names.py), and text files as they come."""
import numpy as np
import pytest
from PIL import Image

from aeroseg.utils.errors import AerOSegError, DatasetError
from aeroseg.utils.names import ClassNameError, check_unique_names, name_key, read_text_lines
from conftest import CLASSES, TINY_CONFIG, fabricate_folder_dataset
from conftest import error_line as _error

pytestmark = pytest.mark.usefixtures("datasets_env")


def test_names_differing_in_case_or_spaces_are_the_same_class():
    assert name_key(" Road ") == name_key("road") == name_key("ROAD")
    assert name_key("low  vegetation") == "low vegetation"
    assert name_key("road") != name_key("roads")
    with pytest.raises(ClassNameError) as info:
        check_unique_names(["Road", "tree", "road ", "Tree", "water"], "classes")
    message = str(info.value)
    assert "'Road' = 'road '" in message and "'tree' = 'Tree'" in message and "water" not in message
    assert check_unique_names(["road", "roads", "low vegetation"], "classes") == ["road", "roads", "low vegetation"]


def test_text_files_are_utf8_with_optional_bom_and_any_line_ending(tmp_path):
    for name, data in (("bom_crlf.txt", "\ufeffroad\r\ntree\r\n".encode("utf-8")),
                       ("cr.txt", b"road\rtree"), ("lf.txt", b"road\ntree\n")):
        (tmp_path / name).write_bytes(data)
        assert read_text_lines(tmp_path / name) == ["road", "tree"], name
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(AerOSegError, match="not UTF-8 text"):
        read_text_lines(tmp_path / "latin1.txt")


def test_every_entry_point_refuses_case_duplicates_and_reads_a_bom(tmp_path, capsys):
    from aeroseg.config.loading import load_config
    from aeroseg.config.validation import validate_config
    from aeroseg.data import read_class_file, register_folder_dataset
    from aeroseg.inference import cli as predict
    from aeroseg.inference.class_names import parse_classes, read_classes_file
    from conftest import build_tiny

    # predict: class lists and class files
    with pytest.raises(ClassNameError, match="'Road' = 'road'"):
        parse_classes("Road, tree|road")  # also across synonyms
    bom = tmp_path / "classes.txt"
    bom.write_bytes("\ufeffbuilding|roof\r\ntree\r\n".encode("utf-8"))
    assert read_classes_file(str(bom)).display_names == ["building", "tree"]  # no BOM in the first name
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    assert predict.main(["--config-file", str(TINY_CONFIG), "--input", str(png), "--output", str(tmp_path / "o"),
                         "--classes", "Road, road ", "MODEL.DEVICE", "cpu"]) == 2
    assert "duplicate class names ('Road' = 'road';" in _error(capsys)
    # datasets: class files and lists
    dup = tmp_path / "dup.txt"
    dup.write_text("building\nBuilding\n")
    with pytest.raises(DatasetError, match="class list .*dup.txt: duplicate class names"):
        read_class_file(dup)
    root = fabricate_folder_dataset(tmp_path / "ds", n_train=1, n_val=1)
    with pytest.raises(DatasetError, match="dataset casedup_train: duplicate class names"):
        register_folder_dataset("casedup", str(root), [*CLASSES[:-1], "Building"])
    (root / "classes.txt").write_bytes(("\ufeff" + "\r\n".join(CLASSES)).encode("utf-8"))
    assert read_class_file(root / "classes.txt") == CLASSES
    # the config's vocabulary and the model's
    cfg = load_config(str(TINY_CONFIG), ["DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
                                         "MODEL.AEROSEG.VOCABULARY", "['car', 'Car']"])
    with pytest.raises(ClassNameError, match="MODEL.AEROSEG.VOCABULARY: duplicate class names"):
        validate_config(cfg, "predict")
    with pytest.raises(ValueError, match="duplicate class names"):
        build_tiny().set_vocabulary(["water", " Water"])


def test_check_dataset_and_training_apply_the_same_rules(tmp_path, capsys):
    from aeroseg.data import check_dataset
    from aeroseg.data.datasets.sem_seg_folder import load_sem_seg_folder

    root = fabricate_folder_dataset(tmp_path / "ds", n_train=2, n_val=1)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    assert check_dataset.main([str(root), "--classes", str(classes)]) == 0
    capsys.readouterr()
    # an image present with two extensions: which one is meant?
    Image.open(root / "train/images/train1.png").save(root / "train/images/train1.jpg")
    assert check_dataset.main([str(root), "--classes", str(classes)]) == 1
    out = capsys.readouterr().out
    assert "image train1 is in" in out and "2 times (train1.jpg, train1.png)" in out
    with pytest.raises(DatasetError, match="image train1 is in .* 2 times"):
        load_sem_seg_folder(str(root / "train/images"), str(root / "train/labels"))
    (root / "train/images/train1.jpg").unlink()
    # an empty split
    for f in (root / "val/images").iterdir():
        f.unlink()
    for f in (root / "val/labels").iterdir():
        f.unlink()
    assert check_dataset.main([str(root), "--classes", str(classes)]) == 1
    assert "val/images contains no images" in capsys.readouterr().out
    with pytest.raises(DatasetError, match="contains no images"):
        load_sem_seg_folder(str(root / "val/images"), str(root / "val/labels"))
    # duplicate class names: refused by both
    classes.write_text("\n".join(CLASSES + ["Car"]) + "\n")
    assert check_dataset.main([str(root), "--classes", str(classes)]) == 2
    assert "duplicate class names ('car' = 'Car';" in _error(capsys)
