"""The multi-process system against the in-process reference, and end-to-end runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_no_process_left, assert_same_losses, per_epoch

from ccdni.base.spec import load_spec
from orchestrator.runner import execute_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model", ["cc-dni", "scc-dni"])
def test_lockstep_processes_reproduce_inprocess(tmp_path: Path, model: str) -> None:
    common = dict(
        model=model,
        epochs=8,
        seed=3,
        timing="lockstep",
        runs_dir=str(tmp_path),
        figures=False,
        progress=False,
    )
    reference = execute_run(load_spec(inprocess=True, run_name="ref", **common), console=False)
    processes = execute_run(load_spec(inprocess=False, run_name="proc", **common), console=False)
    assert processes.summary["status"] == "completed", processes.summary["reason"]
    ref = assert_same_losses(reference.run.path, processes.run.path)
    assert {region for region, _ in ref} == {"area0", "olive"}
    assert len(ref) == 16
    assert_no_process_left(processes.run.path)


def test_launch_end_to_end(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "--epochs",
            "6",
            "--runs-dir",
            str(runs),
            "--run-name",
            "e2e",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "completed" in result.stdout
    run = runs / "e2e"
    for name in (
        "spec.toml",
        "metrics.jsonl",
        "events.jsonl",
        "summary.json",
        "regions.json",
        "figures/learning_curve.png",
        "figures/trajectories.png",
        "checkpoints/area0.pt",
        "checkpoints/cerebellum.pt",
        "logs/orchestrator.jsonl",
        "logs/area0.jsonl",
        "logs/cerebellum.jsonl",
        "logs/olive.jsonl",
    ):
        assert (run / name).is_file(), name
        assert (run / name).stat().st_size > 0, name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["epochs_completed"] == 6
    assert summary["mode"] == "processes"
    epochs = per_epoch(run)
    assert [e for r, e in epochs if r == "area0"] == list(range(6))
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    exits = {e["region"]: e for e in events if e["event"] == "exit"}
    assert set(exits) == {"area0", "cerebellum", "olive"}
    assert all(e["exitcode"] == 0 for e in exits.values())
    assert any(e["event"] == "shutdown" and e["stage"] == "stop" for e in events)
    for line in (run / "logs" / "cerebellum.jsonl").read_text().splitlines():
        json.loads(line)  # every log line is JSON
    assert_no_process_left(run)


@pytest.mark.parametrize("timing", ["wait", "stale"])
def test_timing_policies_complete(tmp_path: Path, timing: str) -> None:
    spec = load_spec(epochs=5, timing=timing, runs_dir=str(tmp_path), figures=False, progress=False)
    outcome = execute_run(spec, console=False)
    assert outcome.summary["status"] == "completed"
    area = [r for (region, _), r in per_epoch(outcome.run.path).items() if region == "area0"]
    assert len(area) == 5
    if timing == "wait":
        assert sum(r["predictions"] for r in area) > 0
    assert_no_process_left(outcome.run.path)


def test_plain_lstm_runs_only_the_area(tmp_path: Path) -> None:
    spec = load_spec(model="lstm", epochs=3, runs_dir=str(tmp_path), figures=False, progress=False)
    outcome = execute_run(spec, console=False)
    assert outcome.summary["status"] == "completed"
    events = [json.loads(line) for line in outcome.run.events_path.read_text().splitlines()]
    assert [e["region"] for e in events if e["event"] == "spawn"] == ["area0"]
    assert_no_process_left(outcome.run.path)


def test_summary_names_the_tasks_headline_metric(tmp_path: Path) -> None:
    """summary.json carries the task's declared headline metric with its final and last-5
    values, read from the area's records."""
    spec = load_spec(inprocess=True, epochs=7, runs_dir=str(tmp_path), figures=False)
    outcome = execute_run(spec, console=False)
    headline = outcome.summary["headline"]
    assert headline["metric"] == "val_mse" and headline["lower_is_better"]
    area = [
        r for (region, _), r in sorted(per_epoch(outcome.run.path).items()) if region == "area0"
    ]
    assert headline["final"] == area[-1]["val_mse"]
    assert headline["last5_mean"] == pytest.approx(sum(r["val_mse"] for r in area[-5:]) / 5)
    written = json.loads(outcome.run.summary_path.read_text())
    assert written["headline"] == headline
