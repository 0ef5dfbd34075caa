"""Caption generation (paper §3.3, Fig. 4) on the MNIST-scene corpus: BPW vs T, metrics, samples.

    python -m experiments.captions --budget small --slots 1      # ~40 min on 2 shared CPU cores
    python -m experiments.captions --budget paper --device cuda  # the paper's budget

Finds (or builds, with ``launch.py captions-corpus``) the corpus, runs one ``launch.py sweep``
over model ∈ {lstm, zero-dni, cc-dni, scc-dni} × T ∈ {2, 3, 4, 5, 7, 10} × seeds (each run
writes its test BPW and greedy test captions), scores the test captions of the runs at the
best T with pycocoevalcap (BLEU-1..4, METEOR, ROUGE-L, CIDEr), then draws the figures into
``docs/figures/`` and writes the generated part of ``docs/results-captions.md``. Re-running
skips finished runs and scored runs; ``--report-only`` only redraws from what is on disk.

Budgets:

- ``small``: the first 2 000 training scenes with one of their 5 captions drawn afresh each
  epoch (20 batches of 100), 5 epochs (100 updates of each truncation), validation on the first
  200 validation scenes (all 1 000 captions), test on all 1 000 test scenes; 3 seeds.
- ``paper``: every training scene and caption (the default corpus: 8 000 scenes × 5 = 40 000
  pairs, 400 batches an epoch), 10 epochs, every validation scene, 5 seeds (the paper's).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from experiments.common import (
    add_budget_flag,
    add_mnist_flags,
    add_sweep_flags,
    placement,
    prepare_mnist,
)
from orchestrator.cli import ScriptParser

ROOT = Path(__file__).resolve().parents[1]
MODELS = "lstm,zero-dni,cc-dni,scc-dni"
TRUNCATIONS = "2,3,4,5,7,10"  # as in the paper


@dataclass(frozen=True)
class Budget:
    flags: dict[str, str]  # spec flags shared by every run
    seeds: str
    about: str


BUDGETS = {
    "small": Budget(
        {"train-subset": "2000", "val-subset": "200", "captions-per-image": "1", "epochs": "5"},
        "0-2",
        "the first 2 000 training scenes, one of their 5 captions drawn afresh each epoch "
        "(20 batches of 100 an epoch), 5 epochs; validation on the first 200 validation scenes "
        "(1 000 captions), test on all 1 000 test scenes (5 000 captions); 3 seeds; everything "
        "else as in the paper (LSTM 256, embedding 256, dropout 0.5, cerebellum 2 × 1024, "
        "batch 100, lr 1e-3, update after every truncation)",
    ),
    "paper": Budget(
        {"train-subset": "0", "val-subset": "0", "captions-per-image": "0", "epochs": "10"},
        "0-4",
        "every training scene and caption (40 000 pairs, 400 batches an epoch), 10 epochs, "
        "every validation scene, 5 seeds",
    ),
}


def corpus_command(args: argparse.Namespace) -> list[str]:
    command = ["python", "launch.py", "captions-corpus", "--out", args.corpus]
    return command + (["--data-dir", args.data_dir] if args.data_dir else [])


def sweep_command(args: argparse.Namespace, budget: Budget) -> list[str]:
    command = ["python", "launch.py", "sweep", "--sweep-dir", args.sweep_dir, "--task", "captions"]
    command += ["--captions-dir", args.corpus, *placement(args), "--no-figures"]
    for name, value in budget.flags.items():
        command += [f"--{name}", value]
    command += ["--vary", f"model={MODELS}", "--vary", f"truncation={TRUNCATIONS}"]
    return command + ["--seeds", budget.seeds]


def run(command: list[str]) -> int:
    print("$", shlex.join(command), flush=True)
    started = time.monotonic()
    code = subprocess.call([sys.executable, *command[1:]], cwd=ROOT)
    print(f"  exit {code} after {time.monotonic() - started:.0f} s", flush=True)
    return code


def main() -> int:
    parser = ScriptParser(description=__doc__.splitlines()[0])
    add_budget_flag(parser, BUDGETS, "small")
    add_mnist_flags(parser)
    parser.add_argument(
        "--corpus", default="", help="corpus folder (default: DATA/captions/mnist-scenes)"
    )
    parser.add_argument("--sweep-dir", default="", help="default: runs/sweeps/captions-BUDGET")
    parser.add_argument("--doc", default="docs/results-captions.md", help="results page to write")
    parser.add_argument("--figures-dir", default="docs/figures", help="where figures go")
    add_sweep_flags(parser, prefix="captions-")
    parser.set_defaults(slots=1)  # leave the other core to the other developers
    args = parser.parse_args()
    budget = BUDGETS[args.budget]
    if not args.corpus:
        from ccdni.base.spec import RunSpec

        args.corpus = str(RunSpec(data_dir=args.data_dir).resolved_captions_dir)
    args.sweep_dir = args.sweep_dir or f"runs/sweeps/captions-{args.budget}"
    commands = [corpus_command(args), sweep_command(args, budget)]
    if not args.report_only:
        prepare_mnist(parser, args)  # a missing data folder: one line, exit 2, nothing run
        for command in commands:
            if run(command) != 0 and command is commands[0]:
                return 2

    from ccdni.reporting.captions_report import score_best_runs, write_report

    sweep_dir = ROOT / args.sweep_dir
    if not args.report_only:
        score_best_runs(sweep_dir)
    invocation = shlex.join(["python", "-m", "experiments.captions", *sys.argv[1:]])
    written = write_report(
        sweep_dir=sweep_dir,
        corpus=Path(args.corpus) if Path(args.corpus).is_absolute() else ROOT / args.corpus,
        doc=ROOT / args.doc,
        figures_dir=ROOT / args.figures_dir,
        budget=f"{args.budget}: {budget.about}",
        commands=[invocation.replace(" --report-only", "")] + [shlex.join(c) for c in commands],
        figure_prefix=f"captions-{args.budget}",
    )
    for path in written:
        print("wrote", path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    print(json.dumps({"sweep": str(sweep_dir)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
