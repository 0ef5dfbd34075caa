"""Detection latency of live lesions: ``kill -9`` by hand and ``launch.py ablate``.

Starts one long multi-process run, then repeatedly kills a region (alternating SIGKILL by hand
and the orchestrator's ``ablate`` command), reads when the orchestrator recorded the death in
``events.jsonl``, revives the region, and prints the latency statistics.

    python -m benchmarks.lesion_latency --kills 12
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from ccdni.base.spec import load_spec
from orchestrator.cli import ScriptParser
from orchestrator.client import send_command
from orchestrator.runner import execute_run


def events(run: Path) -> list[dict]:
    path = run / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_until(predicate, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError("condition not met")


def main() -> int:
    parser = ScriptParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=12, help="kills to time")
    parser.add_argument(
        "--region", default="cerebellum", choices=("cerebellum", "olive"), help="region to kill"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(
            epochs=1_000_000, runs_dir=tmp, run_name="latency", figures=False, progress=False
        )
        box: dict = {}
        thread = threading.Thread(target=lambda: box.update(o=execute_run(spec, console=False)))
        thread.start()
        run = Path(tmp) / "latency"
        by_hand, by_command = [], []
        try:
            wait_until(lambda: any(e["event"] == "start" for e in events(run)), 120)
            for i in range(args.kills):
                time.sleep(0.5)
                regions = json.loads((run / "regions.json").read_text())["regions"]
                pid = regions[args.region]["pid"]
                seen = sum(1 for e in events(run) if e["event"] == "exit")
                killed = time.time()
                if i % 2 == 0:
                    os.kill(pid, signal.SIGKILL)
                else:
                    assert send_command(run, "ablate", region=args.region)["ok"]
                exit_event = wait_until(
                    lambda s=seen: [e for e in events(run) if e["event"] == "exit"][s:], 10
                )[0]
                latency = exit_event["time"] - killed
                (by_hand if i % 2 == 0 else by_command).append(latency)
                print(
                    f"kill {i + 1:2d} ({'kill -9' if i % 2 == 0 else 'ablate '}): "
                    f"detected after {latency * 1000:7.1f} ms ({exit_event['detected_by']})"
                )
                assert send_command(run, "revive", region=args.region)["ok"]
                wait_until(
                    lambda: (
                        json.loads((run / "regions.json").read_text())["regions"][args.region][
                            "state"
                        ]
                        not in ("spawned", "exited", "lesioned")
                    ),
                    60,
                )
        finally:
            wait_until(lambda: (run / "regions.json").exists(), 120)
            while thread.is_alive():
                try:
                    send_command(run, "stop")
                except Exception as exc:  # not up yet: try again
                    print(f"stop: {exc}")
                thread.join(5)
    everything = by_hand + by_command
    for label, values in (
        ("kill -9 by hand", by_hand),
        ("launch.py ablate", by_command),
        ("all", everything),
    ):
        if values:
            ms = [v * 1000 for v in values]
            print(
                f"{label:17s} n={len(ms):2d}  median {statistics.median(ms):6.1f} ms  "
                f"mean {statistics.mean(ms):6.1f} ms  max {max(ms):6.1f} ms"
            )
    print(f"goal: detection ≤ 2000 ms — {'met' if max(everything) <= 2.0 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
