"""What the Ray backend costs against the local launcher: the same run, one after the other.

Both runs go over tcp with CURVE (the Ray backend's transport), so the difference is Ray: its
start-up (``ray.init``, a placement group, one actor per region) and any per-epoch cost. From
each run's events.jsonl: start-up = first ``spawn`` → ``all_ready`` (and the launch before
the first spawn: for Ray, ``ray.init`` and the placement group), per epoch = ``start`` → the
area's ``done`` ÷ epochs. A local Ray is started by this script (``--ray-address`` joins a
cluster instead).

Run: ``python -m benchmarks.backends`` (about 1–2 minutes on 2 cores); ``--epochs``,
``--json FILE``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import load_spec
from orchestrator.cli import ScriptParser
from orchestrator.runner import execute_run


def timings(run: RunDirectory, launched: float, epochs: int) -> dict[str, float]:
    """Seconds from the run's events: launch → first spawn, first spawn → all ready, per epoch."""
    events = [
        json.loads(line) for line in run.path.joinpath("events.jsonl").read_text().splitlines()
    ]
    first = {}
    for event in events:
        first.setdefault(event["event"], event["time"])
    return {
        "launch_to_first_spawn_s": first["spawn"] - launched,
        "spawn_to_all_ready_s": first["all_ready"] - first["spawn"],
        "per_epoch_ms": (first["done"] - first["start"]) / epochs * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = ScriptParser(
        prog="python -m benchmarks.backends",
        description="Start-up and per-epoch time of the Ray backend against the local launcher.",
    )
    parser.add_argument("--epochs", type=int, default=100, help="epochs of each run")
    parser.add_argument(
        "--timing",
        default="wait",
        choices=("wait", "lockstep", "stale"),
        help="when an area uses the cerebellum's answer (as launch.py run --timing)",
    )
    parser.add_argument("--ray-address", default="", help="a Ray cluster to join (default local)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    import ray

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="ccdni-backends-") as folder:
        for backend in ("local", "ray"):
            spec = load_spec(
                epochs=args.epochs, timing=args.timing, transport="tcp", backend=backend,
                ray_address=args.ray_address, runs_dir=folder, run_name=backend,
                figures=False, progress=False,
            )  # fmt: skip
            launched = time.time()
            outcome = execute_run(spec, console=False)
            if outcome.summary["status"] != "completed":
                parser.exit(
                    1,
                    f"the {backend} run {outcome.summary['status']}: {outcome.summary['reason']}\n",
                )
            results[backend] = timings(outcome.run, launched, args.epochs)
            if ray.is_initialized():
                ray.shutdown()
    lines = [
        "| backend | launch → first spawn (s) | spawn → all ready (s) | per epoch (ms) |",
        "|---|---|---|---|",
    ]
    for backend, row in results.items():
        lines.append(
            f"| {backend} | {row['launch_to_first_spawn_s']:.2f} | {row['spawn_to_all_ready_s']:.2f} | "
            f"{row['per_epoch_ms']:.1f} |"
        )
    local, on_ray = results["local"], results["ray"]
    lines.append(
        f"\nray ÷ local: start-up (launch → all ready) "
        f"{(on_ray['launch_to_first_spawn_s'] + on_ray['spawn_to_all_ready_s']) / (local['launch_to_first_spawn_s'] + local['spawn_to_all_ready_s']):.2f}, "
        f"per epoch {on_ray['per_epoch_ms'] / local['per_epoch_ms']:.2f}"
    )  # fmt: skip
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
