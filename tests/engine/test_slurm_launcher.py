"""Runs submitted through submitit (aeroseg.engine.submit, docs/CLUSTER.md).

``--launcher local`` runs real job processes through submitit's local executor (SLURM-like
environment: job id, task ranks, the preemption signal and the requeue), so these tests show what a
SLURM job does, except SLURM itself: for ``--launcher slurm`` the tests put fake ``sbatch`` /
``sinfo`` / ``sacct`` programs on PATH and check what is handed to them and read back.
"""
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from aeroseg.engine import reproduce_tables, submit, train_net
from aeroseg.engine.output_lock import LOCK_NAME
from aeroseg.engine.preemption import StopSignalHandler, TrainingInterrupted, installed
from conftest import CLASSES, TINY_CONFIG, UNSEEN, error_line, run_train_net

submitit = pytest.importorskip("submitit")  # the "cluster" extra (in "dev")

pytestmark = pytest.mark.usefixtures("datasets_env")

TINY = ("SOLVER.CHECKPOINT_PERIOD", "0", "DATASETS.TEST", "()")
# A job that hangs (a broken change) is stopped by submitit's local controller after 5 minutes
# instead of blocking the suite; the tests' jobs take seconds.
LOCAL = ("--launcher", "local", "--timeout", "5", "--signal-delay", "60")


def _weights(out, name="model_final.pth"):
    return torch.load(Path(out) / name, weights_only=True)["model"]


def _assert_same_weights(a, b):
    a, b = _weights(a), _weights(b)
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"


def _record(out):
    return json.loads((Path(out) / submit.RECORD_NAME).read_text())


# ----------------------------------------------------------------------------- local jobs (real processes)
def test_local_job_equals_the_direct_run_and_resubmitted_finished_run_only_evaluates(tmp_path, capsys, fab):
    name, _, fab_opts = fab  # a 4-image folder dataset (DATASETS.CUSTOM: the job registers it too)
    opts = (*fab_opts, "SOLVER.MAX_ITER", "3")  # with the final evaluation
    direct, job = tmp_path / "direct", tmp_path / "job"
    assert run_train_net(direct, *opts) == 0
    assert run_train_net(job, *opts, flags=LOCAL) == 0
    _assert_same_weights(job, direct)
    results = job / "inference" / f"{name}_val" / "sem_seg_results.json"
    expected = json.loads((direct / "inference" / f"{name}_val" / "sem_seg_results.json").read_text())
    assert json.loads(results.read_text()) == expected  # metrics and confusion matrix

    record = _record(job)
    assert record["launcher"] == "local" and record["folder"] == str(job / "slurm")
    log = (job / "log.txt").read_text()
    # the job's process keeps submitit's command line, with the job folder; the log names the job
    assert re.search(rf"command line: \S*submitit\S*_submit\S* {re.escape(str(job / 'slurm'))}", log)
    assert f"submitit local job {record['job_id']}, attempt 1: 1 node(s), world size 1" in log
    assert (job / "slurm" / f"{record['job_id']}_0_log.out").is_file()
    assert submit.job_statuses([record])[0].state == "finished"
    assert f"Local job {record['job_id']} finished" in capsys.readouterr().out

    # what a requeued job does with a finished run (--resume): evaluate what is missing, train nothing
    results.unlink()
    assert run_train_net(job, *opts, flags=(*LOCAL, "--resume")) == 0
    log = (job / "log.txt").read_text().split("attempt 1")[-1]
    assert "Nothing to train: the checkpoint is already at iteration 3" in log
    assert json.loads(results.read_text()) == expected
    _assert_same_weights(job, direct)


DDP = ("SOLVER.MAX_ITER", "8", *TINY)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, datasets_dir):
    """The reference: ``--num-gpus 2`` (two processes, gloo), uninterrupted."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AEROSEG_DATASETS", str(datasets_dir))
        assert run_train_net(out, *DDP, flags=("--num-gpus", "2")) == 0
    return out


def test_two_task_job_equals_the_two_process_ddp_run(tmp_path, ddp_run):
    """The job's two tasks form one DDP run from submitit's environment: the same weights, bit for
    bit, as ``--num-gpus 2`` (tests/engine/test_training_loop.py compares that with one process)."""
    assert run_train_net(tmp_path / "job", *DDP, flags=(*LOCAL, "--gpus-per-node", "2")) == 0
    _assert_same_weights(tmp_path / "job", ddp_run)
    job_id = _record(tmp_path / "job")["job_id"]
    log = (tmp_path / "job" / "log.txt").read_text()
    assert f"job {job_id}, attempt 1: 1 node(s), world size 2 (this task: rank 0" in log
    assert "world size 2 (this task: rank 1" in (tmp_path / "job" / "log.txt.rank1").read_text()


def _preempt_when_training(out: Path, sent: dict) -> None:
    """What SLURM does on preemption or before the time limit: send the job's signal to its task,
    here as soon as the first attempt starts training, and only to the main task (its PID is in
    the run's lock): the other one has to learn it from the main task."""
    deadline = time.time() + 300
    while time.time() < deadline:
        log = out / "log.txt"
        if log.is_file() and "Starting training from iteration 0" in log.read_text():
            pid = int((out / LOCK_NAME).read_text().split()[1])  # "PID <pid> on <host>: <command>"
            os.kill(pid, getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG))
            sent["pid"] = pid
            return
        time.sleep(0.005)


def test_preempted_two_task_job_saves_is_requeued_and_ends_bit_identical(tmp_path, ddp_run):
    out, sent = tmp_path / "job", {}
    thread = threading.Thread(target=_preempt_when_training, args=(out, sent), daemon=True)
    thread.start()
    assert run_train_net(out, *DDP, flags=(*LOCAL, "--gpus-per-node", "2")) == 0
    thread.join()
    assert sent, "the job never started training"

    log, log1 = (out / "log.txt").read_text(), (out / "log.txt.rank1").read_text()
    stopped = [int(i) for i in re.findall(r"Stopped after iteration (\d+) on the scheduler's request", log)]
    assert len(stopped) == 1 and 0 <= stopped[0] < 7, stopped
    stop = stopped[0]
    assert f"Stopped after iteration {stop} on the scheduler's request" in log1  # both ranks, same iteration
    # the checkpoint was written at the signal (CHECKPOINT_PERIOD 0 writes none before model_final)...
    assert torch.load(out / f"model_{stop:07d}.pth", weights_only=True)["iteration"] == stop
    # ...and the requeued attempt continued from it on both ranks, training no iteration twice
    for text in (log, log1):
        assert f"Resumed from {out / f'model_{stop:07d}.pth'} at iteration {stop + 1}" in text
        assert text.count("Starting training from iteration 0 ") == 1
        assert f"Starting training from iteration {stop + 1} to 8" in text
    record = _record(out)
    job = submitit.LocalJob(record["folder"], record["job_id"], tasks=[0, 1])
    assert "Requeued job" in job.task(0).stderr()  # submitit's own requeue, after TrainJob.checkpoint()
    resubmitted = job.submission().function
    assert resubmitted.requeues == 1 and resubmitted.argv[0] == "--resume"
    assert f"job {record['job_id']}, attempt 2" in log
    _assert_same_weights(out, ddp_run)


def _tiny_tables(tmp_path, monkeypatch, fab):
    """Two tiny rows (their own configs under a configs/ root), trained and evaluated on ``fab``."""
    from aeroseg import model_zoo
    from aeroseg.evaluation.paper_tables import Row, Table

    name, root, _ = fab
    dataset = {"NAME": name, "ROOT": str(root), "CLASSES": CLASSES, "UNSEEN": UNSEEN}
    configs = tmp_path / "configs"
    (configs / "isaid").mkdir(parents=True)
    for config, seed in (("tiny_a", 0), ("tiny_b", 7)):
        (configs / "isaid" / f"{config}.yaml").write_text(json.dumps({  # YAML is a superset of JSON
            "_BASE_": str(TINY_CONFIG), "SEED": seed, "SOLVER": {"MAX_ITER": 2, "CHECKPOINT_PERIOD": 0},
            "DATASETS": {"CUSTOM": [dataset], "TRAIN": [f"{name}_train"], "TEST": [f"{name}_val"]}}))
    monkeypatch.setattr(model_zoo, "configs_root", lambda: configs)
    table = Table("T", "Tiny", ("isaid",), ("h-mIoU", "mIoU"), (
        Row("Tiny-A", {"isaid": (1.0, 2.0)}, {"isaid": "configs/isaid/tiny_a.yaml"}),
        Row("Tiny-B", {"isaid": (3.0, 4.0)}, {"isaid": "configs/isaid/tiny_b.yaml"})), average=False)
    monkeypatch.setattr(reproduce_tables, "TABLES", {"T": table})
    monkeypatch.setattr(reproduce_tables, "TEST_SETS", {"isaid": f"{name}_val"})
    return f"{name}_val"


def test_reproduce_tables_runs_two_rows_as_local_jobs_and_shows_them(tmp_path, monkeypatch, capsys, fab):
    test_set = _tiny_tables(tmp_path, monkeypatch, fab)
    res = tmp_path / "res"
    common = ["--table", "T", "--results-dir", str(res)]
    assert reproduce_tables.main(["--status", *common]) == 0
    assert re.findall(r"^not submitted +isaid/tiny_[ab]$", capsys.readouterr().out, re.M) == [
        "not submitted isaid/tiny_a", "not submitted isaid/tiny_b"]

    assert reproduce_tables.main(["--run", *LOCAL, "--max-parallel", "2", *common]) == 0
    out = capsys.readouterr().out
    ids = {name: _record(res / "isaid" / name)["job_id"] for name in ("tiny_a", "tiny_b")}
    assert ids["tiny_a"] != ids["tiny_b"]
    for name, job_id in ids.items():
        assert f"[finished] isaid/{name}: local job {job_id}" in out
        assert "--resume" in _record(res / "isaid" / name)["arguments"]

    assert reproduce_tables.main(["--status", *common]) == 0
    out = capsys.readouterr().out
    for name, job_id in ids.items():
        assert re.search(rf"^done +isaid/{name} +job {job_id}$", out, re.M), out
    assert out.strip().endswith("2 done")

    assert reproduce_tables.main(["--report", *common]) == 0
    text = capsys.readouterr().out
    for row, name in (("Tiny-A", "tiny_a"), ("Tiny-B", "tiny_b")):
        metrics = json.loads((res / "isaid" / name / "inference" / test_set /
                              "sem_seg_results.json").read_text())["metrics"]
        ours = next(line for line in text.split(f"| {row} |")[1].splitlines() if "| ours |" in line)
        assert ours.split("|")[3:5] == [f" {metrics['h-mIoU']:.2f} ", f" {metrics['mIoU']:.2f} "]

    # done runs are not submitted again
    assert reproduce_tables.main(["--run", *LOCAL, *common]) == 0
    out = capsys.readouterr().out
    assert "[done]    isaid/tiny_a" in out and "[done]    isaid/tiny_b" in out and "[submit]" not in out


# ----------------------------------------------------------------------------- the stop window (in-process)
def test_a_stop_in_the_last_iteration_hands_over_after_model_final(tmp_path, monkeypatch):
    """A signal during the last iteration: no extra checkpoint, model_final saved, then the hand-over
    (the requeued job then only evaluates); earlier, the run stops after the iteration with its state."""
    calls, steps = [], []

    def hand_over(signum, frame):
        calls.append(sorted(p.name for p in (tmp_path / "last").glob("model_*.pth")))
        raise SystemExit(-1)  # what submitit's handler does after requeueing

    original = train_net.Trainer.run_step

    def signalled_step(self, batch):
        if len(steps) == 3:  # during iteration 3
            os.kill(os.getpid(), signal.SIGUSR2)
        steps.append(1)
        return original(self, batch)

    monkeypatch.setattr(train_net.Trainer, "run_step", signalled_step)
    handler = StopSignalHandler(signal.SIGUSR2, hand_over)
    with installed(handler), pytest.raises(SystemExit):
        run_train_net(tmp_path / "last", "SOLVER.MAX_ITER", "4", *TINY)
    assert calls == [["model_final.pth"]]
    assert signal.getsignal(signal.SIGUSR2) != handler._on_signal  # uninstalled

    steps.clear()
    with installed(StopSignalHandler(signal.SIGUSR2, hand_over)), pytest.raises(TrainingInterrupted) as info:
        run_train_net(tmp_path / "early", "SOLVER.MAX_ITER", "6", *TINY)
    assert info.value.iteration == 3 and info.value.checkpoint == "model_0000003.pth"
    assert sorted(p.name for p in (tmp_path / "early").glob("model_*.pth")) == ["model_0000003.pth"]
    assert len(steps) == 4 and len(calls) == 1  # stopped after iteration 3; the job hands over, not the trainer


# ----------------------------------------------------------------------------- the job's arguments
def test_checkpoint_resubmits_the_run_with_resume():
    job = submit.TrainJob(["--config-file", "c.yaml", "OUTPUT_DIR", "o"])
    again = job.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert again.function.argv == ["--resume", "--config-file", "c.yaml", "OUTPUT_DIR", "o"]
    assert again.function.requeues == 1 and again.function.checkpoint().function.requeues == 2
    assert again.function.checkpoint().function.argv == again.function.argv  # --resume once
    evaluation = submit.TrainJob(["--eval-only", "--config-file", "c.yaml", "MODEL.WEIGHTS", "w.pth"])
    assert evaluation.checkpoint().function.argv == evaluation.argv  # an evaluation simply runs again
    # a job that SLURM requeued by itself (no checkpoint() call) resumes too
    assert job.attempt_argv({"SLURM_RESTART_COUNT": "1"})[0] == "--resume"
    assert job.attempt_argv({"SLURM_RESTART_COUNT": "0"}) == job.argv
    # "--resume" as a config value is not mistaken for the flag
    odd = submit.TrainJob(["--config-file", "c.yaml", "OUTPUT_DIR", "--resume"])
    assert odd.checkpoint().function.argv[0] == "--resume"


# ----------------------------------------------------------------------------- SLURM, with fake commands
def _fake_slurm(tmp_path, monkeypatch, partitions="debug\ngpu*\n", sbatch_exit=0,
                sbatch_out="Submitted batch job 4242"):
    """Fake sbatch / sinfo / sacct on PATH; sbatch logs each call (and its script) to bin/sbatch.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = bin_dir / "sbatch.log"
    scripts = {
        "sbatch": f'#!/bin/sh\ncat "$1" >> "{log}"\necho "{sbatch_out}" >&{2 if sbatch_exit else 1}\n'
                  f'exit {sbatch_exit}\n',  # (an error on stderr, as sbatch)
        "sinfo": f"#!/bin/sh\nprintf '{partitions}'\n",
        "sacct": f'#!/bin/sh\ncat "{bin_dir / "sacct.txt"}"\n',
        "srun": "#!/bin/sh\nexit 1\n",  # submitit looks for it; the fake sbatch never runs the script
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    submitit.SlurmJob.watcher.clear()
    return log, bin_dir / "sacct.txt"


def test_slurm_submission_hands_the_resources_to_sbatch_and_records_the_job(tmp_path, monkeypatch, capsys):
    sbatch_log, sacct = _fake_slurm(tmp_path, monkeypatch)
    out = tmp_path / "run"
    flags = ("--launcher", "slurm", "--partition", "gpu", "--nodes", "2", "--gpus-per-node", "4", "--timeout", "90",
             "--mem", "64G", "--cpus-per-task", "8", "--account", "lab", "--qos", "high", "--constraint", "a100")
    assert run_train_net(out, "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "16", "MODEL.DEVICE", "cuda",
                         flags=flags) == 0
    script = sbatch_log.read_text()
    for line in ("--partition=gpu", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--time=90",
                 "--mem=64G", "--cpus-per-task=8", "--account=lab", "--qos=high", "--constraint=a100",
                 "--signal=USR2@120", "--requeue", f"--output={out / 'slurm'}/%j_0_log.out"):
        assert f"#SBATCH {line}\n" in script, line
    assert f"srun --unbuffered --output {out / 'slurm'}/%j_%t_log.out" in script
    assert script.rstrip().endswith(f"-u -m submitit.core._submit {out / 'slurm'}")
    assert "Submitted SLURM job 4242" in capsys.readouterr().out
    record = _record(out)
    assert record["job_id"] == "4242" and record["tasks"] == 8 and record["launcher"] == "slurm"
    pickled = submitit.SlurmJob(record["folder"], "4242").submission().function
    assert pickled.argv[-2:] == ["OUTPUT_DIR", str(out)] and "--resume" not in pickled.argv

    # its state, as sacct tells it
    sacct.write_text("JobID|State|NodeList\n4242|RUNNING|node[1-2]\n")
    assert submit.job_statuses([record])[0].state == "running"
    # a second submission into the folder of a job that is still running is refused
    assert run_train_net(out, "SOLVER.MAX_ITER", "2", flags=("--launcher", "slurm")) == 2
    assert "already has slurm job 4242 (running)" in error_line(capsys)
    assert sbatch_log.read_text() == script  # sbatch was not called again
    submitit.SlurmJob.watcher.clear()
    sacct.write_text("JobID|State|NodeList\n4242|PENDING|\n")
    status = submit.job_statuses([record])[0]
    assert status.state == "pending" and status.active
    submitit.SlurmJob.watcher.clear()
    (out / "slurm" / "4242_0_log.err").write_text("Traceback (most recent call last):\n  ...\n"
                                                  "RuntimeError: CUDA out of memory\n")
    sacct.write_text("JobID|State|NodeList\n4242|FAILED|node1\n")
    status = submit.job_statuses([record])[0]
    assert status.state == "failed" and status.detail == "FAILED: RuntimeError: CUDA out of memory"


def test_reproduce_tables_submits_one_array_and_reports_the_states(tmp_path, monkeypatch, capsys, fab):
    _tiny_tables(tmp_path, monkeypatch, fab)
    sbatch_log, sacct = _fake_slurm(tmp_path, monkeypatch)
    res = tmp_path / "res"
    common = ["--table", "T", "--results-dir", str(res)]
    assert reproduce_tables.main(["--run", "--launcher", "slurm", "--max-parallel", "1", *common]) == 0
    assert sbatch_log.read_text().count("#SBATCH --array=0-1%1\n") == 1  # one array, one job at a time
    assert [_record(res / "isaid" / n)["job_id"] for n in ("tiny_a", "tiny_b")] == ["4242_0", "4242_1"]
    capsys.readouterr()
    (res / "slurm" / "4242_1_0_log.err").write_text("slurmstepd: error: *** JOB 4243 CANCELLED AT 2024 ***\n")
    sacct.write_text("JobID|State|NodeList\n4242_0|PENDING|\n4242_1|CANCELLED by 1000|node3\n")
    job_a = submitit.SlurmJob(str(res / "slurm"), "4242_0")
    submission = job_a.submission()
    submission.function = submission.function.checkpoint().function  # as submitit's requeue rewrites it
    submission.dump(job_a.paths.submitted_pickle)
    assert reproduce_tables.main(["--status", *common]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^requeued +isaid/tiny_a +job 4242_0 \(requeued 1x\)$", out, re.M), out
    assert re.search(r"^failed +isaid/tiny_b +job 4242_1: CANCELLED: slurmstepd: error: \*\*\* JOB 4243 CANCELLED "
                     r"AT 2024 \*\*\* \[log: .*4242_1_0_log.err\]$", out, re.M), out
    # --run again: the requeued job is left alone, the failed run is submitted again
    assert reproduce_tables.main(["--run", "--launcher", "slurm", *common]) == 0
    out = capsys.readouterr().out
    assert "[requeued] isaid/tiny_a: job 4242_0 (not submitted again)" in out
    assert "[queued]  isaid/tiny_b: SLURM job 4242" in out and "[queued]  isaid/tiny_a" not in out


# ----------------------------------------------------------------------------- one-line errors, nothing submitted
@pytest.mark.parametrize("flags, message", [
    (("--launcher", "slurm", "--num-gpus", "2"), "use --gpus-per-node 2 (and --nodes) instead of --num-gpus"),
    (("--launcher", "slurm", "--nodes", "0"), "--nodes 0: expected a positive number"),
    (("--launcher", "local", "--nodes", "2"), "--launcher local runs on this machine only"),
    (("--launcher", "slurm", "--mem", "lots"), "--mem lots: expected SLURM's syntax"),
    (("--launcher", "slurm", "--timeout", "1"), "--signal-delay 120: expected more than 0 and less than the time"),
    (("--partition", "gpu"), "--partition: only for a submitted job; add --launcher slurm"),
    # (validate_config, with the job's world size --nodes x --gpus-per-node)
    (("--launcher", "local", "--gpus-per-node", "3"), "SOLVER.IMS_PER_BATCH=4: expected a multiple of the number "
                                                      "of processes (3)"),
    (("--launcher", "slurm"), "--partition is required on this cluster (it has no default partition); sinfo "
                              "lists: debug, gpu"),
    (("--launcher", "slurm", "--partition", "a100"), "--partition a100: no such partition on this cluster"),
    (("--launcher", "slurm", "--partition", "gpu", "--account", "nope"),
     "the submission was refused, nothing is queued: sbatch: error: Batch job submission failed: Invalid account"),
])
def test_invalid_submissions_are_one_line_and_submit_nothing(tmp_path, monkeypatch, capsys, flags, message):
    refuse = "--account" in flags
    sbatch_log, _ = _fake_slurm(tmp_path, monkeypatch, partitions="debug\ngpu\n", sbatch_exit=1 if refuse else 0,
                                sbatch_out="sbatch: error: Batch job submission failed: Invalid account specified")
    out = tmp_path / "run"
    assert run_train_net(out, "SOLVER.MAX_ITER", "2", *TINY, flags=flags) == 2
    assert message in error_line(capsys)
    assert not out.exists()  # no run folder, no submitit folder, no record
    assert sbatch_log.exists() == refuse


def test_missing_submitit_or_sbatch_is_one_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
        assert run_train_net(out, flags=LOCAL) == 2
    assert error_line(capsys) == ('error: --launcher local needs submitit, which is not installed: '
                                  'pip install "aeroseg[cluster]"')
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert run_train_net(out, flags=("--launcher", "slurm")) == 2
    assert "no sbatch or srun command on this machine" in error_line(capsys)
    assert not out.exists()


def test_failed_local_job_is_one_line_with_its_log(tmp_path, capsys):
    # a missing file is refused before the job queues (validate_config); a corrupt one fails inside the job
    out, weights = tmp_path / "run", tmp_path / "corrupt.pth"
    weights.write_bytes(b"not a checkpoint")
    assert run_train_net(out, "SOLVER.MAX_ITER", "1", "MODEL.WEIGHTS", str(weights), *TINY,
                         flags=LOCAL) == 2
    err = error_line(capsys)
    job_id = _record(out)["job_id"]
    assert err.startswith(f"error: local job {job_id} failed: ") and f"checkpoint {weights} could not be read" in err
    assert err.endswith(f"(log: {out / 'slurm' / f'{job_id}_0_log.err'})")
    status = submit.job_statuses([_record(out)])[0]
    assert status.state == "failed" and f"checkpoint {weights} could not be read" in status.detail
    # a job killed (or stopped at its time limit) leaves no result: said so, with its log's last line
    (out / "slurm" / f"{job_id}_0_result.pkl").unlink()
    (out / "slurm" / f"{job_id}_0_log.err").write_text("...\nsubmitit WARNING - Bypassing signal SIGTERM\n")
    status = submit.job_statuses([_record(out)])[0]
    assert status.state == "failed" and status.detail == (
        "the job ended without a result (killed, or stopped at its time limit); the last line of its log: "
        "submitit WARNING - Bypassing signal SIGTERM")
