"""Cerebellar ablations (paper Fig. 6a target reaching, Fig. 6b seqMNIST): tables, figure and
the generated Fig. 6a block of ``docs/results-lesions.md``.

A run ablated at epoch E lost its cerebellum at the start of 0-based epoch E (through the
processes: the cerebellum process is killed). Its final error is compared with the intact run
of the same model and seed: the ratio ablated / intact (the paper's normalisation) and the
paired difference ablated − intact with a paired t-test.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ccdni.reporting import style
from ccdni.reporting.figures import draw_band
from ccdni.reporting.plotting import plt
from ccdni.reporting.runs import RunRecord, by_seed, load_runs, select
from ccdni.reporting.stats import band, mean_sem, paired, ratios
from ccdni.reporting.tables import code_block, markdown_table, replace_generated

COMMAND = "python -m experiments.fig6_ablation"


def ablation_epoch(record: RunRecord) -> int | None:
    """The epoch the cerebellum was ablated at (None: intact)."""
    for region, epoch in record.spec.ablation_schedule:
        if region == "cerebellum":
            return epoch
    return None


def intact_of(records: Sequence[RunRecord]) -> list[RunRecord]:
    return [r for r in records if not r.spec.ablate]


def ablated_at(records: Sequence[RunRecord], epoch: int) -> list[RunRecord]:
    return [r for r in records if ablation_epoch(r) == epoch]


def ablation_rows(
    intact: Sequence[RunRecord],
    ablated: Sequence[RunRecord],
    models: Sequence[str],
    value: Callable[[RunRecord], float],
    digits: int = 2,
) -> list[list[str]]:
    """model × ablation epoch: final error, ÷ intact (per seed), ablated − intact (paired)."""
    rows = []
    intact = intact_of(intact)
    ablated = [r for r in ablated if ablation_epoch(r) is not None]
    for model in models:
        base = by_seed(select(intact, model=model), value)
        if not base:
            continue
        epochs = sorted({ablation_epoch(r) for r in select(ablated, model=model)} - {None})
        for epoch in epochs:
            here = by_seed(ablated_at(select(ablated, model=model), epoch), value)
            ratio = ratios(here, base)
            diff = paired(here, base)
            rows.append(
                [
                    style.label(model),
                    str(epoch),
                    mean_sem(here.values()).text(digits),
                    ratio.text(3),
                    f"{diff.short(digits)}; worse in {diff.n - diff.wins}/{diff.n}",
                ]
            )
        rows.append([style.label(model), "never", mean_sem(base.values()).text(digits), "1", "—"])
    return rows


ABLATION_HEADER = [
    "model",
    "ablated at epoch",
    "final error",
    "÷ intact (per seed)",
    "ablated − intact (paired, p)",
]


def ablation_figure(
    records: Sequence[RunRecord],
    models: Sequence[str],
    value: Callable[[RunRecord], float],
    path: Path,
    metric_label: str,
    title: str,
) -> Path:
    """Learning curves per model with the ablation epochs (mean over seeds) and, right, the
    final error ÷ intact against the ablation epoch (mean ± s.e.m. over seeds)."""
    intact = intact_of(records)
    ablated = [r for r in records if ablation_epoch(r) is not None]
    lstm = select(records, model="lstm")
    present = [m for m in models if select(records, model=m)]
    fig, axes = plt.subplots(
        1,
        len(present) + 1,
        figsize=(4.3 * (len(present) + 1), 3.9),
        squeeze=False,
        gridspec_kw={"width_ratios": [1] * len(present) + [1.1]},
    )
    epochs = sorted({ablation_epoch(r) for r in ablated})
    cmap = plt.get_cmap("viridis")
    for ax, model in zip(axes[0], present):
        if lstm:
            draw_band(ax, band([r.series() for r in lstm]), style.colour("lstm"), "LSTM")
        draw_band(
            ax,
            band([r.series() for r in select(intact, model=model)]),
            style.colour(model),
            f"{style.label(model)} intact",
            lw=2.0,
        )
        for i, epoch in enumerate(epochs):
            chosen = ablated_at(select(ablated, model=model), epoch)
            if not chosen:
                continue
            colour = cmap(i / max(1, len(epochs) - 1) * 0.85)
            curve = band([r.series() for r in chosen])
            ax.plot(curve.epochs, curve.mean, color=colour, lw=1.0, label=f"ablated at {epoch}")
            ax.axvline(epoch + 0.5, color=colour, ls=":", lw=0.9)
        ax.set_title(f"{style.label(model)}: cerebellum ablated at epoch E", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric_label)
        ax.legend(frameon=False, fontsize=6.5)
    ax = axes[0, -1]
    for model in present:
        base = by_seed(select(intact, model=model), value)
        xs, ys, es = [], [], []
        for epoch in epochs:
            ratio = ratios(by_seed(ablated_at(select(ablated, model=model), epoch), value), base)
            if ratio.n:
                xs.append(epoch)
                ys.append(ratio.mean)
                es.append(ratio.sem if ratio.n > 1 else 0.0)
        ax.errorbar(
            xs,
            ys,
            yerr=es,
            color=style.colour(model),
            ls=style.linestyle(model),
            marker="o",
            capsize=3,
            label=style.label(model),
        )
    if lstm:
        for model in present[:1]:
            base = by_seed(select(intact, model=model), value)
            ratio = ratios(by_seed(lstm, value), base)
            if ratio.n:
                ax.errorbar(
                    [0],
                    [ratio.mean],
                    yerr=[ratio.sem if ratio.n > 1 else 0],
                    color="grey",
                    marker="*",
                    ms=10,
                    capsize=3,
                    ls="none",
                    label=f"LSTM ÷ {style.label(model)} intact",
                )
    ax.axhline(1.0, color="black", lw=0.7)
    ax.set_xlabel("ablation epoch E")
    ax.set_ylabel("final error ÷ intact (same seed)")
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def live_kill_lines(records: Sequence[RunRecord]) -> list[str]:
    """What the events say about the kills of the ablated runs that ran as processes."""
    ablated = [r for r in records if ablation_epoch(r) is not None and not r.spec.inprocess]
    if not ablated:
        return []
    killed, latencies, exact = 0, [], 0
    for record in ablated:
        exits = [
            e
            for e in record.run.events_named("exit")
            if e.get("region") == "cerebellum" and not e.get("expected")
        ]
        if any(e.get("exitcode") == -9 for e in exits):
            killed += 1
        latencies += [e["detection_latency_s"] for e in exits if "detection_latency_s" in e]
        epoch = ablation_epoch(record)
        after = [r for r in record.run.epoch_records() if r["epoch"] >= (epoch or 0)]
        if after and all(r.get("predictions") == 0 for r in after):
            exact += 1
    text = (
        f"Every ablated run went through the kill path: in {killed}/{len(ablated)} the "
        f"cerebellum process exited on SIGKILL (exit code −9) at the scheduled epoch, and in "
        f"{exact}/{len(ablated)} the area received no prediction from that epoch on."
    )
    if latencies:
        text += (
            f" The orchestrator saw each death after {1000 * statistics.median(latencies):.0f} ms "
            f"(median; max {1000 * max(latencies):.0f} ms)."
        )
    return [text]


def equality_lines(a: Sequence[RunRecord], b: Sequence[RunRecord], what: str) -> list[str]:
    """Compare two sweeps of the same grid run two ways, epoch by epoch."""
    by_name = {r.name: r for r in b}
    worst, compared, epochs = 0.0, 0, 0
    for record in a:
        other = by_name.get(record.name)
        if other is None:
            continue
        _, x = record.series()
        _, y = other.series()
        if len(x) != len(y):
            worst = math.inf
            continue
        compared += 1
        epochs += len(x)
        worst = max([worst, *(abs(p - q) for p, q in zip(x, y))])
    if not compared:
        return []
    return [
        f"{what}: {compared} runs compared epoch by epoch ({epochs} validation numbers); "
        f"largest absolute difference {worst:.2g}."
    ]


def final5(record: RunRecord) -> float:
    return record.final(5)


def write_report(
    sweeps_root: Path,
    plans: Sequence[Any],
    doc: Path,
    figures_dir: Path,
    invocation: str = COMMAND,
) -> list[Path]:
    """The Fig. 6a block of ``doc`` and ``figures_dir/fig6a_ablation.png``."""
    sweeps = {plan.name: load_runs(sweeps_root / plan.name) for plan in plans}
    main = sweeps.get("fig6a", [])
    written: list[Path] = []
    models = ["cc-dni", "scc-dni", "zero-dni"]
    lines = [
        "Commands (the first runs both sweeps, skipping finished runs, then writes this block "
        "and the figure; `--report-only` only redraws):",
        "",
        *code_block([invocation]),
        "",
    ]
    for plan in plans:
        lines.append(f"- `{plan.name}` — {plan.about}: {len(sweeps[plan.name])} completed runs.")
    if main:
        spec = main[0].spec
        mode = "in-process" if spec.inprocess else f"through the processes (timing `{spec.timing}`)"
        seeds = len({r.seed for r in main})
        lines += [
            "",
            f"### Fig. 6a: target reaching, T = {spec.truncation}, {seeds} seeds, {mode}",
            "",
            "Final error = validation MSE averaged over the last 5 epochs; ÷ intact = the "
            "ablated run's final error divided by the intact run's of the same model and seed, "
            "mean ± s.e.m. over seeds; ablated − intact: paired difference (mean ± s.e.m., p of "
            "the paired t-test; > 0: the ablation hurt).",
            "",
            markdown_table(ABLATION_HEADER, ablation_rows(main, main, models, final5)),
        ]
        lstm = select(main, model="lstm")
        if lstm:
            lines += [
                "",
                f"LSTM (no cerebellum), same seeds: final MSE "
                f"{mean_sem(final5(r) for r in lstm).text(2)}.",
            ]
        lines += [""] + live_kill_lines(main)
        reference = sweeps.get("fig6a-inprocess", [])
        if reference and not spec.inprocess:
            lines += [""] + equality_lines(
                main, reference, "Lockstep processes against the in-process reference"
            )
        path = ablation_figure(
            main,
            models,
            final5,
            figures_dir / "fig6a_ablation.png",
            "validation MSE",
            "final MSE ÷ intact",
        )
        written.append(path)
        rel = Path(os.path.relpath(path, doc.parent)).as_posix()
        lines += ["", f"![Fig. 6a]({rel})"]
    replace_generated(doc, COMMAND, "\n".join(lines), "Live lesions: results")
    written.append(doc)
    return written
