"""Sweeps: a grid of runs placed onto CPU slots and GPUs (``launch.py sweep``).

A sweep is a base spec plus a grid (spec fields × seeds). Each grid point becomes one run
directory under ``SWEEP/runs/NAME``, started as its own ``launch.py run`` subprocess (so a
crash or a bad spec fails that point alone). Places: CPU slots (default: the number of cores;
each process keeps one intra-op thread) or, with ``--device cuda`` on a CUDA machine, a bounded
number of concurrent runs per GPU (``--runs-per-gpu``), each run's regions on its GPU.

``SWEEP/results.csv`` holds one row per finished point and grows as runs finish; re-running
the same sweep skips every point whose run completed. ``SWEEP/sweep.toml`` records the grid.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.spec import FIELDS, RunSpec, SpecError, coerce, load_spec, read_toml, to_toml

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Point:
    """One grid point: its name, the values that vary, and its spec (or why it is invalid)."""

    name: str
    values: dict[str, Any]
    spec: RunSpec | None
    error: str | None = None
    status: str = "pending"
    device: str = "cpu"
    process: subprocess.Popen | None = None
    started: float = 0.0
    wall: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)


def parse_values(name: str, text: str) -> list[Any]:
    """``"1,2,4"`` or ``"0-9"`` (integer ranges) → typed values for field ``name``."""
    values: list[Any] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind = type(FIELDS[name].default) if name in FIELDS else str
        if kind is int and "-" in part[1:]:
            low, high = part.split("-", 1) if not part.startswith("-") else (part, "")
            values.extend(range(int(low), int(high) + 1))
        else:
            values.append(coerce(name, part) if name in FIELDS else part)
    if not values:
        raise SpecError(f"grid field {name!r} has no values")
    return values


def point_name(values: dict[str, Any]) -> str:
    return "_".join(f"{k}={v}" for k, v in values.items()).replace("/", "-") or "base"


def expand(base: dict[str, Any], grid: dict[str, list[Any]], sweep_dir: Path) -> list[Point]:
    """Every combination of the grid, each with its validated spec."""
    for name in grid:
        if name not in FIELDS:
            raise SpecError(f"unknown grid field {name!r}")
    points = []
    names = list(grid)
    for combo in itertools.product(*(grid[n] for n in names)):
        values = dict(zip(names, combo))
        name = point_name(values)
        overrides = {
            **base,
            **values,
            "run_name": name,
            "runs_dir": str(sweep_dir / "runs"),
            "progress": False,
        }
        try:
            spec = load_spec(**overrides)
        except SpecError as exc:
            points.append(Point(name, values, None, error=str(exc), status="invalid"))
            continue
        points.append(Point(name, values, spec))
    return points


def completed(point: Point) -> dict[str, Any] | None:
    if point.spec is None:
        return None
    path = Path(point.spec.runs_dir) / point.name / "summary.json"
    if path.exists():
        summary = json.loads(path.read_text())
        if summary.get("status") == "completed":
            return summary
    return None


def devices(kind: str, runs_per_gpu: int, slots: int) -> list[str]:
    """The places runs go to: one entry per concurrent slot."""
    if kind.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SpecError("--device cuda asked for, but no CUDA device is available")
        gpus = range(torch.cuda.device_count())
        return [f"cuda:{g}" for g in gpus for _ in range(runs_per_gpu)]
    return ["cpu"] * slots


RESULT_KEYS = ("train_loss", "val_mse", "val_error_pct", "val_mse_x100", "val_loss")


def row(point: Point) -> dict[str, Any]:
    summary = point.summary
    final = summary.get("final", {})
    last5 = summary.get("last5_mean", {})
    out: dict[str, Any] = {"name": point.name, **point.values, "status": point.status}
    for key in RESULT_KEYS:
        if key in final:
            out[f"final_{key}"] = final[key]
        if key in last5:
            out[f"last5_{key}"] = last5[key]
    out["cerebellar_loss_final"] = summary.get("cerebellar_loss_final")
    out["epochs_completed"] = summary.get("epochs_completed")
    out["wall_seconds"] = summary.get("wall_seconds", round(point.wall, 3))
    out["device"] = point.device
    out["error"] = point.error or summary.get("reason") or ""
    return out


def write_results(path: Path, points: list[Point]) -> None:
    rows = [row(p) for p in points if p.status in ("completed", "failed", "invalid", "skipped")]
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


class Sweep:
    """Runs the grid with bounded concurrency, writing results as runs finish."""

    def __init__(
        self,
        sweep_dir: Path,
        base: dict[str, Any],
        grid: dict[str, list[Any]],
        slots: int,
        device: str = "cpu",
        runs_per_gpu: int = 2,
        log: Any = None,
    ):
        self.dir = Path(sweep_dir)
        self.base = base
        self.grid = grid
        self.places = devices(device, runs_per_gpu, slots)
        self.log = log
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "console").mkdir(exist_ok=True)
        self.points = expand(base, grid, self.dir)
        self.results_path = self.dir / "results.csv"

    def record_grid(self) -> None:
        lines = ["# ccdni sweep: base spec and grid", "[base]"]
        lines += to_toml(load_spec(**self.base)).splitlines()[1:] if self.base else []
        lines.append("[grid]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in self.grid.items()]
        (self.dir / "sweep.toml").write_text("\n".join(lines) + "\n")

    def start(self, point: Point, device: str) -> None:
        assert point.spec is not None
        spec = point.spec if device == "cpu" else point.spec.replace(device=device)
        spec_path = self.dir / "console" / f"{point.name}.toml"
        spec_path.write_text(to_toml(spec))
        run_dir = Path(spec.runs_dir) / point.name
        if run_dir.exists():  # an earlier attempt that did not complete: start it over
            import shutil

            shutil.rmtree(run_dir)
        out = open(self.dir / "console" / f"{point.name}.txt", "w")  # noqa: SIM115
        env = {**os.environ, "OMP_NUM_THREADS": str(spec.threads)}
        point.process = subprocess.Popen(
            [sys.executable, str(ROOT / "launch.py"), "run", "--spec", str(spec_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
        )
        out.close()
        point.device = device
        point.status = "running"
        point.started = time.monotonic()

    def finish(self, point: Point) -> None:
        assert point.process is not None and point.spec is not None
        point.wall = time.monotonic() - point.started
        summary_path = Path(point.spec.runs_dir) / point.name / "summary.json"
        point.summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        ok = point.process.returncode == 0 and point.summary.get("status") == "completed"
        point.status = "completed" if ok else "failed"
        if not ok and not point.summary.get("reason"):
            console = (self.dir / "console" / f"{point.name}.txt").read_text().strip()
            point.error = (
                console.splitlines()[-1] if console else f"exit {point.process.returncode}"
            )
        point.process = None

    def run(self, progress: Any = None) -> list[Point]:
        """Run every pending point; returns all points with their status."""
        self.record_grid()
        queue: deque[Point] = deque()
        for point in self.points:
            summary = completed(point)
            if summary is not None:
                point.status, point.summary = "skipped", summary
            elif point.status == "pending":
                queue.append(point)
        write_results(self.results_path, self.points)
        free = list(self.places)
        running: list[Point] = []
        try:
            while queue or running:
                while queue and free:
                    point = queue.popleft()
                    self.start(point, free.pop(0))
                    running.append(point)
                time.sleep(0.2)
                for point in list(running):
                    if point.process is not None and point.process.poll() is not None:
                        free.append(point.device)
                        self.finish(point)
                        running.remove(point)
                        write_results(self.results_path, self.points)
                if progress is not None:
                    progress(self.points)
        except KeyboardInterrupt:
            for point in running:
                if point.process is not None:
                    point.process.terminate()
            for point in running:
                if point.process is not None:
                    try:
                        point.process.wait(30)
                    except subprocess.TimeoutExpired:
                        point.process.kill()
                        point.process.wait()
                    point.status = "failed"
                    point.error = "interrupted"
                    point.process = None
            write_results(self.results_path, self.points)
            raise
        write_results(self.results_path, self.points)
        return self.points


def load_grid(path: str | Path) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A sweep TOML: ``[base]`` spec fields and ``[grid]`` lists of values."""
    data = read_toml(path, table=None)
    base = data.get("base", {})
    grid = {k: v if isinstance(v, list) else [v] for k, v in data.get("grid", {}).items()}
    unknown = set(data) - {"base", "grid"}
    if unknown:
        raise SpecError(f"sweep file {path}: unknown tables {sorted(unknown)} (use [base], [grid])")
    return base, grid
