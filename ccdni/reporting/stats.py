"""The statistics every report shares: mean ± s.e.m. over seeds, differences paired by seed
with a paired t-test and its 95 % interval (scipy.stats), and seed bands of curves.

Runs of different models with the same seed start from the same cortical network and see the
same data in the same order, so comparisons between models are paired by seed: the paired
difference removes most of the seed-to-seed spread.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats


def finite(values: Iterable[Any]) -> list[float]:
    """The finite numbers of ``values`` (None, NaN and ±inf dropped)."""
    out = []
    for value in values:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append(float(value))
    return out


@dataclass(frozen=True)
class MeanSem:
    """Mean and standard error of the mean over ``n`` values (sem NaN when n < 2)."""

    mean: float
    sem: float
    n: int

    def text(self, digits: int = 2, n: bool = False) -> str:
        if self.n == 0:
            return "—"
        body = f"{self.mean:.{digits}f}"
        if self.n > 1:
            body += f" ± {self.sem:.{digits}f}"
        return body + (f" (n={self.n})" if n else "")


def mean_sem(values: Iterable[Any]) -> MeanSem:
    """Mean ± s.e.m. (sample s.d. / √n) of the finite values."""
    data = np.asarray(finite(values), dtype=float)
    if data.size == 0:
        return MeanSem(math.nan, math.nan, 0)
    sem = float(data.std(ddof=1) / math.sqrt(data.size)) if data.size > 1 else math.nan
    return MeanSem(float(data.mean()), sem, int(data.size))


@dataclass(frozen=True)
class Paired:
    """Differences a − b paired by key (seed): mean ± s.e.m., a 95 % t interval, and the
    two-sided p value of the paired t-test (``scipy.stats.ttest_rel``)."""

    diffs: tuple[float, ...]
    mean: float
    sem: float
    low: float  # 95 % confidence interval of the mean difference (t distribution)
    high: float
    p: float
    wins: int  # pairs with a − b < 0 (a lower)

    @property
    def n(self) -> int:
        return len(self.diffs)

    def text(self, digits: int = 2) -> str:
        """``+1.23 ± 0.45 (n=10, 95 % CI [+0.2, +2.2], p=0.021)``."""
        if self.n == 0:
            return "—"
        if self.n == 1:
            return f"{self.mean:+.{digits}f} (n=1)"
        return (
            f"{self.mean:+.{digits}f} ± {self.sem:.{digits}f} (n={self.n}, 95 % CI "
            f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}], p={p_text(self.p)})"
        )

    def short(self, digits: int = 2) -> str:
        """``+1.23 ± 0.45`` (p)."""
        if self.n == 0:
            return "—"
        if self.n == 1:
            return f"{self.mean:+.{digits}f}"
        return f"{self.mean:+.{digits}f} ± {self.sem:.{digits}f} (p={p_text(self.p)})"


def p_text(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    if p == 0:
        return "0"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def paired_from_diffs(diffs: Sequence[float]) -> Paired:
    """:class:`Paired` of differences already taken."""
    data = np.asarray(finite(diffs), dtype=float)
    n = int(data.size)
    if n == 0:
        return Paired((), math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    wins = int((data < 0).sum())
    if n == 1:
        return Paired(tuple(data.tolist()), mean, math.nan, math.nan, math.nan, math.nan, wins)
    sd = float(data.std(ddof=1))
    sem = sd / math.sqrt(n)
    if sd == 0.0:  # every pair equal: no spread to test against
        p = 1.0 if mean == 0.0 else 0.0
        return Paired(tuple(data.tolist()), mean, 0.0, mean, mean, p, wins)
    result = scipy_stats.ttest_1samp(data, 0.0)  # = ttest_rel on the pairs
    half = float(scipy_stats.t.ppf(0.975, n - 1)) * sem
    return Paired(
        tuple(data.tolist()), mean, sem, mean - half, mean + half, float(result.pvalue), wins
    )


def paired(a: Mapping[Any, float], b: Mapping[Any, float]) -> Paired:
    """a − b over the keys (seeds) both have a finite value for."""
    keys = [k for k in a if k in b and finite([a[k]]) and finite([b[k]])]
    return paired_from_diffs([a[k] - b[k] for k in keys])


def ratios(a: Mapping[Any, float], b: Mapping[Any, float]) -> MeanSem:
    """Mean ± s.e.m. of a / b over the keys both have (b ≠ 0)."""
    keys = [k for k in a if k in b and finite([a[k], b[k]]) == [a[k], b[k]] and b[k] != 0]
    return mean_sem(a[k] / b[k] for k in keys)


@dataclass(frozen=True)
class Band:
    """A per-epoch mean ± s.e.m. over runs, on the epochs every run has."""

    epochs: np.ndarray  # 1-based epoch numbers, for plotting
    mean: np.ndarray
    sem: np.ndarray
    n: int


def band(series: Sequence[tuple[Sequence[int], Sequence[float]]]) -> Band:
    """Seed band of several runs' (0-based epochs, values) series."""
    series = [(list(e), list(v)) for e, v in series if len(e)]
    if not series:
        empty = np.zeros(0)
        return Band(empty, empty, empty, 0)
    common = set(series[0][0])
    for epochs, _ in series[1:]:
        common &= set(epochs)
    order = sorted(common)
    stacked = np.asarray(
        [[dict(zip(e, v))[k] for k in order] for e, v in series], dtype=float
    )  # (runs, epochs)
    mean = stacked.mean(axis=0)
    sem = (
        stacked.std(axis=0, ddof=1) / math.sqrt(len(series))
        if len(series) > 1
        else np.zeros_like(mean)
    )
    return Band(np.asarray(order) + 1, mean, sem, len(series))


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rank correlation and its p value (NaN when undefined)."""
    pairs = [(a, b) for a, b in zip(x, y) if finite([a, b]) == [a, b]]
    if len(pairs) < 3:
        return math.nan, math.nan
    result = scipy_stats.spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    return float(result.statistic), float(result.pvalue)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r of the finite pairs (NaN when undefined)."""
    pairs = [(a, b) for a, b in zip(x, y) if finite([a, b]) == [a, b]]
    if len(pairs) < 3:
        return math.nan
    xs, ys = np.asarray(pairs).T
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return math.nan
    return float(np.corrcoef(xs, ys)[0, 1])
