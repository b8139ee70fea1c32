"""Submit training runs to SLURM, or to this machine, through submitit; follow their state.

    aeroseg-train --config-file CFG --launcher slurm --partition gpu --nodes 2 --gpus-per-node 8
    aeroseg-train --config-file CFG --launcher local      # the same submission on this machine; waits

A job runs :class:`TrainJob`: ``train_net.main`` in each of its tasks (one per GPU), the tasks
joined into one ``torch.distributed`` run from the scheduler's environment (submitit's
``TorchDistributedEnvironment``). Its process keeps submitit's command line
(``python -u -m submitit.core._submit <folder>``).

Preemption and time limits follow submitit's checkpointing protocol: SLURM signals the job
(``--signal-delay`` seconds before its time limit, and on preemption where the cluster sends the
job's signal); the trainer finishes its iteration and saves the whole training state
(:mod:`.preemption`); submitit calls :meth:`TrainJob.checkpoint`, which returns the same job with
``--resume``, and requeues it. The requeued job continues exactly where the run stopped, or, for
a finished run, only evaluates what is missing.

Each submission writes ``OUTPUT_DIR/submitit_job.json`` (launcher, job id, submitit folder), so a
later command can tell the run's state (:func:`job_statuses`; ``tools/reproduce_tables.py --status``).
submitit's own files (``<job id>_submitted.pkl``, ``<job id>_<task>_log.out/.err``, results) are in
``--slurm-dir``, by default ``OUTPUT_DIR/slurm``.
"""
import argparse
import contextlib
import datetime
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..utils.errors import LauncherError, describe_exception, one_line
from ..utils.io import write_text_atomic
from .output_lock import LOCK_NAME

__all__ = ["RECORD_NAME", "JobStatus", "TrainJob", "add_launcher_arguments", "build_executor", "check_job_config",
           "check_launcher", "check_run_folder_free", "check_slurm", "failure_line", "job_statuses", "read_record",
           "require_submitit", "submit_and_record", "submit_jobs", "submit_training", "train_arguments", "uses_gpus",
           "wait_local", "write_record"]

LAUNCHERS = ("none", "local", "slurm")
INSTALL_HINT = 'pip install "aeroseg[cluster]"'
RECORD_NAME = "submitit_job.json"
# Launcher options and their defaults; None in the parser, so that an option given with
# --launcher none (where it would do nothing) is refused.
DEFAULTS = {"nodes": 1, "gpus_per_node": 1, "timeout": 24 * 60, "signal_delay": 120, "max_timeouts": 10}
SLURM_ONLY = ("partition", "account", "qos", "constraint", "mem", "cpus_per_task")
LAUNCHER_OPTIONS = tuple(DEFAULTS) + SLURM_ONLY + ("slurm_dir",)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ----------------------------------------------------------------------------- command line
def add_launcher_arguments(parser: argparse.ArgumentParser, slurm_dir_default: str = "OUTPUT_DIR/slurm") -> None:
    """``--launcher`` and the job's resources (the same flags in aeroseg-train and reproduce_tables).

    A ``--num-gpus`` flag of ``parser`` gets the default None (read as 1 with ``--launcher none``),
    so that giving it together with a launcher is refused rather than ignored.
    """
    group = parser.add_argument_group("cluster (submitit; docs/CLUSTER.md)")
    group.add_argument("--launcher", choices=LAUNCHERS, default="none",
                       help="none: run in this process (default); slurm: submit a SLURM job; local: the same "
                            "job on this machine (submitit's local executor), waiting for it")
    group.add_argument("--nodes", type=int, help=f"nodes of the job (default {DEFAULTS['nodes']})")
    group.add_argument("--gpus-per-node", type=int, metavar="N",
                       help="processes per node, one GPU each; with MODEL.DEVICE cpu, N CPU processes and no "
                            f"GPU requested (default {DEFAULTS['gpus_per_node']})")
    group.add_argument("--partition", help="SLURM partition (needed where the cluster has no default one)")
    group.add_argument("--account", help="SLURM account to charge")
    group.add_argument("--qos", help="SLURM quality of service")
    group.add_argument("--constraint", help="SLURM node features, e.g. a100")
    group.add_argument("--timeout", type=int, metavar="MIN",
                       help=f"time limit of one job in minutes (default {DEFAULTS['timeout']}); a run that needs "
                            f"longer is checkpointed and requeued")
    group.add_argument("--mem", help="memory per node, in SLURM's syntax (e.g. 256G)")
    group.add_argument("--cpus-per-task", type=int, metavar="N", help="CPU cores per process (data loading)")
    group.add_argument("--signal-delay", type=int, metavar="S",
                       help="seconds before the time limit at which the job is told to checkpoint "
                            f"(default {DEFAULTS['signal_delay']}); longer than an iteration plus a checkpoint save")
    group.add_argument("--max-timeouts", type=int, metavar="N",
                       help=f"time limits a run may reach before it counts as failed (default "
                            f"{DEFAULTS['max_timeouts']}; preemptions do not count)")
    group.add_argument("--slurm-dir", type=Path, metavar="DIR",
                       help=f"submitit's folder: job scripts, pickles, the jobs' stdout/stderr (default "
                            f"{slurm_dir_default})")
    if any(a.dest == "num_gpus" for a in parser._actions):
        parser.set_defaults(num_gpus=None)


def check_launcher(args, what: str = "--launcher") -> None:
    """Refuse invalid launcher options in one line (no I/O); fill in the defaults.

    With ``--launcher none`` any launcher option is an error (it would be ignored).
    """
    given = [_flag(n) for n in LAUNCHER_OPTIONS if getattr(args, n, None) is not None]
    if args.launcher == "none":
        if given:
            raise LauncherError(f"{', '.join(given)}: only for a submitted job; add --launcher slurm (or "
                                f"--launcher local)")
        return
    if getattr(args, "num_gpus", None) is not None:
        raise LauncherError(f"--launcher {args.launcher} starts one process per GPU itself: use --gpus-per-node "
                            f"{args.num_gpus} (and --nodes) instead of --num-gpus")
    for name, default in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    for name in ("nodes", "gpus_per_node", "timeout", "max_timeouts", "cpus_per_task"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "max_timeouts" else 1):
            raise LauncherError(f"{_flag(name)} {value}: expected a positive number")
    if not 0 < args.signal_delay < args.timeout * 60:
        raise LauncherError(f"--signal-delay {args.signal_delay}: expected more than 0 and less than the time limit "
                            f"(--timeout {args.timeout} min = {args.timeout * 60} s)")
    if args.mem is not None and not re.fullmatch(r"\d+[KMGT]?", args.mem):
        raise LauncherError(f"--mem {args.mem}: expected SLURM's syntax, a number with an optional unit K, M, G "
                            f"or T (e.g. 256G)")
    if args.launcher == "local":
        if args.nodes != 1:
            raise LauncherError(f"--nodes {args.nodes}: --launcher local runs on this machine only (--nodes 1); "
                                f"use --launcher slurm for several nodes")
        ignored = [_flag(n) for n in SLURM_ONLY if getattr(args, n) is not None]
        if ignored:
            print(f"warning: {', '.join(ignored)} only apply to --launcher slurm; ignored by --launcher local",
                  file=sys.stderr)
    for name in ("num_machines", "machine_rank"):
        if getattr(args, name, None) not in (None, 1 if name == "num_machines" else 0):
            raise LauncherError(f"{_flag(name)} with --launcher {args.launcher}: the job's nodes are given by --nodes")


def require_submitit(launcher: str):
    try:
        import submitit
    except ImportError:
        raise LauncherError(f"--launcher {launcher} needs submitit, which is not installed: "
                            f"{INSTALL_HINT}") from None
    return submitit


def slurm_partitions() -> Optional[Dict[str, bool]]:
    """{partition: is the default} as ``sinfo`` lists them; None where sinfo cannot tell."""
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, timeout=60,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return {name.rstrip("*"): name.endswith("*") for name in names} or None


def check_slurm(partition: Optional[str]) -> None:
    """SLURM is reachable from here and ``partition`` exists, or one line saying what is wrong."""
    missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
    if missing:
        raise LauncherError(f"--launcher slurm: no {' or '.join(missing)} command on this machine (not on PATH): "
                            f"submit from a SLURM login node, or use --launcher local to run the job here")
    partitions = slurm_partitions()
    if partitions is None:  # sinfo missing or failing: sbatch will judge the partition
        return
    listed = ", ".join(f"{p}{' (default)' if d else ''}" for p, d in partitions.items())
    if partition is None and not any(partitions.values()):
        raise LauncherError(f"--partition is required on this cluster (it has no default partition); sinfo "
                            f"lists: {listed}")
    if partition is not None and partition not in partitions:
        raise LauncherError(f"--partition {partition}: no such partition on this cluster; sinfo lists: {listed}")


# ----------------------------------------------------------------------------- the job
def _first_override(argv: Sequence[str]) -> int:
    """Index of the first KEY VALUE override in a train_net argument list."""
    i = 0
    while i < len(argv):
        if argv[i] in ("--config-file", "--engine"):
            i += 2
        elif argv[i].startswith("-"):
            i += 1
        else:
            return i
    return len(argv)


def _continued(argv: Sequence[str]) -> List[str]:
    """``argv`` of a run that continues: ``--resume`` added, ``--overwrite`` dropped (the first attempt
    cleared the folder; the next must continue it, not clear it again)."""
    head = [a for a in argv[: _first_override(argv)] if a != "--overwrite"]
    return ["--resume", *head, *argv[_first_override(argv):]]


class TrainJob:
    """What a submitted job runs: ``aeroseg-train <argv>`` in each of the job's tasks.

    The tasks form one ``torch.distributed`` run (rank, world size and master address from the
    scheduler's environment). ``requeues``: how many times the run was requeued before this attempt.
    """

    def __init__(self, argv: Sequence[str], requeues: int = 0):
        self.argv = list(argv)
        self.requeues = int(requeues)

    def attempt_argv(self, environ=None) -> List[str]:
        """This attempt's arguments: ``--resume`` added when SLURM requeued the job itself (node
        failure, preemption without the job's signal: SLURM_RESTART_COUNT > 0), so that a new run
        never restarts over the checkpoints of an interrupted one."""
        environ = os.environ if environ is None else environ
        argv = list(self.argv)
        head = argv[: _first_override(argv)]
        if int(environ.get("SLURM_RESTART_COUNT") or 0) > 0 and "--resume" not in head and "--eval-only" not in head:
            argv = _continued(argv)
        return argv

    def checkpoint(self, *args, **kwargs):
        """submitit's checkpointing protocol (on preemption or time limit): the same run, continued
        with ``--resume`` (an evaluation-only job simply runs again)."""
        from submitit.helpers import DelayedSubmission

        argv = list(self.argv)
        head = argv[: _first_override(argv)]
        if "--resume" not in head and "--eval-only" not in head:
            argv = _continued(argv)
        return DelayedSubmission(TrainJob(argv, self.requeues + 1))

    def __call__(self):
        import submitit
        from submitit.helpers import TorchDistributedEnvironment

        from . import preemption
        from .defaults import default_argument_parser
        from .launch import launch
        from .train_net import main

        env = submitit.JobEnvironment()
        dist_env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        argv = self.attempt_argv()
        args = default_argument_parser().parse_args(argv)
        args.launch_info = (f"submitit {env.cluster} job {env.job_id}, attempt {self.requeues + 1}: "
                            f"{env.num_nodes} node(s), world size {dist_env.world_size} (this task: rank "
                            f"{dist_env.rank} on {env.hostname}); arguments: {' '.join(argv)}")
        print(args.launch_info, flush=True)  # into the job's own log (the folder of submitit's files)
        signum = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        scheduler_handler = signal.getsignal(signum)  # submitit's: checkpoint() + requeue + exit
        if not callable(scheduler_handler):  # not started by submitit: nothing to hand over to
            return launch(main, 1, args=(args,))
        handler = preemption.StopSignalHandler(signum, scheduler_handler)
        with preemption.installed(handler):
            return launch(_main_until_stopped, 1, args=(main, args, handler))

    def __repr__(self) -> str:
        return f"TrainJob({' '.join(self.argv)!r}, requeues={self.requeues})"


def _main_until_stopped(main, args, handler):
    from .preemption import TrainingInterrupted

    try:
        return main(args)
    except TrainingInterrupted:  # all ranks together, the process group still up
        handler.hand_over()


# ----------------------------------------------------------------------------- executors and records
def uses_gpus(cfg) -> bool:
    return str(cfg.MODEL.DEVICE).startswith("cuda")


def build_executor(submitit, args, folder: Path, gpus: bool, job_name: str, array_parallelism: Optional[int] = None):
    """A submitit executor for ``args``' launcher and resources (``args`` checked by :func:`check_launcher`)."""
    if args.launcher == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=args.max_timeouts)
        executor.update_parameters(timeout_min=args.timeout, tasks_per_node=args.gpus_per_node,
                                   gpus_per_node=args.gpus_per_node if gpus else 0,
                                   signal_delay_s=args.signal_delay)
        return executor
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=args.max_timeouts)
    # --requeue: scontrol requeue (submitit's, after checkpoint()) works also where the cluster's
    # JobRequeue default is 0; SLURM's own requeues (node failure) then resume (TrainJob.attempt_argv)
    params = dict(job_name=job_name, time=args.timeout, nodes=args.nodes, ntasks_per_node=args.gpus_per_node,
                  signal_delay_s=args.signal_delay, additional_parameters={"requeue": True})
    if gpus:
        params["gpus_per_node"] = args.gpus_per_node
    for name in SLURM_ONLY:
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    if array_parallelism:
        params["array_parallelism"] = array_parallelism
    executor.update_parameters(**params)
    return executor


def submit_jobs(executor_factory, jobs: Sequence[TrainJob], launcher: str) -> list:
    """Submit ``jobs`` (several on SLURM: one job array); one line if the scheduler refuses."""
    try:
        executor = executor_factory()
        with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's complaint: it is in ours
            if len(jobs) > 1:
                return executor.submit_array(list(jobs))
            return [executor.submit(jobs[0])]
    except Exception as exc:  # sbatch's refusal (FailedJobError with its stderr), an unreadable answer...
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else type(exc).__name__)
        if type(exc).__name__ == "FailedSubmissionError":  # sbatch answered, but without a job id
            raise LauncherError(f"--launcher {launcher}: sbatch's answer names no job id ({one_line(reason, 200)}); "
                                f"check squeue before submitting again, the job may be queued") from None
        raise LauncherError(f"--launcher {launcher}: the submission was refused, nothing is queued: "
                            f"{one_line(reason, 300)}") from None


def write_record(output_dir: Path, job, launcher: str, folder: Path, argv: Sequence[str]) -> Path:
    """``OUTPUT_DIR/submitit_job.json``: which job runs this folder (atomically replaced)."""
    path = Path(output_dir) / RECORD_NAME
    data = {"launcher": launcher, "job_id": str(job.job_id), "folder": str(folder), "tasks": job.num_tasks,
            "submitted": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "arguments": list(argv)}
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    return path


def read_record(output_dir: Path) -> Optional[dict]:
    """The job record of a run folder, None without one (``{"unreadable": why}`` if damaged)."""
    path = Path(output_dir) / RECORD_NAME
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not {"launcher", "job_id", "folder"} <= set(data):
            raise ValueError("not a job record")
        return data
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"unreadable": f"{path}: {describe_exception(exc)}"}


# ----------------------------------------------------------------------------- state of submitted jobs
PENDING = {"PENDING", "CONFIGURING", "RESIZING", "SUSPENDED", "STOPPED", "REQUEUE_HOLD", "RESV_DEL_HOLD"}
REQUEUED = {"REQUEUED", "REQUEUE_FED", "PREEMPTED"}  # PREEMPTED: submitit counts it as unfinished too
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


@dataclass
class JobStatus:
    """``state``: pending, running, requeued, finished, failed or unknown."""

    state: str
    job_id: str = ""
    requeues: int = 0
    detail: str = ""  # the scheduler's own state name, or the failure's last line
    log: str = ""  # the main task's stderr

    @property
    def active(self) -> bool:
        return self.state in ("pending", "running", "requeued")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: that pid was reused
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # a reused pid is not a submitit controller
        try:
            return b"submitit" in cmdline.read_bytes()
        except OSError:
            return True
    return True


def _requeues(job) -> int:
    """How often the job was requeued: its current submission (rewritten at each requeue) says."""
    try:
        return int(getattr(job.submission().function, "requeues", 0))
    except Exception:  # no or unreadable pickle (e.g. a job of another version)
        return 0


def _result(job):
    """("success" | "error", value) from the main task's result file, or None."""
    from submitit.core import utils

    path = job.paths.result_pickle
    if not path.exists():
        return None
    try:
        return utils.pickle_load(path)
    except Exception:
        return None


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def failure_line(job, local: bool = False) -> str:
    """The last line of a failed job's error: its traceback, else its stderr, else its stdout.

    ``local``: a job without a scheduler state that says why it ended; one without a result
    (killed, or stopped at its time limit) is said to be so.
    """
    result = _result(job)
    if result and result[0] == "error":
        lines = [line.strip() for line in str(result[1]).splitlines() if line.strip()]
        if lines:
            return one_line(lines[-1], 300)
    last = one_line(_last_line(job.paths.stderr) or _last_line(job.paths.stdout), 300)
    if local and result is None:
        return "the job ended without a result (killed, or stopped at its time limit)" + \
            (f"; the last line of its log: {last}" if last else "")
    return last


def _main_task(job):
    return job.task(0) if job.num_tasks > 1 else job


def job_statuses(records: Sequence[Optional[dict]]) -> List[Optional[JobStatus]]:
    """The state of each recorded job (None for None); one ``sacct`` call for all SLURM jobs."""
    try:
        import submitit
    except ImportError:
        return [None if r is None else JobStatus("unknown", str(r.get("job_id", "")),
                                                 detail=f"submitit is not installed ({INSTALL_HINT})")
                for r in records]
    jobs = []
    for record in records:
        if record is None or "unreadable" in record:
            jobs.append(None)
            continue
        cls = submitit.SlurmJob if record["launcher"] == "slurm" else submitit.LocalJob
        tasks = list(range(int(record.get("tasks", 1))))
        jobs.append(cls(folder=record["folder"], job_id=str(record["job_id"]), tasks=tasks))
    if any(r is not None and r.get("launcher") == "slurm" for r in records):
        submitit.SlurmJob.watcher.update()  # one sacct call for all of them
    out: List[Optional[JobStatus]] = []
    for record, job in zip(records, jobs):
        if record is None:
            out.append(None)
        elif job is None:
            out.append(JobStatus("unknown", detail=record["unreadable"]))
        else:
            out.append(_status(record, job))
    return out


def _status(record: dict, job) -> JobStatus:
    main = _main_task(job)
    status = JobStatus("unknown", str(job.job_id), requeues=_requeues(job), log=str(main.paths.stderr))
    if record["launcher"] == "local":
        if _pid_alive(int(job.job_id)):
            status.state = "running"
            return status
        scheduler_state = "ENDED"
    else:
        scheduler_state = (job.watcher.get_state(job.job_id, mode="cache") or "UNKNOWN").split()[0].upper()
        status.detail = scheduler_state
        if scheduler_state in RUNNING:
            status.state = "running"
            return status
        if scheduler_state in PENDING | REQUEUED:
            status.state = "requeued" if (status.requeues or scheduler_state in REQUEUED) else "pending"
            return status
        if scheduler_state == "UNKNOWN":
            status.detail = "sacct does not know the job (yet), or cannot be run here"
            return status
    result = _result(main)
    if result is not None and result[0] == "success" and scheduler_state in ("ENDED", "COMPLETED"):
        status.state = "finished"
        return status
    status.state = "failed"
    if record["launcher"] == "slurm":
        status.detail = f"{scheduler_state}: {failure_line(main)}"
    else:
        status.detail = failure_line(main, local=True)
    return status


# ----------------------------------------------------------------------------- submitting
def lock_holder(output_dir: Path) -> Optional[str]:
    """Who holds the run lock of ``output_dir`` (:mod:`.output_lock`) right now, else None (read only)."""
    path = Path(output_dir) / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: runs are not locked
        return None
    try:
        handle = open(path)
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return " ".join(handle.read().split()) or "unknown PID"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def check_run_folder_free(output_dir: Path) -> Optional[JobStatus]:
    """One line if a run or a job already works on ``output_dir``; the status of its last job, if any."""
    holder = lock_holder(output_dir)
    if holder:
        raise LauncherError(f"OUTPUT_DIR {output_dir} is in use by a running run ({holder}): wait for it to "
                            f"finish or set another OUTPUT_DIR")
    record = read_record(output_dir)
    status = job_statuses([record])[0] if record is not None else None
    if status is not None and status.active:
        cancel = f"scancel {status.job_id}" if record.get("launcher") == "slurm" else f"kill -INT {status.job_id}"
        raise LauncherError(f"OUTPUT_DIR {output_dir} already has {record['launcher']} job {status.job_id} "
                            f"({status.state}): wait for it, or cancel it ({cancel}) before submitting again")
    return status


def train_arguments(args, output_dir: Path) -> List[str]:
    """The job's aeroseg-train arguments: ``args`` without the launcher's, paths made absolute."""
    argv = ["--config-file", os.path.abspath(args.config_file)]
    if args.resume:
        argv.append("--resume")
    if args.eval_only:
        argv.append("--eval-only")
    if args.engine != "aeroseg":
        argv += ["--engine", args.engine]
    for flag in ("overwrite", "allow_config_changes"):  # the run-folder options (run_folder.py)
        if getattr(args, flag, False):
            argv.append("--" + flag.replace("_", "-"))
    opts = list(args.opts or [])
    pairs = [opts[i:i + 2] for i in range(0, len(opts), 2)]  # load_config checked they are KEY VALUE pairs
    return argv + [x for pair in pairs if pair[0] != "OUTPUT_DIR" for x in pair] + ["OUTPUT_DIR", str(output_dir)]


def _snapshot(folder: Path):
    """What of ``folder`` exists before a submission: (its outermost missing ancestor, its entries)."""
    missing = None
    for parent in [folder, *folder.parents]:
        if parent.exists():
            break
        missing = parent
    return missing, (set(folder.iterdir()) if folder.is_dir() else set())


def _undo(folder: Path, snapshot) -> None:
    """Remove what a refused submission added to ``folder`` (submitit writes its files first)."""
    missing, entries = snapshot
    if missing is not None:
        shutil.rmtree(missing, ignore_errors=True)
        return
    for entry in (set(folder.iterdir()) if folder.is_dir() else set()) - entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def submit_and_record(executor_factory, runs: Sequence[Tuple[Path, List[str]]], launcher: str,
                      folder: Path) -> list:
    """Submit one :class:`TrainJob` per ``(output_dir, argv)`` (several: one SLURM job array) and
    record each in its run folder. A refused submission leaves no folder it created behind."""
    snapshot = _snapshot(Path(folder))
    try:
        jobs = submit_jobs(executor_factory, [TrainJob(argv) for _, argv in runs], launcher)
    except BaseException:
        _undo(Path(folder), snapshot)
        raise
    for (output_dir, argv), job in zip(runs, jobs):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        write_record(Path(output_dir), job, launcher, Path(folder), argv)
    return jobs


def wait_local(jobs: Sequence) -> List[Optional[str]]:
    """Wait for local jobs; per job None (success) or its failure line. Ctrl-C cancels them."""
    failures: List[Optional[str]] = []
    try:
        for job in jobs:
            try:
                job.results()
                failures.append(None)
            except Exception:  # FailedJobError / UncompletedJobError carry whole tracebacks
                failures.append(failure_line(_main_task(job), local=True))
    except KeyboardInterrupt:
        for job in jobs:
            job.cancel(check=False)
        raise
    return failures


def check_job_config(cfg, args, train: bool) -> None:
    """What would make the job fail at its start, checked before it queues: the datasets (names,
    folders) and a batch that the job's processes cannot share."""
    from ..data import check_datasets, register_datasets_from_config

    register_datasets_from_config(cfg)
    check_datasets(cfg, train=train)
    processes = args.nodes * args.gpus_per_node
    if train and cfg.SOLVER.IMS_PER_BATCH % processes:
        raise LauncherError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by the job's "
                            f"{processes} processes (--nodes {args.nodes} x --gpus-per-node {args.gpus_per_node})")


def submit_training(args, parser=None) -> int:
    """``aeroseg-train --launcher slurm|local``: check everything, submit one job, record it.

    With ``--launcher local`` the job runs on this machine and this call waits for it (its exit
    code then says whether it succeeded), as a direct run would.
    """
    from .train_net import load_config

    if parser is not None and getattr(args, "dist_url", None) not in (None, parser.get_default("dist_url")):
        raise LauncherError(f"--dist-url with --launcher {args.launcher}: the job's processes meet at the "
                            f"scheduler's address")
    check_launcher(args)
    submitit = require_submitit(args.launcher)
    if args.launcher == "slurm":
        check_slurm(args.partition)
    cfg = load_config(args)
    if not cfg.OUTPUT_DIR:
        raise LauncherError("OUTPUT_DIR is empty: a submitted run needs a folder for its checkpoints and logs")
    check_job_config(cfg, args, train=not args.eval_only)
    output_dir = Path(cfg.OUTPUT_DIR).resolve()
    previous = check_run_folder_free(output_dir)
    from .train_net import precheck_output_dir

    precheck_output_dir(cfg, args)  # holds another run, or --resume with another config: refused before queueing
    folder = (args.slurm_dir or output_dir / "slurm").resolve()
    argv = train_arguments(args, output_dir)
    job = submit_and_record(
        lambda: build_executor(submitit, args, folder, uses_gpus(cfg), job_name=f"aeroseg-{output_dir.name}"),
        [(output_dir, argv)], args.launcher, folder)[0]
    main = _main_task(job)
    where = (f"job {job.job_id} ({args.nodes} node(s) x {args.gpus_per_node} process(es)); training log: "
             f"{output_dir / 'log.txt'}; the job's own output: {main.paths.stdout} and .err")
    if previous is not None:
        where += f" (the folder's previous job {previous.job_id}: {previous.state})"
    if args.launcher == "slurm":
        print(f"Submitted SLURM {where}. squeue -j {job.job_id} shows it in the queue")
        return 0
    print(f"Running local submitit {where}", flush=True)
    failure = wait_local([job])[0]
    if failure is not None:
        raise LauncherError(f"local job {job.job_id} failed: {failure} (log: {main.paths.stderr})")
    requeues = _requeues(job)
    print(f"Local job {job.job_id} finished" + (f" after {requeues} requeue(s)" if requeues else "")
          + f"; results in {output_dir / 'inference'}")
    return 0

