"""Wall-clock gain of decoupling: a chain of K feed-forward areas, locked vs backward-unlocked.

Runs the same chain (MNIST, 784→W→…→W→10, every area its own process, ipc:// transport) once
with ``chain_mode=locked`` (true backprop across processes) and once with
``backward-unlocked`` (each area steps with the cerebellum's ĝ_k and moves on), on the same
data subset, and prints per area: busy fraction (compute / wall) and step time (compute per batch, the first batch
(warm-up) left out); per mode:
samples/s of the last area, the ideal ratio Σ_k t_k / max_k t_k from the measured step times,
the actual unlocked/locked throughput ratio, validation accuracy per epoch and the time to a
target accuracy if reached. All processes share the machine's cores: with 2 cores and K ≥ 2
areas plus a cerebellum and an olive the ideal ratio is out of reach.

    python benchmarks/decoupling.py --areas 2 --train-subset 6000 --epochs 2
    python launch.py bench decoupling --areas 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.launcher import Supervisor  # noqa: E402
from orchestrator.logs import configure_logging  # noqa: E402
from orchestrator.progress import Progress  # noqa: E402
from orchestrator.rundir import RunDirectory  # noqa: E402
from orchestrator.spec import CHAIN_MODES, load_spec  # noqa: E402

FIELDS = (
    "busy fraction per area",
    "step seconds per area",
    "samples/s",
    "ideal ratio",
    "actual unlocked/locked",
    "val accuracy",
    "time to target",
)


def run_chain(args: argparse.Namespace, mode: str, runs_dir: str) -> dict[str, Any]:
    """One multi-process chain run; returns its per-area epoch metrics and the outcome."""
    spec = load_spec(
        topology="chain",
        chain_areas=args.areas,
        chain_width=args.width,
        chain_mode=mode,
        train_subset=args.train_subset,
        val_subset=args.val_subset,
        epochs=args.epochs,
        batch_size=args.batch,
        lr=args.lr,
        cerebellum_hidden=args.cerebellum_hidden,
        cerebellum_lr=args.cerebellum_lr,
        wait_timeout=args.wait_timeout,
        chain_max_lag=args.max_lag,
        seed=args.seed,
        runs_dir=runs_dir,
        run_name=f"chain-K{args.areas}-{mode}",
        figures=False,
        progress=False,
    )
    run = RunDirectory.create(spec)
    log = configure_logging(
        "orchestrator", run.log_path("orchestrator"), spec.log_level, console=False
    )
    started = time.perf_counter()
    with Progress(spec, log, enabled=False) as progress:
        outcome = Supervisor(spec, run, log, progress).execute()
    wall = time.perf_counter() - started
    areas = {
        name: [m for m in run.metrics(name) if "epoch" in m and "train_seconds" in m]
        for name in spec.area_names
    }
    return {"mode": mode, "outcome": outcome, "wall": wall, "areas": areas, "run": run.path}


def summarise(result: dict[str, Any], target: float) -> dict[str, Any]:
    areas = result["areas"]
    last = areas[list(areas)[-1]]
    busy = {n: _mean([m["busy_fraction"] for m in ms]) for n, ms in areas.items()}
    step = {n: _mean([m["step_seconds"] for m in ms]) for n, ms in areas.items()}
    samples = sum(m["samples"] for m in last)
    seconds = sum(m["train_seconds"] for m in last)
    ideal = sum(step.values()) / max(step.values()) if step and max(step.values()) > 0 else 0.0
    accuracies = [m.get("val_accuracy", float("nan")) for m in last]
    elapsed, time_to_target = 0.0, None
    for m in last:
        elapsed += m["train_seconds"]
        if time_to_target is None and m.get("val_accuracy", 0.0) >= target:
            time_to_target = elapsed
    return {
        "status": result["outcome"]["status"],
        "reason": result["outcome"]["reason"],
        "busy": busy,
        "step": step,
        "samples_per_s": samples / seconds if seconds > 0 else 0.0,
        "ideal_ratio": ideal,
        "val_accuracy": accuracies,
        "time_to_target": time_to_target,
        "wall": result["wall"],
        "missing_predictions": sum(
            m.get("missing_predictions", 0) for ms in areas.values() for m in ms
        ),
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def report(args: argparse.Namespace, summaries: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"decoupling benchmark: K={args.areas} areas, width {args.width}, "
        f"{args.train_subset} training images, {args.epochs} epoch(s), batch {args.batch}, "
        f"max lag {args.max_lag}, "
        f"ipc://, every area its own process (cores are shared)"
    ]
    for mode, s in summaries.items():
        lines.append(
            f"[{mode}] status={s['status']} wall={s['wall']:.1f}s"
            + (f" reason={s['reason']}" if s["reason"] else "")
        )
        for name in s["busy"]:
            lines.append(
                f"  {name}: busy fraction {s['busy'][name]:.3f}, "
                f"step seconds {s['step'][name] * 1e3:.2f} ms"
            )
        accuracies = ", ".join(f"{a:.4f}" for a in s["val_accuracy"])
        ttt = "not reached" if s["time_to_target"] is None else f"{s['time_to_target']:.2f} s"
        lines.append(f"  samples/s: {s['samples_per_s']:.1f}")
        lines.append(f"  ideal ratio (sum/max of step times): {s['ideal_ratio']:.3f}")
        lines.append(f"  val accuracy per epoch: [{accuracies}]")
        lines.append(f"  time to target accuracy {args.target:.2f}: {ttt}")
        if mode != "locked":
            lines.append(f"  missing predictions: {s['missing_predictions']}")
    if "locked" in summaries and "backward-unlocked" in summaries:
        locked, unlocked = summaries["locked"], summaries["backward-unlocked"]
        ratio = (
            unlocked["samples_per_s"] / locked["samples_per_s"]
            if locked["samples_per_s"] > 0
            else float("nan")
        )
        lines.append(f"actual unlocked/locked throughput ratio: {ratio:.3f}")
        lines.append(f"ideal ratio (from the locked run's step times): {locked['ideal_ratio']:.3f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--areas", type=int, default=2, help="K areas in the chain")
    parser.add_argument(
        "--mode",
        choices=("both", *CHAIN_MODES),
        default="both",
        help="which mode(s) to run (default: both, side by side)",
    )
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--train-subset", type=int, default=6000)
    parser.add_argument("--val-subset", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cerebellum-hidden", type=int, default=256)
    parser.add_argument("--cerebellum-lr", type=float, default=1e-3)
    parser.add_argument("--wait-timeout", type=float, default=1.0)
    parser.add_argument(
        "--max-lag",
        type=int,
        default=3,
        help="unlocked: batches an area may run ahead of its synthesiser's learning (-1: any)",
    )
    parser.add_argument("--target", type=float, default=0.9, help="target validation accuracy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", default="", help="keep the runs here (default: temporary)")
    return parser.parse_args(argv)


def run_benchmark(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Run the requested modes one after the other; their summaries by mode."""
    modes = CHAIN_MODES if args.mode == "both" else (args.mode,)
    with tempfile.TemporaryDirectory(prefix="ccdni-bench-") as tmp:
        runs_dir = args.runs_dir or tmp
        return {mode: summarise(run_chain(args, mode, runs_dir), args.target) for mode in modes}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summaries = run_benchmark(args)
    print(report(args, summaries))
    return 0 if all(s["status"] == "completed" for s in summaries.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
