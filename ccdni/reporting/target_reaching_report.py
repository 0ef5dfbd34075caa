"""The target-reaching report (paper Fig. 2a,b,d): tables and figures from the sweeps of
``experiments.fig2_target_reaching``, written into ``docs/results-target-reaching.md``.

Final error of a run = its validation MSE averaged over the last 5 epochs (as the paper's
Fig. 2d); learning speed = its validation MSE averaged over every epoch (the area under the
learning curve). Models are compared paired by seed (same cortical initialisation, same data).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ccdni.reporting import style
from ccdni.reporting.figures import draw_band, draw_trajectories
from ccdni.reporting.plotting import plt
from ccdni.reporting.runs import RunRecord, by_seed, load_runs, paired_by_seed, select
from ccdni.reporting.stats import MeanSem, band, mean_sem
from ccdni.reporting.tables import (
    code_block,
    markdown_table,
    model_comparison_table,
    replace_generated,
)

COMMAND = "python -m experiments.fig2_target_reaching"
COMPARISONS = (
    ("cc-dni", "lstm"),
    ("scc-dni", "lstm"),
    ("zero-dni", "lstm"),
    ("cc-dni", "zero-dni"),
    ("scc-dni", "zero-dni"),
    ("scc-dni", "cc-dni"),
)


def final5(record: RunRecord) -> float:
    return record.final(5)


def speed(record: RunRecord) -> float:
    return record.mean_over_epochs()


def model_rows(
    records: Sequence[RunRecord],
    models: Sequence[str],
    columns: Sequence[tuple[str, Callable[[RunRecord], float], int]],
) -> list[list[str]]:
    """One row per model: its label, n, then mean ± s.e.m. of each column's value."""
    rows = []
    for model in models:
        chosen = select(records, model=model)
        if not chosen:
            continue
        cells = [style.label(model), str(len(chosen))]
        cells += [mean_sem(fn(r) for r in chosen).text(digits) for _, fn, digits in columns]
        rows.append(cells)
    return rows


def paired_rows(
    records: Sequence[RunRecord],
    comparisons: Sequence[tuple[str, str]],
    columns: Sequence[tuple[str, Callable[[RunRecord], float]]],
    digits: int = 2,
) -> list[list[str]]:
    """One row per comparison a − b (paired by seed): the difference of each column."""
    rows = []
    for a, b in comparisons:
        first, second = select(records, model=a), select(records, model=b)
        if not first or not second:
            continue
        cells = [f"{style.label(a)} − {style.label(b)}"]
        for _, fn in columns:
            diff = paired_by_seed(first, second, fn)
            cells.append(f"{diff.text(digits)}; lower in {diff.wins}/{diff.n}")
        rows.append(cells)
    return rows


def _display(path: Path) -> str:
    """``path`` relative to the working directory when inside it."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _rel(path: Path, doc: Path) -> str:
    return Path(os.path.relpath(path, doc.parent)).as_posix()


def learning_curves_figure(records: Sequence[RunRecord], path: Path, title: str) -> Path:
    """Validation MSE per epoch, mean ± s.e.m. over seeds, one band per model (Fig. 2b)."""
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    for model in style.ordered(r.model for r in records):
        chosen = select(records, model=model)
        draw_band(
            ax,
            band([r.series("val_mse") for r in chosen]),
            style.colour(model),
            style.label(model),
            style.linestyle(model),
        )
    ax.axhline(85.7, color="black", lw=0.6, ls=":", label="static output (85.7)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MSE (task units²)")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def trajectories_figure(records: Sequence[RunRecord], path: Path, seed: int = 0) -> Path | None:
    """Reach trajectories of seed ``seed`` for each model, side by side (Fig. 2a)."""
    of_seed = [r for r in records if r.seed == seed]
    order = style.ordered([r.model for r in of_seed])
    chosen = [
        (r, files[0])
        for r in sorted(of_seed, key=lambda r: order.index(r.model))
        for files in [sorted((r.run.path / "results").glob("*-trajectories.pt"))]
        if files
    ]
    if not chosen:
        return None
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.4 * len(chosen) + 2.2, 3.9), squeeze=False)
    for i, (record, file) in enumerate(chosen):
        ax = axes[0, i]
        draw_trajectories(
            ax, torch.load(file, weights_only=True), record.spec, legend=i == len(chosen) - 1
        )
        ax.set_title(
            f"{style.label(record.model)}, T={record.spec.truncation}, seed {seed}\n"
            f"validation MSE {record.final(1):.1f}",
            fontsize=9,
        )
        if i:
            ax.set_ylabel("")
    fig.tight_layout()
    return _save(fig, path)


def error_vs_truncation_figure(
    panels: Sequence[tuple[str, Sequence[RunRecord]]], path: Path
) -> Path:
    """Final MSE against T per model (top) and paired DNI − LSTM below, one column per
    update schedule (Fig. 2d)."""
    fig, axes = plt.subplots(
        2,
        len(panels),
        figsize=(5.2 * len(panels), 6.0),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [2, 1]},
    )
    for col, (title, records) in enumerate(panels):
        top, bottom = axes[0, col], axes[1, col]
        ts = sorted({r.spec.truncation for r in records})
        for model in style.ordered(r.model for r in records):
            stats = [
                mean_sem(final5(r) for r in select(records, model=model, truncation=t)) for t in ts
            ]
            top.errorbar(
                ts,
                [s.mean for s in stats],
                yerr=[s.sem if s.n > 1 else 0 for s in stats],
                color=style.colour(model),
                ls=style.linestyle(model),
                marker="o",
                ms=4,
                capsize=3,
                label=style.label(model),
            )
            if model == "lstm":
                continue
            diffs = [
                paired_by_seed(
                    select(records, model=model, truncation=t),
                    select(records, model="lstm", truncation=t),
                    final5,
                )
                for t in ts
            ]
            bottom.errorbar(
                ts,
                [d.mean for d in diffs],
                yerr=[d.sem if d.n > 1 else 0 for d in diffs],
                color=style.colour(model),
                ls=style.linestyle(model),
                marker="o",
                ms=4,
                capsize=3,
                label=f"{style.label(model)} − LSTM",
            )
        top.set_title(title, fontsize=10)
        top.set_ylabel("validation MSE, last 5 epochs")
        top.legend(frameon=False, fontsize=8)
        bottom.axhline(0, color="black", lw=0.8)
        bottom.set_ylabel("paired − LSTM")
        bottom.set_xlabel("truncation T")
        bottom.set_xticks(ts)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def truncation_table(records: Sequence[RunRecord]) -> str:
    """T × model final MSE with the paired differences that matter (Fig. 2d)."""
    return model_comparison_table(records, "truncation", final5, 1, "T")


def _window_at(end: int) -> Callable[[RunRecord], float]:
    """The validation MSE averaged over the 5 epochs ending at 1-based epoch ``end``."""
    return lambda record: record.window(end)


def _seeds_text(records: Sequence[RunRecord]) -> str:
    """``10 seeds``, or the seeds of each T where a sweep stopped early left them unequal."""
    per_t = {
        t: len({r.seed for r in records if r.spec.truncation == t})
        for t in sorted({r.spec.truncation for r in records})
    }
    if len(set(per_t.values())) == 1:
        return f"{next(iter(per_t.values()))} seeds"
    return "seeds per T: " + ", ".join(f"T = {t}: {n}" for t, n in per_t.items())


def _steps_per_epoch(records: Sequence[RunRecord]) -> MeanSem:
    return mean_sem(
        sum(rec.get("optimiser_steps", 0) for rec in r.run.epoch_records()) / r.spec.epochs
        for r in records
    )


def _sequence_t2_lines(records: Sequence[RunRecord]) -> list[str]:
    """With one update per sequence at T = 2: every model's steps, and the Fig. 2b pairs."""
    if not records:
        return []
    models = style.ordered(r.model for r in records)
    steps = ", ".join(
        f"{style.label(m)} {_steps_per_epoch(select(records, model=m)).mean:.2f}" for m in models
    )
    return [
        "",
        f"At T = 2 with one update per sequence ({len(select(records, model='lstm'))} seeds), "
        f"optimiser steps per epoch: {steps}. Differences paired by seed (mean ± s.e.m., "
        "95 % t interval, paired t-test; negative = the first model is better):",
        "",
        markdown_table(
            ["comparison", "final MSE", "learning speed"],
            paired_rows(records, COMPARISONS, [("final", final5), ("speed", speed)]),
        ),
    ]


def write_report(
    sweeps_root: Path,
    plans: Sequence[Any],
    doc: Path,
    figures_dir: Path,
    invocation: str = COMMAND,
) -> list[Path]:
    """Tables and figures of every plan found under ``sweeps_root``; rewrites the generated
    block of ``doc``; returns what it wrote."""
    sweeps = {plan.name: load_runs(sweeps_root / plan.name) for plan in plans}
    written: list[Path] = []
    lines = [
        "Commands (the first runs every sweep below, skipping finished runs, then writes this "
        "block and the figures; `--report-only` only redraws):",
        "",
        *code_block([invocation]),
        "",
        "Each sweep is a `launch.py sweep` (one `launch.py run` per point) under "
        f"`{_display(sweeps_root)}`:",
        "",
    ]
    for plan in plans:
        lines.append(f"- `{plan.name}` — {plan.about}: {len(sweeps[plan.name])} completed runs.")
    processes = sweeps.get("fig2b", [])
    inprocess = select(sweeps.get("fig2d", []), truncation=2)
    if processes:
        mode = "processes" if not processes[0].spec.inprocess else "in-process"
        timing = processes[0].spec.timing
        missing = sum(int(r.summary.get("missing_predictions") or 0) for r in processes)
        models = style.ordered(r.model for r in processes)
        columns = [
            ("final", final5, 2),
            ("speed", speed, 2),
        ]
        rows = model_rows(processes, models, columns)
        if inprocess:
            for row, model in zip(rows, models):
                row.append(mean_sem(final5(r) for r in select(inprocess, model=model)).text(2))
        steps = {
            m: mean_sem(
                sum(rec.get("optimiser_steps", 0) for rec in r.run.epoch_records()) / r.spec.epochs
                for r in select(processes, model=m)
            )
            for m in models
        }
        for row, model in zip(rows, models):
            row.append(f"{steps[model].mean:.2f}")
        header = [
            "model",
            "seeds",
            "final MSE (last 5 epochs)",
            "learning speed (mean MSE over all epochs)",
        ]
        if inprocess:
            header.append("final MSE in-process (same seeds)")
        header.append("optimiser steps per epoch")
        lines += [
            "",
            f"### Fig. 2b: T = 2, {len(select(processes, model='lstm'))} seeds, "
            f"{'through the processes' if mode == 'processes' else 'in-process'}"
            + (f" (timing `{timing}`)" if mode == "processes" else ""),
            "",
            "Mean ± s.e.m. over seeds. "
            + (
                f"Predictions that missed the `wait` timeout over all "
                f"{len(processes)} runs: {missing}."
                if mode == "processes"
                else ""
            ),
            "",
            markdown_table(header, rows),
            "",
            "Differences paired by seed (mean ± s.e.m., 95 % t interval, paired t-test; "
            "negative = the first model is better):",
            "",
            markdown_table(
                ["comparison", "final MSE", "learning speed"],
                paired_rows(processes, COMPARISONS, [("final", final5), ("speed", speed)]),
            ),
        ]
        windows = [50, 100, 150, 200, processes[0].spec.epochs]
        rows = []
        for a, b in COMPARISONS[:4]:
            first, second = select(processes, model=a), select(processes, model=b)
            if first and second:
                rows.append(
                    [f"{style.label(a)} − {style.label(b)}"]
                    + [paired_by_seed(first, second, _window_at(e)).short(1) for e in windows]
                )
        lines += [
            "",
            "Paired differences of the validation MSE averaged over the 5 epochs ending at "
            "epoch e (mean ± s.e.m., p):",
            "",
            markdown_table(["comparison", *(f"e = {e}" for e in windows)], rows),
        ]
        path = learning_curves_figure(
            processes,
            figures_dir / "fig2b_learning.png",
            f"target reaching, T=2: validation MSE, mean ± s.e.m. over seeds ({mode}"
            + (f", timing {timing})" if mode == "processes" else ")"),
        )
        written.append(path)
        lines += ["", f"![Fig. 2b learning curves]({_rel(path, doc)})"]
        drawn = trajectories_figure(processes, figures_dir / "fig2a_trajectories.png")
        if drawn is not None:
            written.append(drawn)
            lines += ["", f"![Fig. 2a trajectories, seed 0]({_rel(drawn, doc)})"]
    panels = []
    for name, title in (
        ("fig2d", "update after every truncation"),
        ("fig2d-sequence", "one update per sequence"),
    ):
        records = sweeps.get(name, [])
        if not records:
            continue
        seeds_text = _seeds_text(records)
        lines += [
            "",
            f"### Fig. 2d: final MSE vs T, in-process, {title} ({seeds_text})",
            "",
            "Mean ± s.e.m. over seeds of the final MSE; differences paired by seed "
            "(mean ± s.e.m., p of the paired t-test).",
            "",
            truncation_table(records),
        ]
        if name == "fig2d-sequence":
            lines += _sequence_t2_lines(select(records, truncation=2))
        panels.append((f"{title} ({seeds_text})", records))
    if panels:
        path = error_vs_truncation_figure(panels, figures_dir / "fig2d_mse_vs_T.png")
        written.append(path)
        lines += ["", f"![Fig. 2d]({_rel(path, doc)})"]
    replace_generated(doc, COMMAND, "\n".join(lines), "Target reaching (paper Fig. 2): results")
    written.append(doc)
    return written


__all__ = ["by_seed", "final5", "speed", "write_report"]
