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
the same sweep skips every point whose run completed with the same spec. ``SWEEP/sweep.toml``
records the base and the grid, and a re-run whose base or grid differs from it is refused
with the difference (:class:`SweepChanged`) unless it is told ``new`` (the sweep goes into a
new folder beside the old one, ``SWEEP-2``, ...) or ``force`` (it runs here; the old
``sweep.toml``, ``results.csv``, console logs and every run directory that is not a finished
point of the new grid move to ``SWEEP/previous/N/`` first). Nothing a sweep wrote is ever
deleted: an unfinished earlier attempt of a point is moved to ``SWEEP/previous/attempts/``
before the point runs again. The sweep's folder name and every point name are safe single
path components (:func:`ccdni.base.rundir.validate_name`).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
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

from ccdni.base.rundir import RunDirectory, validate_name
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
    """``model=cc-dni_seed=0``: the values it sets, any character outside the safe set of
    :func:`ccdni.base.rundir.validate_name` (a path separator, a space, ...) as ``-``."""
    name = "_".join(f"{k}={v}" for k, v in values.items()) or "base"
    name = re.sub(r"[^A-Za-z0-9_.=+,@-]", "-", name)
    while ".." in name:
        name = name.replace("..", ".")
    return validate_name(name.lstrip(".-") or "base", "point name")


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
    if run_dir is None:
        return None
    summary = RunDirectory(run_dir).summary()
    if summary is None or summary.get("status") != "completed":
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


class SweepChanged(SpecError):
    """The sweep folder records another sweep; the text says how it differs."""


def recorded_sweep(sweep_dir: Path) -> tuple[dict[str, Any], list[Grid]] | None:
    """The base and grids ``SWEEP/sweep.toml`` records (None if there is none)."""
    path = Path(sweep_dir) / "sweep.toml"
    if not path.exists():
        return None
    base, grids = load_grid(path)
    return {k: coerce(k, v) for k, v in base.items()}, grids


def sweep_difference(
    old: tuple[dict[str, Any], list[Grid]], base: dict[str, Any], grids: list[Grid]
) -> list[str]:
    """How a sweep (``base``, ``grids``) differs from a recorded one: ``"epochs: 2 → 3"``, ..."""
    old_base, old_grids = old
    new_base = {k: coerce(k, v) for k, v in base.items()}
    changes = [
        f"{key}: {old_base.get(key, '(unset)')} → {new_base.get(key, '(unset)')}"
        for key in dict.fromkeys([*old_base, *new_base])
        if old_base.get(key) != new_base.get(key)
    ]
    old_grids = [normalise_grid(g) for g in old_grids if g]
    new_grids = [normalise_grid(g) for g in grids if g]
    if old_grids != new_grids:
        if len(old_grids) == len(new_grids) == 1:
            (a,), (b,) = old_grids, new_grids
            changes += [
                f"grid {axis}: {a.get(axis, '(none)')} → {b.get(axis, '(none)')}"
                for axis in dict.fromkeys([*a, *b])
                if a.get(axis) != b.get(axis)
            ]
        else:
            changes.append(f"grids: {old_grids} → {new_grids}")
    return changes


def choose_sweep_dir(
    sweep_dir: Path, base: dict[str, Any], grids: list[Grid], new: bool, force: bool
) -> tuple[Path, list[str]]:
    """The folder the sweep runs in and how the sweep recorded there differs (empty: the same
    sweep, or none recorded); with ``new`` and a difference, a new folder beside it."""
    sweep_dir = Path(sweep_dir)
    validate_name(
        sweep_dir.resolve().name if sweep_dir.name == "" else sweep_dir.name, "sweep name"
    )
    try:
        recorded = recorded_sweep(sweep_dir)
    except SpecError as exc:
        recorded, damaged = None, str(exc)
    else:
        damaged = ""
    changes = [f"its sweep.toml is unreadable ({damaged})"] if damaged else []
    if recorded is not None:
        changes = sweep_difference(recorded, base, grids)
    if not changes:
        return sweep_dir, []
    if new:
        suffix = 2
        while (candidate := sweep_dir.with_name(f"{sweep_dir.name}-{suffix}")).exists():
            suffix += 1
        return candidate, changes
    return sweep_dir, changes


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
    run = RunDirectory(run_dir)
    val_keys = [k for k in RESULT_KEYS if k.startswith("val_")]
    series: dict[str, list[tuple[int, float]]] = {
        k: list(zip(*run.series(k))) for k in (*CORRELATION_KEYS, *val_keys)
    }
    if not any(series.values()):
        return {}
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
        new: bool = False,
        force: bool = False,
    ):
        if slots < 1 or runs_per_gpu < 1:
            raise SpecError("slots and runs_per_gpu must be at least 1")
        self.base = base
        self.grids = [grid] if isinstance(grid, dict) else list(grid)
        self.dir, self.changes = choose_sweep_dir(
            Path(sweep_dir), base, self.grids, new=new, force=force
        )
        self.new, self.force = new, force
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

    def check_recorded(self) -> None:
        """SweepChanged if the folder records another sweep and neither ``new`` nor ``force``
        was given (before :meth:`run` writes anything)."""
        if self.changes and not (self.new or self.force):
            raise SweepChanged(
                f"{self.dir / 'sweep.toml'} records another sweep ({'; '.join(self.changes)}): "
                f"pass --new to start a new sweep beside it, or --force to run here and keep "
                f"the old results in {self.dir / 'previous'}/"
            )

    def previous_dir(self, sub: str = "") -> Path:
        """A new numbered folder under ``SWEEP/previous/`` (``sub``: below it)."""
        root = self.dir / "previous" / sub if sub else self.dir / "previous"
        root.mkdir(parents=True, exist_ok=True)
        n = 1 + max((int(p.name) for p in root.iterdir() if p.name.isdigit()), default=0)
        target = root / str(n)
        target.mkdir()
        return target

    def set_aside_previous(self) -> None:
        """``force``: the recorded sweep's files and every run that is not a finished point of
        the new grid move to ``SWEEP/previous/N/``; finished points of the new grid stay."""
        target = self.previous_dir()
        (target / "differences.txt").write_text("\n".join(self.changes) + "\n")
        for name in ("sweep.toml", "results.csv", "console"):
            if (self.dir / name).exists():
                shutil.move(str(self.dir / name), str(target / name))
        keep = {p.name for p in self.points if p.spec is not None and completed(p) is not None}
        runs = self.dir / "runs"
        if runs.is_dir():
            for run_dir in sorted(runs.iterdir()):
                if run_dir.name not in keep:
                    (target / "runs").mkdir(exist_ok=True)
                    shutil.move(str(run_dir), str(target / "runs" / run_dir.name))
        self.log.info("sweep_set_aside", previous=str(target), changes=self.changes)

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
        if point.run_dir.exists():  # an earlier attempt that did not complete: kept aside
            target = self.previous_dir("attempts")
            shutil.move(str(point.run_dir), str(target / point.name))
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
        point.summary = RunDirectory(point.run_dir).summary() or {}
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
        self.check_recorded()
        if self.changes and self.force and (self.dir / "sweep.toml").exists():
            self.set_aside_previous()  # force: the recorded sweep moves to previous/N/
            (self.dir / "console").mkdir(exist_ok=True)
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
