"""Published SHA-256 checksums of third-party weight files are verified before loading."""
import hashlib

import pytest
import torch

from aeroseg.checkpoint import state_dict_io
from aeroseg.checkpoint.state_dict_io import KNOWN_SHA256, read_state_dict, verify_checksum
from aeroseg.utils.errors import CheckpointError


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """A small weights file under a listed name, the table entry set to its true digest."""
    path = tmp_path / "sam_fake_123abc.pth"
    torch.save({"image_encoder.w": torch.arange(6.0)}, path)
    monkeypatch.setitem(KNOWN_SHA256, path.name, hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.delenv(state_dict_io.SKIP_CHECKSUM_ENV, raising=False)
    return path


def test_a_file_matching_its_published_checksum_loads(weights):
    assert verify_checksum(str(weights), "SAM checkpoint") == KNOWN_SHA256[weights.name]
    assert read_state_dict(str(weights), "SAM checkpoint")["image_encoder.w"].tolist() == [0, 1, 2, 3, 4, 5]


def test_a_changed_file_is_refused_with_one_line(weights, monkeypatch):
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte in an otherwise loadable file
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        read_state_dict(str(weights), "SAM checkpoint", "MODEL.SAM.CHECKPOINT")
    message = str(info.value)
    assert "\n" not in message and str(weights) in message and "differs from the published" in message
    assert KNOWN_SHA256[weights.name][:16] in message and "AEROSEG_SKIP_CHECKSUM=1" in message
    monkeypatch.setenv(state_dict_io.SKIP_CHECKSUM_ENV, "1")  # the documented way past it
    assert verify_checksum(str(weights), "SAM checkpoint") is None


def test_the_whole_digest_is_compared(weights, monkeypatch):
    true = KNOWN_SHA256[weights.name]
    monkeypatch.setitem(KNOWN_SHA256, weights.name, true[:-1] + ("0" if true[-1] != "0" else "1"))
    with pytest.raises(CheckpointError, match="differs from the published"):
        verify_checksum(str(weights), "SAM checkpoint")


def test_unlisted_files_are_not_hashed(tmp_path):
    path = tmp_path / "my_own_weights.pth"
    torch.save({"w": torch.zeros(2)}, path)
    assert verify_checksum(str(path), "weights") is None
    assert read_state_dict(str(path), "weights")["w"].tolist() == [0, 0]


def test_known_table_holds_only_full_sha256_digests():
    assert KNOWN_SHA256 and all(len(v) == 64 and int(v, 16) >= 0 for v in KNOWN_SHA256.values())
