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
from aeroseg.utils.io import write_text_atomic

MISSING = "missing"


# ----------------------------------------------------------------------------- results
def results_file(results_dir: Path, config: str, dataset: str) -> Path:
    return Path(results_path(results_dir / config_id(config), TEST_SETS[dataset]))


def read_metrics(results_dir: Path, config: str, dataset: str) -> Optional[Dict[str, float]]:
    path = results_file(results_dir, config, dataset)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        metrics = data["metrics"]
    except (ValueError, KeyError) as exc:
        raise SystemExit(f"error: {path}: not a sem_seg_results.json ({exc})")
    return {k: (float("nan") if v is None else float(v)) for k, v in metrics.items()}


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


def run_command(config: str, results_dir: Path, num_gpus: int, weights: Optional[Path],
                opts: Sequence[str]) -> List[str]:
    config_file = get_config_file(config_id(config) + ".yaml")
    cmd = [sys.executable, "-m", "aeroseg.engine.train_net", "--config-file", config_file,
           "--num-gpus", str(num_gpus)]
    cmd += ["--eval-only", "MODEL.WEIGHTS", str(weights)] if weights else ["--resume"]
    return cmd + ["OUTPUT_DIR", str(results_dir / config_id(config)), *opts]


def run(args) -> int:
    runs = planned_runs(args.table, args.rows, args.datasets)
    pending = []
    for config, dataset in runs:
        if results_file(args.results_dir, config, dataset).is_file():
            print(f"[done]    {config_id(config)}")
            continue
        weights = None
        if args.weights_dir:
            weights = find_weights(args.weights_dir, config)
            if weights is None:
                print(f"[no weights] {config_id(config)}: none under {args.weights_dir}; skipped")
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--run", action="store_true", help="train and/or evaluate the selected rows")
    mode.add_argument("--report", action="store_true", help="print (and write) the comparison tables")
    p.add_argument("--table", nargs="+", default=sorted(TABLES), choices=sorted(TABLES), help="tables (default: all)")
    p.add_argument("--rows", nargs="+", help="row names as in the paper, e.g. Baseline Config-A")
    p.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), help="restrict --run to these datasets")
    p.add_argument("--results-dir", type=Path, default=Path("output/tables"), help="where runs write their results")
    p.add_argument("--output-dir", type=Path, help="where tables.md goes (default: --results-dir)")
    p.add_argument("--weights-dir", type=Path, help="evaluate checkpoints found here instead of training")
    p.add_argument("--num-gpus", type=int, default=1, help="GPUs per run (train_net.py --num-gpus)")
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time, as separate processes")
    p.add_argument("--devices", help="GPU ids shared out among --jobs, e.g. 0,1,2,3")
    p.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides passed to every run")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.results_dir = args.results_dir.resolve()
    if args.report:
        print(report(args.table, args.results_dir, args.output_dir or args.results_dir))
        return 0
    args.results_dir.mkdir(parents=True, exist_ok=True)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
