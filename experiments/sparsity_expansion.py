"""Cerebellar expansion M/N × input sparsity K (paper Fig. 5, S3).

    python -m experiments.sparsity_expansion                      # target reaching, full budget
    python -m experiments.sparsity_expansion --budget seqmnist    # seqMNIST (Fig. 5a), small
    python -m experiments.sparsity_expansion --report-only --copy-figures docs/figures

M is the number of granule units, N = 2H the size of the area state [h; c] the cerebellum
sees, so M = M/N × 2H; K is the number of inputs per granule unit of sCC-DNI, "full" the dense
CC-DNI. One sweep of two grids: the M/N × K grid, and the LSTM and zero-DNI controls (no
M or K to vary: zero-DNI's predictions stay 0 whatever the cerebellum). Correlations are
recorded along the way (``record_epochs``). Re-running skips every run that already completed;
the report is ``launch.py report SWEEP`` (final error, and ``--metric mean_val_mse``: the area
under the learning curve, i.e. learning speed).

Budgets:

- ``full``: target reaching as in the paper (H = 10, T = 2, lr 1e-3, one batch of 50 per
  epoch, 300 epochs), in-process, M/N ∈ {1, 2, 4, 8} (M = 20, 40, 80, 160), K ∈ {1, 4, 8,
  full}, 10 seeds;
- ``seqmnist``: seqMNIST (H = 30, N = 60; M = 60 … 480), T = 5, the first 4 000 / 1 000
  examples, 5 epochs, 2 seeds;
- ``quick``: CI-sized (30 epochs, 2 seeds, M/N ∈ {1, 4}, K ∈ {4, full}).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.common import (
    ROOT,
    SweepPlan,
    copy_figures,
    publish_report,
    run_page_plans,
    sweep_page_parser,
)

FIGURES = (
    "heatmap_final_error.png",
    "heatmap_final_error-mean_val_mse.png",
    "learning_curves.png",
    "feedback_correlation.png",
)  # copied by --copy-figures
SWEEPS_ROOT = "runs/sweeps"


def _archs(ks: list[str]) -> list[tuple[str, int]]:
    return [("cc-dni", 0) if k == "full" else ("scc-dni", int(k)) for k in ks]


def plans(budget: str = "full") -> list[SweepPlan]:
    """The one sweep of a budget (its name is the sweep folder under runs/sweeps)."""
    if budget == "seqmnist":
        hidden, mns, ks, seeds = 30, [1, 2, 4, 8], ["1", "4", "8", "full"], [0, 1]
        base = {
            "task": "seqmnist",
            "hidden": hidden,
            "truncation": 5,
            "train_subset": 4000,
            "val_subset": 1000,
            "epochs": 5,
            "record_epochs": "0-4",
        }
        name = "sparsity-expansion-seqmnist"
    elif budget == "quick":
        hidden, mns, ks, seeds = 10, [1, 4], ["4", "full"], [0, 1]
        base = {"task": "target-reaching", "hidden": hidden, "truncation": 2, "epochs": 30}
        base["record_epochs"] = "last"
        name = "sparsity-expansion"
    else:
        hidden, mns, ks, seeds = 10, [1, 2, 4, 8], ["1", "4", "8", "full"], list(range(10))
        base = {"task": "target-reaching", "hidden": hidden, "truncation": 2, "epochs": 300}
        base["record_epochs"] = "0-299:10,last"
        name = "sparsity-expansion"
    base = {**base, "inprocess": True, "figures": False}
    # seed outermost (controls first): a sweep stopped early leaves the whole grid for the
    # seeds it reached, so every comparison stays paired
    grid: list[dict[str, list[Any]]] = [
        {"seed": seeds, "model": ["lstm", "zero-dni"] if budget != "quick" else ["lstm"]},
        {
            "seed": seeds,
            "cerebellum_hidden": [round(m * 2 * hidden) for m in mns],
            "model,sparsity_k": _archs(ks),
        },
    ]
    return [SweepPlan(name, base, grid, f"M/N × K, {budget}")]


def main(argv: list[str] | None = None) -> int:
    args = sweep_page_parser(__doc__.split("\n\n")[0], SWEEPS_ROOT).parse_args(argv)
    chosen = plans(args.budget)
    sweep_dir = run_page_plans(args, chosen)
    from ccdni.reporting.sweep_report import write_report

    speed = "mean_val_mse" if args.budget != "seqmnist" else "mean_val_error_pct"
    headings = {
        None: "final error (last 5 epochs)",
        speed: f"learning speed (`{speed}`: the mean over every epoch)",
    }
    command = "python -m experiments.sparsity_expansion"
    command += f" --budget {args.budget}" if args.budget != "full" else ""
    for metric, heading in headings.items():
        report = write_report(sweep_dir, metric)
        print("wrote", report.markdown)
        if args.doc and args.budget != "quick":
            key = command if metric is None else f"{command} ({speed})"
            for path in publish_report(
                report.markdown,
                ROOT / args.doc,
                key,
                ROOT / args.figures_dir,
                f"{chosen[0].name}-",
                f"M/N × K, {chosen[0].base['task']}: {heading}",
            ):
                print("wrote", path)
    if args.copy_figures:
        copy_figures(sweep_dir, Path(args.copy_figures), FIGURES, f"{chosen[0].name}-")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
