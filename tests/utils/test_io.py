"""aeroseg.utils.io: atomic writes and the folder lock."""
import os
import threading
import time

import pytest

from aeroseg.utils.io import atomic_write, folder_lock, is_temp_name, temp_path, write_bytes_atomic, write_text_atomic


@pytest.mark.parametrize("durable", [False, True])
def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path, durable):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    write_bytes_atomic(str(path), b"new contents", durable=durable)
    assert path.read_bytes() == b"new contents"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        write_bytes_atomic(str(path), b"new", durable=True)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]


def test_folder_lock_excludes_a_second_holder(tmp_path):
    events = []

    def hold(name, delay):
        with folder_lock(str(tmp_path)):
            events.append(f"{name} in")
            time.sleep(delay)
            events.append(f"{name} out")

    first = threading.Thread(target=hold, args=("first", 0.3))
    first.start()
    time.sleep(0.1)
    hold("second", 0.0)  # flock locks are per open file description: a second open() waits
    first.join()
    assert events == ["first in", "first out", "second in", "second out"]


def test_temporary_names_are_unique_hidden_keep_the_suffix_and_are_recognised(tmp_path):
    names = {temp_path(tmp_path / "scene_labels.tif").name for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert name.startswith(".scene_labels.tif.tmp.") and name.endswith(".tif") and is_temp_name(name)
    assert not is_temp_name("scene_labels.tif") and not is_temp_name("model_final.pth")


def test_an_error_inside_atomic_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_write(path, "w") as f:
            f.write("half of the new")
            raise RuntimeError("killed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]
    write_text_atomic(path, "new", durable=True)
    assert path.read_text() == "new"
