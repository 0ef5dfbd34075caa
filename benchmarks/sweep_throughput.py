"""Sweep throughput: N concurrent runs against one run, measured side by side in one go.

The same short grid (by default 6 in-process target-reaching runs of 100 epochs, seeds 0-5,
no figures) is swept repeatedly through :class:`orchestrator.sweep.Sweep` — the code behind
``launch.py sweep`` — each time into a fresh temporary sweep directory: with one slot, then
with N slots (default: the number of cores), alternating ``--repeats`` times (default 2) so
that drifting load hits both alike; the medians are compared. Every run is a
``launch.py run --spec`` subprocess with one intra-op thread, so the wall time includes each
run's start-up (Python, torch and matplotlib imports), as a real sweep's does.

    python -m benchmarks.sweep_throughput                 # 6 runs, slots 1 vs cores, twice
    python -m benchmarks.sweep_throughput --runs 8 --slots 2 --epochs 100 --repeats 2

It prints, per slot count: wall time, throughput (runs per minute), the mean wall time of one
run as its own process (``launch.py run``, start-up included) and inside it (the run's
``wall_seconds``); then ratio = throughput(N) / throughput(1) against the goal
0.9 × min(N, cores). The load average is printed before and after: on a machine shared with
other work the ratio measures the share of the cores the sweep got, not only the sweep.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import structlog

from orchestrator.cli import ScriptParser
from orchestrator.sweep import Sweep

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = ScriptParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6, help="runs per sweep (seeds 0..runs-1)")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1, help="N")
    parser.add_argument("--epochs", type=int, default=100, help="epochs per run")
    parser.add_argument("--model", default="cc-dni", help="model of every run")
    parser.add_argument("--repeats", type=int, default=2, help="alternate 1 and N this often")
    parser.add_argument("--keep", action="store_true", help="keep the temporary sweep folders")
    return parser.parse_args()


def sweep_once(root: Path, label: str, slots: int, args: argparse.Namespace) -> dict:
    base = {
        "epochs": args.epochs,
        "model": args.model,
        "inprocess": True,
        "figures": False,
    }
    sweep = Sweep(root / label, base, {"seed": list(range(args.runs))}, slots)
    started = time.perf_counter()
    points = sweep.run()
    wall = time.perf_counter() - started
    failed = [p.name for p in points if p.status != "completed"]
    if failed:
        raise SystemExit(f"{label}: runs failed: {failed}")
    inside = [json.loads((p.run_dir / "summary.json").read_text())["wall_seconds"] for p in points]
    return {
        "slots": slots,
        "wall": wall,
        "throughput": len(points) / wall * 60.0,
        "process": statistics.mean(p.wall for p in points),
        "inside": statistics.mean(inside),
    }


def main() -> int:
    args = parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cores = os.cpu_count() or 1
    root = Path(tempfile.mkdtemp(prefix="ccdni-sweep-bench-"))
    load_before = os.getloadavg()
    print(
        f"sweep throughput: {args.runs} in-process target-reaching runs ({args.model}, "
        f"{args.epochs} epochs) per sweep; slots 1 vs {args.slots}; {cores} cores; "
        f"load average before {load_before[0]:.2f}",
        flush=True,
    )
    results: dict[int, list[dict]] = {1: [], args.slots: []}
    try:
        for repeat in range(args.repeats):
            for slots in (1, args.slots):
                result = sweep_once(root, f"r{repeat}-s{slots}", slots, args)
                results[slots].append(result)
                print(
                    f"  repeat {repeat} slots {slots}: {result['wall']:.1f} s, "
                    f"{result['throughput']:.2f} runs/min",
                    flush=True,
                )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()
    print()
    print(
        f"{'slots':>5} {'wall s':>8} {'runs/min':>9} {'run s (process)':>16} {'run s (inside)':>15}"
    )
    summary = {}
    for slots, rows in results.items():
        summary[slots] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        s = summary[slots]
        print(
            f"{slots:>5} {s['wall']:>8.1f} {s['throughput']:>9.2f} {s['process']:>16.2f} "
            f"{s['inside']:>15.2f}"
        )
    ratio = summary[args.slots]["throughput"] / summary[1]["throughput"]
    goal = 0.9 * min(args.slots, cores)
    print(
        f"ratio = throughput({args.slots}) / throughput(1) = {ratio:.2f} "
        f"(goal ≥ 0.9 × min({args.slots}, {cores}) = {goal:.2f}: {'met' if ratio >= goal else 'not met'})"
    )
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1-min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
