"""Correlations and the sparse cerebellum (paper Fig. 2e,f, 3d, S6, S7).

The bias factor b scales the initial LSTM input and recurrent weights and so sets how
correlated the hidden activity h is. For each b, seed and model (LSTM, zero-DNI, dense CC-DNI,
sparse sCC-DNI with K = 4) this runs the task with correlations recorded
(``record_epochs``): r_h and r_pop_h over h of the validation batch, r_ĝ and r_pop_ĝ over the
synthetic feedback ĝ. The report (``launch.py report SWEEP``) shows the final error against
r_h at the first epoch (Fig. 2e / 3d top), r_ĝ over the epochs (Fig. 2f / 3d bottom; r_pop:
S6), and the gain of the sparse cerebellum over the dense one, paired by seed and b, against
r_h. Re-running skips every run that already completed.

    python -m experiments.correlation                      # target reaching, full budget
    python -m experiments.correlation --budget seqmnist    # seqMNIST (Fig. 3d), small
    python -m experiments.correlation --report-only --copy-figures docs/figures

Budgets:

- ``full``: target reaching as in the paper (H = 10, T = 2, M = 80, 300 epochs), in-process,
  b ∈ {0.01, 0.1, 0.5, 1, 2}, 10 seeds, correlations at every epoch of the first 100 and
  every 50th after;
- ``seqmnist``: seqMNIST, T = 5, the first 4 000 / 1 000 examples, 5 epochs (the paper's
  Fig. 3d reports the error after 5 epochs), b ∈ {0.1, 0.5, 1, 2}, 2 seeds, every epoch;
- ``quick``: CI-sized (30 epochs, b = 1, CC-DNI and sCC-DNI, 2 seeds).
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
    "correlation_vs_error.png",
    "feedback_correlation.png",
    "learning_curves.png",
)  # copied by --copy-figures
MODELS = ["lstm", "zero-dni", "cc-dni", "scc-dni"]
SWEEPS_ROOT = "runs/sweeps"


def plans(budget: str = "full") -> list[SweepPlan]:
    """The one sweep of a budget (its name is the sweep folder under runs/sweeps)."""
    if budget == "seqmnist":
        base = {
            "task": "seqmnist",
            "truncation": 5,
            "train_subset": 4000,
            "val_subset": 1000,
            "epochs": 5,
            "record_epochs": "0-4",
        }
        grid: dict[str, list[Any]] = {
            "bias_factor": [0.1, 0.5, 1.0, 2.0],
            "model": MODELS,
            "seed": [0, 1],
        }
        name = "correlation-seqmnist"
    elif budget == "quick":
        base = {"task": "target-reaching", "truncation": 2, "epochs": 30}
        base["record_epochs"] = "1-29:4"
        grid = {"bias_factor": [1.0], "model": ["cc-dni", "scc-dni"], "seed": [0, 1]}
        name = "correlation"
    else:
        base = {"task": "target-reaching", "truncation": 2, "epochs": 300}
        base["record_epochs"] = "0-99,149,199,249,last"
        grid = {  # seed outermost: a sweep stopped early leaves whole paired seeds
            "seed": list(range(10)),
            "bias_factor": [0.01, 0.1, 0.5, 1.0, 2.0],
            "model": MODELS,
        }
        name = "correlation"
    base = {**base, "sparsity_k": 4, "inprocess": True, "figures": False}
    return [SweepPlan(name, base, grid, f"b × model, {budget}")]


def main(argv: list[str] | None = None) -> int:
    args = sweep_page_parser(__doc__.split("\n\n")[0], SWEEPS_ROOT).parse_args(argv)
    chosen = plans(args.budget)
    sweep_dir = run_page_plans(args, chosen)
    from ccdni.reporting.sweep_report import write_report

    report = write_report(sweep_dir)
    print("wrote", report.markdown)
    if args.doc and args.budget != "quick":
        command = "python -m experiments.correlation"
        command += f" --budget {args.budget}" if args.budget != "full" else ""
        for path in publish_report(
            report.markdown,
            ROOT / args.doc,
            command,
            ROOT / args.figures_dir,
            f"{chosen[0].name}-",
            f"bias factor b × model, {chosen[0].base['task']}",
        ):
            print("wrote", path)
    if args.copy_figures:
        copy_figures(sweep_dir, Path(args.copy_figures), FIGURES, f"{chosen[0].name}-")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
