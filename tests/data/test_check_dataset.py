"""tools/check_dataset.py: an audit of a dataset folder finds every kind of problem."""
import os

import numpy as np
import pytest
from PIL import Image

from conftest import CLASSES, fabricate_folder_dataset as _fabricate, poison_label as _poison_label

pytestmark = pytest.mark.usefixtures("datasets_env")


def test_check_dataset_finds_every_kind_of_problem(tmp_path, capsys):
    import shutil

    from aeroseg.data import check_dataset
    from aeroseg.data.datasets.manifest import make_manifest, write_manifest

    root = _fabricate(tmp_path / "ds", n_train=4, n_val=2)
    files = {"train": [f"train{i}" for i in range(4)], "val": ["val0", "val1"]}
    write_manifest(str(root), make_manifest("ds", files, tool="test", classes=CLASSES))
    assert check_dataset.main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "OK: no problem found" in out and "train: 4 samples" in out
    # class pixel counts: each 64x64 label has 64 rows x (64 / 6 rounded) columns per class
    row = next(line for line in out.splitlines() if " building " in line)
    assert row.split()[-2:] == [f"{4 * 64 * 11:,}", f"{2 * 64 * 11:,}"]

    (root / "train/images/train1.png").write_bytes(b"garbage")                              # unreadable
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(root / "train/labels/train2.png")     # size mismatch
    _poison_label(root, "val", "val0", [9])                                                  # out of range
    os.remove(root / "val/images/val1.png")                                                  # listed, missing
    shutil.copy(root / "train/images/train3.png", root / "val/images/train3.png")            # not in manifest
    assert check_dataset.main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "train1.png: unreadable image" in out
    assert "train2.png: size 64x32 differs from its image 64x64" in out
    assert "val0.png: label value(s) 9 are not class indices (0..5)" in out
    assert "val1.png: listed in manifest.json but missing" in out
    assert "1 file(s) not in manifest.json" in out and "4 problem(s) found" in out

    # a folder without manifest: overlap between splits and an interrupted run are found too
    os.remove(root / "manifest.json")
    shutil.copy(root / "train/labels/train3.png", root / "val/labels/train3.png")
    assert check_dataset.main([str(root), "--classes", str(_class_file(tmp_path))]) == 1
    assert "train3: in both train and val" in capsys.readouterr().out
    (root / ".prepare_in_progress").write_text("{}")
    assert check_dataset.main([str(root)]) == 1
    assert "incomplete" in capsys.readouterr().out
    assert check_dataset.main(["no_such_dataset"]) == 2


def _class_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(CLASSES) + "\n")
    return path
