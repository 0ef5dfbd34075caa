"""The seqMNIST family end to end: through the processes on real MNIST, the missing-data
error of the command line, and the across-run report."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_no_process_left

from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import load_spec, to_toml
from ccdni.reporting.runs import load_runs, select
from ccdni.reporting.seqmnist_report import COMMAND, schedule_table, write_report
from ccdni.reporting.tables import epoch_table, markers
from ccdni.tasks.mnist_data import DataMissingError
from experiments.common import SweepPlan
from orchestrator.runner import check_task_data, execute_run

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("CCDNI_DATA") or ROOT.parent / "shared" / "data").resolve()


def area_metrics(run_path: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_path / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("region") == "area0" and "epoch" in r]


# one multi-process run per task (start-up dominates); both cerebellum kinds are covered
@pytest.mark.parametrize(
    ("task", "model", "val_key", "drawing"),
    [
        ("seqmnist", "cc-dni", "val_error_pct", False),
        ("c-seqmnist", "scc-dni", "val_mse", True),
        ("dd-seqmnist", "cc-dni", "val_mse_x100", True),
        ("ld-seqmnist", "scc-dni", "val_mse", True),
    ],
)
def test_task_trains_through_the_processes(
    tmp_path: Path, task: str, model: str, val_key: str, drawing: bool
) -> None:
    spec = load_spec(
        task=task,
        model=model,
        data_dir=str(DATA_DIR),
        train_subset=100,
        val_subset=50,
        batch_size=50,
        epochs=1,
        gamma=5 if task == "ld-seqmnist" else 1,
        runs_dir=str(tmp_path),
        run_name=task,
        figures=drawing,
        progress=False,
    )
    assert (spec.hidden, spec.cerebellum_hidden, spec.lr) == (30, 300, 1e-4)  # the preset
    outcome = execute_run(spec, console=False)
    summary = outcome.summary
    assert summary["status"] == "completed", summary["reason"]
    assert summary["mode"] == "processes" and summary["epochs_completed"] == 1
    (record,) = area_metrics(outcome.run.path)
    assert val_key in record and torch.isfinite(torch.tensor(record[val_key]))
    assert ("val_mse_x100" in record) == (task == "dd-seqmnist")
    assert record["predictions"] > 0  # the cerebellum answered across the sockets
    assert record["train_loss"] > 0
    examples = torch.load(outcome.run.path / "results" / "area0-examples.pt", weights_only=True)
    assert examples["task"] == task
    assert examples["outputs"].shape[1:] == (28, 2 if task != "seqmnist" else 10)
    assert set(examples["labels"].tolist()) <= set(range(10))
    assert (outcome.run.path / "figures" / "drawings.png").exists() == drawing
    assert_no_process_left(outcome.run.path, expected_regions=3)


def test_missing_data_is_one_error_line(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    runs = tmp_path / "runs"
    env = {**os.environ, "CCDNI_DATA": str(DATA_DIR)}  # the flag wins over the environment
    result = subprocess.run(
        [sys.executable, "launch.py", "--task", "seqmnist", "--data-dir", str(nowhere)]
        + ["--runs-dir", str(runs)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("launch.py: error: MNIST not found in ")
    assert str(nowhere / "MNIST" / "raw") in lines[0] and "--download" in lines[0]
    assert result.stdout == ""
    assert not runs.exists()  # nothing was created, nothing was spawned


def test_missing_data_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    nowhere = tmp_path / "env-nowhere"
    monkeypatch.setenv("CCDNI_DATA", str(nowhere))
    spec = load_spec(task="dd-seqmnist", runs_dir=str(tmp_path / "runs"))
    with pytest.raises(DataMissingError, match="MNIST not found in .*env-nowhere"):
        execute_run(spec, console=False)
    assert not (tmp_path / "runs").exists()
    check_task_data(load_spec(task="target-reaching"))  # needs no data: no error


# --- the across-run report ---------------------------------------------------------------------


def fake_sweep(root: Path, name: str, task: str, grid: list[dict], curve) -> Path:
    """A sweep folder as ``launch.py sweep`` leaves it, with made-up per-epoch metrics."""
    sweep = root / name
    rows = []
    for values in grid:
        point = "_".join(f"{k}={v}" for k, v in values.items())
        run = RunDirectory(sweep / "runs" / point)
        run.path.mkdir(parents=True)
        spec = load_spec(task=task, epochs=3, **values)
        run.spec_path.write_text(to_toml(spec))
        key = {"seqmnist": "val_error_pct", "dd-seqmnist": "val_mse_x100"}.get(task, "val_mse")
        for e in range(3):
            run.append_metric({"region": "area0", "epoch": e, key: curve(values, e)})
        run.write_json(
            run.summary_path, {"status": "completed", "epochs_completed": 3, "wall_seconds": 1.5}
        )
        rows.append({"name": point, **values, "status": "completed", "wall_seconds": 1.5})
    with open(sweep / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return sweep


def test_report_tables_and_figures(tmp_path: Path) -> None:
    """The seqMNIST report shows every model with differences paired by seed, under both
    update schedules, the ablations of Fig. 6b, keeps the page's prose and draws its figures."""
    offset = {"lstm": 10.0, "zero-dni": 8.0, "cc-dni": 0.0, "scc-dni": 5.0}
    schedules = {"truncation": 0.0, "sequence": 20.0}

    def curve(v: dict, e: int) -> float:
        return (
            50 - 10 * e + offset[v["model"]] + v["seed"] + schedules[v.get("update", "truncation")]
        )

    t5 = [
        {"model": m, "truncation": 5, "update": u, "seed": s}
        for m in offset
        for u in schedules
        for s in (0, 1)
    ]
    fake_sweep(tmp_path, "seqmnist-T5", "seqmnist", t5, curve)
    other_t = [
        {"model": m, "truncation": t, "seed": s} for m in offset for t in (2, 3) for s in (0, 1)
    ]
    fake_sweep(tmp_path, "seqmnist-T", "seqmnist", other_t, curve)
    ld = [
        {"model": m, "truncation": 5, "gamma": g, "seed": s}
        for m in offset
        for g in (1, 5)
        for s in (0, 1)
    ]
    fake_sweep(tmp_path, "ld-seqmnist", "ld-seqmnist", ld, lambda v, e: 20.0 / (e + 1) + v["gamma"])
    ablated = [
        {"model": "cc-dni", "truncation": 5, "ablate": "cerebellum@epoch=1", "seed": s}
        for s in (0, 1)
    ]
    fake_sweep(tmp_path, "seqmnist-ablation", "seqmnist", ablated, lambda v, e: 33.0 + v["seed"])
    records = load_runs(tmp_path / "seqmnist-T5")
    assert len(records) == 16
    online = select(records, update="truncation")
    table = epoch_table(online)
    assert "| 1 | 60.5 ± 0.5 | 58.5 ± 0.5 | 50.5 ± 0.5 | 55.5 ± 0.5 |" in table
    final = schedule_table(records)
    assert (
        "| update after every truncation | 40.5 ± 0.5 | 38.5 ± 0.5 | 30.5 ± 0.5 | 35.5 ± 0.5 |"
        in final
    )
    assert "-10.0 ± 0.0 (p=0)" in final  # CC-DNI − LSTM, the same in both seeds
    doc = tmp_path / "docs" / "results.md"
    doc.parent.mkdir()
    begin, end = markers(COMMAND)
    doc.write_text(f"# Title\n\nprose kept\n\n{begin}\nold\n{end}\n\nmore prose\n")
    plans = [
        SweepPlan(name, {}, {}, "test")
        for name in ("seqmnist-T5", "seqmnist-T", "ld-seqmnist", "seqmnist-ablation")
    ]
    written = write_report(tmp_path, plans, doc, tmp_path / "docs" / "figures", "test budget")
    text = doc.read_text()
    assert "prose kept" in text and "more prose" in text and "\nold\n" not in text
    assert "| γ |" in text and "error vs T" in text and "one update per sequence" in text
    assert "Fig. 6b" in text and "| CC-DNI | 1 | 33.5 ± 0.5 | 1.098 ± 0.002 |" in text
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) >= 4 and all(p.stat().st_size < 300_000 for p in pngs)
