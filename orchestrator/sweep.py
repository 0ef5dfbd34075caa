"""Sweeps: a grid of runs placed onto CPU slots and GPUs (``launch.py sweep``).

A sweep is a base spec plus a grid (spec fields × seeds). Each grid point becomes one run
directory under ``SWEEP/runs/NAME``, started as its own ``launch.py run`` subprocess (so a
crash or a bad spec fails that point alone). Places: CPU slots (default: the number of cores;
each process keeps one intra-op thread) or, with ``--device cuda`` on a CUDA machine, a bounded
number of concurrent runs per GPU (``--runs-per-gpu``; ``--device cuda:N`` uses GPU N only).
A run placed on a GPU gets ``device = "cuda:N"`` in its spec, so every one of its regions
(area, cerebellum, olive) puts its tensors on that GPU.

The grid:

- one axis per field, e.g. ``cerebellum_hidden = [20, 40]``: every combination is a point;
- a *linked* axis ``"model,sparsity_k" = [["scc-dni", 4], ["cc-dni", 0]]`` (on the command
  line ``--vary model,sparsity_k=scc-dni:4,cc-dni:0``) takes its fields' values together,
  so that e.g. dense cc-dni is not repeated for every K;
- several grids (``[[grid]]`` tables in a sweep file) make one sweep of their union, e.g. the
  M/N × K grid plus an LSTM baseline that has no M or K. Points are named after the values
  they set (``cerebellum_hidden=40_model=scc-dni_sparsity_k=4_seed=0``); duplicates count once.

``SWEEP/results.csv`` holds one row per finished point and grows as runs finish; re-running
the same sweep skips every point whose run completed with the same spec (a point whose spec
changed since is run again). ``SWEEP/sweep.toml`` records the base and the grid.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from ccdni.base.spec import FIELDS, RunSpec, SpecError, coerce, load_spec, read_toml, to_toml

ROOT = Path(__file__).resolve().parents[1]
log = structlog.get_logger()

Grid = dict[str, list[Any]]  # axis ("field" or "field1,field2") → values (tuples when linked)


@dataclass
class Point:
    """One grid point: its name, the values that vary, and its spec (or why it is invalid)."""

    name: str
    values: dict[str, Any]
    spec: RunSpec | None
    error: str | None = None
    status: str = "pending"  # pending → running → completed | failed; or skipped | invalid
    device: str = "cpu"
    process: subprocess.Popen | None = None
    started: float = 0.0
    wall: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path | None:
        return None if self.spec is None else Path(self.spec.runs_dir) / self.name


def axis_fields(axis: str) -> list[str]:
    """``"model,sparsity_k"`` → ``["model", "sparsity_k"]`` (a linked axis), checked."""
    names = [n.strip().replace("-", "_") for n in axis.split(",")]
    for name in names:
        if name not in FIELDS:
            raise SpecError(f"unknown grid field {name!r}")
    if len(set(names)) != len(names):
        raise SpecError(f"grid axis {axis!r} names a field twice")
    return names


def parse_values(name: str, text: str) -> list[Any]:
    """``"1,2,4"`` or ``"0-9"`` (integer ranges) → typed values for field ``name``.

    For a linked axis ``"a,b"`` each value is ``va:vb`` and becomes a tuple.
    """
    fields = axis_fields(name) if "," in name else [name]
    values: list[Any] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if len(fields) > 1:
            items = part.split(":")
            if len(items) != len(fields):
                raise SpecError(
                    f"grid axis {name!r}: value {part!r} needs {len(fields)} parts joined by ':'"
                )
            values.append(tuple(coerce(f, v) for f, v in zip(fields, items)))
            continue
        kind = type(FIELDS[name].default) if name in FIELDS else str
        if kind is int and "-" in part[1:]:
            low, high = part.split("-", 1) if not part.startswith("-") else (part, "")
            try:
                values.extend(range(int(low), int(high) + 1))
            except ValueError:
                raise SpecError(f"{name}={part!r} is not an integer range A-B") from None
        else:
            values.append(coerce(name, part) if name in FIELDS else part)
    if not values:
        raise SpecError(f"grid field {name!r} has no values")
    return values


def normalise_grid(grid: dict[str, Any]) -> Grid:
    """Check a grid's axes and coerce its values; linked values become tuples."""
    out: Grid = {}
    for axis, raw in grid.items():
        fields = axis_fields(axis)
        values = raw if isinstance(raw, list) else [raw]
        if not values:
            raise SpecError(f"grid axis {axis!r} has no values")
        typed: list[Any] = []
        for value in values:
            if len(fields) == 1:
                typed.append(coerce(fields[0], value))
                continue
            if not isinstance(value, (list, tuple)) or len(value) != len(fields):
                raise SpecError(
                    f"grid axis {axis!r}: value {value!r} must be a list of {len(fields)} values"
                )
            typed.append(tuple(coerce(f, v) for f, v in zip(fields, value)))
        out[",".join(fields)] = typed
    return out


def point_name(values: dict[str, Any]) -> str:
    return "_".join(f"{k}={v}" for k, v in values.items()).replace("/", "-") or "base"


def expand(base: dict[str, Any], grids: Grid | list[Grid], sweep_dir: Path) -> list[Point]:
    """Every combination of each grid (the union over grids), each with its validated spec."""
    grids = [grids] if isinstance(grids, dict) else list(grids)
    points: list[Point] = []
    seen: set[str] = set()
    for grid in grids:
        grid = normalise_grid(grid)
        axes = list(grid)
        for combo in itertools.product(*(grid[a] for a in axes)):
            values: dict[str, Any] = {}
            for axis, value in zip(axes, combo):
                names = axis.split(",")
                values.update(zip(names, value) if len(names) > 1 else [(axis, value)])
            name = point_name(values)
            if name in seen:
                continue
            seen.add(name)
            for reserved in ("run_name", "runs_dir"):
                if reserved in values:
                    raise SpecError(f"{reserved} is set by the sweep itself")
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
    """The summary of the point's finished run, if it completed with the point's spec."""
    run_dir = point.run_dir
    if run_dir is None or not (run_dir / "summary.json").exists():
        return None
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary.get("status") != "completed":
        return None
    try:
        recorded = load_spec(run_dir / "spec.toml")
    except SpecError:
        return summary  # written by an older version of the spec: keep it
    assert point.spec is not None
    if recorded.replace(device="cpu") != point.spec.replace(device="cpu"):
        log.warning("spec_changed", point=point.name, action="run again")
        return None
    return summary


def devices(kind: str, runs_per_gpu: int, slots: int) -> list[str]:
    """The places runs go to: one entry per concurrent slot.

    ``cpu``: ``slots`` entries. ``cuda``: every visible GPU ``runs_per_gpu`` times.
    ``cuda:N``: GPU N only, ``runs_per_gpu`` times.
    """
    if kind.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SpecError(f"--device {kind} asked for, but no CUDA device is available")
        count = torch.cuda.device_count()
        if ":" in kind:
            index = kind.split(":", 1)[1]
            if not index.isdigit() or int(index) >= count:
                raise SpecError(f"--device {kind}: there are {count} CUDA devices")
            gpus: list[int] = [int(index)]
        else:
            gpus = list(range(count))
        return [f"cuda:{g}" for g in gpus for _ in range(runs_per_gpu)]
    if kind != "cpu":
        raise SpecError(f"--device {kind!r}: sweeps place runs on 'cpu' or 'cuda[:N]'")
    return ["cpu"] * slots


def placed_spec(spec: RunSpec, device: str) -> RunSpec:
    """The spec a run gets on ``device``: every region of the run uses that device."""
    return spec if spec.device == device else spec.replace(device=device)


# --- results ----------------------------------------------------------------------------------

RESULT_KEYS = ("train_loss", "val_mse", "val_error_pct", "val_mse_x100", "val_loss")
SPEC_COLUMNS = (
    "task",
    "model",
    "hidden",
    "truncation",
    "cerebellum_hidden",
    "sparsity_k",
    "bias_factor",
    "lr",
    "epochs",
    "seed",
)
CORRELATION_KEYS = ("r_h", "r_pop_h", "r_g", "r_pop_g")


def architecture(spec: RunSpec) -> str:
    """A label for the cerebellum: 'lstm' (none), 'full' (dense cc-dni) or K (scc-dni)."""
    if spec.model == "lstm":
        return "lstm"
    return "full" if spec.granule_inputs is None else str(spec.granule_inputs)


def curve_columns(run_dir: Path) -> dict[str, Any]:
    """From the run's metrics.jsonl: the mean over every epoch of each validation metric
    (``mean_val_mse``: the area under the learning curve, a measure of learning speed), and
    for each correlation measure of the area its first recorded value (and epoch), its mean
    over the recorded epochs, over those in the first half of the run (``_early``) and in the
    second half (``_late``), and its last value."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    val_keys = [k for k in RESULT_KEYS if k.startswith("val_")]
    series: dict[str, list[tuple[int, float]]] = {k: [] for k in (*CORRELATION_KEYS, *val_keys)}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if not str(record.get("region", "")).startswith("area"):
            continue
        for key in series:
            value = record.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                series[key].append((int(record.get("epoch", 0)), float(value)))
    out: dict[str, Any] = {}
    for key in val_keys:
        if series[key]:
            out[f"mean_{key}"] = sum(v for _, v in series[key]) / len(series[key])
    epochs = 1 + max((e for points in series.values() for e, _ in points), default=0)
    for key in CORRELATION_KEYS:
        points = series[key]
        if not points:
            continue
        out[f"{key}_first"] = points[0][1]
        out[f"{key}_first_epoch"] = points[0][0]
        out[f"{key}_mean"] = sum(v for _, v in points) / len(points)
        for half, chosen in (
            ("early", [v for e, v in points if e < epochs / 2]),
            ("late", [v for e, v in points if e >= epochs / 2]),
        ):
            if chosen:
                out[f"{key}_{half}"] = sum(chosen) / len(chosen)
        out[f"{key}_last"] = points[-1][1]
    return out


def row(point: Point) -> dict[str, Any]:
    """One results.csv row: grid values, resolved spec columns, final numbers, correlations."""
    summary = point.summary
    final = summary.get("final", {})
    last5 = summary.get("last5_mean", {})
    out: dict[str, Any] = {"name": point.name, **point.values, "status": point.status}
    if point.spec is not None:
        for name in SPEC_COLUMNS:
            out.setdefault(name, getattr(point.spec, name))
        out["expansion_ratio"] = point.spec.expansion_ratio if point.spec.uses_cerebellum else ""
        out["architecture"] = architecture(point.spec)
    for key in RESULT_KEYS:
        if key in final:
            out[f"final_{key}"] = final[key]
        if key in last5:
            out[f"last5_{key}"] = last5[key]
    out["cerebellar_loss_final"] = summary.get("cerebellar_loss_final")
    out["epochs_completed"] = summary.get("epochs_completed")
    if point.status in ("completed", "skipped") and point.run_dir is not None:
        out.update(curve_columns(point.run_dir))
    out["wall_seconds"] = summary.get("wall_seconds", round(point.wall, 3))
    out["device"] = point.device
    out["error"] = point.error or summary.get("reason") or ""
    return out


def write_results(path: Path, points: list[Point], rows: dict[str, dict[str, Any]]) -> None:
    """Rewrite results.csv atomically from the rows of every finished point."""
    done = [rows[p.name] for p in points if p.name in rows]
    columns: list[str] = []
    for r in done:
        columns.extend(k for k in r if k not in columns)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(done)
    os.replace(tmp, path)


class Sweep:
    """Runs the grid with bounded concurrency, writing results as runs finish."""

    def __init__(
        self,
        sweep_dir: Path,
        base: dict[str, Any],
        grid: Grid | list[Grid],
        slots: int,
        device: str = "cpu",
        runs_per_gpu: int = 2,
        log: Any = None,
    ):
        if slots < 1 or runs_per_gpu < 1:
            raise SpecError("slots and runs_per_gpu must be at least 1")
        self.dir = Path(sweep_dir)
        self.base = base
        self.grids = [grid] if isinstance(grid, dict) else list(grid)
        self.places = devices(device, runs_per_gpu, slots)
        specs = [p.spec for p in expand(base, self.grids, Path(sweep_dir)) if p.spec]
        if len(self.places) > 1 and any(spec.pin_cores for spec in specs):
            raise SpecError(
                "pin_cores pins area k of every concurrent run to the same core: "
                "sweep pinned runs with one slot (--slots 1)"
            )
        if any(spec.area_devices for spec in specs):
            raise SpecError("area_devices places one run's areas; a sweep places whole runs")
        self.log = log if log is not None else structlog.get_logger()
        self.points = expand(base, self.grids, self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "console").mkdir(exist_ok=True)
        self.results_path = self.dir / "results.csv"
        self.rows: dict[str, dict[str, Any]] = {}

    @property
    def concurrency(self) -> int:
        return len(self.places)

    def record_grid(self) -> None:
        """SWEEP/sweep.toml: the base spec and the grid(s), reloadable with ``--grid``."""
        lines = ["# ccdni sweep: base spec and grid (launch.py sweep --grid THIS_FILE)", "[base]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in self.base.items()]
        for grid in self.grids:
            lines.append("[[grid]]" if len(self.grids) > 1 else "[grid]")
            for axis, values in normalise_grid(grid).items():
                lines.append(f"{json.dumps(axis)} = {json.dumps(values)}")
        (self.dir / "sweep.toml").write_text("\n".join(lines) + "\n")

    def start(self, point: Point, device: str) -> None:
        assert point.spec is not None and point.run_dir is not None
        spec = placed_spec(point.spec, device)
        spec_path = self.dir / "console" / f"{point.name}.toml"
        spec_path.write_text(to_toml(spec))
        if point.run_dir.exists():  # an earlier attempt that did not complete: start it over
            shutil.rmtree(point.run_dir)
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
        assert point.process is not None and point.run_dir is not None
        point.wall = time.monotonic() - point.started
        summary_path = point.run_dir / "summary.json"
        point.summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        ok = point.process.returncode == 0 and point.summary.get("status") == "completed"
        point.status = "completed" if ok else "failed"
        if not ok and not point.summary.get("reason"):
            console = (self.dir / "console" / f"{point.name}.txt").read_text().strip()
            lines = [line for line in console.splitlines() if line.strip()]
            point.error = lines[-1] if lines else f"exit status {point.process.returncode}"
        point.process = None
        self.rows[point.name] = row(point)

    def pending(self) -> deque[Point]:
        """Mark finished points as skipped; the queue of points to run."""
        queue: deque[Point] = deque()
        for point in self.points:
            if point.status == "invalid":
                self.rows[point.name] = row(point)
                continue
            summary = completed(point)
            if summary is not None:
                point.status, point.summary = "skipped", summary
                self.rows[point.name] = row(point)
            else:
                point.status = "pending"
                queue.append(point)
        return queue

    def run(self, progress: Callable[[list[Point]], None] | None = None) -> list[Point]:
        """Run every pending point; returns all points with their status.

        ``progress`` is called with every point after each change of state and at least
        every 0.2 s while runs go on.
        """
        self.record_grid()
        queue = self.pending()
        write_results(self.results_path, self.points, self.rows)
        self.log.info(
            "sweep_start",
            points=len(self.points),
            to_run=len(queue),
            places=self.places,
            sweep_dir=str(self.dir),
        )
        free = list(self.places)
        running: list[Point] = []
        try:
            while queue or running:
                while queue and free:
                    point = queue.popleft()
                    self.start(point, free.pop(0))
                    running.append(point)
                if progress is not None:
                    progress(self.points)
                time.sleep(0.2)
                for point in list(running):
                    if point.process is not None and point.process.poll() is not None:
                        free.append(point.device)
                        self.finish(point)
                        running.remove(point)
                        write_results(self.results_path, self.points, self.rows)
        except KeyboardInterrupt:
            self.interrupt(running)
            raise
        finally:
            if progress is not None:
                progress(self.points)
        write_results(self.results_path, self.points, self.rows)
        return self.points

    def interrupt(self, running: list[Point]) -> None:
        for point in running:
            if point.process is not None:
                point.process.terminate()
        for point in running:
            if point.process is None:
                continue
            try:
                point.process.wait(30)
            except subprocess.TimeoutExpired:
                point.process.kill()
                point.process.wait()
            point.status = "failed"
            point.error = "interrupted"
            point.process = None
            self.rows[point.name] = row(point)
        write_results(self.results_path, self.points, self.rows)


def load_grid(path: str | Path) -> tuple[dict[str, Any], list[Grid]]:
    """A sweep TOML: ``[base]`` spec fields and a ``[grid]`` table (or ``[[grid]]`` tables)."""
    data = read_toml(path, table=None)
    unknown = set(data) - {"base", "grid"}
    if unknown:
        raise SpecError(f"sweep file {path}: unknown tables {sorted(unknown)} (use [base], [grid])")
    base = data.get("base", {})
    raw = data.get("grid", {})
    tables = raw if isinstance(raw, list) else [raw]
    grids = [normalise_grid(t) for t in tables if t]
    return base, grids
