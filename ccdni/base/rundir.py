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

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ccdni.base.spec import RunSpec, to_toml


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
        """Make a fresh run directory for ``spec`` (a numbered suffix avoids collisions)."""
        name = spec.run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-{spec.default_run_name}"
        root = Path(spec.runs_dir)
        root.mkdir(parents=True, exist_ok=True)
        path = root / name
        suffix = 1
        while True:
            try:
                path.mkdir()
                break
            except FileExistsError:
                suffix += 1
                path = root / f"{name}-{suffix}"
        run = cls(path)
        for sub in ("logs", "checkpoints", "results", "figures"):
            (path / sub).mkdir()
        (path / "spec.toml").write_text(to_toml(spec))
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

    def log_path(self, region: str) -> Path:
        return self.path / "logs" / f"{region}.jsonl"

    def checkpoint_path(self, region: str) -> Path:
        return self.path / "checkpoints" / f"{region}.pt"

    def results_path(self, name: str) -> Path:
        return self.path / "results" / name

    def figure_path(self, name: str) -> Path:
        return self.path / "figures" / name

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=_json_default) + "\n")
            fh.flush()

    def append_metric(self, record: dict[str, Any]) -> None:
        self._append(self.metrics_path, record)
        for sink in self.metric_sinks:
            sink(record)

    def append_event(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"time": time.time(), "event": event, **fields}
        self._append(self.events_path, record)
        return record

    def write_json(self, path: Path, data: Any) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
        os.replace(tmp, path)

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
