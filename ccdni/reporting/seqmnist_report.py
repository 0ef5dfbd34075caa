"""Across-run figures and tables of the seqMNIST family (paper Fig. 3b,c and Fig. 6b).

Reads the sweeps of ``experiments.seqmnist`` through :mod:`ccdni.reporting.runs` (each run's
``spec.toml``, ``summary.json`` and per-epoch records), and writes the generated block of
``docs/results-seqmnist.md`` with

- seqMNIST at T = 5 under both update schedules (after every truncation; once per sequence),
  per model, with the differences paired by seed (DNI − LSTM, DNI − zero-DNI) — Fig. 3b;
- the final validation error against T (Fig. 3c) and the learning curves with seed bands;
- c-, dd- and ld-seqMNIST (γ = loss every γ steps), with their drawings (Fig. 3a);
- the cerebellar ablations of Fig. 6b, normalised by the intact run of the same seed.

The final number of a run is its task's validation metric after the last epoch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ccdni.reporting import style
from ccdni.reporting.ablation_report import ABLATION_HEADER, ablation_figure, ablation_rows
from ccdni.reporting.figures import draw_band, draw_examples
from ccdni.reporting.plotting import plt
from ccdni.reporting.runs import RunRecord, load_runs, paired_by_seed, select
from ccdni.reporting.stats import band, mean_sem
from ccdni.reporting.tables import (
    code_block,
    epoch_table,
    markdown_table,
    model_comparison_table,
    replace_generated,
)

COMMAND = "python -m experiments.seqmnist"
TASK_NAMES = {
    "seqmnist": "seqMNIST",
    "c-seqmnist": "c-seqMNIST",
    "dd-seqmnist": "dd-seqMNIST",
    "ld-seqmnist": "ld-seqMNIST",
}
SCHEDULES = {"truncation": "update after every truncation", "sequence": "one update per sequence"}


def final(record: RunRecord) -> float:
    """The task's validation metric after the last epoch."""
    return record.final(1)


def speed(record: RunRecord) -> float:
    """The mean of the validation metric over every epoch (area under the learning curve)."""
    return record.mean_over_epochs()


def metric_label(records: Sequence[RunRecord]) -> str:
    return records[0].headline.label if records else "validation metric"


def load(root: Path, plans: Sequence[Any]) -> dict[str, list[RunRecord]]:
    """plan name → its completed runs."""
    return {plan.name: load_runs(root / plan.name) for plan in plans}


# --- figures ---------------------------------------------------------------------------------


def plot_learning_curves(ax: Any, records: Sequence[RunRecord], title: str = "") -> None:
    """Mean validation metric per epoch for each model, ± s.e.m. over seeds."""
    for model in style.ordered(r.model for r in records):
        chosen = select(records, model=model)
        draw_band(
            ax,
            band([r.series() for r in chosen]),
            style.colour(model),
            style.label(model),
            style.linestyle(model),
        )
    ax.set_ylabel(metric_label(records))
    ax.set_xlabel("epoch")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=7)


def learning_curves_figure(
    panels: Sequence[tuple[str, Sequence[RunRecord]]], path: str | Path
) -> Path:
    """One learning-curve panel per (title, records), side by side (paper Fig. 3b)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.1 * len(panels), 3.5), squeeze=False)
    for ax, (title, records) in zip(axes[0], panels):
        plot_learning_curves(ax, records, title)
    fig.tight_layout()
    return _save(fig, path)


def error_vs_truncation_figure(
    records: Sequence[RunRecord], path: str | Path, title: str = ""
) -> Path:
    """Final validation metric vs T per model (top, ± s.e.m.) and the paired DNI − LSTM
    difference (bottom, ± s.e.m. of the pairs), paper Fig. 3c."""
    truncations = sorted({r.spec.truncation for r in records})
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.2, 5.4), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    for model in style.ordered(r.model for r in records):
        stats = [
            mean_sem(final(r) for r in select(records, model=model, truncation=t))
            for t in truncations
        ]
        points = [(t, s) for t, s in zip(truncations, stats) if s.n]
        top.errorbar(
            [t for t, _ in points],
            [s.mean for _, s in points],
            yerr=[s.sem if s.n > 1 else 0 for _, s in points],
            color=style.colour(model),
            ls=style.linestyle(model),
            marker="o",
            capsize=3,
            label=style.label(model),
        )
        if model == "lstm":
            continue
        diffs = [
            (
                t,
                paired_by_seed(
                    select(records, model=model, truncation=t),
                    select(records, model="lstm", truncation=t),
                    final,
                ),
            )
            for t in truncations
        ]
        diffs = [(t, d) for t, d in diffs if d.n]
        bottom.errorbar(
            [t for t, _ in diffs],
            [d.mean for _, d in diffs],
            yerr=[d.sem if d.n > 1 else 0 for _, d in diffs],
            color=style.colour(model),
            ls=style.linestyle(model),
            marker="o",
            capsize=3,
            label=f"{style.label(model)} − LSTM",
        )
    top.set_ylabel(metric_label(records))
    top.set_title(title, fontsize=10)
    top.legend(frameon=False, fontsize=8)
    bottom.axhline(0.0, color="black", lw=0.8)
    bottom.set_ylabel("paired − LSTM")
    bottom.set_xlabel("truncation T")
    bottom.set_xticks(truncations)
    bottom.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def drawings_figure(records: Sequence[RunRecord], path: str | Path, title: str = "") -> Path | None:
    """The drawings of validation examples by each record's model (paper Fig. 3a).

    dd-seqMNIST: one row of 10 digit panels per record; c- and ld-seqMNIST: one panel per
    record, side by side. None when no record saved examples or the task draws nothing.
    """
    loaded = []
    for record in sorted(records, key=lambda r: style.MODEL_ORDER.index(r.model)):
        files = sorted(record.run.path.joinpath("results").glob("*-examples.pt"))
        if files:
            loaded.append((record, torch.load(files[0], weights_only=True)))
    if not loaded or loaded[0][1]["paths"] is None:
        return None
    by_digit = loaded[0][1]["task"] == "dd-seqmnist"
    rows, columns = (len(loaded), 10) if by_digit else (1, len(loaded))
    size = 1.25 if by_digit else 3.4  # inches per panel
    fig, axes = plt.subplots(
        rows, columns, figsize=(size * columns, size * rows + 0.5), squeeze=False
    )
    for i, (record, data) in enumerate(loaded):
        panels = list(axes[i]) if by_digit else [axes[0, i]]
        draw_examples(panels, data)
        text = f"{style.label(record.model)} · seed {record.seed} · {final(record):.2f}"
        if by_digit:
            panels[0].set_ylabel(text, fontsize=7)
        else:
            panels[0].set_title(text, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi=80)


def _save(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# --- the report ------------------------------------------------------------------------------


def _rel(path: Path, doc: Path) -> str:
    return Path(os.path.relpath(path, doc.parent)).as_posix()


def schedule_table(records: Sequence[RunRecord], digits: int = 1) -> str:
    """One row per update schedule: every model, and the paired differences."""
    return model_comparison_table(
        records,
        "update",
        final,
        digits,
        "update",
        comparisons=(
            ("cc-dni", "lstm"),
            ("scc-dni", "lstm"),
            ("zero-dni", "lstm"),
            ("cc-dni", "zero-dni"),
            ("scc-dni", "zero-dni"),
        ),
        show=lambda u: SCHEDULES.get(u, u),
    )


def write_report(
    root: Path,
    plans: Sequence[Any],
    doc: Path,
    figures_dir: Path,
    budget: str,
    invocation: str = COMMAND,
    figure_prefix: str = "seqmnist",
    commands: Sequence[str] = (),
) -> list[Path]:
    """Draw the figures and replace the generated block of ``doc``; returns what it wrote."""
    sweeps = load(root, plans)
    written: list[Path] = []
    figure = figures_dir / figure_prefix
    lines = [
        f"Budget: {budget}.",
        "",
        "Values: mean ± s.e.m. over seeds of the validation metric after the last epoch; "
        "differences are paired by seed (same cortical initialisation and data order), "
        "mean ± s.e.m. with the p value of the paired t-test (n = number of seeds).",
        "",
        "Command (runs every sweep below, skipping finished runs, then writes this block):",
        "",
        *code_block([invocation]),
        "",
    ]
    for plan in plans:
        lines.append(f"- `{plan.name}` — {plan.about}: {len(sweeps[plan.name])} completed runs.")
    if commands:
        lines += ["", "The same sweeps one by one:", "", *code_block(commands)]
    t5 = sweeps.get("seqmnist-T5", [])
    online = select(t5, update="truncation")
    if t5:
        lines += [
            "",
            "### seqMNIST, T = 5, both update schedules: final validation error (%)",
            "",
            schedule_table(t5),
            "",
            "Learning speed (validation error averaged over every epoch):",
            "",
            model_comparison_table(
                t5, "update", speed, 1, "update", show=lambda u: SCHEDULES.get(u, u)
            ),
        ]
        for schedule in ("truncation", "sequence"):
            chosen = select(t5, update=schedule)
            if chosen:
                lines += [
                    "",
                    f"Validation error (%) per epoch, {SCHEDULES[schedule]}:",
                    "",
                    epoch_table(chosen),
                ]
        panels = [
            (f"seqMNIST, T=5, {SCHEDULES[u]}", select(t5, update=u))
            for u in ("truncation", "sequence")
            if select(t5, update=u)
        ]
        path = learning_curves_figure(panels, f"{figure}-learning-curves-T5.png")
        written.append(path)
        lines += ["", f"![seqMNIST T=5 learning curves]({_rel(path, doc)})"]
    others = sweeps.get("seqmnist-T", [])
    over_t = online + others
    if others:
        lines += [
            "",
            "### seqMNIST: final validation error (%) vs T, update after every truncation "
            "(Fig. 3c)",
            "",
            model_comparison_table(over_t, "truncation", final, 1, "T"),
        ]
        path = error_vs_truncation_figure(
            over_t, f"{figure}-error-vs-T.png", "seqMNIST: final validation error vs T"
        )
        written.append(path)
        lines += ["", f"![seqMNIST error vs T]({_rel(path, doc)})"]
    panels = []
    for task in ("c-seqmnist", "dd-seqmnist"):
        runs = sweeps.get(task, [])
        if not runs:
            continue
        name = TASK_NAMES[task]
        lines += [
            "",
            f"### {name}: final {metric_label(runs)}",
            "",
            model_comparison_table(runs, "truncation", final, 2, "T"),
        ]
        runs5 = select(runs, truncation=5)
        if runs5:
            panels.append((f"{name}, T=5", runs5))
            drawn = drawings_figure(
                select(runs5, seed=0), f"{figure}-{task}-drawings.png", f"{name}, T=5, seed 0"
            )
            if drawn is not None:
                written.append(drawn)
                lines += ["", f"![{name} drawings]({_rel(drawn, doc)})"]
    ld = sweeps.get("ld-seqmnist", [])
    if ld:
        lines += [
            "",
            "### ld-seqMNIST, T = 5: final validation MSE for each γ (loss every γ steps)",
            "",
            model_comparison_table(ld, "gamma", final, 2, "γ"),
        ]
        gains = []
        for gamma in sorted({r.spec.gamma for r in ld}):
            here = select(ld, gamma=gamma)
            gain = paired_by_seed(select(here, model="lstm"), select(here, model="cc-dni"), final)
            gains.append(f"γ = {gamma}: {gain.short(2)}")
        lines += [
            "",
            "Gain of CC-DNI over the LSTM (LSTM − CC-DNI, paired): " + "; ".join(gains) + ".",
        ]
        for gamma in sorted({r.spec.gamma for r in ld}):
            panels.append((f"ld-seqMNIST, T=5, γ={gamma}", select(ld, gamma=gamma)))
        drawn = drawings_figure(
            select(ld, seed=0, gamma=1),
            f"{figure}-ld-seqmnist-drawings.png",
            "ld-seqMNIST, T=5, γ=1, seed 0",
        )
        if drawn is not None:
            written.append(drawn)
            lines += ["", f"![ld-seqMNIST drawings]({_rel(drawn, doc)})"]
    if panels:
        for i in range(0, len(panels), 3):
            path = learning_curves_figure(
                panels[i : i + 3], f"{figure}-learning-curves-{i // 3 + 1}.png"
            )
            written.append(path)
            shown = "; ".join(title for title, _ in panels[i : i + 3])
            lines += ["", f"![learning curves: {shown}]({_rel(path, doc)})"]
    ablated = sweeps.get("seqmnist-ablation", [])
    if ablated and online:
        models = ["cc-dni", "scc-dni", "zero-dni"]
        records = [r for r in online if r.model in (*models, "lstm")] + ablated
        lines += [
            "",
            "### Fig. 6b: seqMNIST, T = 5, cerebellum ablated at epoch E "
            "(in-process: the lesion drops the cerebellum core)",
            "",
            "÷ intact: final error of the ablated run divided by the intact run of the same "
            "model and seed (`seqmnist-T5`, update after every truncation); ablated − intact "
            "paired (> 0: the ablation hurt).",
            "",
            markdown_table(ABLATION_HEADER, ablation_rows(records, ablated, models, final, 1)),
        ]
        path = ablation_figure(
            records,
            models,
            final,
            Path(f"{figure}-fig6b-ablation.png"),
            metric_label(online),
            "final error ÷ intact",
        )
        written.append(path)
        lines += ["", f"![Fig. 6b]({_rel(path, doc)})"]
    walls = [float(r.summary.get("wall_seconds") or 0) for rs in sweeps.values() for r in rs]
    if any(walls):
        lines += [
            "",
            f"Compute: {sum(walls) / 3600:.2f} run-hours in all over {len(walls)} runs "
            f"({sum(walls) / len(walls):.0f} s per run on average, one core each).",
        ]
    replace_generated(doc, COMMAND, "\n".join(lines), "Results: the sequential-MNIST family")
    written.append(doc)
    return written
