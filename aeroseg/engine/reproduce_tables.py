#!/usr/bin/env python
"""Reproduce the paper's Tables 2-8 and compare our numbers with the published ones.

    # train + evaluate every row of Table 3 (rows already done are skipped, partial ones resumed)
    python tools/reproduce_tables.py --run --table 3 --results-dir output/tables
    # only some rows, 4 GPUs per run
    python tools/reproduce_tables.py --run --table 3 --rows Baseline Config-A --num-gpus 4
    # evaluate downloaded/trained checkpoints instead of training
    python tools/reproduce_tables.py --run --table 2 --weights-dir checkpoints/
    # the report: markdown tables, ours beside the paper's, also written to <output-dir>/tables.md
    python tools/reproduce_tables.py --report --results-dir output/tables
    # on a SLURM cluster: one job per run (a job array, at most 8 at once), then their state
    python tools/reproduce_tables.py --run --table 3 --launcher slurm --partition gpu --gpus-per-node 4 --max-parallel 8
    python tools/reproduce_tables.py --status --table 3

A config's results live in ``<results-dir>/<config id>/inference/<test set>/sem_seg_results.json``
with ``<config id>`` its path below ``configs/`` without ``.yaml`` (e.g. ``isaid/aeroseg_vitb``);
rows that share a config (Config-C, "Frozen", "SAM features" are the main model) share the run.
With ``--weights-dir``, ``<weights-dir>/<config id>/model_final.pth`` or
``<weights-dir>/<config id>.pth`` is evaluated.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from aeroseg.evaluation.paper_tables import DATASETS, TABLES, TEST_SETS, Table, config_id
from aeroseg.evaluation.sem_seg_evaluation import results_path
from aeroseg.model_zoo import get_config_file
from aeroseg.utils.errors import AerOSegError, ConfigError, LauncherError, describe_exception
from aeroseg.utils.io import write_text_atomic

from . import submit

MISSING = "missing"


# ----------------------------------------------------------------------------- results
def results_file(results_dir: Path, config: str, dataset: str) -> Path:
    return Path(results_path(results_dir / config_id(config), TEST_SETS[dataset]))


class ResultsError(AerOSegError, ValueError):
    """A results file the report cannot use (the message names the file and the field)."""


def parse_metrics(path: Path) -> Dict[str, float]:
    """``{"metrics": {name: number or null}}`` of a results file as floats (null -> NaN).

    Raises a one-line :class:`ResultsError` naming ``path`` and the field for anything else: a
    file that is not JSON, not an object, without a "metrics" object, or with a metric that is not
    a finite number (booleans, numeric strings and infinities included: they are not results).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read it ({describe_exception(exc)})") from None
    except ValueError as exc:
        raise ResultsError(f"{path}: not JSON ({describe_exception(exc)}); expected a sem_seg_results.json") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: holds a JSON {type(data).__name__}, expected an object with \"metrics\" "
                           f"(a sem_seg_results.json)")
    metrics = data.get("metrics")
    if not isinstance(metrics, dict):
        what = "no \"metrics\"" if "metrics" not in data else f"\"metrics\" is a {type(metrics).__name__}"
        raise ResultsError(f"{path}: {what}, expected an object of metric values (a sem_seg_results.json)")
    values = {}
    for name, value in metrics.items():
        if value is None:
            values[name] = float("nan")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isinf(value):
            values[name] = float(value)  # (a NaN literal is "no value", as null)
        else:
            raise ResultsError(f"{path}: metrics.{name} is {json.dumps(value)[:60]} ({type(value).__name__}), "
                               f"expected a number or null")
    return values


def read_metrics(results_dir: Path, config: str, dataset: str) -> Optional[Dict[str, float]]:
    path = results_file(results_dir, config, dataset)
    return parse_metrics(path) if path.is_file() else None


# ----------------------------------------------------------------------------- report
def _fmt(value: Optional[float]) -> str:
    if value is None:
        return MISSING
    return "nan" if math.isnan(value) else f"{value:.2f}"


def _delta(ours: Optional[float], paper: Optional[float]) -> str:
    if ours is None or paper is None or math.isnan(ours):
        return ""
    return f"{ours - paper:+.2f}"


def table_markdown(table: Table, results_dir: Path) -> str:
    """One paper table: per row the paper's numbers, ours, and ours - paper."""
    columns = [(d, m) for d in table.datasets for m in table.metrics]
    if table.average:
        columns += [("avg", m) for m in table.metrics]
    header = ["Method", ""] + [f"{'Average' if d == 'avg' else DATASETS[d]} {m}" for d, m in columns]
    lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * len(columns)) + "|"]
    for row in table.rows:
        paper = {(d, m): row.paper[d][i] for d in row.paper for i, m in enumerate(table.metrics)}
        lines.append("| " + " | ".join([row.name, "paper"] + [_fmt(paper.get(c)) for c in columns]) + " |")
        if not row.reproducible:
            continue
        ours: Dict[tuple, Optional[float]] = {}
        for d in table.datasets:
            metrics = read_metrics(results_dir, row.configs[d], d)
            for m in table.metrics:
                ours[(d, m)] = None if metrics is None else metrics.get(m)
        if table.average:
            for m in table.metrics:
                values = [ours[(d, m)] for d in table.datasets]
                ours[("avg", m)] = None if any(v is None for v in values) else sum(values) / len(values)
        lines.append("| " + " | ".join(["", "ours"] + [_fmt(ours.get(c)) for c in columns]) + " |")
        lines.append("| " + " | ".join(["", "Δ"] + [_delta(ours.get(c), paper.get(c)) for c in columns]) + " |")
    return "\n".join(lines) + "\n"


def report(tables: Sequence[str], results_dir: Path, output_dir: Path) -> str:
    parts = ["# AerOSeg: our results beside the paper's", "",
             f"Results read from `{results_dir}`; `{MISSING}` = no results for that run yet "
             f"(never filled in). Rows without an \"ours\" line are other methods, shown for reference.", ""]
    parts += [table_markdown(TABLES[t], results_dir) for t in tables]
    text = "\n".join(parts)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output_dir / "tables.md", text)
    return text


# ----------------------------------------------------------------------------- runs
def planned_runs(tables: Sequence[str], rows: Optional[Sequence[str]],
                 datasets: Optional[Sequence[str]]) -> List[tuple]:
    """Unique (config, dataset) pairs of the selected rows, in table order."""
    runs: List[tuple] = []
    known = {r.name for t in tables for r in TABLES[t].rows}
    unknown = [r for r in rows or () if r not in known]
    if unknown:
        raise SystemExit(f"error: unknown rows {unknown}; rows of tables {', '.join(tables)}: {sorted(known)}")
    for t in tables:
        for row in TABLES[t].rows:
            if rows and row.name not in rows:
                continue
            for d, config in row.configs.items():
                if (datasets is None or d in datasets) and (config, d) not in runs:
                    runs.append((config, d))
    return runs


def find_weights(weights_dir: Path, config: str) -> Optional[Path]:
    for candidate in (weights_dir / config_id(config) / "model_final.pth", weights_dir / f"{config_id(config)}.pth"):
        if candidate.is_file():
            return candidate
    return None


def train_arguments(config: str, results_dir: Path, weights: Optional[Path], opts: Sequence[str]) -> List[str]:
    """aeroseg-train's arguments for one run: train (or continue) it, or evaluate ``weights``."""
    argv = ["--config-file", get_config_file(config_id(config) + ".yaml")]
    argv += ["--eval-only", "MODEL.WEIGHTS", str(weights)] if weights else ["--resume"]
    return argv + ["OUTPUT_DIR", str(results_dir / config_id(config)), *opts]


def run_command(config: str, results_dir: Path, num_gpus: int, weights: Optional[Path],
                opts: Sequence[str]) -> List[str]:
    argv = train_arguments(config, results_dir, weights, opts)
    return [sys.executable, "-m", "aeroseg.engine.train_net", *argv[:2], "--num-gpus", str(num_gpus), *argv[2:]]


_SKIP = object()


def _pending_weights(args, config: str, dataset: str, status=None):
    """The weights a run still to do starts from (None: its config's own), or ``_SKIP`` when it is
    done, queued or running (``status`` of its job), or has no weights under ``--weights-dir``;
    each skip is said on stdout."""
    name = config_id(config)
    if read_metrics(args.results_dir, config, dataset) is not None:  # a malformed file is an error
        print(f"[done]    {name}")
        return _SKIP
    if status is not None and status.active:
        print(f"[{status.state}] {name}: job {status.job_id} (not submitted again)")
        return _SKIP
    if not args.weights_dir:
        return None
    weights = find_weights(args.weights_dir, config)
    if weights is None:
        print(f"[no weights] {name}: none under {args.weights_dir}; skipped")
        return _SKIP
    return weights


def run(args) -> int:
    """``--run`` without a launcher: each run as a local process (``--jobs`` at once)."""
    runs = planned_runs(args.table, args.rows, args.datasets)
    pending = []
    for config, dataset in runs:
        weights = _pending_weights(args, config, dataset)
        if weights is _SKIP:
            continue
        pending.append((config, run_command(config, args.results_dir, args.num_gpus, weights, args.opts)))
    failures = 0
    active: List[tuple] = []
    for i, (config, cmd) in enumerate(pending):
        print(f"[run]     {config_id(config)}: {' '.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        env = dict(os.environ)
        if args.devices:
            devices = args.devices.split(",")
            per_job = max(1, len(devices) // args.jobs)
            slot = (i % args.jobs) * per_job
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[slot:slot + per_job])
        log = open(args.results_dir / f"{config_id(config).replace('/', '__')}.log", "a") if args.jobs > 1 else None
        active.append((config, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT if log else None)))
        while len(active) >= args.jobs or (i == len(pending) - 1 and active):
            for entry in list(active):
                code = entry[1].poll()
                if code is not None:
                    active.remove(entry)
                    if code != 0:
                        failures += 1
                        print(f"[failed]  {config_id(entry[0])} (exit {code})")
            time.sleep(1 if active else 0)
    return 1 if failures else 0


# ----------------------------------------------------------------------------- runs as submitted jobs
def _check_run(argv: Sequence[str], launcher_args):
    """The run's config loads and its job could start (one-line errors); returns the config."""
    from .defaults import default_argument_parser
    from .train_net import load_config

    args = default_argument_parser().parse_args(list(argv))
    for name in ("launcher", "nodes", "gpus_per_node"):  # validated for the job's world, not this machine
        setattr(args, name, getattr(launcher_args, name))
    cfg = load_config(args)
    submit.check_job_config(cfg, launcher_args, train=not args.eval_only)
    return cfg


def run_submitted(args) -> int:
    """``--run --launcher slurm|local``: one submitit job per run that is neither done nor active.

    Everything is checked before the first submission (options, SLURM, every run's config and
    datasets). SLURM: one job array, at most ``--max-parallel`` running at once, and this returns
    at once. Local: at most ``--max-parallel`` (default 1) jobs at once, waiting for all.
    """
    if args.jobs is not None or args.devices:
        raise LauncherError("--jobs and --devices share out this machine's GPUs among direct runs; with "
                            "--launcher use --max-parallel (jobs at once) and --gpus-per-node")
    if args.max_parallel is not None and args.max_parallel < 1:
        raise LauncherError(f"--max-parallel {args.max_parallel}: expected a positive number")
    submit.check_launcher(args)
    submitit = submit.require_submitit(args.launcher)
    if args.launcher == "slurm":
        submit.check_slurm(args.partition)
    runs = planned_runs(args.table, args.rows, args.datasets)
    outs = [args.results_dir / config_id(config) for config, _ in runs]
    statuses = submit.job_statuses([submit.read_record(out) for out in outs])
    todo = []
    for (config, dataset), out, status in zip(runs, outs, statuses):
        name = config_id(config)
        weights = _pending_weights(args, config, dataset, status)
        if weights is _SKIP:
            continue
        argv = train_arguments(config, args.results_dir, weights, args.opts)
        todo.append((name, out, argv, submit.uses_gpus(_check_run(argv, args))))
    folder = (args.slurm_dir or args.results_dir / "slurm").resolve()
    for name, _, argv, _ in todo:
        print(f"[submit]  {name}: aeroseg-train {' '.join(argv)}", flush=True)
    if args.dry_run or not todo:
        return 0
    if args.launcher == "slurm":
        for gpus in sorted({t[3] for t in todo}):  # one array per kind of resources
            group = [t for t in todo if t[3] == gpus]
            jobs = submit.submit_and_record(
                lambda: submit.build_executor(submitit, args, folder, gpus, job_name="aeroseg-tables",
                                              array_parallelism=args.max_parallel),
                [(out, argv) for _, out, argv, _ in group], "slurm", folder)
            for (name, *_), job in zip(group, jobs):
                print(f"[queued]  {name}: SLURM job {job.job_id}")
        print(f"submitit's files and the jobs' output: {folder}; their state: tools/reproduce_tables.py --status "
              f"--results-dir {args.results_dir}")
        return 0
    return _run_local(args, submitit, folder, todo)


def _run_local(args, submitit, folder: Path, todo: list) -> int:
    limit, queue, active, failures = args.max_parallel or 1, list(todo), [], 0
    try:
        while queue or active:
            while queue and len(active) < limit:
                name, out, argv, gpus = queue.pop(0)
                job = submit.submit_and_record(
                    lambda: submit.build_executor(submitit, args, folder, gpus, job_name=f"aeroseg-{name}"),
                    [(out, argv)], "local", folder)[0]
                print(f"[running] {name}: local job {job.job_id}", flush=True)
                active.append((name, job))
            time.sleep(0.5)
            for name, job in [entry for entry in active if entry[1].done()]:
                active.remove((name, job))
                failure = submit.wait_local([job])[0]
                if failure is None:
                    print(f"[finished] {name}: local job {job.job_id}", flush=True)
                else:
                    failures += 1
                    print(f"[failed]  {name}: local job {job.job_id}: {failure}", flush=True)
    except KeyboardInterrupt:
        for _, job in active:
            job.cancel(check=False)
        raise
    return 1 if failures else 0


def status(args) -> int:
    """``--status``: per run done / pending / running / requeued / failed / not submitted."""
    runs = planned_runs(args.table, args.rows, args.datasets)
    outs = [args.results_dir / config_id(config) for config, _ in runs]
    statuses = submit.job_statuses([submit.read_record(out) for out in outs])
    counts: Dict[str, int] = {}
    width = max((len(config_id(config)) for config, _ in runs), default=0)
    for (config, dataset), job in zip(runs, statuses):
        detail = ""
        if read_metrics(args.results_dir, config, dataset) is not None:  # a malformed file is an error
            state = "done"
        elif job is None:
            state = "not submitted"
        elif job.state == "finished":  # the job ended well, but without this run's results
            state, detail = "failed", f"the job ended without results for {TEST_SETS[dataset]}"
        else:
            state, detail = job.state, job.detail if job.state in ("failed", "unknown") else ""
        line = f"{state:<13} {config_id(config):<{width}}"
        if job is not None and job.job_id:
            line += f"  job {job.job_id}" + (f" (requeued {job.requeues}x)" if job.requeues else "")
        if detail:
            line += f": {detail}"
        if state == "failed" and job is not None and job.log:
            line += f" [log: {job.log}]"
        print(line)
        counts[state] = counts.get(state, 0) + 1
    print(", ".join(f"{n} {state}" for state, n in counts.items()) or "no runs selected")
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--run", action="store_true", help="train and/or evaluate the selected rows")
    mode.add_argument("--report", action="store_true", help="print (and write) the comparison tables")
    mode.add_argument("--status", action="store_true",
                      help="each selected run's state: done, pending, running, requeued, failed (with the job id "
                           "and the last line of a failed job's log) or not submitted")
    p.add_argument("--table", nargs="+", default=sorted(TABLES), choices=sorted(TABLES), help="tables (default: all)")
    p.add_argument("--rows", nargs="+", help="row names as in the paper, e.g. Baseline Config-A")
    p.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), help="restrict --run to these datasets")
    p.add_argument("--results-dir", type=Path, default=Path("output/tables"), help="where runs write their results")
    p.add_argument("--output-dir", type=Path, help="where tables.md goes (default: --results-dir)")
    p.add_argument("--weights-dir", type=Path, help="evaluate checkpoints found here instead of training")
    p.add_argument("--num-gpus", type=int, help="GPUs per run (train_net.py --num-gpus; default 1)")
    p.add_argument("--jobs", type=int, help="runs at the same time, as separate processes (default 1)")
    p.add_argument("--devices", help="GPU ids shared out among --jobs, e.g. 0,1,2,3")
    p.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    submit.add_launcher_arguments(p, slurm_dir_default="<results-dir>/slurm")
    p.add_argument("--max-parallel", type=int, metavar="N",
                   help="with --launcher: jobs running at once (SLURM: the job array's limit, default none; "
                        "local: default 1)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides passed to every run")
    return p.parse_args(argv)


def check_arguments(args) -> None:
    """Numbers given on the command line (one-line ConfigError); --jobs 0 used to spin forever."""
    for name in ("jobs", "num_gpus"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {value}: expected a number >= 1")


def main(argv=None) -> int:
    args = parse_args(argv)
    args.results_dir = args.results_dir.resolve()
    try:
        check_arguments(args)
        if args.report:
            print(report(args.table, args.results_dir, args.output_dir or args.results_dir))
            return 0
        if args.status:
            return status(args)
        if args.launcher != "none":
            return run_submitted(args)
        if args.max_parallel is not None:
            raise LauncherError("--max-parallel limits submitted jobs: add --launcher slurm (or local); runs on "
                                "this machine without a launcher use --jobs")
        submit.check_launcher(args)
        args.num_gpus, args.jobs = args.num_gpus or 1, args.jobs or 1
        args.results_dir.mkdir(parents=True, exist_ok=True)
        return run(args)
    except AerOSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
