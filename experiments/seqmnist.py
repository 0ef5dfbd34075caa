"""The sequential-MNIST family (paper Fig. 3b,c and Fig. 6b): sweeps, figures, results tables.

    python -m experiments.seqmnist                      # the small budget, in-process
    python -m experiments.seqmnist --budget paper       # the paper's budget (GPU advised)
    python -m experiments.seqmnist --report-only        # redraw from the sweeps on disk

Runs the sweeps (one ``launch.py run`` per point, finished points skipped), then draws the
figures into ``docs/figures/`` and writes the generated part of ``docs/results-seqmnist.md``.
MNIST is read from ``--data-dir`` or ``$CCDNI_DATA`` (a folder holding ``MNIST/raw``).

Budgets (models: LSTM, zero-DNI, CC-DNI, sCC-DNI; everything else as in the paper: LSTM 30,
cerebellum 300, K = 4, batch 50, lr 1e-4):

- ``small`` (default; about 2½ hours on one shared core): the first 8 000 training / 2 000 validation
  examples of the paper's 48 000 / 12 000 split, 10 epochs, 3 seeds, in-process —
  seqMNIST at T=5 under both update schedules (after every truncation, and once per sequence
  as in the authors' code), ld-seqMNIST at T=5 for γ ∈ {1, 5, 8}, the cerebellar ablations of
  Fig. 6b (seqMNIST, T=5, the cerebellum removed at epoch 1, 4 or 7), and with 2 seeds
  seqMNIST over T ∈ {2, 3, 7, 10} and c- and dd-seqMNIST at T=5;
- ``paper``: 48 000 / 12 000 examples, 25 epochs, 3 seeds, every T for seqMNIST, c- and
  dd-seqMNIST (ablations at epochs 1, 5, 10, 15, 20);
- ``quick``: 300 / 200 examples, 1 epoch, 2 seeds — CI-sized, for ``experiments.claims``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from experiments.common import (
    ROOT,
    SweepPlan,
    add_budget_flag,
    add_mnist_flags,
    add_placement_flags,
    placement_of,
    plan_command,
    prepare_mnist,
    run_plans,
)
from orchestrator.cli import ScriptParser

MODELS = ["lstm", "zero-dni", "cc-dni", "scc-dni"]
TRUNCATIONS = [2, 3, 4, 5, 7, 10]  # as in the paper
GAMMAS = [1, 5, 8]  # as in the paper


@dataclass(frozen=True)
class Budget:
    base: dict  # spec fields of every run
    seeds: list[int]
    other_truncations: list[int]  # seqMNIST besides T=5
    other_seeds: list[int]  # their seeds, and those of c- and dd-seqMNIST
    drawing_truncations: list[int]  # c- and dd-seqMNIST
    ablation_epochs: list[int]
    about: str


BUDGETS = {
    "small": Budget(
        {"train_subset": 8000, "val_subset": 2000, "epochs": 10, "inprocess": True},
        [0, 1, 2, 3, 4],
        [2, 3, 4, 7, 10],
        [0, 1, 2, 3, 4],
        [5],
        [1, 4, 7],
        "the first 8 000 training / 2 000 validation examples of the paper's 48 000 / 12 000 "
        "split, 10 epochs (1 600 batches of 50, ≈ 1.7 paper epochs of updates), 5 paired "
        "seeds, in-process; everything else as in the paper (LSTM 30, cerebellum 300, K = 4, "
        "batch 50, lr 1e-4)",
    ),
    "paper": Budget(
        {"train_subset": 0, "val_subset": 0, "epochs": 25, "inprocess": True},
        [0, 1, 2],
        [2, 3, 4, 7, 10],
        [0, 1, 2],
        TRUNCATIONS,
        [1, 5, 10, 15, 20],
        "the paper's budget: 48 000 / 12 000 examples, 25 epochs, 3 seeds",
    ),
    "quick": Budget(
        {"train_subset": 300, "val_subset": 200, "epochs": 1, "inprocess": True},
        [0, 1],
        [],
        [],
        [],
        [],
        "CI-sized: 300 / 200 examples, 1 epoch, 2 seeds, in-process",
    ),
}


def sweeps_root(budget: str) -> str:
    return f"runs/sweeps/seqmnist-{budget}"


def plans(budget: str = "small") -> list[SweepPlan]:
    """The sweeps of a budget, in order of priority (Fig. 3b's T=5 row first)."""
    chosen = BUDGETS[budget]
    base = {**chosen.base, "figures": False}
    seeds = chosen.seeds
    models = MODELS if budget != "quick" else ["lstm", "zero-dni", "cc-dni"]
    out = [
        SweepPlan(
            "seqmnist-T5",
            {**base, "task": "seqmnist"},
            {
                "model": models,
                "truncation": [5],
                "update": ["truncation", "sequence"],
                "seed": seeds,
            },
            "seqMNIST, T=5, both update schedules",
        ),
        SweepPlan(
            "ld-seqmnist",
            {**base, "task": "ld-seqmnist"},
            {"model": models, "truncation": [5], "gamma": GAMMAS, "seed": seeds},
            "ld-seqMNIST, T=5, loss every γ steps",
        ),
    ]
    if chosen.ablation_epochs:
        out.append(
            SweepPlan(
                "seqmnist-ablation",
                {**base, "task": "seqmnist"},
                {
                    "model": ["cc-dni", "scc-dni", "zero-dni"],
                    "truncation": [5],
                    "ablate": [f"cerebellum@epoch={e}" for e in chosen.ablation_epochs],
                    "seed": seeds,
                },
                "seqMNIST, T=5, cerebellum ablated (Fig. 6b); intact runs: seqmnist-T5",
            )
        )
    if chosen.other_truncations:
        out.append(
            SweepPlan(
                "seqmnist-T",
                {**base, "task": "seqmnist"},
                {
                    "model": models,
                    "truncation": chosen.other_truncations,
                    "seed": chosen.other_seeds,
                },
                "seqMNIST over T (T=5: seqmnist-T5)",
            )
        )
    for task in ("c-seqmnist", "dd-seqmnist"):
        if chosen.drawing_truncations:
            out.append(
                SweepPlan(
                    task,
                    {**base, "task": task},
                    {
                        "model": models,
                        "truncation": chosen.drawing_truncations,
                        "seed": chosen.other_seeds,
                    },
                    task,
                )
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = ScriptParser(description=__doc__.splitlines()[0])
    add_budget_flag(parser, BUDGETS, "small")
    add_mnist_flags(parser)
    parser.add_argument("--sweeps-root", default="", help="default: runs/sweeps/seqmnist-BUDGET")
    parser.add_argument("--doc", default="docs/results-seqmnist.md", help="markdown to update")
    parser.add_argument("--figures-dir", default="docs/figures", help="where figures go")
    parser.add_argument(
        "--processes",
        action="store_true",
        help="one process per region instead of in-process runs (give its own --sweeps-root)",
    )
    add_placement_flags(parser)
    args = parser.parse_args(argv)
    root = ROOT / (args.sweeps_root or sweeps_root(args.budget))
    chosen = plans(args.budget)
    if not args.report_only:
        where = placement_of(args)
        prepare_mnist(parser, args)  # checked (or fetched) once, before any run starts
        if args.processes:
            where.extra["inprocess"] = False
        run_plans(chosen, root, where, inline=False)

    from ccdni.reporting.seqmnist_report import write_report

    words = [w for w in (sys.argv[1:] if argv is None else argv) if w != "--report-only"]
    written = write_report(
        root,
        chosen,
        doc=ROOT / args.doc,
        figures_dir=ROOT / args.figures_dir,
        budget=f"{args.budget}: {BUDGETS[args.budget].about}",
        invocation=" ".join(["python -m experiments.seqmnist", *words]),
        figure_prefix=f"seqmnist-{args.budget}",
        commands=[
            plan_command(p, root.relative_to(ROOT) if root.is_relative_to(ROOT) else root)
            for p in chosen
        ],
    )
    for path in written:
        print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
