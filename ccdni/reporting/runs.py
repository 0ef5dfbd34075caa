"""The finished runs of a sweep, read through :class:`ccdni.base.rundir.RunDirectory`, for the
reports and the claims page: which spec each run had, its headline metric per epoch, its final
number, and selections of runs paired by seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import RunSpec, SpecError
from ccdni.tasks.base import Headline, headline


@dataclass
class RunRecord:
    """One completed run: its spec, its headline metric and (lazily) its curves."""

    name: str
    run: RunDirectory
    spec: RunSpec
    summary: dict[str, Any]
    _curves: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict, repr=False)

    @property
    def headline(self) -> Headline:
        return headline(self.spec)

    @property
    def model(self) -> str:
        return self.spec.model

    @property
    def seed(self) -> int:
        return self.spec.seed

    def get(self, name: str) -> Any:
        """A spec field (``model``, ``truncation``, ``ablate``, ``update``, ``gamma`` …)."""
        return getattr(self.spec, name)

    def series(self, key: str | None = None) -> tuple[list[int], list[float]]:
        """(0-based epochs, values) of ``key`` (default: the headline metric)."""
        key = key or self.headline.metric
        if key not in self._curves:
            self._curves[key] = self.run.series(key)
        return self._curves[key]

    def final(self, last: int = 1, key: str | None = None) -> float:
        """The mean of the last ``last`` epochs' values of ``key`` (the headline metric)."""
        _, values = self.series(key)
        if not values:
            return math.nan
        tail = values[-last:]
        return sum(tail) / len(tail)

    def mean_over_epochs(self, key: str | None = None, upto: int | None = None) -> float:
        """The mean over every epoch (the first ``upto``): the area under the learning curve,
        a measure of learning speed."""
        epochs, values = self.series(key)
        chosen = [v for e, v in zip(epochs, values) if upto is None or e < upto]
        return sum(chosen) / len(chosen) if chosen else math.nan

    def window(self, end: int, width: int = 5, key: str | None = None) -> float:
        """The mean over the ``width`` epochs ending at 1-based epoch ``end``."""
        epochs, values = self.series(key)
        chosen = [v for e, v in zip(epochs, values) if end - width <= e < end]
        return sum(chosen) / len(chosen) if chosen else math.nan


def load_runs(sweep_dir: str | Path, statuses: Iterable[str] = ("completed",)) -> list[RunRecord]:
    """Every run under ``SWEEP/runs`` whose summary status is one of ``statuses`` and whose
    spec can be read (runs of an older spec that no longer loads are left out)."""
    root = Path(sweep_dir) / "runs"
    if not root.is_dir():
        return []
    wanted = set(statuses)
    out = []
    for path in sorted(root.iterdir()):
        run = RunDirectory(path)
        summary = run.summary()
        if summary is None or summary.get("status") not in wanted:
            continue
        try:
            spec = run.spec()
        except SpecError:
            continue
        if summary.get("epochs_completed", spec.epochs) < spec.epochs:
            continue
        out.append(RunRecord(path.name, run, spec, summary))
    return out


def select(records: Iterable[RunRecord], **where: Any) -> list[RunRecord]:
    """The records whose spec fields equal every ``where`` value."""
    return [r for r in records if all(r.get(k) == v for k, v in where.items())]


def by_seed(records: Iterable[RunRecord], value: Callable[[RunRecord], float]) -> dict[int, float]:
    """seed → ``value(record)`` (one record per seed expected; the last wins)."""
    return {r.seed: value(r) for r in records}


def values_of(records: Sequence[RunRecord], name: str) -> list[Any]:
    """The distinct values of a spec field over ``records``, sorted."""
    return sorted({r.get(name) for r in records}, key=lambda v: (str(type(v)), v))


def paired_by_seed(
    a: Iterable[RunRecord], b: Iterable[RunRecord], value: Callable[[RunRecord], float]
):
    """``value(a) − value(b)`` over the seeds both selections have (:class:`Paired`)."""
    from ccdni.reporting.stats import paired

    return paired(by_seed(a, value), by_seed(b, value))
