"""Correlation analyses, correlation recording, sweeps and their report."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from areas.cortex import AreaCore
from ccdni.analysis.correlation import (
    correlation_summary,
    mean_abs_correlation,
    population_correlation,
)
from ccdni.base.spec import SpecError, load_spec
from ccdni.tasks import build_task
from cerebellum.synthesiser import CerebellumCore
from olive.comparator import InferiorOlive
from orchestrator.inprocess import INTERFACE, DirectLink
from orchestrator.sweep import (
    Sweep,
    completed,
    devices,
    expand,
    load_grid,
    normalise_grid,
    parse_values,
    placed_spec,
)

ROOT = Path(__file__).resolve().parents[1]


# --- 1. the maths --------------------------------------------------------------------------------


def test_population_correlation_independent_and_identical() -> None:
    rng = np.random.default_rng(0)
    independent = rng.standard_normal((40_000, 8))  # (S, Z), equal variances
    assert abs(population_correlation(independent)) < 0.02
    assert mean_abs_correlation(independent) < 0.02
    latent = rng.standard_normal((2_000, 1))
    identical = np.repeat(latent, 8, axis=1)  # (S, Z): every unit the same
    assert population_correlation(identical) == pytest.approx(1.0, abs=1e-6)
    assert mean_abs_correlation(identical) == pytest.approx(1.0, abs=1e-9)
    scaled = latent * np.array([[1.0, -2.0, 0.5, 3.0]])  # perfectly (anti-)correlated units
    assert population_correlation(scaled) == pytest.approx(1.0, abs=1e-6)
    assert mean_abs_correlation(scaled) == pytest.approx(1.0, abs=1e-9)


def test_population_correlation_formula_against_hand_computation() -> None:
    rng = np.random.default_rng(1)
    activity = rng.standard_normal((500, 5)) @ rng.standard_normal((5, 5))  # (S, Z)
    roots = np.sqrt(np.clip(np.linalg.eigvalsh(np.cov(activity, rowvar=False)), 0, None))
    z = 5
    expected = z / (z - 1) * (roots.max() / roots.sum() - 1 / z)
    assert population_correlation(activity) == pytest.approx(expected, rel=1e-12)
    assert 0.0 < expected < 1.0


def test_mean_abs_correlation_matches_numpy_corrcoef() -> None:
    rng = np.random.default_rng(2)
    mixing = rng.standard_normal((6, 6))
    activity = rng.standard_normal((7, 9, 3)) @ mixing[:3]  # (B, N, Z=6): samples × steps
    flat = activity.reshape(-1, 6)
    corr = np.corrcoef(flat, rowvar=False)
    expected = np.abs(corr[np.triu_indices(6, k=1)]).mean()
    assert mean_abs_correlation(activity) == pytest.approx(expected, rel=1e-12)
    as_tensor = torch.tensor(activity, dtype=torch.float64)
    assert mean_abs_correlation(as_tensor) == pytest.approx(expected, rel=1e-12)


def test_constant_units_are_left_out_and_degenerate_input_is_nan() -> None:
    rng = np.random.default_rng(3)
    activity = rng.standard_normal((300, 4))
    with_constant = np.concatenate([activity, np.full((300, 1), 2.5)], axis=1)
    assert mean_abs_correlation(with_constant) == pytest.approx(mean_abs_correlation(activity))
    assert population_correlation(with_constant) == pytest.approx(population_correlation(activity))
    zeros = np.zeros((50, 6))  # e.g. the first synthetic feedback: the output layer starts at 0
    assert np.isnan(mean_abs_correlation(zeros)) and np.isnan(population_correlation(zeros))
    assert correlation_summary(zeros, "r_g") == {}
    assert set(correlation_summary(activity, "r_h")) == {"r_h", "r_pop_h"}
    with pytest.raises(ValueError):
        mean_abs_correlation(np.zeros(5))


# --- 2. recording in the area --------------------------------------------------------------------


def test_record_epochs_parsing() -> None:
    spec = load_spec(epochs=50, record_epochs="0,2-4,10-30:10,last")
    assert sorted(spec.recorded_epochs) == [0, 2, 3, 4, 10, 20, 30, 49]
    assert load_spec(epochs=3, record_epochs="all").recorded_epochs == {0, 1, 2}
    assert load_spec(epochs=5, record_epochs="0-99").recorded_epochs == {0, 1, 2, 3, 4}
    assert load_spec().recorded_epochs == frozenset()
    for bad in ("x", "5-2", "0-3:0", "300", "-1"):
        with pytest.raises(SpecError, match="record_epochs"):
            load_spec(record_epochs=bad)


def _train(spec, epochs: int) -> tuple[list[dict], dict]:
    torch.manual_seed(0)
    area = AreaCore(spec, build_task(spec), INTERFACE)
    cerebellum = CerebellumCore(spec, [INTERFACE])
    link = DirectLink(cerebellum, InferiorOlive(), INTERFACE)
    metrics = [area.run_epoch(link) for _ in range(epochs)]
    return metrics, {**area.area.state_dict(), **cerebellum.state_dict()}


def test_recording_adds_correlations_and_changes_no_number() -> None:
    base = {"epochs": 4, "model": "scc-dni", "bias_factor": 0.5}
    plain, plain_state = _train(load_spec(**base), 4)
    recorded, recorded_state = _train(load_spec(**base, record_epochs="0,2-3"), 4)
    for a, b in zip(plain, recorded):
        for key in ("train_loss", "val_mse", "predictions", "targets_sent"):
            assert a[key] == b[key]  # bit-identical
    for key, value in plain_state.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, recorded_state[key]), key
    assert not any(k.startswith("r_") for m in plain for k in m)
    assert {"r_h", "r_pop_h"} <= set(recorded[0]) and "r_h" not in recorded[1]
    assert "r_g" not in recorded[0]  # ĝ is exactly 0 during the first epoch: undefined
    assert {"r_h", "r_pop_h", "r_g", "r_pop_g"} <= set(recorded[2])
    for key in ("r_h", "r_pop_h", "r_g", "r_pop_g"):
        assert 0.0 <= recorded[2][key] <= 1.0 + 1e-9


# --- 3. sweeps ---------------------------------------------------------------------------------


def test_grid_axes_linked_and_union(tmp_path: Path) -> None:
    assert parse_values("seed", "0-2,7") == [0, 1, 2, 7]
    linked = parse_values("model,sparsity_k", "scc-dni:4,cc-dni:0")
    assert linked == [("scc-dni", 4), ("cc-dni", 0)]
    with pytest.raises(SpecError, match="2 parts"):
        parse_values("model,sparsity_k", "scc-dni")
    with pytest.raises(SpecError, match="unknown grid field"):
        normalise_grid({"nonsense": [1]})
    grids = [
        {"cerebellum_hidden": [20, 40], "model,sparsity_k": [["scc-dni", 4], ["cc-dni", 0]]},
        {"model": ["lstm"]},
        {"model": ["lstm"]},  # the same points again: counted once
    ]
    points = expand({"epochs": 2}, grids, tmp_path)
    names = [p.name for p in points]
    assert len(names) == 5 and len(set(names)) == 5
    assert "cerebellum_hidden=40_model=scc-dni_sparsity_k=4" in names and "model=lstm" in names
    assert all(p.spec is not None and p.spec.runs_dir == str(tmp_path / "runs") for p in points)
    path = tmp_path / "grid.toml"
    path.write_text(
        '[base]\nepochs = 2\n[[grid]]\n"model,sparsity_k" = [["scc-dni", 4]]\n'
        'seed = [0, 1]\n[[grid]]\nmodel = ["lstm"]\n'
    )
    base, loaded = load_grid(path)
    assert base == {"epochs": 2} and loaded[0]["model,sparsity_k"] == [("scc-dni", 4)]


def test_gpu_placement_puts_every_region_on_the_runs_gpu() -> None:
    spec = load_spec(epochs=2)
    placed = placed_spec(spec, "cuda:1")
    assert placed.device == "cuda:1" and placed.replace(device="cpu") == spec
    assert devices("cpu", 2, 3) == ["cpu"] * 3
    if torch.cuda.is_available():
        assert devices("cuda", 2, 1) == [
            f"cuda:{g}" for g in range(torch.cuda.device_count()) for _ in range(2)
        ]
    else:
        with pytest.raises(SpecError, match="no CUDA device"):
            devices("cuda", 2, 1)
    with pytest.raises(SpecError):
        devices("tpu", 1, 1)


SWEEP_ARGS = [
    "--inprocess",
    "--epochs",
    "3",
    "--no-figures",
    "--record-epochs",
    "all",
    "--vary",
    "model,sparsity_k=scc-dni:4,cc-dni:0,scc-dni:99",
    "--vary",
    "cerebellum_hidden=20,40",
    "--seeds",
    "0",
    "--slots",
    "2",
]


def _launch(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def tiny_sweep(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess]:
    """A 2 × 2 grid (K ∈ {4, full} × M ∈ {20, 40}) plus two invalid points (K = 99 > 2H)."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "tiny"
    return sweep_dir, _launch("sweep", "--sweep-dir", str(sweep_dir), *SWEEP_ARGS)


def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_tiny_sweep_completes_with_every_point_in_the_csv(tiny_sweep) -> None:
    sweep_dir, result = tiny_sweep
    assert result.returncode == 1, result.stderr  # the invalid points make it non-zero
    assert "4 ran, 0 already done, 0 failed, 2 invalid" in result.stdout
    rows = {r["name"]: r for r in _rows(sweep_dir)}
    assert len(rows) == 6
    completed_rows = [r for r in rows.values() if r["status"] == "completed"]
    assert len(completed_rows) == 4
    for r in completed_rows:
        assert float(r["last5_val_mse"]) > 0 and r["epochs_completed"] == "3"
        assert 0 <= float(r["r_h_first"]) <= 1 and r["architecture"] in ("4", "full")
        assert float(r["expansion_ratio"]) in (1.0, 2.0)
        assert (sweep_dir / "runs" / r["name"] / "summary.json").exists()
    invalid = [r for r in rows.values() if r["status"] == "invalid"]
    assert len(invalid) == 2  # failed alone, with the reason
    assert all("sparsity_k must lie in [0, 2H=20], got 99" in r["error"] for r in invalid)
    assert "sparsity_k must lie" in result.stderr
    assert (sweep_dir / "sweep.toml").exists()


def test_rerun_starts_no_new_run(tiny_sweep) -> None:
    sweep_dir, _ = tiny_sweep
    pids = {
        p.name: json.loads((p / "summary.json").read_text())["pid"]
        for p in (sweep_dir / "runs").iterdir()
    }
    again = _launch("sweep", "--sweep-dir", str(sweep_dir), *SWEEP_ARGS, timeout=60)
    assert "0 ran, 4 already done, 0 failed, 2 invalid" in again.stdout, again.stderr
    for p in (sweep_dir / "runs").iterdir():
        assert json.loads((p / "summary.json").read_text())["pid"] == pids[p.name]
    assert len(_rows(sweep_dir)) == 6
    # done means: completed with the same spec; a point whose spec changed runs again
    base = {"inprocess": True, "epochs": 3, "figures": False, "record_epochs": "all"}
    grid = {
        "model,sparsity_k": [["scc-dni", 4], ["cc-dni", 0]],
        "cerebellum_hidden": [20, 40],
        "seed": [0],
    }
    same = Sweep(sweep_dir, base, grid, 1)
    assert all(completed(p) is not None for p in same.points)
    changed = Sweep(sweep_dir, {**base, "lr": 2e-3}, grid, 1)
    assert all(completed(p) is None for p in changed.points)


def test_inline_points_equal_the_sweeps_processes(tiny_sweep, tmp_path: Path) -> None:
    """``--inline`` (every point inside the experiment's own process) writes the same points,
    with the same numbers, as one ``launch.py run`` process per point, and skips them after."""
    from experiments.common import Placement, SweepPlan, run_plans

    sweep_dir, _ = tiny_sweep
    base = {"inprocess": True, "epochs": 3, "figures": False, "record_epochs": "all"}
    grid = {
        "model,sparsity_k": [["scc-dni", 4], ["cc-dni", 0]],
        "cerebellum_hidden": [20, 40],
        "seed": [0],
    }
    plan = SweepPlan("inline", base, grid)
    points = run_plans([plan], tmp_path, Placement(inline=True), echo=False)["inline"]
    assert [p.status for p in points] == ["completed"] * 4
    by_process = {r["name"]: r for r in _rows(sweep_dir)}
    inline = _rows(tmp_path / "inline")
    assert len(inline) == 4
    for row in inline:
        assert float(row["last5_val_mse"]) == float(by_process[row["name"]]["last5_val_mse"])
        assert float(row["r_h_first"]) == float(by_process[row["name"]]["r_h_first"])
    again = run_plans([plan], tmp_path, Placement(inline=True), echo=False)["inline"]
    assert [p.status for p in again] == ["skipped"] * 4


def test_report_draws_the_figures(tiny_sweep) -> None:
    """``launch.py report`` draws every figure the grid allows and writes report.md."""
    sweep_dir, _ = tiny_sweep
    result = _launch("report", str(sweep_dir), timeout=120)
    assert result.returncode == 0, result.stderr
    figures = sweep_dir / "figures"
    for name in (
        "heatmap_final_error.png",
        "learning_curves.png",
        "correlation_vs_error.png",
        "feedback_correlation.png",
    ):
        assert (figures / name).stat().st_size > 5_000, name
    assert not (figures / "error_vs_truncation.png").exists()  # T was not varied
    text = (sweep_dir / "report.md").read_text()
    assert "## M/N × K" in text and "## Failed points" in text and "got 99" in text
    assert "error_vs_truncation.png (error vs T: needs truncation varied)" in result.stdout


def test_report_of_a_missing_sweep_is_one_error_line(tmp_path: Path) -> None:
    """A folder that is not a sweep gets one error line and exit status 2."""
    result = _launch("report", str(tmp_path / "nothing"), timeout=60)
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_report_keeps_zero_dni_out_of_the_grid(tmp_path: Path) -> None:
    """The zero-DNI control (dense, M = 80) is a reference beside the LSTM in the M/N × K
    report, never averaged into the dense cerebellum's cell."""
    from ccdni.base.rundir import RunDirectory
    from ccdni.reporting.sweep_report import write_report

    sweep = tmp_path / "sweep"
    points = [  # name, model, architecture, M/N, final error
        ("cc-dni", "cc-dni", "full", 4.0, 60.0),
        ("scc-dni", "scc-dni", "4", 4.0, 58.0),
        ("scc-dni-2", "scc-dni", "4", 2.0, 62.0),
        ("zero-dni", "zero-dni", "full", 4.0, 70.0),
        ("lstm", "lstm", "lstm", "", 80.0),
    ]
    rows = []
    for name, model, arch, mn, error in points:
        run = RunDirectory(sweep / "runs" / name)
        run.path.mkdir(parents=True)
        for epoch in range(3):
            run.append_metric({"region": "area0", "epoch": epoch, "val_mse": error + 3 - epoch})
        rows.append(
            {
                "name": name,
                "model": model,
                "cerebellum_hidden": 20 * mn if mn else "",
                "seed": 0,
                "status": "completed",
                "architecture": arch,
                "expansion_ratio": mn,
                "last5_val_mse": error,
            }
        )
    with open(sweep / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (sweep / "sweep.toml").write_text(
        '[base]\n[[grid]]\ncerebellum_hidden = [40, 80]\n"model,sparsity_k" = '
        '[["scc-dni", 4], ["cc-dni", 0]]\n[[grid]]\nmodel = ["lstm", "zero-dni"]\n'
    )
    text = write_report(sweep).markdown.read_text()
    assert "| 4 | **58 ± —** | 60 ± — |" in text
    assert "zero-DNI (control) (cerebellum frozen at 0): 70" in text
    assert "LSTM (no cerebellum): 80" in text
