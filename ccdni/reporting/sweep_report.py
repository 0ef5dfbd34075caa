"""The report of a sweep (``launch.py report SWEEP``): figures and a markdown table.

It reads ``SWEEP/results.csv`` (one row per point, see :mod:`orchestrator.sweep`),
``SWEEP/sweep.toml`` (which fields the grid varies) and each run's ``metrics.jsonl``, and
draws, into ``SWEEP/figures/``, whichever of these the grid has the fields for:

- ``heatmap_final_error.png`` — mean final error over seeds on an M/N × K grid (paper Fig. 5,
  S3b, S5): needs ``cerebellum_hidden`` varied (and ``model,sparsity_k`` for the K axis). K is the number of
  inputs per granule unit of scc-dni; "full" is dense cc-dni. The best cell is boxed.
- ``learning_curves.png`` — validation error per epoch, mean ± s.e.m. over seeds, one panel
  per condition (paper S3a, S4). On an M/N × K grid the panels are the cells; otherwise one
  line per cerebellum (LSTM grey, dense orange, sparse cyan) in one panel per value of the
  other fields. Runs without a value for a panel's field (the LSTM has no M/N) are drawn as a
  grey reference in every panel.
- ``correlation_vs_error.png`` — final error against r_h and r_pop_h at the first recorded
  epoch, one dot per run (paper Fig. 2e, S6 top), and the gain of the sparse cerebellum
  (error of dense − error of sparse, paired by seed and condition) against r_h.
- ``feedback_correlation.png`` — r_g and r_pop_g over the recorded epochs, mean ± s.e.m. over
  runs (paper Fig. 2f, S6 bottom), and the mean r_g of each run against its r_h.
- ``error_vs_truncation.png`` — final error against T with seed error bars (paper Fig. 2d):
  needs ``truncation`` varied.

With ``--metric COLUMN`` (e.g. ``mean_val_mse``, the mean over all epochs: the area under
the learning curve, i.e. learning speed) the figures and the markdown get ``-COLUMN`` in their
names, so that several metrics can be reported side by side.

``SWEEP/report.md`` holds a table of every condition (mean ± s.e.m. over seeds of the final
error, the correlations, wall time), the M/N × K table with its best cell, the paired
dense-vs-sparse table when both are present, the failed points, and links to the figures.
"""

from __future__ import annotations

import csv
import itertools
import math
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ccdni.base.rundir import RunDirectory
from ccdni.reporting import style
from ccdni.reporting.plotting import plt
from ccdni.reporting.stats import mean_sem as _mean_sem
from ccdni.reporting.tables import fmt, table_lines

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

METRICS = ("last5_val_error_pct", "last5_val_mse_x100", "last5_val_mse")
MODEL_COLOURS = style.MODEL_COLOURS
REFERENCES = ("lstm", "zero-dni")  # models without a learning cerebellum: no M/N, no K
FACTOR_LABELS = {
    "mn": "M/N",
    "arch": "K",
    "bias_factor": "b",
    "truncation": "T",
    "cerebellum_layers": "layers",
}
DPI = 100


class ReportError(RuntimeError):
    """The sweep directory cannot be reported on; the text says why."""


@dataclass
class Report:
    """What :func:`write_report` wrote."""

    markdown: Path
    figures: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass
class Run:
    """One finished point: its factors, final error, correlations and (lazily) its curves."""

    name: str
    row: dict[str, Any]
    path: Path
    error: float
    _metrics: list[dict[str, Any]] | None = None

    @property
    def arch(self) -> str:
        """'lstm', 'zero-dni' (the control: its cerebellum never learns, so M and K do not
        matter), 'full' (dense cc-dni) or K of scc-dni."""
        if self.model == "zero-dni":
            return "zero-dni"
        return str(self.row.get("architecture") or "")

    @property
    def model(self) -> str:
        return str(self.row.get("model") or "")

    def value(self, key: str) -> Any:
        if key == "arch":
            return self.arch or None
        if key == "mn":
            if self.arch in REFERENCES:
                return None
            mn = self.row.get("expansion_ratio")
            return mn if isinstance(mn, float) and math.isfinite(mn) else None
        value = self.row.get(key)
        return None if value == "" else value

    def number(self, key: str) -> float:
        value = self.row.get(key)
        return float(value) if isinstance(value, (int, float)) else math.nan

    def metrics(self) -> list[dict[str, Any]]:
        """The scored area's per-epoch records."""
        if self._metrics is None:
            self._metrics = RunDirectory(self.path).epoch_records()
        return self._metrics

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of one metric over the epochs that have it; epochs from 1."""
        points = [
            (m["epoch"] + 1, m[key])
            for m in self.metrics()
            if isinstance(m.get(key), (int, float)) and math.isfinite(m[key])
        ]
        if not points:
            return np.zeros(0), np.zeros(0)
        epochs, values = zip(*points)
        return np.asarray(epochs), np.asarray(values, dtype=float)


# --- loading -----------------------------------------------------------------------------------


def _parse(value: str) -> Any:
    if value == "":
        return ""
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value else number


def read_results(sweep_dir: Path) -> list[dict[str, Any]]:
    path = sweep_dir / "results.csv"
    if not path.exists():
        raise ReportError(f"{path} does not exist: is {sweep_dir} a sweep directory?")
    with open(path, newline="") as fh:
        rows = [{k: _parse(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    for r in rows:  # float columns stay floats even when their value is whole
        for key in ("expansion_ratio", "bias_factor", "lr"):
            if isinstance(r.get(key), int):
                r[key] = float(r[key])
    return rows


def grid_fields(sweep_dir: Path, rows: list[dict[str, Any]]) -> list[str]:
    """The spec fields the sweep varies (from sweep.toml; else the columns that vary)."""
    path = sweep_dir / "sweep.toml"
    names: list[str] = []
    if path.exists():
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        grids = data.get("grid", {})
        for grid in grids if isinstance(grids, list) else [grids]:
            for axis in grid:
                names.extend(n for n in axis.split(",") if n not in names)
    if not names:
        from orchestrator.sweep import SPEC_COLUMNS

        names = [c for c in SPEC_COLUMNS if len({str(r.get(c)) for r in rows}) > 1]
    return names


def factors_of(fields: list[str], runs: list[Run]) -> list[str]:
    """Report factors: model/sparsity_k → 'arch', cerebellum_hidden/hidden → 'mn'; seeds out."""
    factors: list[str] = []
    for name in fields:
        key = {"model": "arch", "sparsity_k": "arch", "cerebellum_hidden": "mn"}.get(name, name)
        if name == "hidden" and "cerebellum_hidden" in fields:
            key = "mn"
        if key == "seed" or key in factors:
            continue
        if len({r.value(key) for r in runs if r.value(key) is not None}) > 1:
            factors.append(key)
    return sorted(factors, key=lambda f: f == "arch")  # the cerebellum last: it is the hue


def _key(value: Any) -> Any:
    return "" if value is None else value


def arch_order(value: Any) -> tuple[int, float, str]:
    """LSTM first, then zero-DNI, then K ascending, dense ('full') last."""
    text = str(value)
    if text == "lstm":
        return (0, 0.0, text)
    if text == "zero-dni":
        return (0, 1.0, text)
    if text == "full":
        return (2, 0.0, text)
    try:
        return (1, float(text), text)
    except ValueError:
        return (1, math.inf, text)


def sort_values(factor: str, values: Iterable[Any]) -> list[Any]:
    unique = sorted({_key(v) for v in values}, key=lambda v: (str(type(v)), v))
    if factor == "arch":
        return sorted(unique, key=arch_order)
    return unique


def arch_label(value: Any) -> str:
    text = str(value)
    return {"lstm": "LSTM", "zero-dni": "zero-DNI (control)", "full": "cc-dni (K full)"}.get(
        text, f"scc-dni K={text}"
    )


def arch_colour(value: Any, sparse_values: list[Any]) -> Any:
    text = str(value)
    if text in REFERENCES:
        return MODEL_COLOURS[text]
    if text == "full":
        return MODEL_COLOURS["cc-dni"]
    if len(sparse_values) <= 1:
        return MODEL_COLOURS["scc-dni"]
    shades = plt.get_cmap("winter")(np.linspace(0.25, 1.0, len(sparse_values)))
    return shades[sparse_values.index(value)] if value in sparse_values else "tab:cyan"


def factor_text(factor: str, value: Any) -> str:
    if factor == "arch":
        return arch_label(value)
    return f"{FACTOR_LABELS.get(factor, factor)}={fmt(value)}"


def mean_sem(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, s.e.m., n) of the finite values (see :func:`ccdni.reporting.stats.mean_sem`)."""
    result = _mean_sem(values)
    return result.mean, result.sem, result.n


def curve_stats(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and s.e.m. over runs of a per-epoch metric, on the epochs every run has."""
    series = [r.series(key) for r in runs]
    series = [s for s in series if s[0].size]
    if not series:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    common = set(series[0][0].tolist())
    for epochs, _ in series[1:]:
        common &= set(epochs.tolist())
    epochs = np.asarray(sorted(common))
    stacked = np.stack([v[np.isin(e, epochs)] for e, v in series])  # (R, E)
    mean = stacked.mean(axis=0)
    sem = stacked.std(axis=0, ddof=1) / math.sqrt(len(series)) if len(series) > 1 else 0 * mean
    return epochs, mean, sem


# --- figures -------------------------------------------------------------------------------------


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def heatmap(runs: list[Run], factors: list[str], metric: str, out: Path) -> Path | None:
    """Mean final error on the M/N × K grid (one panel per value of the other factors)."""
    dni = [r for r in runs if r.arch not in (*REFERENCES, "")]
    if "mn" not in factors or not dni:
        return None
    mns = sort_values("mn", [r.value("mn") for r in dni])
    archs = sort_values("arch", [r.arch for r in dni])
    if len(mns) * len(archs) < 2:
        return None
    others = [f for f in factors if f not in ("mn", "arch")]
    groups = _groups(runs, others)
    fig, axes = plt.subplots(
        1,
        len(groups),
        figsize=(1.2 * len(archs) + 2.4, 1.0 * len(mns) + 1.6),
        squeeze=False,
    )
    for ax, (group_key, members) in zip(axes[0], groups.items()):
        grid = np.full((len(mns), len(archs)), np.nan)
        for i, mn in enumerate(mns):
            for j, arch in enumerate(archs):
                cell = [r.error for r in members if r.value("mn") == mn and r.arch == arch]
                grid[i, j] = mean_sem(cell)[0]
        image = ax.imshow(grid, cmap="viridis_r", aspect="auto", origin="lower")
        norm = image.norm
        for i, j in itertools.product(range(len(mns)), range(len(archs))):
            if math.isfinite(grid[i, j]):
                shade = image.cmap(norm(grid[i, j]))
                light = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] > 0.5
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.3g}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="k" if light else "w",
                )
        if np.isfinite(grid).any():
            best = np.unravel_index(np.nanargmin(grid), grid.shape)
            ax.add_patch(
                plt.Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, ec="red", lw=2.0)
            )
        ax.set_xticks(range(len(archs)), ["full*" if a == "full" else a for a in archs])
        ax.set_yticks(range(len(mns)), [fmt(m) for m in mns])
        ax.set_xlabel("K (inputs per granule unit; * dense)")
        ax.set_ylabel("M/N")
        title = ", ".join(factor_text(f, v) for f, v in zip(others, group_key))
        for ref in REFERENCES:
            stats = mean_sem(r.error for r in members if r.arch == ref)
            if stats[2]:
                title = (title + "\n" if title else "") + f"{arch_label(ref)}: {stats[0]:.3g}"
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, label=metric, shrink=0.85)
    fig.tight_layout()
    return _save(fig, out)


def _groups(runs: list[Run], factors: list[str]) -> dict[tuple, list[Run]]:
    """Runs grouped by the values of ``factors``; a run lacking a factor joins every group."""
    keys = list(
        itertools.product(
            *(sort_values(f, [r.value(f) for r in runs if r.value(f) is not None]) for f in factors)
        )
    )
    groups: dict[tuple, list[Run]] = {}
    for key in keys:
        members = [
            r
            for r in runs
            if all(r.value(f) is None or _key(r.value(f)) == v for f, v in zip(factors, key))
        ]
        if any(all(r.value(f) is not None for f in factors) for r in members):
            groups[key] = members
    return groups


def learning_curves(runs: list[Run], factors: list[str], key: str, out: Path) -> Path | None:
    """Validation error per epoch, mean ± s.e.m. over seeds, in a grid of panels."""
    if not any(r.series(key)[0].size > 1 for r in runs):
        return None
    sparse = [
        a for a in sort_values("arch", [r.arch for r in runs]) if a not in (*REFERENCES, "full")
    ]
    cell_grid = "mn" in factors and "arch" in factors
    if cell_grid:  # S3a: rows M/N, columns K; each panel its cell and the LSTM reference
        row_factors = [f for f in factors if f != "arch"]
        col_values = [a for a in sort_values("arch", [r.arch for r in runs]) if a not in REFERENCES]
        hue = None
    else:
        panel_factors = [f for f in factors if f != "arch"]
        row_factors = panel_factors[:1] if len(panel_factors) > 1 else []
        col_factors = panel_factors[1:] if len(panel_factors) > 1 else panel_factors
        hue = "arch" if "arch" in factors else None
    rows = _groups(runs, row_factors)
    if cell_grid:
        columns = {(a,): a for a in col_values}
    else:
        columns = {k: None for k in _groups(runs, col_factors)}
    n_rows, n_cols = len(rows), len(columns)
    if n_rows * n_cols > 64:
        return None
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(2.3 * n_cols + 0.8, 1.8 * n_rows + 0.8),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for i, (row_key, row_runs) in enumerate(rows.items()):
        for j, col_key in enumerate(columns):
            ax = axes[i, j]
            if cell_grid:
                arch = col_key[0]
                lines = {
                    "lstm": [r for r in row_runs if r.arch == "lstm"],
                    "zero-dni": [r for r in row_runs if r.arch == "zero-dni"],
                    arch: [r for r in row_runs if r.arch == arch],
                }
                title = [factor_text(f, v) for f, v in zip(row_factors, row_key)]
                title.append("K=full*" if arch == "full" else f"K={arch}")
            else:
                members = [
                    r
                    for r in row_runs
                    if all(
                        r.value(f) is None or _key(r.value(f)) == v
                        for f, v in zip(col_factors, col_key)
                    )
                ]
                if hue:
                    lines = {
                        a: [r for r in members if r.arch == a]
                        for a in sort_values("arch", [r.arch for r in members])
                    }
                else:
                    lines = {"": members}
                title = [factor_text(f, v) for f, v in zip(row_factors, row_key)]
                title += [factor_text(f, v) for f, v in zip(col_factors, col_key)]
            for label, members in lines.items():
                epochs, mean, sem = curve_stats(members, key)
                if not epochs.size:
                    continue
                colour = arch_colour(label, sparse) if label else "tab:orange"
                ax.plot(
                    epochs, mean, color=colour, lw=1.2, label=arch_label(label) if label else None
                )
                ax.fill_between(epochs, mean - sem, mean + sem, color=colour, alpha=0.25, lw=0)
            ax.set_title(", ".join(title), fontsize=8)
            ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(key.removeprefix("val_"), fontsize=8)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(
            handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False
        )
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    return _save(fig, out)


def paired_gain(runs: list[Run], factors: list[str]) -> list[dict[str, Any]]:
    """Dense vs sparse runs paired by seed and the other factors: r_h, r_g, errors, gain."""
    others = [f for f in factors if f != "arch"]
    by_key: dict[tuple, dict[str, Run]] = defaultdict(dict)
    for r in runs:
        if r.arch in (*REFERENCES, ""):
            continue
        key = (*(_key(r.value(f)) for f in others), r.row.get("seed"))
        by_key[key]["full" if r.arch == "full" else f"K={r.arch}"] = r
    pairs = []
    for key, members in by_key.items():
        dense = members.get("full")
        for label, sparse in members.items():
            if label == "full" or dense is None:
                continue
            pairs.append(
                {
                    "key": key[:-1],
                    "seed": key[-1],
                    "sparse": label,
                    "r_h": dense.number("r_h_first"),
                    "r_pop_h": dense.number("r_pop_h_first"),
                    "r_g_early_dense": dense.number("r_g_early"),
                    "r_g_early_sparse": sparse.number("r_g_early"),
                    "r_g_late_dense": dense.number("r_g_late"),
                    "r_g_late_sparse": sparse.number("r_g_late"),
                    "r_pop_g_late_dense": dense.number("r_pop_g_late"),
                    "r_pop_g_late_sparse": sparse.number("r_pop_g_late"),
                    "error_dense": dense.error,
                    "error_sparse": sparse.error,
                    "gain": dense.error - sparse.error,
                }
            )
    return pairs


def correlation_vs_error(
    runs: list[Run], factors: list[str], metric: str, out: Path
) -> Path | None:
    """Final error vs r_h and r_pop_h (first recorded epoch); sparse gain vs r_h."""
    have = [r for r in runs if math.isfinite(r.number("r_h_first"))]
    if len(have) < 2:
        return None
    pairs = paired_gain(have, factors)
    n_panels = 3 if pairs else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(4.0 * n_panels, 3.4), squeeze=False)
    sparse = [
        a for a in sort_values("arch", [r.arch for r in have]) if a not in (*REFERENCES, "full")
    ]
    for ax, key, label in zip(axes[0], ("r_h_first", "r_pop_h_first"), ("$r_h$", "$r_{pop,h}$")):
        for arch in sort_values("arch", [r.arch for r in have]):
            members = [r for r in have if r.arch == arch]
            ax.scatter(
                [r.number(key) for r in members],
                [r.error for r in members],
                s=14,
                alpha=0.75,
                color=arch_colour(arch, sparse),
                label=arch_label(arch),
            )
        epoch = have[0].row.get("r_h_first_epoch")
        ax.set_xlabel(f"{label} at epoch {int(epoch) + 1 if isinstance(epoch, int) else '?'}")
        ax.set_ylabel(metric)
    axes[0, 0].legend(fontsize=7, frameon=False)
    if pairs:
        ax = axes[0, 2]
        for label in sorted({p["sparse"] for p in pairs}):
            chosen = [p for p in pairs if p["sparse"] == label]
            x = np.asarray([p["r_h"] for p in chosen])
            y = np.asarray([p["gain"] for p in chosen])
            ax.scatter(x, y, s=14, alpha=0.75, color=MODEL_COLOURS["scc-dni"], label=label)
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() >= 3 and np.ptp(x[ok]) > 0:
                slope, intercept = np.polyfit(x[ok], y[ok], 1)
                xs = np.linspace(x[ok].min(), x[ok].max(), 10)
                r = np.corrcoef(x[ok], y[ok])[0, 1]
                ax.plot(xs, slope * xs + intercept, color="k", lw=1, label=f"fit, r={r:.2f}")
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("$r_h$ (dense run, same seed and b)")
        ax.set_ylabel("gain: error dense − error sparse")
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _save(fig, out)


def feedback_correlation(runs: list[Run], out: Path) -> Path | None:
    """r_g and r_pop_g over the recorded epochs per cerebellum; mean r_g vs r_h per run."""
    have = [r for r in runs if r.arch not in (*REFERENCES, "") and r.series("r_g")[0].size]
    if not have:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    archs = sort_values("arch", [r.arch for r in have])
    sparse = [a for a in archs if a != "full"]
    for ax, key, label in zip(axes, ("r_g", "r_pop_g"), ("$r_{\\hat g}$", "$r_{pop,\\hat g}$")):
        for arch in archs:
            epochs, mean, sem = curve_stats([r for r in have if r.arch == arch], key)
            if not epochs.size:
                continue
            colour = arch_colour(arch, sparse)
            ax.plot(epochs, mean, color=colour, lw=1.2, label=arch_label(arch))
            ax.fill_between(epochs, mean - sem, mean + sem, color=colour, alpha=0.25, lw=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7, frameon=False)
    ax = axes[2]
    for arch in archs:
        members = [r for r in have if r.arch == arch]
        ax.scatter(
            [r.number("r_h_first") for r in members],
            [r.number("r_g_late") for r in members],
            s=14,
            alpha=0.75,
            color=arch_colour(arch, sparse),
            label=arch_label(arch),
        )
    ax.set_xlabel("$r_h$ (first recorded epoch)")
    ax.set_ylabel("$r_{\\hat g}$ (mean over the second half)")
    fig.tight_layout()
    return _save(fig, out)


def error_vs_truncation(runs: list[Run], factors: list[str], metric: str, out: Path) -> Path | None:
    """Final error against T, mean ± s.e.m. over seeds, one line per cerebellum."""
    if "truncation" not in factors:
        return None
    others = [f for f in factors if f not in ("truncation", "arch")]
    groups = _groups(runs, others)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    sparse = [
        a for a in sort_values("arch", [r.arch for r in runs]) if a not in (*REFERENCES, "full")
    ]
    for ax, (group_key, members) in zip(axes[0], groups.items()):
        for arch in sort_values("arch", [r.arch for r in members]):
            ts = sort_values("truncation", [r.value("truncation") for r in members])
            stats = [
                mean_sem(r.error for r in members if r.arch == arch and r.value("truncation") == t)
                for t in ts
            ]
            ax.errorbar(
                ts,
                [s[0] for s in stats],
                yerr=[0 if not math.isfinite(s[1]) else s[1] for s in stats],
                marker="o",
                ms=4,
                capsize=3,
                color=arch_colour(arch, sparse),
                label=arch_label(arch),
            )
        ax.set_xlabel("truncation T")
        ax.set_ylabel(metric)
        ax.set_title(", ".join(factor_text(f, v) for f, v in zip(others, group_key)), fontsize=9)
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _save(fig, out)


# --- markdown ----------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return table_lines(header, rows)


def condition_table(runs: list[Run], factors: list[str]) -> list[str]:
    conditions: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        conditions[tuple(_key(r.value(f)) for f in factors)].append(r)
    correlations = [
        k
        for k in ("r_h_first", "r_pop_h_first", "r_g_early", "r_g_late", "r_pop_g_late")
        if any(math.isfinite(r.number(k)) for r in runs)
    ]
    header = [FACTOR_LABELS.get(f, f) for f in factors] + ["seeds", "final error", "best seed"]
    header += correlations + ["wall s"]
    order = sorted(
        conditions,
        key=lambda k: tuple(
            arch_order(v) if f == "arch" else (0, v if isinstance(v, (int, float)) else 0, str(v))
            for f, v in zip(factors, k)
        ),
    )
    rows = []
    for key in order:
        members = conditions[key]
        mean, sem, n = mean_sem(r.error for r in members)
        cells = [arch_label(v) if f == "arch" else fmt(v) for f, v in zip(factors, key)]
        cells += [str(n), f"{fmt(mean, 4)} ± {fmt(sem, 2)}", fmt(min(r.error for r in members), 4)]
        cells += [fmt(mean_sem(r.number(k) for r in members)[0], 3) for k in correlations]
        cells.append(fmt(mean_sem(r.number("wall_seconds") for r in members)[0], 3))
        rows.append(cells)
    return _table(header, rows)


def mn_k_table(runs: list[Run], factors: list[str], metric: str) -> list[str]:
    """One M/N × K table per value of the other factors."""
    others = [f for f in factors if f not in ("mn", "arch")]
    lines: list[str] = []
    for key, members in _groups(runs, others).items():
        if others:
            title = ", ".join(factor_text(f, v) for f, v in zip(others, key))
            lines += [f"**{title}**", ""]
        lines += _mn_k_cells(members, metric) + [""]
    return lines[:-1]


def _mn_k_cells(runs: list[Run], metric: str) -> list[str]:
    dni = [r for r in runs if r.arch not in (*REFERENCES, "")]
    mns = sort_values("mn", [r.value("mn") for r in dni])
    archs = sort_values("arch", [r.arch for r in dni])
    if len(mns) * len(archs) < 2:
        return []
    cells: dict[tuple, tuple[float, float, int]] = {}
    for mn, arch in itertools.product(mns, archs):
        cells[(mn, arch)] = mean_sem(r.error for r in dni if r.value("mn") == mn and r.arch == arch)
    finite = {k: v for k, v in cells.items() if math.isfinite(v[0])}
    best = min(finite, key=lambda k: finite[k][0]) if finite else None
    header = ["M/N \\ K"] + ["full*" if a == "full" else str(a) for a in archs]
    rows = []
    for mn in mns:
        row = [fmt(mn)]
        for arch in archs:
            mean, sem, _ = cells[(mn, arch)]
            text = f"{fmt(mean, 4)} ± {fmt(sem, 2)}"
            row.append(f"**{text}**" if (mn, arch) == best else text)
        rows.append(row)
    lines = [f"Mean ± s.e.m. over seeds of `{metric}`; best cell in bold.", ""]
    lines += _table(header, rows)
    for ref, what in (("lstm", "no cerebellum"), ("zero-dni", "cerebellum frozen at 0")):
        stats = mean_sem(r.error for r in runs if r.arch == ref)
        if stats[2]:
            lines += [
                "",
                f"{arch_label(ref)} ({what}): {fmt(stats[0], 4)} ± {fmt(stats[1], 2)} "
                f"({stats[2]} seeds).",
            ]
    if best is not None:
        ranked = sorted(finite, key=lambda k: finite[k][0])
        top = ", ".join(f"M/N={fmt(k[0])} K={k[1]}" for k in ranked[:3])
        lines += ["", f"Best cells: {top}."]
    return lines


def gain_table(runs: list[Run], factors: list[str]) -> list[str]:
    pairs = paired_gain(runs, factors)
    if not pairs:
        return []
    others = [f for f in factors if f != "arch"]
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for p in pairs:
        groups[(*p["key"], p["sparse"])].append(p)
    header = [FACTOR_LABELS.get(f, f) for f in others] + [
        "sparse",
        "pairs",
        "r_h",
        "r_g early dense",
        "r_g early sparse",
        "r_g late dense",
        "r_g late sparse",
        "r_pop_g late dense",
        "r_pop_g late sparse",
        "error dense",
        "error sparse",
        "gain (dense − sparse)",
        "sparse better",
    ]
    rows = []
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        members = groups[key]

        def m(name: str, members: list[dict[str, Any]] = members) -> str:
            mean, sem, _ = mean_sem(p[name] for p in members)
            return f"{fmt(mean, 3)} ± {fmt(sem, 2)}"

        better = sum(p["gain"] > 0 for p in members)
        rows.append(
            [fmt(v) for v in key[:-1]]
            + [str(key[-1]), str(len(members))]
            + [
                m(k)
                for k in (
                    "r_h",
                    "r_g_early_dense",
                    "r_g_early_sparse",
                    "r_g_late_dense",
                    "r_g_late_sparse",
                    "r_pop_g_late_dense",
                    "r_pop_g_late_sparse",
                )
            ]
            + [m("error_dense"), m("error_sparse"), m("gain"), f"{better}/{len(members)}"]
        )
    lines = [
        "Dense (cc-dni) and sparse (scc-dni) runs paired by seed and the other factors; mean ± "
        "s.e.m. over the pairs. r_h: first recorded epoch of the dense run; r_g early / late: "
        "mean over the recorded epochs in the first / second half of the run; gain: final "
        "error of the dense run − that of the sparse run (> 0: sparse better).",
        "",
    ]
    lines += _table(header, rows)
    x = np.asarray([p["r_h"] for p in pairs])
    y = np.asarray([p["gain"] for p in pairs])
    gx = np.asarray([p["r_g_late_dense"] - p["r_g_late_sparse"] for p in pairs])
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() >= 3 and np.ptp(x[ok]) > 0:
        r = float(np.corrcoef(x[ok], y[ok])[0, 1])
        lines += ["", f"Pearson r between r_h and the gain over {int(ok.sum())} pairs: {r:.2f}."]
    okg = np.isfinite(gx)
    if okg.any():
        lines += [
            "",
            f"Late r_g dense − r_g sparse: mean {gx[okg].mean():.3f}, positive in "
            f"{int((gx[okg] > 0).sum())}/{int(okg.sum())} pairs.",
        ]
    return lines


# --- entry point -------------------------------------------------------------------------------


def write_report(sweep_dir: Path, metric: str | None = None) -> Report:
    """Draw every figure the sweep's grid allows and write SWEEP/report.md."""
    sweep_dir = Path(sweep_dir)
    rows = read_results(sweep_dir)
    finished = [r for r in rows if r.get("status") in ("completed", "skipped")]
    if metric is None:
        metric = next(
            (m for m in METRICS if any(isinstance(r.get(m), float) for r in finished)), None
        )
    if metric is None:
        metric = next(
            (
                m
                for m in ("final_val_loss", "final_train_loss")
                if any(isinstance(r.get(m), (int, float)) for r in finished)
            ),
            None,
        )
    if not finished or metric is None:
        raise ReportError(f"{sweep_dir}: no finished run with a final error to report on")
    runs = [
        Run(str(r["name"]), r, sweep_dir / "runs" / str(r["name"]), float(r[metric]))
        for r in finished
        if isinstance(r.get(metric), (int, float)) and math.isfinite(float(r[metric]))
    ]
    fields = grid_fields(sweep_dir, rows)
    factors = factors_of(fields, runs)
    curve_key = metric.removeprefix("last5_").removeprefix("final_").removeprefix("mean_")
    default = next((m for m in METRICS if any(isinstance(r.get(m), float) for r in finished)), None)
    suffix = "" if metric == default else f"-{metric}"  # another metric: files of its own
    figures_dir = sweep_dir / "figures"
    figures_dir.mkdir(exist_ok=True)
    report = Report(sweep_dir / f"report{suffix}.md")
    plans = [
        (
            "heatmap_final_error.png",
            "M/N × K heat map: needs cerebellum_hidden varied",
            lambda p: heatmap(runs, factors, metric, p),
        ),
        (
            "learning_curves.png",
            "learning curves: needs more than one epoch per run",
            lambda p: learning_curves(runs, factors, curve_key, p),
        ),
        (
            "correlation_vs_error.png",
            "error vs r_h: needs record_epochs (r_h) in the runs",
            lambda p: correlation_vs_error(runs, factors, metric, p),
        ),
        (
            "feedback_correlation.png",
            "r_g over epochs: needs record_epochs and a cerebellum",
            lambda p: feedback_correlation(runs, p),
        ),
        (
            "error_vs_truncation.png",
            "error vs T: needs truncation varied",
            lambda p: error_vs_truncation(runs, factors, metric, p),
        ),
    ]
    for name, why, draw in plans:
        name = name.replace(".png", f"{suffix}.png")
        path = figures_dir / name
        drawn = draw(path)
        if drawn is None:
            report.skipped.append(f"{name} ({why})")
            if path.exists():
                path.unlink()
        else:
            report.figures.append(drawn)
    counts = defaultdict(int)
    for r in rows:
        counts[str(r.get("status"))] += 1
    lines = [
        f"# Sweep report: {sweep_dir.name}",
        "",
        f"Points: {len(rows)} ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}). "
        f"Final error: `{metric}`. Factors: "
        f"{', '.join(FACTOR_LABELS.get(f, f) for f in factors) or 'none'} (over seeds).",
        "",
        "## Conditions",
        "",
        *condition_table(runs, factors),
    ]
    grid_lines = mn_k_table(runs, factors, metric) if "mn" in factors else []
    if grid_lines:
        lines += ["", "## M/N × K", "", *grid_lines]
    gain_lines = gain_table(runs, factors)
    if gain_lines:
        lines += ["", "## Dense vs sparse cerebellum, paired", "", *gain_lines]
    failed = [r for r in rows if r.get("status") in ("failed", "invalid")]
    if failed:
        lines += ["", "## Failed points", ""]
        lines += [f"- `{r['name']}` ({r['status']}): {r.get('error', '')}" for r in failed]
    lines += ["", "## Figures", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in report.figures]
    if report.skipped:
        lines += ["", "Not drawn: " + "; ".join(report.skipped) + "."]
    report.markdown.write_text("\n".join(lines) + "\n")
    return report
