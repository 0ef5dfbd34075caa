"""Cerebellar expansion M/N × input sparsity K on target reaching (paper Fig. 5, S3).

Writes a sweep file (the M/N × K grid plus an LSTM baseline that has neither), runs it with
``launch.py sweep`` and draws it with ``launch.py report``. M is the number of granule units,
N = 2H the size of the area state [h; c] the cerebellum sees, so M = M/N × 2H; K is the number
of inputs per granule unit of sCC-DNI, "full" the dense CC-DNI. Re-running skips every run
that already completed.

    python -m experiments.sparsity_expansion                       # 5 seeds, 2 slots, ~8 min
    python -m experiments.sparsity_expansion --seeds 0-9 --epochs 300 --slots 8
    python -m experiments.sparsity_expansion --report-only --copy-figures docs/figures

Defaults: target reaching as in the paper (H = 10, T = 2, lr 1e-3, one batch of 50 per epoch,
300 epochs), in-process runs (``--processes`` for one process per region), M/N ∈ {1, 2, 4, 8}
(M = 20, 40, 80, 160), K ∈ {1, 4, 8, full}, seeds 0-4. Correlations are recorded every 10
epochs (``record_epochs``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from experiments.common import add_sweep_flags, copy_figures, placement, run

ROOT = Path(__file__).resolve().parents[1]

FIGURES = (
    "heatmap_final_error.png",
    "heatmap_final_error-mean_val_mse.png",
    "learning_curves.png",
    "feedback_correlation.png",
)  # copied by --copy-figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep-dir", default="runs/sweeps/sparsity-expansion")
    parser.add_argument("--task", default="target-reaching")
    parser.add_argument("--hidden", type=int, default=10, help="H (N = 2H)")
    parser.add_argument("--truncation", type=int, default=2, help="T")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--mn", default="1,2,4,8", help="expansion ratios M/N")
    parser.add_argument("--k", default="1,4,8,full", help="inputs per granule unit; full: dense")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--no-lstm", action="store_true", help="leave out the LSTM baseline")
    parser.add_argument("--record-epochs", default="0-299:10,last")
    add_sweep_flags(parser, prefix="sparsity-expansion-")
    return parser.parse_args(argv)


def grid_file(args: argparse.Namespace) -> str:
    """The sweep TOML: [base], the M/N × K grid and the LSTM baseline grid."""
    two_h = 2 * args.hidden
    mns = [float(x) for x in args.mn.split(",")]
    hidden = [round(m * two_h) for m in mns]
    archs = []
    for k in args.k.split(","):
        archs.append(["cc-dni", 0] if k.strip() == "full" else ["scc-dni", int(k)])
    base = {
        "task": args.task,
        "hidden": args.hidden,
        "truncation": args.truncation,
        "epochs": args.epochs,
        "inprocess": not args.processes,
        "figures": False,
        "record_epochs": args.record_epochs,
    }
    lines = ["[base]", *(f"{k} = {json.dumps(v)}" for k, v in base.items())]
    lines += [
        "[[grid]]",
        f"cerebellum_hidden = {json.dumps(hidden)}",
        f'"model,sparsity_k" = {json.dumps(archs)}',
    ]
    if not args.no_lstm:
        lines += ["[[grid]]", 'model = ["lstm"]']
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sweep_dir = Path(args.sweep_dir).resolve()
    started = time.monotonic()
    status = 0
    if not args.report_only:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        grid = sweep_dir / "grid.toml"
        grid.write_text(grid_file(args))
        command = [sys.executable, "launch.py", "sweep", "--sweep-dir", str(sweep_dir)]
        command += [
            "--grid",
            str(grid),
            "--seeds",
            args.seeds,
        ]
        command += placement(args)
        status = run(command)
    report_status = run([sys.executable, "launch.py", "report", str(sweep_dir)])
    # learning speed: the mean validation error over all epochs (area under the curve)
    speed = [sys.executable, "launch.py", "report", str(sweep_dir), "--metric", "mean_val_mse"]
    report_status = report_status or run(speed)
    if args.copy_figures and report_status == 0:
        copy_figures(sweep_dir, args.copy_figures, FIGURES, args.prefix)
    print(f"done in {time.monotonic() - started:.0f} s; report: {sweep_dir / 'report.md'}")
    return status or report_status


if __name__ == "__main__":
    raise SystemExit(main())
