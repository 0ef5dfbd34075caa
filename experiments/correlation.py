"""Correlations and the sparse cerebellum on target reaching (paper Fig. 2e,f, S6).

The bias factor b scales the initial LSTM input and recurrent weights and so sets how
correlated the hidden activity h is. For each b, seed and model (LSTM, dense CC-DNI, sparse
sCC-DNI with K = 4) this runs target reaching with correlations recorded
(``record_epochs``): r_h and r_pop_h over h of the validation batch, r_g and r_pop_g over the
synthetic feedback ĝ. The report then shows the final error against r_h at the first epoch
(Fig. 2e), r_g over the first 100 epochs (Fig. 2f; r_pop: S6), and the gain of the sparse
cerebellum over the dense one, paired by seed and b, against r_h. Re-running skips every run
that already completed.

    python -m experiments.correlation                      # 5 b × 3 models × 5 seeds, ~7 min
    python -m experiments.correlation --seeds 0-9 --slots 8
    python -m experiments.correlation --report-only --copy-figures docs/figures

Defaults: target reaching as in the paper (H = 10, T = 2, M = 80, 300 epochs), in-process,
b ∈ {0.01, 0.1, 0.5, 1, 2}, seeds 0-4, correlations at every epoch of the first 100 and every
50th after.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from experiments.common import add_sweep_flags, copy_figures, placement, run

ROOT = Path(__file__).resolve().parents[1]

FIGURES = (
    "correlation_vs_error.png",
    "feedback_correlation.png",
    "learning_curves.png",
)  # copied by --copy-figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep-dir", default="runs/sweeps/correlation")
    parser.add_argument("--task", default="target-reaching")
    parser.add_argument("--bias-factors", default="0.01,0.1,0.5,1,2", help="b values")
    parser.add_argument("--models", default="lstm,cc-dni,scc-dni")
    parser.add_argument("--k", type=int, default=4, help="K of scc-dni")
    parser.add_argument("--truncation", type=int, default=2, help="T")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--record-epochs", default="0-99,149,199,249,last")
    add_sweep_flags(parser, prefix="correlation-")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sweep_dir = Path(args.sweep_dir).resolve()
    started = time.monotonic()
    status = 0
    if not args.report_only:
        command = [sys.executable, "launch.py", "sweep", "--sweep-dir", str(sweep_dir)]
        command += ["--task", args.task, "--truncation", str(args.truncation)]
        command += ["--epochs", str(args.epochs), "--sparsity-k", str(args.k)]
        command += ["--record-epochs", args.record_epochs, "--no-figures"]
        command += ["--vary", f"bias_factor={args.bias_factors}", "--vary", f"model={args.models}"]
        command += ["--seeds", args.seeds]
        command += placement(args)
        status = run(command)
    report_status = run([sys.executable, "launch.py", "report", str(sweep_dir)])
    if args.copy_figures and report_status == 0:
        copy_figures(sweep_dir, args.copy_figures, FIGURES, args.prefix)
    print(f"done in {time.monotonic() - started:.0f} s; report: {sweep_dir / 'report.md'}")
    return status or report_status


if __name__ == "__main__":
    raise SystemExit(main())
