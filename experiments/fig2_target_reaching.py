"""Paper Fig. 2a,b,d: target reaching — LSTM, zero-DNI, CC-DNI, sCC-DNI over seeds and T.

    python -m experiments.fig2_target_reaching                 # the full budget (below)
    python -m experiments.fig2_target_reaching --report-only   # redraw from the sweeps on disk

Full budget (the paper's: 300 epochs, 10 seeds):

- ``fig2b``: T=2, 10 seeds, every model **through the processes** (area, cerebellum and olive
  each their own process; ``timing = wait``, the default) — Fig. 2a,b;
- ``fig2d``: T ∈ {2, 3, 4, 5, 7}, 10 seeds, in-process (the numerical reference) — Fig. 2d;
- ``fig2d-sequence``: the same with ``update = sequence`` (one optimiser step per sequence,
  as in the authors' code), where the LSTM and the DNI models take the same number of steps.

``--budget quick`` is a CI-sized budget (30 epochs, 2 seeds, T ∈ {2, 5}, in-process) used by
``python -m experiments.claims --quick``. Writes ``docs/results-target-reaching.md`` (between
its GENERATED markers) and the figures ``docs/figures/fig2*.png``.
"""

from __future__ import annotations

import sys

from experiments.common import (
    ROOT,
    Placement,
    SweepPlan,
    add_page_flags,
    add_placement_flags,
    placement_of,
    run_plans,
)
from orchestrator.cli import ScriptParser

MODELS = ["lstm", "zero-dni", "cc-dni", "scc-dni"]
TRUNCATIONS = [2, 3, 4, 5, 7]  # as in the paper
SWEEPS_ROOT = "runs/sweeps/target-reaching"


def plans(budget: str = "full") -> list[SweepPlan]:
    """The sweeps of a budget: ``full`` (the pages) or ``quick`` (CI)."""
    if budget == "quick":
        base = {"epochs": 30, "inprocess": True, "figures": False}
        seeds = [0, 1]
        return [
            SweepPlan("fig2b", base, {"model": MODELS, "truncation": [2], "seed": seeds}, "quick"),
            SweepPlan(
                "fig2d",
                base,
                {"model": ["lstm", "zero-dni", "cc-dni"], "truncation": [2, 5], "seed": seeds},
                "quick",
            ),
            SweepPlan(
                "fig2d-sequence",
                {**base, "update": "sequence"},
                {"model": ["lstm", "cc-dni"], "truncation": [2], "seed": seeds},
                "quick: one update per sequence",
            ),
        ]
    seeds = list(range(10))
    inprocess = {"epochs": 300, "inprocess": True, "figures": False}
    return [
        SweepPlan(
            "fig2b",
            {"epochs": 300, "inprocess": False, "timing": "wait", "figures": False},
            {"model": MODELS, "truncation": [2], "seed": seeds},
            "T=2, 10 seeds, through the processes (timing wait)",
        ),
        SweepPlan(
            "fig2d",
            inprocess,
            {"model": MODELS, "truncation": TRUNCATIONS, "seed": seeds},
            "T ∈ {2,3,4,5,7}, 10 seeds, in-process, update after every truncation",
        ),
        SweepPlan(
            "fig2d-sequence",
            {**inprocess, "update": "sequence"},
            # T outermost (T=2 first, the Fig. 2b comparison), then seeds: a sweep stopped
            # early leaves whole T rows, every model paired by seed
            {"truncation": TRUNCATIONS, "seed": seeds, "model": MODELS},
            "T ∈ {2,3,4,5,7}, 10 seeds, in-process, one update per sequence",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = ScriptParser(description=__doc__.splitlines()[0])
    add_page_flags(parser, SWEEPS_ROOT, "docs/results-target-reaching.md")
    add_placement_flags(parser)
    args = parser.parse_args(argv)
    chosen = plans(args.budget)
    if not args.report_only:
        run_plans(chosen, ROOT / args.sweeps_root, placement_of(args))
    from ccdni.reporting.target_reaching_report import write_report

    written = write_report(
        ROOT / args.sweeps_root,
        chosen,
        ROOT / args.doc,
        ROOT / args.figures_dir,
        invocation=_invocation(argv),
    )
    for path in written:
        print("wrote", path)
    return 0


def _invocation(argv: list[str] | None) -> str:
    words = sys.argv[1:] if argv is None else argv
    words = [w for w in words if w != "--report-only"]
    return " ".join(["python -m experiments.fig2_target_reaching", *words])


__all__ = ["MODELS", "Placement", "SWEEPS_ROOT", "TRUNCATIONS", "main", "plans"]

if __name__ == "__main__":
    sys.exit(main())
