"""--resume continues a run exactly or refuses: check_resumable (both engines use it)."""
import pytest
import torch

from aeroseg.engine.resume import check_resumable
from aeroseg.utils.errors import CheckpointError

STATE = {"model": {"w": torch.zeros(2)}, "optimizer": {"state": {}, "param_groups": []},
         "scheduler": {"last_epoch": 3}, "iteration": 2, "rng": {"torch": torch.get_rng_state()}}


def _write(tmp_path, data, name="model_0000002.pth"):
    path = tmp_path / name
    torch.save(data, path)
    return str(path)


def test_a_whole_training_state_is_resumable(tmp_path):
    check_resumable(_write(tmp_path, STATE), ["optimizer", "scheduler"])


@pytest.mark.parametrize("drop", ["optimizer", "scheduler", "iteration", "rng"])
def test_a_missing_state_is_refused_in_one_line(tmp_path, drop):
    path = _write(tmp_path, {k: v for k, v in STATE.items() if k != drop})
    with pytest.raises(CheckpointError) as info:
        check_resumable(path, ["optimizer", "scheduler"])
    message = str(info.value)
    assert "\n" not in message and path in message and f"no '{drop}'" in message
    assert f"MODEL.WEIGHTS {path}" in message  # says what to do instead


def test_the_grad_scaler_is_required_only_when_the_run_has_one(tmp_path):
    path = _write(tmp_path, STATE)
    check_resumable(path, ["optimizer", "scheduler"])
    with pytest.raises(CheckpointError, match="no 'grad_scaler'"):
        check_resumable(path, ["optimizer", "scheduler", "grad_scaler"])


def test_detectron2_default_trainer_format_is_refused(tmp_path):
    # detectron2's DefaultTrainer nests optimizer and scheduler under "trainer"
    path = _write(tmp_path, {"model": STATE["model"], "iteration": 2,
                             "trainer": {"iteration": 2, "_trainer": {"optimizer": {}}}})
    with pytest.raises(CheckpointError, match="written by detectron2's own DefaultTrainer"):
        check_resumable(path, ["optimizer", "scheduler"])


def test_an_unreadable_file_is_left_to_the_checkpointer(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    check_resumable(str(path), ["optimizer"])  # the checkpointer's load reports it with its reason


def test_own_engine_resume_refuses_weights_only_checkpoint(tmp_path, monkeypatch, capsys):
    from conftest import TINY_CONFIG, build_tiny

    monkeypatch.setenv("AEROSEG_DATASETS", str(tmp_path / "datasets"))
    from aeroseg.engine import train_net

    from aeroseg.config.loading import load_config

    out = tmp_path / "out"
    out.mkdir()
    opts = ["OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()"]
    (out / "config.yaml").write_text(load_config(str(TINY_CONFIG), opts).dump())  # the run's record
    (out / "last_checkpoint").write_text("weights.pth")
    torch.save({"model": build_tiny().state_dict(), "iteration": 2}, out / "weights.pth")
    argv = ["--resume", "--config-file", str(TINY_CONFIG), *opts]
    assert train_net.run(argv) == 2
    # (only the error lines: a logging handler that another test bound to a closed capture stream
    # may add its own complaint to stderr)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no 'rng', 'optimizer', 'scheduler'" in errors[0], errors
    assert not (out / "model_final.pth").exists()  # nothing was trained or written


def test_each_process_restores_its_own_rng_state(monkeypatch):
    from aeroseg.engine.defaults import restore_rng_state, rng_state, seed_all_rng
    from aeroseg.utils import comm

    states = []
    for seed in (10, 11):  # rank r was seeded SEED + r
        seed_all_rng(seed)
        states.append(rng_state())
    expected = []
    for seed in (10, 11):
        seed_all_rng(seed)
        expected.append(torch.rand(3))
    checkpoint = {"rng": states[0], "rng_all_ranks": states}
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    for rank in (0, 1):
        monkeypatch.setattr(comm, "get_rank", lambda rank=rank: rank)
        restore_rng_state(checkpoint)
        assert torch.equal(torch.rand(3), expected[rank])
    # a checkpoint of another world size: rank 0's state everywhere (with a warning)
    monkeypatch.setattr(comm, "get_rank", lambda: 1)
    restore_rng_state({"rng": states[0], "rng_all_ranks": states[:1]})
    assert torch.equal(torch.rand(3), expected[0])
