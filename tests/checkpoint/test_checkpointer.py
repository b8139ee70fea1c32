import os

import pytest
import torch

from aeroseg.checkpoint import AerOSegCheckpointer
from aeroseg.utils.errors import CheckpointError
from aeroseg.modeling.meta_arch import TRAINING_ONLY_PREFIXES
from conftest import build_tiny, random_batch


def _predict(model, batch):
    model.eval()
    with torch.no_grad():
        return model(batch)[0]["sem_seg"]


def test_save_and_reload_gives_identical_outputs(tmp_path):
    model = build_tiny(seed=0)
    # change the weights away from initialisation, incl. the fine-tuned CLIP q/v
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    sum(model(random_batch()).values()).backward()
    opt.step()
    batch = random_batch(1, seed=5)
    expected = _predict(model, batch)
    AerOSegCheckpointer(model, str(tmp_path)).save("model_final", iteration=1)
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]

    fresh = build_tiny(seed=123)
    _predict(fresh, batch)  # caches text embeddings of the random weights
    extra = AerOSegCheckpointer(fresh).load(str(tmp_path / "model_final.pth"))
    assert extra["iteration"] == 1
    torch.testing.assert_close(_predict(fresh, batch), expected, rtol=0, atol=0)


def test_wrong_checkpoint_fails_with_a_clear_error(tmp_path):
    other = build_tiny("MODEL.AEROSEG.FEATURE_DIM", "16")
    AerOSegCheckpointer(other, str(tmp_path)).save("model_other")
    model = build_tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = str(tmp_path / "model_other.pth")
    with pytest.raises(CheckpointError) as info:
        AerOSegCheckpointer(model).load(path)
    msg = str(info.value)
    assert path in msg and "shape mismatches" in msg and "\n" not in msg
    for k, v in model.state_dict().items():  # nothing was half-loaded
        assert torch.equal(v, before[k]), k


def test_missing_and_unreadable_checkpoints(tmp_path):
    model = build_tiny()
    with pytest.raises(CheckpointError, match="does not exist"):
        AerOSegCheckpointer(model).load(str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_text("garbage")
    with pytest.raises(CheckpointError, match="could not be read"):
        AerOSegCheckpointer(model).load(str(bad))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pth is empty \(0 bytes\)"):
        AerOSegCheckpointer(model).load(str(empty))
    from aeroseg.checkpoint.state_dict_io import read_state_dict

    with pytest.raises(CheckpointError, match=r"SAM checkpoint .*empty.pth could not be read: it is empty \(0 bytes\)"):
        read_state_dict(str(empty), "SAM checkpoint")
    torch.save({"model": {}}, str(bad))
    with open(bad, "r+b") as f:  # truncated save: the reason is named, never empty
        f.truncate(20)
    with pytest.raises(CheckpointError, match=r"could not be read: \S+"):
        AerOSegCheckpointer(model).load(str(bad))


def test_back_projection_may_differ_when_ignored(tmp_path):
    # A model trained with 6 classes evaluated with a config for 4 training classes.
    AerOSegCheckpointer(build_tiny(), str(tmp_path)).save("six")
    four = build_tiny("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "4")
    with pytest.raises(CheckpointError, match="back_projection"):
        AerOSegCheckpointer(four).load(str(tmp_path / "six.pth"))
    AerOSegCheckpointer(four, ignore_prefixes=TRAINING_ONLY_PREFIXES).load(str(tmp_path / "six.pth"))


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = build_tiny()
    ckpt = AerOSegCheckpointer(model, str(tmp_path))
    ckpt.save("model_final")
    good = (tmp_path / "model_final.pth").read_bytes()

    def exploding_save(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_final")
    assert (tmp_path / "model_final.pth").read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]


def test_periodic_checkpoint_names():
    from aeroseg.checkpoint import periodic_checkpoint_name

    names = [periodic_checkpoint_name(i, 100, 300) for i in range(300)]
    assert [(i, n) for i, n in enumerate(names) if n] == [(99, "model_0000099"), (199, "model_0000199"),
                                                          (299, "model_final")]
    assert [n for n in (periodic_checkpoint_name(i, 0, 5) for i in range(5)) if n] == ["model_final"]
