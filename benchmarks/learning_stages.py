"""How long each stage of one cerebellar learning step takes (socket-free).

Outside lockstep the cerebellum answers a waiting efference between two stages of the step
it is applying (``CerebellumCore.stepping``: forward, backward, clip, Adam), so a prediction
waits for one stage instead of a whole step. This script runs the real ``stepping`` generator
on a seqMNIST-sized synthesiser (the preset: 2H = 60 inputs, 300 granule units, batch 50 by
default) and times each stage in CPU time (``time.thread_time``), once with the steps back to
back and once with a sleep before each step (as a region runs them: once per message, after
waiting in its poll). The errors are random and small; the weights move as in a run.

Run: ``python -m benchmarks.learning_stages`` (a few seconds); ``--sleeps 0,3`` (ms),
``--steps``, ``--warmup``, ``--batch``, ``--json FILE``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from orchestrator.cli import ScriptParser


def time_stages(core, interface: str, efference, error, steps: int, warmup: int, sleep: float):
    """Mean CPU seconds of each stage over ``steps`` steps after ``warmup`` untimed ones."""
    totals: dict[str, list[float]] = {}
    for n in range(warmup + steps):
        if sleep:
            time.sleep(sleep)
        stages = core.stepping(interface, efference, error)
        started = time.thread_time()
        for name in stages:
            now = time.thread_time()
            if n >= warmup:
                totals.setdefault(name, []).append(now - started)
            started = now
        now = time.thread_time()
        if n >= warmup:
            totals.setdefault("adam", []).append(now - started)
    return {name: statistics.fmean(values) for name, values in totals.items()}


def main(argv: list[str] | None = None) -> int:
    parser = ScriptParser(
        prog="learning_stages.py",
        description="CPU time of each stage of a cerebellar learning step (forward, backward, "
        "clip, Adam) at seqMNIST's sizes.",
    )
    parser.add_argument("--batch", type=int, default=50, help="B of the efference (B, 2H)")
    parser.add_argument("--steps", type=int, default=500, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=100, help="untimed steps before them")
    parser.add_argument(
        "--sleeps", default="0,3", help="ms of sleep before each step, one setting each"
    )
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    try:
        sleeps = [float(s) for s in args.sleeps.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sleeps: not a list of numbers: {args.sleeps!r}")
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or any(s < 0 for s in sleeps):
        parser.error("--steps and --batch must be ≥ 1, --warmup and --sleeps ≥ 0")

    from ccdni.base.spec import load_spec
    from cerebellum.synthesiser import CerebellumCore

    torch.set_num_threads(1)
    spec = load_spec(task="seqmnist", truncation=5, batch_size=args.batch)
    (interface,) = spec.interfaces
    core = CerebellumCore(spec, [interface])
    n_in, n_out = spec.interface_io.get(interface, (spec.state_size, spec.state_size))
    generator = torch.Generator().manual_seed(0)
    efference = torch.randn(args.batch, n_in, generator=generator)
    error = torch.randn(args.batch, n_out, generator=generator) * 1e-3
    print(
        f"synthesiser {n_in} → {spec.cerebellum_hidden} → {n_out}, batch {args.batch}, "
        f"clip {spec.grad_clip}; CPU µs per stage, mean of {args.steps} steps"
    )
    out: dict[str, dict[str, float]] = {}
    for sleep in sleeps:
        means = time_stages(core, interface, efference, error, args.steps, args.warmup, sleep / 1e3)
        out[f"sleep_ms={sleep:g}"] = means
        cells = "  ".join(f"{name} {seconds * 1e6:5.0f}" for name, seconds in means.items())
        print(
            f"  {sleep:g} ms of sleep before each step: {cells}  "
            f"(step {sum(means.values()) * 1e6:.0f}, longest stage "
            f"{max(means.values()) * 1e6:.0f})"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "stages": out}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
