"""The run directory: everything a run leaves behind.

::

    RUN/
      spec.toml            resolved spec (reload with --spec RUN/spec.toml)
      metrics.jsonl        one JSON object per region per epoch
      events.jsonl         process start/ready/exit/kill, shutdown stages, errors
      summary.json         final numbers, written at the end
      regions.json         each region's pid and endpoint while the run is alive
      logs/REGION.jsonl    each process's structlog output
      checkpoints/         state_dicts of every region
      results/             arrays for figures (e.g. reach trajectories)
      figures/             PNG figures
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ccdni.base.spec import RunSpec, SpecError, to_toml

# a run or sweep name is one path component: letters, digits and ``_ . = + , @ -``, not
# starting with ``.`` or ``-`` (no hidden files, nothing that reads as an option), no ``..``
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+,@-]{0,254}")


class RunDirectoryError(OSError):
    """A run directory (or a file in it) cannot be created or written; the text names the
    path and the reason (permission, full disk, ...)."""


def validate_name(name: str, what: str = "run name") -> str:
    """``name`` if it is a safe single path component, else SpecError saying why."""
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        reason = (
            "contains a path separator"
            if "/" in name or "\\" in name or os.sep in name
            else "contains '..'"
            if ".." in name
            else "must be 1-255 of A-Z a-z 0-9 _ . = + , @ - and not start with '.' or '-'"
        )
        raise SpecError(f"{what} {name!r} {reason}")
    return name


def describe_os_error(exc: OSError) -> str:
    """'No space left on device' etc., without the path (the caller names it)."""
    return exc.strerror or str(exc) or type(exc).__name__


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


class RunDirectory:
    """Paths and append-only writers of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metric_sinks: list[Callable[[dict[str, Any]], None]] = []  # e.g. TensorBoard

    @classmethod
    def create(cls, spec: RunSpec) -> RunDirectory:
        """Make a fresh run directory for ``spec`` (a numbered suffix avoids collisions).

        The name is validated first (SpecError); a directory that cannot be made or written
        (permissions, a full disk) raises RunDirectoryError naming it, and whatever this call
        had created is removed again."""
        name = spec.run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-{spec.default_run_name}"
        validate_name(name)
        root = Path(spec.runs_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirectoryError(
                f"cannot create the runs directory {root}: {describe_os_error(exc)}"
            ) from None
        path = root / name
        suffix = 1
        while True:
            try:
                path.mkdir()
                break
            except FileExistsError:
                suffix += 1
                path = root / f"{name}-{suffix}"
            except OSError as exc:
                raise RunDirectoryError(
                    f"cannot create a run directory in {root}: {describe_os_error(exc)}"
                ) from None
        run = cls(path)
        try:
            for sub in ("logs", "checkpoints", "results", "figures"):
                (path / sub).mkdir()
            (path / "spec.toml").write_text(to_toml(spec))
        except OSError as exc:
            shutil.rmtree(path, ignore_errors=True)
            raise RunDirectoryError(
                f"cannot write the run directory {path}: {describe_os_error(exc)}"
            ) from None
        return run

    @property
    def spec_path(self) -> Path:
        return self.path / "spec.toml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def regions_path(self) -> Path:
        return self.path / "regions.json"

    @property
    def keys_path(self) -> Path:
        """The run's CURVE keys (tcp transport): public/ (the allow-list), private/ (0700)."""
        return self.path / "keys"

    def log_path(self, region: str) -> Path:
        return self.path / "logs" / f"{region}.jsonl"

    def checkpoint_path(self, region: str) -> Path:
        return self.path / "checkpoints" / f"{region}.pt"

    def results_path(self, name: str) -> Path:
        return self.path / "results" / name

    def figure_path(self, name: str) -> Path:
        return self.path / "figures" / name

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        """Append one JSON line whole or not at all: a write cut short (a full disk) is cut
        back off, so the file never holds a torn record; then RunDirectoryError."""
        line = (json.dumps(record, default=_json_default) + "\n").encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirectoryError(f"cannot write {path}: {describe_os_error(exc)}") from None
        try:
            size = os.fstat(fd).st_size
            written = 0
            try:
                while written < len(line):
                    written += os.write(fd, line[written:])
            except OSError as exc:
                if written:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                raise RunDirectoryError(f"cannot write {path}: {describe_os_error(exc)}") from None
        finally:
            os.close(fd)

    def append_metric(self, record: dict[str, Any]) -> None:
        """Append one metrics row, tagged with its ``kind`` (see :data:`METRIC_KINDS`)."""
        record = tag_metric(record)
        self._append(self.metrics_path, record)
        for sink in self.metric_sinks:
            sink(record)

    def append_event(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"time": time.time(), "event": event, **fields}
        self._append(self.events_path, record)
        return record

    def write_json(self, path: Path, data: Any) -> None:
        """Replace ``path`` atomically (a private temporary file, then a rename); on failure
        the old file stays and RunDirectoryError names the file."""
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise RunDirectoryError(f"cannot write {path}: {describe_os_error(exc)}") from None

    def read_jsonl(self, path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
        return records

    def metrics(self, region: str | None = None) -> list[dict[str, Any]]:
        records = self.read_jsonl(self.metrics_path)
        return [r for r in records if region is None or r.get("region") == region]

    def events(self) -> list[dict[str, Any]]:
        return self.read_jsonl(self.events_path)

    # --- readers: the one way reports, figures, sweeps and experiments read a run --------------
    #
    # metrics.jsonl schema (docs/architecture.md, "metrics.jsonl"). Every row names its
    # ``region`` ("area0", …, "cerebellum", "olive") and its ``kind``:
    # ``"epoch"`` — a per-epoch record with the 0-based integer ``epoch`` it closes: an area's
    # task numbers (``train_loss``, the task's validation metrics ``val_*``, ``predictions``,
    # ``optimiser_steps``, correlations …), the olive's ``cerebellar_loss`` (or
    # ``cerebellar_loss/INTERFACE``), the cerebellum's ``weight_fingerprint``;
    # ``"final"`` — a region's end-of-run totals, with no ``epoch``. Rows written before the
    # ``kind`` field existed are read the same way (an integer ``epoch``: an epoch record). A
    # region that was dead for an epoch wrote no record for it; a resumed run may repeat an
    # epoch, the last record of an epoch wins.

    @staticmethod
    def is_epoch_record(record: dict[str, Any]) -> bool:
        """Whether a metrics row is a per-epoch record (see the schema above)."""
        kind = record.get("kind", "epoch")
        return kind == "epoch" and isinstance(record.get("epoch"), int)

    def _records(self) -> list[dict[str, Any]]:
        """Every metrics row, read once per change of the file."""
        path = self.metrics_path
        try:
            stat = path.stat()
        except FileNotFoundError:
            return []
        key = (stat.st_mtime_ns, stat.st_size)
        cached = getattr(self, "_metrics_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, self.read_jsonl(path))
            self._metrics_cache = cached
        return cached[1]

    def area_names(self) -> list[str]:
        """The cortical areas that recorded metrics, in chain order (area0, area1, …)."""
        names = {str(r.get("region")) for r in self._records()}
        areas = [n for n in names if n.startswith("area") and n[4:].isdigit()]
        return sorted(areas, key=lambda n: int(n[4:]))

    def scored_area(self) -> str | None:
        """The area whose numbers stand for the run: the only one, or a chain's last."""
        areas = self.area_names()
        return areas[-1] if areas else None

    def epoch_records(self, region: str | None = None, key: str | None = None) -> list[dict]:
        """The per-epoch records of ``region`` (default: the scored area), sorted by epoch,
        one per epoch; with ``key``, only the records holding a finite number under it."""
        region = region or self.scored_area()
        by_epoch: dict[int, dict[str, Any]] = {}
        for record in self._records():
            if record.get("region") == region and self.is_epoch_record(record):
                by_epoch[record["epoch"]] = record
        records = [by_epoch[e] for e in sorted(by_epoch)]
        if key is not None:
            records = [r for r in records if _finite(r.get(key))]
        return records

    def final_records(self, region: str | None = None) -> list[dict[str, Any]]:
        """The end-of-run records (totals) of ``region``, or of every region."""
        return [
            r
            for r in self._records()
            if not self.is_epoch_record(r) and (region is None or r.get("region") == region)
        ]

    def series(self, key: str, region: str | None = None) -> tuple[list[int], list[float]]:
        """(0-based epochs, values) of one per-epoch number of ``region`` (default: the
        scored area), over the epochs that recorded a finite value."""
        records = self.epoch_records(region, key)
        return [r["epoch"] for r in records], [float(r[key]) for r in records]

    def summary(self) -> dict[str, Any] | None:
        """summary.json (None while the run has not ended, or if it is unreadable)."""
        try:
            return json.loads(self.summary_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def status(self) -> str | None:
        """The run's final status ("completed", "failed", "stopped", …), None if unknown."""
        summary = self.summary()
        return None if summary is None else summary.get("status")

    def spec(self) -> RunSpec:
        """The run's resolved spec (``SpecError`` if it cannot be read)."""
        from ccdni.base.spec import load_spec

        return load_spec(self.spec_path)

    def events_named(self, *names: str) -> list[dict[str, Any]]:
        """The events.jsonl records whose ``event`` is one of ``names`` (all when none)."""
        return [e for e in self.events() if not names or e.get("event") in names]


METRIC_KINDS = ("epoch", "final")  # the values of a metrics row's ``kind``


class MetricSchemaError(ValueError):
    """A metrics row that does not follow the schema; the text says which field is wrong."""


def tag_metric(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its ``kind`` (right after ``region``), unless it names one itself:
    ``"epoch"`` when it carries an integer ``epoch``, ``"final"`` when it carries none.
    (Writing never refuses a row: :func:`check_metric` is what the tests hold every row to.)"""
    epoch = record.get("epoch")
    has_epoch = isinstance(epoch, int) and not isinstance(epoch, bool)
    kind = record.get("kind", "epoch" if has_epoch else "final")
    return {"region": record.get("region"), "kind": kind, **record}


def check_metric(record: dict[str, Any]) -> None:
    """MetricSchemaError unless ``record`` is a valid metrics.jsonl row: a string ``region``,
    ``kind`` one of :data:`METRIC_KINDS`, an ``"epoch"`` row with an integer ``epoch`` ≥ 0, a
    ``"final"`` row with no integer ``epoch``."""
    if not isinstance(record.get("region"), str) or not record["region"]:
        raise MetricSchemaError(f"metrics row without a region: {record!r}"[:200])
    kind, epoch = record.get("kind"), record.get("epoch")
    if kind not in METRIC_KINDS:
        raise MetricSchemaError(f"metrics row kind {kind!r} is not one of {METRIC_KINDS}")
    if kind == "epoch" and (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0):
        raise MetricSchemaError(f"epoch row of {record['region']} with epoch {epoch!r}")
    if kind == "final" and isinstance(epoch, int):
        raise MetricSchemaError(f"final row of {record['region']} with an epoch ({epoch!r})")


def _finite(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == value
        and abs(value) != float("inf")
    )
