"""The sequential-MNIST family (paper Fig. 3): sweeps, figures and the results tables.

Runs the sweeps through ``launch.py sweep`` (one run per grid point, each its own process
tree), then draws the figures into ``docs/figures/`` and writes the generated part of
``docs/results-seqmnist.md`` (between its ``BEGIN/END GENERATED`` markers). Re-running skips
every run that already completed, so an interrupted budget can be finished, and
``--report-only`` redraws from the sweeps on disk.

    python -m experiments.seqmnist --budget small            # ~25 min on 2 CPU cores
    python -m experiments.seqmnist --budget paper --device cuda --mode processes

Budgets:

- ``small``: what fits in about 25 minutes on 2 shared CPU cores — 8 000 training and
  2 000 validation examples (the first ones of the paper's 48 000 / 12 000 split), 8 epochs,
  in-process; seqMNIST at T=5 with 3 seeds, and over T ∈ {2, 3, 4, 7, 10} with one seed;
  c- and dd-seqMNIST at T=5, and ld-seqMNIST at T=5 for γ ∈ {1, 5, 8}, one seed each (on
  these shared cores a DNI run takes about twice as long as an LSTM run: ~80 s against
  ~40 s, more when the machine is busy).
- ``paper``: the paper's numbers (48 000 / 12 000, 25 epochs, 3 seeds, every T for seqMNIST,
  c- and dd-seqMNIST; ld-seqMNIST at T=5 for the three γ).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODELS = "lstm,cc-dni,scc-dni"
TRUNCATIONS = "2,3,4,5,7,10"  # as in the paper
GAMMAS = "1,5,8"  # as in the paper


@dataclass(frozen=True)
class SweepPlan:
    """One ``launch.py sweep``: its folder name, task and what varies."""

    name: str
    task: str
    vary: dict[str, str]
    seeds: str


@dataclass(frozen=True)
class Budget:
    flags: dict[str, str]  # spec flags shared by every run of the budget
    sweeps: tuple[SweepPlan, ...]
    about: str


BUDGETS: dict[str, Budget] = {
    "small": Budget(
        flags={"train-subset": "8000", "val-subset": "2000", "epochs": "8"},
        sweeps=(  # in order of priority: Fig. 3b first
            SweepPlan("seqmnist-T5", "seqmnist", {"model": MODELS, "truncation": "5"}, "0-2"),
            SweepPlan("seqmnist-T", "seqmnist", {"model": MODELS, "truncation": "2,3,4,7,10"}, "0"),
            SweepPlan(
                "ld-seqmnist",
                "ld-seqmnist",
                {"model": MODELS, "truncation": "5", "gamma": GAMMAS},
                "0",
            ),
            SweepPlan("c-seqmnist", "c-seqmnist", {"model": MODELS, "truncation": "5"}, "0"),
            SweepPlan("dd-seqmnist", "dd-seqmnist", {"model": MODELS, "truncation": "5"}, "0"),
        ),
        about="8 000 training / 2 000 validation examples (the first of the paper's "
        "48 000 / 12 000 split), 8 epochs (≈ 1.3 paper epochs of updates), everything else "
        "as in the paper (LSTM 30, cerebellum 300, batch 50, lr 1e-4)",
    ),
    "paper": Budget(
        flags={"train-subset": "0", "val-subset": "0", "epochs": "25"},
        sweeps=(
            SweepPlan("seqmnist-T5", "seqmnist", {"model": MODELS, "truncation": "5"}, "0-2"),
            SweepPlan(
                "seqmnist-T", "seqmnist", {"model": MODELS, "truncation": "2,3,4,7,10"}, "0-2"
            ),
            SweepPlan(
                "ld-seqmnist",
                "ld-seqmnist",
                {"model": MODELS, "truncation": "5", "gamma": GAMMAS},
                "0-2",
            ),
            SweepPlan(
                "c-seqmnist", "c-seqmnist", {"model": MODELS, "truncation": TRUNCATIONS}, "0-2"
            ),
            SweepPlan(
                "dd-seqmnist", "dd-seqmnist", {"model": MODELS, "truncation": TRUNCATIONS}, "0-2"
            ),
        ),
        about="the paper's budget: 48 000 / 12 000 examples, 25 epochs, 3 seeds",
    ),
}


def sweep_command(plan: SweepPlan, budget: Budget, args: argparse.Namespace) -> list[str]:
    """The ``launch.py sweep`` command line of one plan."""
    command = [
        "python",
        "launch.py",
        "sweep",
        "--sweep-dir",
        str(Path(args.sweeps_root) / plan.name),
        "--slots",
        str(args.slots),
        "--task",
        plan.task,
    ]
    for name, value in budget.flags.items():
        command += [f"--{name}", value]
    if args.mode == "inprocess":
        command.append("--inprocess")
    if args.device != "cpu":
        command += ["--device", args.device]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    command.append("--no-figures")  # the script draws the figures it needs itself
    for name, values in plan.vary.items():
        command += ["--vary", f"{name}={values}"]
    command += ["--seeds", plan.seeds]
    return command


def run_sweeps(commands: list[list[str]]) -> None:
    for command in commands:
        print("$", shlex.join(command), flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, *command[1:]], cwd=ROOT)
        print(f"  exit {result.returncode} after {time.monotonic() - started:.0f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--mode", choices=("inprocess", "processes"), default="inprocess")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPUs")
    parser.add_argument("--slots", type=int, default=2, help="concurrent runs on the CPU")
    parser.add_argument("--data-dir", default="", help="MNIST root (default: $CCDNI_DATA)")
    parser.add_argument("--sweeps-root", default="", help="default: runs/sweeps/seqmnist-BUDGET")
    parser.add_argument("--doc", default="docs/results-seqmnist.md", help="markdown to update")
    parser.add_argument("--figures-dir", default="docs/figures")
    parser.add_argument(
        "--report-only", action="store_true", help="draw and tabulate the sweeps on disk"
    )
    args = parser.parse_args()
    args.sweeps_root = args.sweeps_root or f"runs/sweeps/seqmnist-{args.budget}"
    budget = BUDGETS[args.budget]
    commands = [sweep_command(plan, budget, args) for plan in budget.sweeps]
    if not args.report_only:
        run_sweeps(commands)

    from ccdni.reporting.seqmnist_report import write_report

    invocation = shlex.join(["python", "experiments/seqmnist.py", *sys.argv[1:]])
    written = write_report(
        sweeps_root=ROOT / args.sweeps_root,
        sweep_names=[plan.name for plan in budget.sweeps],
        doc=ROOT / args.doc,
        figures_dir=ROOT / args.figures_dir,
        budget=f"{args.budget} ({budget.about}; {args.mode}, {args.device})",
        commands=[invocation.replace(" --report-only", "")] + [shlex.join(c) for c in commands],
        figure_prefix=f"seqmnist-{args.budget}",
    )
    for path in written:
        print("wrote", path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
