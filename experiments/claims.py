"""The paper on trial: one row per claim of the CC-DNI paper, measured here (docs/claims.md).

    python -m experiments.claims                 # the full budget (reuses the experiments' runs)
    python -m experiments.claims --quick         # CI-sized budget, about a minute on 2 cores
    python -m experiments.claims --claim 4       # one row only (runs only the sweeps it needs)
    python launch.py claims …                    # the same

Each claim names the sweeps of the experiment modules it rests on (``experiments.fig2_target_
reaching``, ``fig6_ablation``, ``seqmnist``, ``sparsity_expansion``, ``correlation``,
``fig7_forward_dni``) and runs them with :func:`experiments.common.run_plans` under the same
sweep folders, so finished runs are reused, never repeated: after ``python -m
experiments.fig2_target_reaching`` the target-reaching rows cost nothing. The full budget is
each experiment's default budget; ``--quick`` is each one's ``quick`` budget, run inside this
process (no process start-up per run), into ``runs/sweeps/claims-quick`` by default.

Every measurement is a difference paired by seed (mean ± s.e.m., n seeds) with a two-sided
paired t-test and its 95 % interval (scipy.stats). The verdict:

- **holds**: the difference has the paper's sign and p < 0.05 (every part of a claim with parts);
- **does not hold**: a part has the opposite sign with p < 0.05;
- **inconclusive at this budget**: anything else (too few seeds, or no significant difference);
- **not tested here**: no run of the sweeps the claim needs is on disk (the row names the
  command that makes them).

Where the zero-DNI control applies (cerebellum present and every message exchanged, predictions
frozen at 0: the extra optimiser steps a DNI area takes without any predicted feedback), the row
also compares the DNI model with it: what remains is the effect of the predicted feedback, and
its own verdict (same rule, "beyond zero-DNI") says whether the claim survives the control.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments import correlation as correlation_experiment
from experiments import fig2_target_reaching, fig6_ablation, seqmnist, sparsity_expansion
from experiments.common import (
    ROOT,
    Placement,
    SweepPlan,
    add_mnist_flags,
    prepare_mnist,
    run_plans,
)
from orchestrator.cli import ScriptParser

ALPHA = 0.05
HOLDS, FAILS, OPEN = "holds", "does not hold", "inconclusive at this budget"
NOT_TESTED = "not tested here"
NO_CONTROL = "—"  # the zero-DNI control does not apply
DOC = "docs/claims.md"
QUICK_ROOT = "runs/sweeps/claims-quick"


# --- budgets: which sweeps, where -------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A group of sweeps of one experiment, and where they go."""

    key: str  # e.g. "target-reaching"
    plans: tuple[SweepPlan, ...]
    root: Path
    command: str  # the experiment command that runs (and reports) the same sweeps


def sources(quick: bool, sweeps_root: Path | None) -> dict[str, Source]:
    """The experiments' sweeps at the chosen budget. Full budget: each experiment's own sweep
    folders (runs/sweeps/…), so their finished runs are reused; ``sweeps_root`` moves them."""

    def root(key: str, default: str) -> Path:
        if sweeps_root is not None:
            return sweeps_root / key
        return ROOT / (QUICK_ROOT + "/" + key if quick else default)

    budget = "quick" if quick else None
    seq_budget = "quick" if quick else "small"
    q = " --budget quick" if quick else ""
    return {
        "target-reaching": Source(
            "target-reaching",
            tuple(fig2_target_reaching.plans(budget or "full")),
            root("target-reaching", fig2_target_reaching.SWEEPS_ROOT),
            f"python -m experiments.fig2_target_reaching{q}",
        ),
        "ablation": Source(
            "ablation",
            tuple(fig6_ablation.plans(budget or "full")),
            root("ablation", fig6_ablation.SWEEPS_ROOT),
            f"python -m experiments.fig6_ablation{q}",
        ),
        "seqmnist": Source(
            "seqmnist",
            tuple(seqmnist.plans(seq_budget)),
            root("seqmnist", seqmnist.sweeps_root(seq_budget)),
            f"python -m experiments.seqmnist --budget {seq_budget}",
        ),
        "sparsity": Source(
            "sparsity",
            tuple(sparsity_expansion.plans(budget or "full")),
            root("sweeps", sparsity_expansion.SWEEPS_ROOT),
            f"python -m experiments.sparsity_expansion{q}",
        ),
        "correlation": Source(
            "correlation",
            tuple(correlation_experiment.plans(budget or "full")),
            root("sweeps", correlation_experiment.SWEEPS_ROOT),
            f"python -m experiments.correlation{q}",
        ),
        "forward": Source(
            "forward",
            (),
            root("forward-dni", "runs/sweeps/forward-dni"),
            "python -m experiments.fig7_forward_dni",
        ),
    }


FORWARD_BUDGETS: dict[str, dict[str, Any]] = {
    "full": {"seeds": [0, 1, 2], "args": ["--epochs", "3"]},
    "quick": {
        "seeds": [0, 1],
        "args": ["--epochs", "1", "--train-subset", "1000", "--probe", "200"],
    },
}


def forward_runs(source: Source, quick: bool, echo: bool) -> list[dict[str, float]]:
    """Forward-DNI pair summaries, one per seed (cached as JSON under the source's folder)."""
    from experiments import fig7_forward_dni

    budget = FORWARD_BUDGETS["quick" if quick else "full"]
    source.root.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in budget["seeds"]:
        args = [*budget["args"], "--seed", str(seed)]
        path = source.root / f"seed{seed}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("args") == args:
                out.append(saved["pairs"])
                continue
        if echo:
            print(f"  forward-dni: seed {seed} ({' '.join(args)})", flush=True)
        result = fig7_forward_dni.train(fig7_forward_dni.parse_args(args))
        pairs = result.pair_summary()
        path.write_text(json.dumps({"args": args, "pairs": pairs, "seconds": result.seconds}))
        out.append(pairs)
    return out


# --- statistics and verdicts ------------------------------------------------------------------


def verdict_of(diff: Any, sign: int) -> str:
    """``sign`` = −1: the paper expects a negative difference (e.g. DNI − LSTM error < 0)."""
    if diff.n < 2 or not math.isfinite(diff.p):
        return OPEN
    if diff.p < ALPHA and diff.mean * sign > 0:
        return HOLDS
    if diff.p < ALPHA and diff.mean * sign < 0:
        return FAILS
    return OPEN


def combine(verdicts: Sequence[str]) -> str:
    """Every part holds → holds; a part contradicted → does not hold; else inconclusive."""
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    if any(v == FAILS for v in verdicts):
        return FAILS
    return OPEN


@dataclass
class Row:
    """One claim on the page."""

    number: str
    figure: str
    statement: str  # the paper's words
    measurement: str = "not measured"
    control: str = "—"
    verdict: str = NOT_TESTED
    beyond: str = NO_CONTROL  # the verdict on the DNI − zero-DNI part(s), where it applies
    command: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Claim:
    number: str
    figure: str
    statement: str
    needs: tuple[str, ...]  # source keys
    measure: Callable[[Any, Row], None]


class Context:
    """The loaded runs of every source the claims need (read through RunDirectory)."""

    def __init__(self, srcs: dict[str, Source], quick: bool):
        self.srcs = srcs
        self.quick = quick
        self._runs: dict[tuple[str, str], list[Any]] = {}
        self.forward: list[dict[str, float]] = []

    def runs(self, key: str, plan: str) -> list[Any]:
        from ccdni.reporting.runs import load_runs

        if (key, plan) not in self._runs:
            self._runs[key, plan] = load_runs(self.srcs[key].root / plan)
        return self._runs[key, plan]

    def command(self, key: str, number: str) -> str:
        quick = " --quick" if self.quick else ""
        return f"`python -m experiments.claims --claim {number}{quick}` (sweeps of `{self.srcs[key].command}`)"


# --- the claims ----------------------------------------------------------------------------------


def _final5(record: Any) -> float:
    return record.final(5)


def _final(record: Any) -> float:
    return record.final(1)


def _speed(record: Any) -> float:
    return record.mean_over_epochs()


def _label(model: str) -> str:
    from ccdni.reporting.style import label

    return label(model)


def _diff(a: list[Any], b: list[Any], value: Callable[[Any], float]) -> Any:
    from ccdni.reporting.runs import paired_by_seed

    return paired_by_seed(a, b, value)


def _sel(records: list[Any], **where: Any) -> list[Any]:
    from ccdni.reporting.runs import select

    return select(records, **where)


def _compare_models(
    ctx: Context,
    row: Row,
    records: list[Any],
    value: Callable[[Any], float],
    unit: str,
    models: Sequence[str] = ("cc-dni", "scc-dni"),
    against: str = "lstm",
    sign: int = -1,
    digits: int = 2,
) -> None:
    """DNI − LSTM (paper's claim: lower) for each DNI model; DNI − zero-DNI as the control."""
    parts, texts, controls, beyond = [], [], [], []
    for model in models:
        diff = _diff(_sel(records, model=model), _sel(records, model=against), value)
        parts.append(verdict_of(diff, sign))
        texts.append(f"{_label(model)} − {_label(against)}: {diff.text(digits)}")
        zero = _diff(_sel(records, model=model), _sel(records, model="zero-dni"), value)
        if zero.n:
            beyond.append(verdict_of(zero, sign))
            controls.append(f"{_label(model)} − zero-DNI: {zero.text(digits)} → {beyond[-1]}")
    zero_lstm = _diff(_sel(records, model="zero-dni"), _sel(records, model=against), value)
    if zero_lstm.n:
        controls.insert(0, f"zero-DNI − {_label(against)}: {zero_lstm.text(digits)}")
    row.measurement = f"{unit}; " + "; ".join(texts)
    row.control = "; ".join(controls) or "—"
    row.verdict = combine(parts)
    row.beyond = combine(beyond) if beyond else NO_CONTROL


def claim_dni_beats_lstm(schedule: str) -> Callable[[Context, Row], None]:
    def measure(ctx: Context, row: Row) -> None:
        if schedule == "truncation":
            records = ctx.runs("target-reaching", "fig2b")
            where = "processes" if records and not records[0].spec.inprocess else "in-process"
            if records:
                where += f", timing {records[0].spec.timing}" if where == "processes" else ""
        else:
            records = _sel(ctx.runs("target-reaching", "fig2d-sequence"), truncation=2)
            where = "in-process, one update per sequence"
        if not records:
            return
        _compare_models(ctx, row, records, _final5, f"T=2 ({where}), final MSE (last 5 epochs)")
        row.command = ctx.command("target-reaching", row.number)

    return measure


def claim_sparse_faster(ctx: Context, row: Row) -> None:
    records = ctx.runs("target-reaching", "fig2b")
    if not records:
        return
    speed = _diff(_sel(records, model="scc-dni"), _sel(records, model="cc-dni"), _speed)
    final = _diff(_sel(records, model="scc-dni"), _sel(records, model="cc-dni"), _final5)
    row.measurement = (
        f"T=2, learning speed (validation MSE averaged over every epoch): sCC-DNI − CC-DNI "
        f"{speed.text(2)}; final MSE: {final.text(2)}"
    )
    row.control = "not applicable (both models have a learning cerebellum)"
    row.verdict = verdict_of(speed, -1)
    row.command = ctx.command("target-reaching", row.number)


def claim_gain_small_t(ctx: Context, row: Row) -> None:
    from ccdni.reporting.runs import by_seed
    from ccdni.reporting.stats import paired, spearman

    records = ctx.runs("target-reaching", "fig2d")
    if not records:
        return
    ts = sorted({r.spec.truncation for r in records})
    low, high = ts[0], ts[-1]

    def gain(model: str, t: int) -> dict[int, float]:
        lstm = by_seed(_sel(records, model="lstm", truncation=t), _final5)
        dni = by_seed(_sel(records, model=model, truncation=t), _final5)
        return {s: lstm[s] - dni[s] for s in lstm if s in dni}

    parts, texts, controls, beyond_parts = [], [], [], []
    for model in ("cc-dni", "scc-dni"):
        diff = paired(gain(model, low), gain(model, high))
        parts.append(verdict_of(diff, +1))
        xs = [t for t in ts for _ in gain(model, t)]
        ys = [g for t in ts for g in gain(model, t).values()]
        rho, p = spearman(xs, ys)
        texts.append(
            f"{_label(model)}: gain(T={low}) − gain(T={high}) = {diff.text(2)}; Spearman ρ(T, gain) "
            f"= {rho:.2f} (p={p:.2g}) over T ∈ {{{', '.join(map(str, ts))}}}"
        )
        beyond = {
            t: {s: v - gain("zero-dni", t).get(s, math.nan) for s, v in gain(model, t).items()}
            for t in ts
        }
        control = paired(beyond[low], beyond[high])
        if control.n:
            beyond_parts.append(verdict_of(control, +1))
            controls.append(
                f"{_label(model)} − zero-DNI gain, T={low} minus T={high}: {control.text(2)} → "
                f"{verdict_of(control, +1)}"
            )
    zero = paired(gain("zero-dni", low), gain("zero-dni", high))
    if zero.n:
        controls.insert(0, f"zero-DNI's own gain, T={low} minus T={high}: {zero.text(2)}")
    row.measurement = "gain = LSTM − DNI final MSE (in-process, paired); " + "; ".join(texts)
    row.control = "; ".join(controls) or "—"
    row.verdict = combine(parts)
    row.beyond = combine(beyond_parts) if beyond_parts else NO_CONTROL
    sequence = ctx.runs("target-reaching", "fig2d-sequence")
    if sequence:  # every model takes one step per sequence: the gain is the feedback alone
        cells = []
        for model in ("cc-dni", "scc-dni"):
            per_t = []
            for t in sorted({r.spec.truncation for r in sequence}):
                here = _sel(sequence, truncation=t)
                gained = _diff(_sel(here, model="lstm"), _sel(here, model=model), _final5)
                per_t.append(f"T={t}: {gained.short(1)}")
            cells.append(f"{_label(model)} " + ", ".join(per_t))
        row.notes.append(
            "With one update per sequence (`fig2d-sequence`, where every model takes the same "
            "steps and zero-DNI equals the LSTM), gain = LSTM − DNI final MSE per T: "
            + "; ".join(cells)
        )
    row.command = ctx.command("target-reaching", row.number)


def claim_seqmnist(schedule: str) -> Callable[[Context, Row], None]:
    def measure(ctx: Context, row: Row) -> None:
        records = _sel(ctx.runs("seqmnist", "seqmnist-T5"), update=schedule)
        if not records:
            return
        models = [m for m in ("cc-dni", "scc-dni") if _sel(records, model=m)]
        epochs = records[0].spec.epochs
        subset = records[0].spec.train_subset or 48000
        _compare_models(
            ctx,
            row,
            records,
            _final,
            f"T=5, validation error (%) after {epochs} epochs on {subset} images",
            models=models,
            digits=1,
        )
        others = ctx.runs("seqmnist", "seqmnist-T")
        small = [r for r in others if r.spec.truncation <= 6]
        if small and schedule == "truncation":
            pooled = []
            for model in models:
                diffs = []
                for t in sorted({r.spec.truncation for r in small}):
                    d = _diff(
                        _sel(small, model=model, truncation=t),
                        _sel(small, model="lstm", truncation=t),
                        _final,
                    )
                    diffs.append(f"T={t}: {d.short(1)}")
                pooled.append(f"{_label(model)} − LSTM at other T ≤ 6: " + ", ".join(diffs))
            row.notes += pooled
        row.command = ctx.command("seqmnist", row.number)

    return measure


def claim_loss_sparsity(ctx: Context, row: Row) -> None:
    from ccdni.reporting.runs import by_seed
    from ccdni.reporting.stats import paired

    records = ctx.runs("seqmnist", "ld-seqmnist")
    if not records:
        return
    gammas = sorted({r.spec.gamma for r in records})
    low, high = gammas[0], gammas[-1]

    def gain(model: str, g: int) -> dict[int, float]:
        lstm = by_seed(_sel(records, model="lstm", gamma=g), _final)
        dni = by_seed(_sel(records, model=model, gamma=g), _final)
        return {s: lstm[s] - dni[s] for s in lstm if s in dni}

    parts, texts, beyond_parts, controls = [], [], [], []
    models = [m for m in ("cc-dni", "scc-dni") if _sel(records, model=m)]
    if not models:
        row.measurement = (
            f"not measured: the ld-seqMNIST sweep has no CC-DNI or sCC-DNI run yet "
            f"({len(records)} runs of the LSTM and zero-DNI)"
        )
        return
    zero_gain = {g: gain("zero-dni", g) for g in gammas}
    for model in models:
        per_gamma = ", ".join(f"γ={g}: {_gain_text(gain(model, g))}" for g in gammas)
        diff = paired(gain(model, high), gain(model, low))
        if diff.n < 2:  # a sweep stopped early: too few seeds at both γ to test
            texts.append(
                f"{_label(model)}: too few runs yet to pair γ={high} with γ={low} ({diff.n} "
                f"seeds; gain per γ: {per_gamma})"
            )
            continue
        parts.append(verdict_of(diff, +1))
        texts.append(
            f"{_label(model)}: gain(γ={high}) − gain(γ={low}) = {diff.text(2)} (gain per γ: {per_gamma})"
        )

        def over_zero(g: int, model: str = model) -> dict[int, float]:
            return {s: v - zero_gain[g].get(s, math.nan) for s, v in gain(model, g).items()}

        control = paired(over_zero(high), over_zero(low))
        if control.n:
            beyond_parts.append(verdict_of(control, +1))
            controls.append(
                f"{_label(model)} − zero-DNI gain, γ={high} minus γ={low}: {control.text(2)} → "
                f"{beyond_parts[-1]}"
            )
    zero = paired(zero_gain[high], zero_gain[low])
    if zero.n:
        controls.insert(0, f"zero-DNI's own gain, γ={high} minus γ={low}: {zero.text(2)}")
    row.measurement = "gain = LSTM − DNI final validation MSE, T=5, paired; " + "; ".join(texts)
    row.control = "; ".join(controls) or "—"
    row.verdict = combine(parts) if parts else NOT_TESTED
    row.beyond = combine(beyond_parts) if beyond_parts else NO_CONTROL
    row.command = ctx.command("seqmnist", row.number)


def _gain_text(gains: dict[int, float]) -> str:
    from ccdni.reporting.stats import mean_sem

    return mean_sem(gains.values()).text(2)


def _ablation_epochs(records: list[Any]) -> list[int]:
    """The epochs at which some of ``records`` ablate the cerebellum, sorted."""
    from ccdni.reporting.ablation_report import ablation_epoch

    return sorted({e for r in records if (e := ablation_epoch(r)) is not None})


def claim_ablation(ctx: Context, row: Row) -> None:
    from ccdni.reporting.ablation_report import ablated_at, intact_of
    from ccdni.reporting.runs import by_seed
    from ccdni.reporting.stats import paired

    records = ctx.runs("ablation", "fig6a")
    if not records:
        return
    epochs = _ablation_epochs(records)
    if not epochs:
        return
    early, late = epochs[0], epochs[-1]
    parts, texts, controls, beyond_parts = [], [], [], []
    harm: dict[str, dict[int, float]] = {}  # model → seed → (ablated early − intact)
    for model in ("zero-dni", "cc-dni", "scc-dni"):
        here = _sel(records, model=model)
        if not here:
            continue
        intact = by_seed(intact_of(here), _final5)
        first = by_seed(ablated_at(here, early), _final5)
        last = by_seed(ablated_at(here, late), _final5)
        hurt = paired(first, intact)
        less = paired(first, last)
        harm[model] = {s: first[s] - intact[s] for s in first if s in intact}
        text = (
            f"{_label(model)}: ablated at {early} − intact {hurt.text(2)}; ablated at {early} − "
            f"ablated at {late} {less.text(2)}"
        )
        if model == "zero-dni":
            controls.append(text)
            continue
        parts += [verdict_of(hurt, +1), verdict_of(less, +1)]
        texts.append(text)
        if "zero-dni" in harm:
            extra = paired(harm[model], harm["zero-dni"])
            beyond_parts.append(verdict_of(extra, +1))
            controls.append(
                f"{_label(model)}'s harm at {early} − zero-DNI's: {extra.text(2)} → "
                f"{beyond_parts[-1]}"
            )
    spec = records[0].spec
    where = "in-process" if spec.inprocess else f"processes, live kill, timing {spec.timing}"
    row.measurement = f"target reaching T=2 ({where}), final MSE, paired by seed; " + "; ".join(
        texts
    )
    row.control = "; ".join(controls) or "—"
    row.verdict = combine(parts)
    row.beyond = combine(beyond_parts) if beyond_parts else NO_CONTROL
    seq = ctx.runs("seqmnist", "seqmnist-ablation")
    intact_seq = _sel(ctx.runs("seqmnist", "seqmnist-T5"), update="truncation")
    if seq and intact_seq:
        e_seq = _ablation_epochs(seq)
        notes = []
        for model in ("cc-dni", "scc-dni", "zero-dni"):
            base = by_seed(_sel(intact_seq, model=model), _final)
            if not base:
                continue
            cells = [
                f"E={e}: {paired(by_seed(ablated_at(_sel(seq, model=model), e), _final), base).short(1)}"
                for e in e_seq
            ]
            notes.append(f"{_label(model)} ablated − intact: " + ", ".join(cells))
        row.notes.append("seqMNIST (Fig. 6b, validation error %): " + "; ".join(notes))
    row.command = ctx.command("ablation", row.number)


def claim_decorrelation(ctx: Context, row: Row) -> None:
    from ccdni.reporting.runs import by_seed
    from ccdni.reporting.stats import mean_sem

    records = ctx.runs("correlation", ctx.srcs["correlation"].plans[0].name)
    if not records:
        return

    def early_rg(record: Any) -> float:
        epochs, values = record.series("r_g")
        chosen = [v for e, v in zip(epochs, values) if 1 <= e < 100]
        return sum(chosen) / len(chosen) if chosen else math.nan

    bs = sorted({r.spec.bias_factor for r in records})
    primary = 1.0 if 1.0 in bs else bs[-1]
    texts, main = [], None
    for b in bs:
        here = _sel(records, bias_factor=b)
        dense = by_seed(_sel(here, model="cc-dni"), early_rg)
        sparse = by_seed(_sel(here, model="scc-dni"), early_rg)
        diff = _diff(_sel(here, model="scc-dni"), _sel(here, model="cc-dni"), early_rg)
        if b == primary:
            main = diff
        texts.append(
            f"b={b:g}: r_ĝ dense {mean_sem(dense.values()).text(3)}, sparse "
            f"{mean_sem(sparse.values()).text(3)}, sparse − dense {diff.short(3)}"
        )
    if main is None:
        return
    row.measurement = (
        f"mean |Pearson r| between units of ĝ over epochs 2–100 (Fig. 2f), target reaching T=2, "
        f"K=4 vs dense; at b={primary:g}: sparse − dense {main.text(3)}. All b: " + "; ".join(texts)
    )
    row.control = "not applicable (zero-DNI's ĝ is identically 0)"
    row.verdict = verdict_of(main, -1)
    row.command = ctx.command("correlation", row.number)


def claim_good_region(ctx: Context, row: Row) -> None:
    from ccdni.reporting.runs import by_seed
    from ccdni.reporting.stats import mean_sem, paired

    records = ctx.runs("sparsity", ctx.srcs["sparsity"].plans[0].name)
    dni = [r for r in records if r.model in ("cc-dni", "scc-dni")]
    if not dni:
        return

    def cell(r: Any) -> tuple[float, str]:
        k = "full" if r.model == "cc-dni" else str(r.spec.sparsity_k)
        return (r.spec.expansion_ratio, k)

    cells = sorted({cell(r) for r in dni}, key=lambda c: (c[0], c[1]))
    per_cell = {c: by_seed([r for r in dni if cell(r) == c], _final5) for c in cells}
    seeds = sorted(set.intersection(*(set(v) for v in per_cell.values())))
    target = (4.0, "4") if (4.0, "4") in per_cell else cells[len(cells) // 2]
    grid_mean = {s: sum(per_cell[c][s] for c in cells) / len(cells) for s in seeds}
    diff = paired({s: per_cell[target][s] for s in seeds}, grid_mean)
    means = {c: mean_sem(per_cell[c].values()).mean for c in cells}
    ranking = sorted(cells, key=lambda c: means[c])
    rank = ranking.index(target) + 1
    best = ", ".join(f"M/N={c[0]:g} K={c[1]} ({means[c]:.1f})" for c in ranking[:3])
    lstm = mean_sem(_final5(r) for r in _sel(records, model="lstm"))
    zero = mean_sem(_final5(r) for r in _sel(records, model="zero-dni"))
    task = records[0].spec.task
    row.measurement = (
        f"{task}, final MSE of the M/N=4, K=4 cell − the mean over all {len(cells)} M/N × K "
        f"cells of the same seed: {diff.text(2)}; it ranks {rank}/{len(cells)} (best: {best})"
    )
    row.control = f"LSTM {lstm.text(1)}, zero-DNI {zero.text(1)} (n={lstm.n})"
    row.verdict = verdict_of(diff, -1)
    row.command = ctx.command("sparsity", row.number)


def claim_forward(ctx: Context, row: Row) -> None:
    from ccdni.reporting.stats import paired_from_diffs

    runs = ctx.forward
    if not runs:
        return
    rise = paired_from_diffs([r["output_end_last"] - r["output_end_first"] for r in runs])
    fall = paired_from_diffs([r["output_start_last"] - r["output_start_first"] for r in runs])
    hidden_rise = paired_from_diffs([r["hidden_end_last"] - r["hidden_end_first"] for r in runs])
    hidden_fall = paired_from_diffs(
        [r["hidden_start_last"] - r["hidden_start_first"] for r in runs]
    )
    row.measurement = (
        "mean |r| of the 256 most correlated (cerebellar nuclei, h₂) pairs, last minus first "
        f"record, per seed: pairs chosen at the end {rise.text(3)}; chosen at the start "
        f"{fall.text(3)} (granule layer: {hidden_rise.short(3)} / {hidden_fall.short(3)})"
    )
    row.control = "not applicable (no truncated BPTT: a feed-forward net, forward DNI)"
    row.verdict = combine([verdict_of(rise, +1), verdict_of(fall, -1)])
    row.notes.append(
        "Part of both changes is selection: pairs picked as the top 256 of 65 536 at one time "
        "are extreme there and look lower at any other time."
    )
    quick = " --quick" if ctx.quick else ""
    row.command = f"`python -m experiments.claims --claim {row.number}{quick}` (calls `experiments.fig7_forward_dni.train` per seed)"


CLAIMS = (
    Claim(
        "1a",
        "Fig. 2a,b",
        "“only the CC-DNI models learn to reach the target with good accuracy, while LSTM "
        "still learns but much more slowly” (target reaching, T=2)",
        ("target-reaching",),
        claim_dni_beats_lstm("truncation"),
    ),
    Claim(
        "1b",
        "Fig. 2a,b",
        "the same, with one optimiser step per sequence (the authors' code), where every "
        "model takes the same number of steps",
        ("target-reaching",),
        claim_dni_beats_lstm("sequence"),
    ),
    Claim(
        "2",
        "Fig. 2b,d, S3",
        "“sparse CC-DNI not only learns more quickly than CC-DNI …”",
        ("target-reaching",),
        claim_sparse_faster,
    ),
    Claim(
        "3",
        "Fig. 2d",
        "“CC-DNI properties are particularly important when learning with low BPTT "
        "truncations”: the DNI gain over the LSTM is largest at small T",
        ("target-reaching",),
        claim_gain_small_t,
    ),
    Claim(
        "4a",
        "Fig. 3b,c",
        "“With truncated BPTT with modest truncation sizes T ≤ 6, CC-DNI models learn more "
        "quickly and achieve better overall performance compared to a standard LSTM” "
        "(seqMNIST; update after every truncation)",
        ("seqmnist",),
        claim_seqmnist("truncation"),
    ),
    Claim(
        "4b",
        "Fig. 3b,c",
        "the same with one update per sequence (the authors' seqMNIST code)",
        ("seqmnist",),
        claim_seqmnist("sequence"),
    ),
    Claim(
        "5",
        "Fig. 3b",
        "“the temporal resolution of the loss is important for CC-DNI … sparser losses "
        "(higher γ) improve learning”: a bigger DNI gain on ld-seqMNIST when the loss comes "
        "every γ steps",
        ("seqmnist",),
        claim_loss_sparsity,
    ),
    Claim(
        "6",
        "Fig. 6a,b",
        "“ablations generally impair learning …, but this impairment reduces over learning”",
        ("ablation", "seqmnist"),
        claim_ablation,
    ),
    Claim(
        "7",
        "Fig. 2e,f",
        "sCC-DNI helps “due to decorrelation of its estimated gradients ĝ”: sparse K lowers "
        "the correlation of ĝ",
        ("correlation",),
        claim_decorrelation,
    ),
    Claim(
        "8",
        "Fig. 5, S3",
        "“the parameters found experimentally [M/N ≈ 4–5, K = 4] provide a good combination "
        "to facilitate learning … This region of good hyperparameters is much wider in "
        "regression tasks”",
        ("sparsity",),
        claim_good_region,
    ),
    Claim(
        "9",
        "Fig. 7",
        "“correlations between the main network and the cerebellum increase over learning for "
        "neurons with final high correlations whereas correlations decrease for neurons with "
        "initial high correlations” (forward DNI on MNIST)",
        ("forward",),
        claim_forward,
    ),
)


# --- running and writing -------------------------------------------------------------------------


def run_sources(
    srcs: dict[str, Source],
    needed: set[str],
    quick: bool,
    where: Placement,
    echo: bool,
    only_plans: dict[str, set[str]] | None = None,
) -> None:
    for key in ("target-reaching", "ablation", "sparsity", "correlation", "seqmnist"):
        if key not in needed:
            continue
        source = srcs[key]
        plans = [p for p in source.plans if only_plans is None or p.name in only_plans.get(key, ())]
        if not plans:
            continue
        if echo:
            print(f"{key}: {sum(p.points() for p in plans)} points under {source.root}", flush=True)
        run_plans(plans, source.root, where, echo=echo, inline=quick)


PLANS_OF_CLAIM = {  # the sweeps each claim reads (default: every sweep of its sources)
    "1a": {"target-reaching": {"fig2b"}},
    "1b": {"target-reaching": {"fig2d-sequence"}},
    "2": {"target-reaching": {"fig2b"}},
    "3": {"target-reaching": {"fig2d", "fig2d-sequence"}},
    "4a": {"seqmnist": {"seqmnist-T5", "seqmnist-T"}},
    "4b": {"seqmnist": {"seqmnist-T5"}},
    "5": {"seqmnist": {"ld-seqmnist"}},
    "6": {"ablation": {"fig6a"}, "seqmnist": {"seqmnist-T5", "seqmnist-ablation"}},
}


def evaluate(
    quick: bool = False,
    sweeps_root: Path | None = None,
    only: Sequence[str] = (),
    report_only: bool = False,
    where: Placement | None = None,
    echo: bool = True,
) -> list[Row]:
    """Run what the chosen claims need (finished runs reused) and measure every row."""
    srcs = sources(quick, sweeps_root)
    claims = [c for c in CLAIMS if not only or c.number in only]
    needed = {key for c in claims for key in c.needs}
    ctx = Context(srcs, quick)
    if not report_only:
        wanted: dict[str, set[str]] = {}  # only the sweeps the chosen claims read
        for claim in claims:
            default = {key: {p.name for p in srcs[key].plans} for key in claim.needs}
            for key, names in PLANS_OF_CLAIM.get(claim.number, default).items():
                wanted.setdefault(key, set()).update(names)
        run_sources(srcs, needed, quick, where or Placement(), echo, wanted)
    if "forward" in needed:
        if report_only:
            ctx.forward = [
                json.loads(p.read_text())["pairs"]
                for p in sorted(srcs["forward"].root.glob("seed*.json"))
            ]
        else:
            ctx.forward = forward_runs(srcs["forward"], quick, echo)
    rows = []
    for claim in claims:
        row = Row(claim.number, claim.figure, claim.statement)
        try:
            claim.measure(ctx, row)
        except Exception as exc:  # a broken measurement is one inconclusive row, not no page
            row.measurement = f"could not be measured: {type(exc).__name__}: {exc}"
            row.verdict = OPEN
        if not row.command:
            row.command = f"`python -m experiments.claims --claim {claim.number}" + (
                " --quick`" if quick else "`"
            )
        rows.append(row)
    return rows


def render(rows: Sequence[Row], quick: bool, seconds: float, srcs: dict[str, Source]) -> str:
    from ccdni.reporting.tables import markdown_table

    budget = (
        "**quick** (CI-sized: each experiment's `--budget quick`; numbers here are a smoke "
        "test, not results)"
        if quick
        else "**full** (each experiment's default budget; see the result pages for what that is)"
    )
    counts = {v: sum(r.verdict == v for r in rows) for v in (HOLDS, FAILS, OPEN, NOT_TESTED)}
    lines = [
        "# The paper's claims, measured",
        "",
        f"Written by `python -m experiments.claims{' --quick' if quick else ''}` "
        f"({seconds / 60:.1f} min for this page, runs already on disk reused). Budget: {budget}.",
        "",
        "Each row: the paper's statement, our measurement — a difference paired by seed "
        "(mean ± s.e.m., n seeds, 95 % t interval, two-sided paired t-test p) — the zero-DNI "
        "control where it applies (cerebellum and olive present, every message exchanged, "
        "predictions frozen at 0: what the extra optimiser steps of a DNI area do without any "
        "predicted feedback; *DNI − zero-DNI* is then the effect of the predicted feedback), "
        "the verdict and the command that reproduces the row.",
        "",
        f"Verdict rule: **holds** — every part has the paper's sign with p < {ALPHA}; **does "
        f"not hold** — a part has the opposite sign with p < {ALPHA}; **inconclusive at this "
        "budget** — otherwise; **not tested here** — no run of the sweeps it needs is on disk. "
        "The verdict is about the paper's statement; *beyond zero-DNI* applies the same rule to "
        "the DNI − zero-DNI part(s) (the predicted feedback alone), — where the control does "
        "not apply.",
        "",
        f"Verdicts: {counts[HOLDS]} hold, {counts[FAILS]} do not hold, {counts[OPEN]} "
        f"inconclusive, {counts[NOT_TESTED]} not tested here.",
        "",
        "## At a glance",
        "",
        markdown_table(
            ["#", "figure", "verdict", "beyond zero-DNI"],
            [[r.number, r.figure, f"**{r.verdict}**", r.beyond] for r in rows],
        ),
        "",
        "## Every claim, measured",
        "",
        markdown_table(
            [
                "#",
                "paper (figure)",
                "our measurement",
                "zero-DNI control",
                "verdict",
                "beyond zero-DNI",
                "command",
            ],
            [
                [
                    r.number,
                    f"{r.statement} ({r.figure})",
                    r.measurement + (" (notes below)" if r.notes else ""),
                    r.control,
                    f"**{r.verdict}**",
                    r.beyond,
                    r.command,
                ]
                for r in rows
            ],
        ),
        "",
        *(
            line
            for r in rows
            if r.notes
            for line in ("", f"Notes on claim {r.number}:", "", *(f"- {n}" for n in r.notes))
        ),
        "",
        "## What is on disk",
        "",
        "Sweep folders read, with the finished runs of each sweep against its planned points "
        "(a sweep short of its plan was stopped for time; its command finishes it, reusing "
        "every finished run):",
        "",
        *(
            f"- {s.key}: `{_display(s.root)}` ({s.command})"
            + "".join(f"; `{p.name}` {_finished(s.root / p.name)}/{p.points()}" for p in s.plans)
            for s in srcs.values()
        ),
    ]
    return "\n".join(lines) + "\n"


def _finished(sweep_dir: Path) -> int:
    """Points of a sweep whose run completed (``results.csv``: completed now or earlier)."""
    import csv

    path = sweep_dir / "results.csv"
    if not path.exists():
        return 0
    with open(path, newline="") as fh:
        return sum(row.get("status") in ("completed", "skipped") for row in csv.DictReader(fh))


def _display(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = ScriptParser(
        prog="launch.py claims"
        if Path(sys.argv[0]).name == "launch.py"
        else "python -m experiments.claims",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="the CI-sized budget")
    parser.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="N",
        help="only this claim (repeatable): " + ", ".join(c.number for c in CLAIMS),
    )
    parser.add_argument(
        "--sweeps-root",
        default="",
        help="where every sweep goes (default: the experiments' own folders; with --quick "
        f"{QUICK_ROOT})",
    )
    parser.add_argument("--doc", default=DOC, help="the page to write")
    add_mnist_flags(parser)
    parser.add_argument("--slots", type=int, default=1, help="concurrent runs on the CPU")
    parser.add_argument(
        "--report-only", action="store_true", help="run nothing; measure what is on disk"
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.claim if n not in {c.number for c in CLAIMS}]
    if unknown:
        parser.error(
            f"unknown claim {', '.join(unknown)}; choose from {', '.join(c.number for c in CLAIMS)}"
        )
    started = time.monotonic()
    root = Path(args.sweeps_root).resolve() if args.sweeps_root else None
    if not args.report_only and any(
        {"seqmnist", "forward"} & set(c.needs)
        for c in CLAIMS
        if not args.claim or c.number in args.claim
    ):
        prepare_mnist(parser, args)  # a missing data folder: one line, exit 2, nothing run
    rows = evaluate(args.quick, root, args.claim, args.report_only, Placement(slots=args.slots))
    doc = Path(args.doc)
    if not doc.is_absolute():
        doc = ROOT / doc
    text = render(rows, args.quick, time.monotonic() - started, sources(args.quick, root))
    if args.claim:  # one row: print it, keep the page
        print(text)
    else:
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(text)
        print(f"wrote {doc}")
    for row in rows:
        print(f"{row.number:>3}  {row.verdict:<28} {row.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
