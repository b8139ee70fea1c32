import json
import os
import re
from pathlib import Path

import pytest

from aeroseg.engine import reproduce_tables
from aeroseg.evaluation.paper_tables import TABLES, config_id
from conftest import REPO



def _fake_results(results_dir, config, test_set, **metrics):
    path = results_dir / config_id(config) / "inference" / test_set / "sem_seg_results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": metrics}))


def _row_cells(text, table_title, row_name, kind):
    """Cells of the `kind` line (paper/ours/Δ) of `row_name` in the table titled `table_title`."""
    block = text.split(f"### {table_title}")[1].split("###")[0]
    lines = block.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {row_name} |"))
    for i, line in enumerate(lines[start:]):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if i > 0 and cells[0]:  # the next row begins
            break
        if cells[1] == kind:
            return cells[2:]
    raise AssertionError(f"no {kind} line for {row_name}")


def test_every_reproducible_row_has_existing_configs():
    for table in TABLES.values():
        for row in table.rows:
            for config in row.configs.values():
                assert (REPO / config).is_file(), f"Table {table.key} row {row.name}: {config} missing"


def test_report_puts_values_in_the_right_cells(tmp_path):
    results = tmp_path / "results"
    _fake_results(results, "configs/isaid/aeroseg_vitb.yaml", "isaid_val",
                  **{"s-mIoU": 70.0, "u-mIoU": 50.0, "h-mIoU": 58.3333, "mIoU": 64.0})
    _fake_results(results, "configs/dlrsd/aeroseg_vitb.yaml", "dlrsd_val",
                  **{"s-mIoU": 61.0, "u-mIoU": 40.0, "h-mIoU": 48.3168, "mIoU": 52.5})
    _fake_results(results, "configs/dlrsd/ablations/baseline.yaml", "dlrsd_val",
                  **{"s-mIoU": 55.0, "u-mIoU": None, "h-mIoU": None, "mIoU": 40.0})
    out = tmp_path / "report"
    assert reproduce_tables.main(["--report", "--results-dir", str(results), "--output-dir", str(out)]) == 0
    text = (out / "tables.md").read_text()

    t2 = TABLES["2"].title
    assert _row_cells(text, t2, "AerOSeg (Ours)", "paper")[:3] == ["75.48", "51.46", "61.20"]
    ours = _row_cells(text, t2, "AerOSeg (Ours)", "ours")
    assert ours[:6] == ["70.00", "50.00", "58.33", "61.00", "40.00", "48.32"]
    assert ours[6:] == ["missing"] * 6  # OEM missing, so the averages are missing too
    delta = _row_cells(text, t2, "AerOSeg (Ours)", "Δ")
    assert delta[:3] == ["-5.48", "-1.46", "-2.87"] and delta[6:] == [""] * 6
    # other methods: only the paper's line
    assert _row_cells(text, t2, "OVRS", "paper")[-1] == "50.24"
    with pytest.raises(AssertionError):
        _row_cells(text, t2, "OVRS", "ours")
    # shared run: Config-C of Table 3 is the main model
    assert _row_cells(text, TABLES["3"].title, "Config-C (Ours)", "ours") == ["58.33", "48.32", "missing", "missing"]
    # a NaN h-mIoU (null in the JSON) is shown as nan, not as missing
    assert _row_cells(text, TABLES["3"].title, "Baseline", "ours") == ["missing", "nan", "missing", "missing"]
    assert _row_cells(text, TABLES["8"].title, "AerOSeg (Ours)", "ours") == ["64.00", "52.50", "missing"]
    assert _row_cells(text, TABLES["6"].title, "SAM ViT-H", "ours") == ["missing"] * 3


def test_average_column_is_the_mean_of_datasets(tmp_path):
    results = tmp_path / "r"
    for d, h in (("isaid", 60.0), ("dlrsd", 45.0), ("oem", 51.0)):
        _fake_results(results, f"configs/{d}/ablations/config_a.yaml", f"{d}_val", **{"h-mIoU": h})
    text = reproduce_tables.report(["3"], results, tmp_path / "o")
    assert _row_cells(text, TABLES["3"].title, "Config-A", "ours") == ["60.00", "45.00", "51.00", "52.00"]
    assert _row_cells(text, TABLES["3"].title, "Config-A", "Δ")[-1] == "+2.51"


def test_runs_are_planned_once_and_done_ones_skipped(tmp_path, capsys):
    runs = reproduce_tables.planned_runs(["2", "3", "4", "5"], None, None)
    assert len(runs) == len(set(runs)) == 3 * 7  # main, baseline, A, B, fine-tune, RGB, CLIP per dataset
    results = tmp_path / "res"
    _fake_results(results, "configs/isaid/ablations/config_a.yaml", "isaid_val", **{"h-mIoU": 1.0})
    weights = tmp_path / "w" / "dlrsd" / "ablations" / "config_a"
    weights.mkdir(parents=True)
    (weights / "model_final.pth").write_bytes(b"")
    code = reproduce_tables.main(["--run", "--table", "3", "--rows", "Config-A", "--results-dir", str(results),
                                  "--weights-dir", str(tmp_path / "w"), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "[done]    isaid/ablations/config_a" in out
    assert re.search(r"\[run\]\s+dlrsd/ablations/config_a: .*--eval-only MODEL.WEIGHTS .*model_final.pth", out)
    assert "[no weights] oem/ablations/config_a" in out
    with pytest.raises(SystemExit, match="unknown rows"):
        reproduce_tables.planned_runs(["3"], ["Config-Z"], None)


PAPER = Path(os.environ.get("AEROSEG_PAPER", REPO.parent / "shared" / "paper" / "aeroseg_paper.txt"))


def _row_numbers(line: str):
    """Numbers of a table row as the text extraction printed them: "44 .47" -> 44.47 and a
    dropped decimal point "1493" -> 14.93; separators and venue years ("CVPR'23") are skipped."""
    line = re.sub(r"(\d)\s+\.(\d)", r"\1.\2", line)
    values = []
    for token in re.findall(r"(?<![\w.])(\d{1,2}\.\d{2}|\d{4})(?![\w.])", line):
        values.append(f"{token[:2]}.{token[2:]}" if "." not in token else token)
    return values


def _table_block(text_lines, key):
    """Lines between the caption of the previous table and the caption of table ``key``."""
    captions = {}
    for i, line in enumerate(text_lines):
        match = re.match(r"Table (\d)\. ", line)
        if match:
            captions.setdefault(match.group(1), i)
    end = captions[key]
    start = max([i for k, i in captions.items() if i < end], default=-1) + 1
    return text_lines[start:end]


def test_paper_numbers_are_in_their_table_row():
    """Every row's values, in the table's column order (datasets x metrics, then the average), are
    exactly the numbers of that row in that table (finding a number anywhere in the paper is not
    enough)."""
    if not PAPER.is_file():
        pytest.skip(f"paper text not found at {PAPER} (set AEROSEG_PAPER)")
    lines = PAPER.read_text().splitlines()
    for key, table in TABLES.items():
        block = _table_block(lines, key)
        for row in table.rows:
            matches = [line for line in block if re.match(re.escape(row.name) + r"(\s|$)", line.strip())]
            assert matches, f"Table {key}: no row '{row.name}' in the paper"
            columns = list(table.datasets) + (["avg"] if table.average else [])
            expected = [f"{v:.2f}" for d in columns for v in row.paper[d]]
            assert _row_numbers(matches[-1]) == expected, f"Table {key} {row.name}: {matches[-1]!r}"
            if table.average:  # the paper's "Average" is the mean over the datasets
                for i in range(len(table.metrics)):
                    mean = sum(row.paper[d][i] for d in table.datasets) / len(table.datasets)
                    assert abs(mean - row.paper["avg"][i]) < 0.011, (key, row.name)


@pytest.mark.parametrize("content, field", [
    ("[1, 2]", "holds a JSON list"),
    ('{"results": {}}', 'no "metrics"'),
    ('{"metrics": [70.0]}', '"metrics" is a list'),
    ('{"metrics": {"s-mIoU": "70.0"}}', "metrics.s-mIoU is \"70.0\" (str), expected a number or null"),
    ('{"metrics": {"h-mIoU": true}}', "metrics.h-mIoU is true (bool)"),
    ('{"metrics": {"u-mIoU": {"value": 1}}}', "metrics.u-mIoU is"),
    ('{"metrics": {"mIoU": Infinity}}', "metrics.mIoU is Infinity (float)"),
    ("{not json", "not JSON"),
])
def test_a_malformed_results_file_is_one_line_naming_file_and_field(tmp_path, capsys, content, field):
    results = tmp_path / "results"
    path = results / "isaid" / "aeroseg_vitb" / "inference" / "isaid_val" / "sem_seg_results.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert reproduce_tables.main(["--report", "--table", "2", "--results-dir", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: ") and field in err and "\n" not in err, err
    # --run does not count a malformed file as a finished run either
    assert reproduce_tables.main(["--run", "--table", "2", "--rows", "AerOSeg (Ours)", "--datasets", "isaid",
                                  "--results-dir", str(results), "--dry-run"]) == 2
    assert str(path) in capsys.readouterr().err


def test_jobs_and_gpus_must_be_positive(tmp_path, capsys):
    for flag in ("--jobs", "--num-gpus"):
        for value in ("0", "-1"):
            assert reproduce_tables.main(["--run", "--dry-run", "--results-dir", str(tmp_path), flag, value]) == 2
            err = capsys.readouterr().err.strip()
            assert err == f"error: {flag} {value}: expected a number >= 1", err
