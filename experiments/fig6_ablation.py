"""Paper Fig. 6a: cerebellar ablation during target reaching, done by killing the process.

    python -m experiments.fig6_ablation                 # the full budget (below)
    python -m experiments.fig6_ablation --report-only   # redraw from the sweeps on disk

Full budget: CC-DNI, sCC-DNI and the zero-DNI control with the cerebellum ablated at epoch
E ∈ {10, 50, 100, 150, 200, 250} or never, plus the LSTM; T=2, 300 epochs, 5 seeds.

- ``fig6a``: through the processes, ``timing = lockstep``: a scheduled lesion is a live kill
  of the cerebellum process (SIGKILL, seen on the process sentinel, the areas told), and the
  intact runs are deterministic, so each ablated run is compared with its intact twin;
- ``fig6a-inprocess``: the same grid in-process (the lesion drops the cerebellum core);
  lockstep processes must give the same numbers, and the page says whether they did.

The final error of a run is its validation MSE averaged over the last 5 epochs; "÷ intact"
divides it by the intact run of the same model and seed. ``--budget quick`` (30 epochs,
2 seeds, in-process) is the CI-sized budget of ``python -m experiments.claims --quick``.
Writes the Fig. 6a section of ``docs/results-lesions.md`` (between its GENERATED markers)
and ``docs/figures/fig6a_ablation.png``.
"""

from __future__ import annotations

import sys

from experiments.common import (
    ROOT,
    SweepPlan,
    add_page_flags,
    add_placement_flags,
    placement_of,
    run_plans,
)
from orchestrator.cli import ScriptParser

ABLATION_EPOCHS = (10, 50, 100, 150, 200, 250)  # as in the paper
ABLATED_MODELS = ["cc-dni", "scc-dni", "zero-dni"]
SWEEPS_ROOT = "runs/sweeps/ablation"


def ablations(epochs: tuple[int, ...]) -> list[str]:
    """The ``ablate`` values: never, then the cerebellum at each epoch."""
    return ["", *(f"cerebellum@epoch={e}" for e in epochs)]


def plans(budget: str = "full") -> list[SweepPlan]:
    """The sweeps of a budget: ``full`` (the page) or ``quick`` (CI)."""
    if budget == "quick":
        base = {"epochs": 30, "inprocess": True, "figures": False}
        seeds = [0, 1]
        grid = [
            {"model": ["cc-dni"], "ablate": ablations((5, 20)), "seed": seeds},
            {"model": ["zero-dni"], "ablate": ablations((5,)), "seed": seeds},
        ]
        return [SweepPlan("fig6a", base, grid, "quick: in-process")]
    seeds = list(range(5))
    grid = [
        {"model": ABLATED_MODELS, "ablate": ablations(ABLATION_EPOCHS), "seed": seeds},
        {"model": ["lstm"], "seed": seeds},
    ]
    return [
        SweepPlan(
            "fig6a",
            {"epochs": 300, "inprocess": False, "timing": "lockstep", "figures": False},
            grid,
            "through the processes (live kill), timing lockstep",
        ),
        SweepPlan(
            "fig6a-inprocess",
            {"epochs": 300, "inprocess": True, "figures": False},
            grid,
            "in-process reference",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = ScriptParser(description=__doc__.splitlines()[0])
    add_page_flags(parser, SWEEPS_ROOT, "docs/results-lesions.md")
    add_placement_flags(parser)
    args = parser.parse_args(argv)
    chosen = plans(args.budget)
    if not args.report_only:
        run_plans(chosen, ROOT / args.sweeps_root, placement_of(args))
    from ccdni.reporting.ablation_report import write_report

    words = [w for w in (sys.argv[1:] if argv is None else argv) if w != "--report-only"]
    written = write_report(
        ROOT / args.sweeps_root,
        chosen,
        ROOT / args.doc,
        ROOT / args.figures_dir,
        invocation=" ".join(["python -m experiments.fig6_ablation", *words]),
    )
    for path in written:
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
