"""Wall-clock gain of decoupling: a chain of K feed-forward areas, locked vs unlocked.

Runs the same chain (MNIST, 784→W→…→W→10, every area its own process, ipc:// transport) in
each requested mode — ``locked`` (true backprop across processes), ``backward-unlocked`` (each
area steps with the cerebellum's ĝ_k and moves on), ``forward-unlocked`` (area k+1 runs on the
cerebellum's ĥ_k), ``fully-unlocked`` (both) — one after the other on the same data subset and
seed, and prints per area: busy fraction (compute / wall) and step time (compute per batch,
the first batch (warm-up) left out); per mode: samples/s end to end (samples the last area
trained on, over each epoch's span from the first area's start to the last area's end of
training; validation between epochs left out), the ideal ratio
Σ_k t_k / max_k t_k from the measured step times, the actual mode/locked throughput ratio,
validation accuracy per epoch and the (training) wall-clock time to a target accuracy, and its
ratio to the locked run's. The placement (``--pin-cores``: area k on the k-th available core; ``--area-devices
cuda:0,cuda:1``) is printed with its notes (areas sharing cores; kernels of a shared GPU
time-sliced). ``--json FILE`` keeps every number for figures (experiments/decoupling_vs_k.py).

    python -m benchmarks.decoupling --areas 2 --train-subset 6000 --epochs 2
    python launch.py bench decoupling --areas 3 --mode locked,fully-unlocked --pin-cores
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ccdni.base.logs import configure_logging
from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import CHAIN_MODES, SpecError, load_spec
from ccdni.tasks.mnist_data import DataMissingError
from orchestrator.cli import ScriptParser, add_data_arguments
from orchestrator.launcher import Supervisor
from orchestrator.placement import available_cores, plan_placement, region_names
from orchestrator.progress import Progress
from orchestrator.runner import check_task_data

FIELDS = (
    "busy fraction per area",
    "step seconds per area",
    "samples/s",
    "ideal ratio",
    "actual unlocked/locked",
    "time-to-target ratio",
    "placement",
    "val accuracy",
    "time to target",
)


def bench_spec(args: argparse.Namespace, mode: str, runs_dir: str = "runs", suffix: str = ""):
    """The spec of one benchmark run of ``mode`` (the same for every mode but the mode)."""
    return load_spec(
        topology="chain",
        chain_areas=args.areas,
        chain_width=args.width,
        chain_block=args.block,
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
        data_dir=args.data_dir,
        download=args.download,
        pin_cores=args.pin_cores,
        area_devices=args.area_devices,
        device=args.device,
        runs_dir=runs_dir,
        run_name=f"chain{'' if args.block == 'ff' else '-' + args.block}-K{args.areas}-{mode}"
        + suffix,
        figures=False,
        progress=False,
    )


def run_chain(
    args: argparse.Namespace, mode: str, runs_dir: str, suffix: str = ""
) -> dict[str, Any]:
    """One multi-process chain run; returns its per-area epoch metrics and the outcome."""
    spec = bench_spec(args, mode, runs_dir, suffix)
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
    helpers = {  # the cerebellum's and olive's own timers, per epoch
        name: [m for m in run.metrics(name) if "epoch" in m and "busy_seconds" in m]
        for name in ("cerebellum", "olive")
    }
    placement = plan_placement(spec, list(region_names(spec)))
    return {
        "mode": mode,
        "outcome": outcome,
        "wall": wall,
        "areas": areas,
        "helpers": helpers,
        "run": run.path,
        "placement": placement,
    }


def epoch_spans(areas: dict[str, list[dict[str, Any]]]) -> list[float]:
    """Per epoch, the chain's training time end to end: from the first area's start to the
    last area's end of that epoch's training loop (validation between epochs left out).
    An area that runs ahead waits for the others inside this span, so it is counted."""
    per_area = [ms for ms in areas.values() if ms]
    n = min((len(ms) for ms in per_area), default=0)
    spans = []
    for e in range(n):
        starts = [ms[e].get("train_started_at") for ms in per_area]
        ends = [ms[e].get("train_ended_at") for ms in per_area]
        if None in starts or None in ends:  # an older run: the last area's own loop time
            spans.append(per_area[-1][e]["train_seconds"])
        else:
            spans.append(max(ends) - min(starts))
    return spans


def summarise(result: dict[str, Any], target: float) -> dict[str, Any]:
    areas = result["areas"]
    last = areas[list(areas)[-1]]
    busy = {n: _mean([m["busy_fraction"] for m in ms]) for n, ms in areas.items()}
    step = {n: _mean([m["step_seconds"] for m in ms]) for n, ms in areas.items()}
    spans = epoch_spans(areas)
    # samples the last area trained on (a batch skipped for want of ĥ does not count)
    samples = sum(
        (m["batches"] - m.get("skipped_batches", 0)) * m["samples"] / max(m["batches"], 1)
        for m in last[: len(spans)]
    )
    seconds = sum(spans)
    ideal = sum(step.values()) / max(step.values()) if step and max(step.values()) > 0 else 0.0
    batches = sum(m["batches"] for m in last[: len(spans)]) or 1
    helper_step = {  # CPU seconds per batch of the cerebellum and the olive
        name: sum(m["busy_seconds"] for m in records[: len(spans)]) / batches
        for name, records in result.get("helpers", {}).items()
        if records
    }
    cores = len(available_cores())
    accuracies = [m.get("val_accuracy", float("nan")) for m in last]
    elapsed, time_to_target = 0.0, None
    elapsed_per_epoch = []  # the chain's training seconds at each epoch's end
    for m, span in zip(last, spans):
        elapsed += span
        elapsed_per_epoch.append(elapsed)
        if time_to_target is None and m.get("val_accuracy", 0.0) >= target:
            time_to_target = elapsed
    return {
        "status": result["outcome"]["status"],
        "reason": result["outcome"]["reason"],
        "busy": busy,
        "step": step,
        "samples_per_s": samples / seconds if seconds > 0 else 0.0,
        "ideal_ratio": ideal,
        "cores": cores,
        "ideal_on_cores": min(ideal, cores),
        "helper_step": helper_step,
        "val_accuracy": accuracies,
        "elapsed": elapsed_per_epoch,
        "time_to_target": time_to_target,
        "wall": result["wall"],
        "missing_predictions": sum(
            m.get("missing_predictions", 0) for ms in areas.values() for m in ms
        ),
        "skipped_batches": sum(m.get("skipped_batches", 0) for ms in areas.values() for m in ms),
        "placement": result["placement"].describe(),
        "placement_notes": list(result["placement"].notes),
    }


def ideal_with_helpers(
    step: dict[str, float], helper_step: dict[str, float], cores: int
) -> float | None:
    """The best unlocked/locked throughput ratio on ``cores`` cores when the cerebellum and
    olive need their measured CPU per batch too: locked, the areas run one after another
    (Σ t_k per batch); unlocked, each batch needs max(max_k t_k, (Σ t_k + c + o) / cores)."""
    if not step or max(step.values()) <= 0:
        return None
    total = sum(step.values())
    unlocked = max(max(step.values()), (total + sum(helper_step.values())) / cores)
    return total / unlocked


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def ratios(summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Each non-locked mode against the locked run: throughput and time-to-target ratios."""
    locked = summaries.get("locked")
    out: dict[str, dict[str, float | None]] = {}
    if locked is None or locked["status"] != "completed":
        return out
    for mode, s in summaries.items():
        if mode == "locked" or s["status"] != "completed":
            continue  # a failed run's partial numbers are no measurement
        throughput = (
            s["samples_per_s"] / locked["samples_per_s"] if locked["samples_per_s"] > 0 else None
        )
        ttt = None
        if s["time_to_target"] and locked["time_to_target"]:
            ttt = s["time_to_target"] / locked["time_to_target"]
        out[mode] = {"throughput": throughput, "time_to_target": ttt}
    return out


def report(args: argparse.Namespace, summaries: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"decoupling benchmark: K={args.areas} areas, width {args.width}"
        + (" (balanced)" if getattr(args, "balanced", None) else "")
        + ", "
        f"{args.train_subset} training images, {args.epochs} epoch(s), batch {args.batch}, "
        f"max lag {args.max_lag}, ipc://, every area its own process"
    ]
    for mode, s in summaries.items():
        lines.append(
            f"[{mode}] status={s['status']} wall={s['wall']:.1f}s"
            + (f" reason={s['reason']}" if s["reason"] else "")
        )
        pinned = "pinned" if args.pin_cores else "not pinned"
        lines.append(f"  placement ({pinned}): " + s["placement"].replace("\n", "\n  "))
        for name in s["busy"]:
            lines.append(
                f"  {name}: busy fraction {s['busy'][name]:.3f}, "
                f"step seconds {s['step'][name] * 1e3:.2f} ms"
            )
        for name, seconds in s.get("helper_step", {}).items():
            lines.append(f"  {name}: {seconds * 1e3:.2f} ms of work per batch (its own timers)")
        if len(s["step"]) > 1 and min(s["step"].values()) > 0:
            spread = max(s["step"].values()) / min(s["step"].values())
            lines.append(f"  step-time imbalance max/min: {spread:.3f} (1: balanced)")
        accuracies = ", ".join(f"{a:.4f}" for a in s["val_accuracy"])
        ttt = "not reached" if s["time_to_target"] is None else f"{s['time_to_target']:.2f} s"
        lines.append(f"  samples/s (end to end): {s['samples_per_s']:.1f}")
        if len(s.get("samples_per_s_repeats", [])) > 1:
            spread = ", ".join(f"{v:.0f}" for v in s["samples_per_s_repeats"])
            lines.append(f"  samples/s of every repeat: [{spread}] (the median run is shown)")
        lines.append(f"  ideal ratio (sum/max of step times): {s['ideal_ratio']:.3f}")
        lines.append(f"  val accuracy per epoch: [{accuracies}]")
        lines.append(f"  time to target accuracy {args.target:.2f}: {ttt}")
        if mode != "locked":
            lines.append(f"  missing predictions: {s['missing_predictions']}")
            if s["skipped_batches"]:
                lines.append(f"  skipped batches: {s['skipped_batches']}")
    if "locked" in summaries:
        ideal = summaries["locked"]["ideal_ratio"]
        lines.append(f"ideal ratio (from the locked run's step times): {ideal:.3f}")
        cores = summaries["locked"]["cores"]
        lines.append(
            f"ideal on this machine's {cores} core(s), min(Σ/max, cores): "
            f"{min(ideal, cores):.3f} (the cerebellum and olive need cores too)"
        )
        for mode, s in summaries.items():
            if mode == "locked" or not s.get("helper_step"):
                continue
            ideal_here = ideal_with_helpers(summaries["locked"]["step"], s["helper_step"], cores)
            if ideal_here is not None:
                lines.append(
                    f"ideal on {cores} core(s) with the cerebellum and olive sharing them "
                    f"({mode}: {sum(s['helper_step'].values()) * 1e3:.2f} ms per batch): "
                    f"{ideal_here:.3f}"
                )
        for mode, r in ratios(summaries).items():
            thr = "n/a" if r["throughput"] is None else f"{r['throughput']:.3f}"
            if mode == "backward-unlocked" and args.areas == 2 and r["throughput"] is not None:
                verdict = "met" if r["throughput"] >= 1.8 else "not met"
                lines.append(f"TARGET K=2 backward-unlocked/locked ≥ 1.8: {thr} ({verdict})")
            ttt = (
                "n/a (target not reached)"
                if r["time_to_target"] is None
                else (f"{r['time_to_target']:.3f}")
            )
            lines.append(f"actual unlocked/locked throughput ratio ({mode}): {thr}")
            lines.append(f"time-to-target ratio ({mode}/locked): {ttt}")
    return "\n".join(lines)


def parse_modes(text: str) -> tuple[str, ...]:
    """``'all'`` or a comma-separated list of chain modes (each checked)."""
    if text == "all":
        return CHAIN_MODES
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    for mode in modes:
        if mode not in CHAIN_MODES:
            raise argparse.ArgumentTypeError(
                f"{mode!r} is not a chain mode ({', '.join(CHAIN_MODES)})"
            )
    if not modes:
        raise argparse.ArgumentTypeError("no mode given")
    return modes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ScriptParser(description=__doc__.splitlines()[0])
    parser.add_argument("--areas", type=int, default=2, help="K areas in the chain")
    parser.add_argument(
        "--mode",
        type=parse_modes,
        default=None,
        help="comma-separated modes to run side by side, or 'all': "
        + ", ".join(CHAIN_MODES)
        + " (default: all for --block ff, locked,backward-unlocked for lstm)",
    )
    parser.add_argument("--width", type=int, default=256, help="units per area (chain_width)")
    parser.add_argument(
        "--block",
        choices=("ff", "lstm"),
        default="ff",
        help="feed-forward MNIST blocks, or stacked LSTM layers on seqMNIST (default modes: "
        "locked, backward-unlocked)",
    )
    parser.add_argument("--train-subset", type=int, default=6000, help="first N training images")
    parser.add_argument("--val-subset", type=int, default=2000, help="first N validation images")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per mode")
    parser.add_argument("--batch", type=int, default=100, help="batch size")
    parser.add_argument("--lr", type=float, default=1e-3, help="the areas' Adam learning rate")
    parser.add_argument(
        "--cerebellum-hidden", type=int, default=256, help="granule-layer units per synthesiser"
    )
    parser.add_argument(
        "--cerebellum-lr", type=float, default=1e-3, help="the cerebellum's Adam learning rate"
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=1.0,
        help="seconds an area waits for a prediction before skipping the batch",
    )
    parser.add_argument(
        "--max-lag",
        type=int,
        default=3,
        help="unlocked: batches an area may run ahead of its synthesiser's learning (-1: any)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run every mode this many times, in rotating order; report the median-throughput run",
    )
    parser.add_argument("--target", type=float, default=0.9, help="target validation accuracy")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and batch order")
    parser.add_argument(
        "--pin-cores",
        action="store_true",
        help="pin area k to the k-th available CPU core (round-robin)",
    )
    parser.add_argument(
        "--area-devices",
        default="",
        help="comma-separated torch devices for the areas, round-robin (e.g. cuda:0,cuda:1)",
    )
    parser.add_argument("--device", default="cpu", help="device of the cerebellum and olive")
    parser.add_argument(
        "--data-dir", default="", help="folder holding MNIST/raw (default: $CCDNI_DATA, ./data)"
    )
    add_data_arguments(parser, data_dir=False)  # --download
    parser.add_argument("--runs-dir", default="", help="keep the runs here (default: temporary)")
    parser.add_argument("--json", default="", help="also write every number to this JSON file")
    parser.add_argument(
        "--balance",
        action="store_true",
        help="choose --width so that area 0 and area 1 take equal step times here (measured)",
    )
    return parser.parse_args(argv)


def block_step_seconds(spec: Any, k: int, repeats: int = 15) -> float:
    """Median seconds of one training step (forward, backward, Adam step) of area ``k``'s block
    alone, in this process with one thread, on random data of the spec's sizes."""
    import statistics

    import torch

    from areas.chain import INPUT_SIZE, ChainArea

    torch.set_num_threads(1)
    area = ChainArea(spec, k)
    generator = torch.Generator().manual_seed(0)
    width = INPUT_SIZE if k == 0 else spec.chain_width
    x = torch.randn(spec.batch_size, width, generator=generator)
    labels = torch.randint(0, 10, (spec.batch_size,), generator=generator)
    grad = torch.randn(spec.batch_size, spec.chain_width, generator=generator) * 1e-3

    def step() -> None:
        area.forward(x)
        if area.last:
            area.loss_backward(labels)
        else:
            area.backward(grad)

    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def balanced_width(args: argparse.Namespace) -> tuple[int, float, float]:
    """The chain width (a multiple of 16) at which area 0 (784 → W) and area 1 (W → W, with the
    readout when it is the last) take the same step time here: (width, t0, t1). Area 1's
    step grows as W², area 0's as W, so the ratio t1/t0 is bisected."""

    def times(width: int) -> tuple[float, float]:
        spec = bench_spec(argparse.Namespace(**{**vars(args), "width": width}), "locked")
        return block_step_seconds(spec, 0), block_step_seconds(spec, 1)

    low, high = 8, 160  # in units of 16: widths 128 … 2560
    while high - low > 1:
        middle = (low + high) // 2
        t0, t1 = times(16 * middle)
        if t1 > t0:
            high = middle
        else:
            low = middle
    candidates = [(16 * w, *times(16 * w)) for w in (low, high)]
    return min(candidates, key=lambda c: abs(c[2] / c[1] - 1.0))


def run_benchmark(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Run the requested modes one after the other; their summaries by mode."""
    if getattr(args, "balance", False):
        args.width, t0, t1 = balanced_width(args)
        args.balanced = {"width": args.width, "area0_step": t0, "area1_step": t1}
        print(
            f"balanced areas: width {args.width} (block step times here, one thread: area0 "
            f"{t0 * 1e3:.2f} ms, area1 {t1 * 1e3:.2f} ms)",
            flush=True,
        )
    modes = args.mode or (CHAIN_MODES if args.block == "ff" else ("locked", "backward-unlocked"))
    probes = [bench_spec(args, mode) for mode in modes]  # every mode checked before any run
    probe = max(probes, key=lambda spec: len(region_names(spec)))
    check_task_data(probe)  # missing MNIST or an impossible placement fail before any run
    plan_placement(probe, list(region_names(probe)))
    if args.repeats < 1:
        raise SpecError(f"--repeats must be at least 1, got {args.repeats}")
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="ccdni-bench-") as tmp:
        runs_dir = args.runs_dir or tmp
        for r in range(args.repeats):  # the order rotates: slow spells hit every mode alike
            for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
                suffix = f"-r{r}" if args.repeats > 1 else ""
                result = run_chain(args, mode, runs_dir, suffix)
                runs[mode].append(summarise(result, args.target))
    return {mode: median_run(summaries) for mode, summaries in runs.items()}


def median_run(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The repeat with the median throughput (a failed repeat makes the mode failed), with
    every repeat's samples/s beside it."""
    failed = [s for s in summaries if s["status"] != "completed"]
    if failed:
        return failed[0]
    ranked = sorted(summaries, key=lambda s: s["samples_per_s"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["samples_per_s_repeats"] = [s["samples_per_s"] for s in summaries]
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summaries = run_benchmark(args)
    except (SpecError, DataMissingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report(args, summaries))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(args, summaries), indent=1))
    return 0 if all(s["status"] == "completed" for s in summaries.values()) else 1


def to_json(args: argparse.Namespace, summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "args": {k: v for k, v in vars(args).items()},
        "modes": summaries,
        "ratios": ratios(summaries),
    }


if __name__ == "__main__":
    raise SystemExit(main())
