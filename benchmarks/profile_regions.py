#!/usr/bin/env python
"""Where each region's CPU time goes: py-spy on every region process of a real run.

Starts ``launch.py run`` with the given spec flags as a subprocess, waits until every region
has reported ready, attaches ``py-spy record`` (raw collapsed stacks, active samples only:
a region blocked in a poll is idle and not sampled) to each region's pid from
``regions.json`` for the rest of the run, and prints, per region, the share of its samples in
each stage:

    socket            pyzmq send / recv / poll calls (the syscalls and pyzmq's own work)
    codec             wire.protocol encode / decode (msgpack, buffers) except validation
    validation        header field checks, expect_shape, finiteness
    poll loop         the shells' and Endpoint's own Python between messages
    ticks             heartbeats, control drains, parent checks
    logging           structlog
    bookkeeping       per-epoch metrics, checkpoints, results
    predict           the synthesiser's forward for an answer (torch dispatch included)
    learning          the cerebellum's backward + Adam on climbing-fibre errors
    comparison        the olive pairing predictions and targets
    area maths        the area's forward / backward / step, validation, data
    other             anything else (start-up imports are outside the window)

and the region's busy fraction (samples / (rate × seconds)). py-spy counts a thread that is
runnable but waiting for a CPU as active, so on a loaded machine the stage it waits in (most
often a send, which wakes the ZeroMQ I/O thread, or the poll that was just woken) grows; the
kernel's schedstat (CPU time and run-queue wait of every thread of the region) over the same
window says how much of it that was. Run from the repository root::

    python -m benchmarks.profile_regions --seconds 20 -- --epochs 100000 --timing wait
    python -m benchmarks.profile_regions -- --task seqmnist --data-dir ../shared/data \
        --truncation 5 --train-subset 10000 --epochs 3
    python -m benchmarks.profile_regions --json prof.json -- --epochs 3000

It is a script, not a test. py-spy must be installed and allowed to attach (root, or
``ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import json
import linecache
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from orchestrator.cli import ScriptParser

ROOT = Path(__file__).resolve().parent.parent
STAGES = (
    "socket",
    "codec",
    "validation",
    "poll loop",
    "ticks",
    "logging",
    "bookkeeping",
    "predict",
    "learning",
    "comparison",
    "area maths",
    "other",
)
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
VALIDATION_FUNCS = {"expect_shape", "_typed", "_arguments", "_check_finite", "_check_header"}
VALIDATION_TEXT = ("isfinite", "raise ProtocolError", "_typed(", "isinstance(", "_check_")
TICK_FUNCS = {"tick", "heartbeat", "drain_control", "check_parent", "between_bursts"}
BOOKKEEPING = {"save_checkpoint", "checkpoint", "close_epoch", "end_epoch", "metric",
               "report_epochs", "save_results", "maybe_report", "epoch_summary"}  # fmt: skip
LEARNING = {"learn", "learn_queued", "apply_errors", "restart_count"}


def parse_frame(text: str) -> tuple[str, str, int]:
    match = FRAME.match(text.strip())
    if match is None:
        return text, "", 0
    return match["func"], match["file"], int(match["line"] or 0)


def stage_of(stack: list[tuple[str, str, int]]) -> str:
    """The stage one sampled stack (root first) belongs to: first by what the sample is part
    of (logging, per-epoch bookkeeping, ticks, learning, the synthesiser's forward, the
    olive's comparison), then by the innermost frame (socket, codec, validation, ...)."""
    names = [f.rpartition(".")[2] for f, _, _ in stack]  # "CerebellumCore.learn" → "learn"
    qualified = [f for f, _, _ in stack]
    files = [p.replace(os.sep, "/") for _, p, _ in stack]
    if any("structlog" in p or p.endswith("ccdni/base/logs.py") for p in files):
        return "logging"
    if any(n in BOOKKEEPING for n in names):
        return "bookkeeping"
    if any(n in TICK_FUNCS for n in names):
        return "ticks"
    if any(n in LEARNING for n in names) and any(p.endswith("synthesiser.py") for p in files):
        return "learning"
    if "CerebellumCore.predict" in qualified:
        return "predict"
    if any(p.endswith("olive/comparator.py") for p in files):
        return "comparison"
    for (func, path, line), name in zip(reversed(stack), reversed(files)):
        if _under(name, "zmq"):
            return "socket"
        if _under(name, "msgpack"):
            return "codec"
        if not _under(name, *PROJECT):
            continue
        if name.endswith("wire/protocol.py"):
            text = _source(path, line)
            short = func.rpartition(".")[2]
            if short in VALIDATION_FUNCS or any(t in text for t in VALIDATION_TEXT):
                return "validation"
            return "codec"
        if name.endswith("wire/channel.py"):
            text = _source(path, line)
            if any(t in text for t in (".poll(", "_RECV", "_SEND", "_GET", "recv", "send_")):
                return "socket"
            return "poll loop"
        if name.endswith(("areas/process.py", "areas/chain_process.py")):
            return "poll loop"
        if _under(name, "areas", "ccdni/tasks") or name.endswith("base/optim.py"):
            return "area maths"
        if name.endswith(("cerebellum/process.py", "olive/process.py", "base/region.py")):
            return "poll loop"
    if any(_under(p, "torch") for p in files):
        return "area maths"
    return "other"


PROJECT = ("areas", "cerebellum", "olive", "wire", "ccdni", "orchestrator", "benchmarks")


def _under(path: str, *packages: str) -> bool:
    """Whether a frame's file (py-spy gives paths relative to the package's folder) is in one
    of ``packages``."""
    return any(path.startswith(f"{p}/") or f"/{p}/" in path for p in packages)


def _source(path: str, line: int) -> str:
    """The source line a frame points at, read from the profiled tree."""
    if not line:
        return ""
    full = path if os.path.isabs(path) else str(SOURCE_ROOT / path)
    return linecache.getline(full, line)


SOURCE_ROOT = ROOT  # where the profiled run's files are (--source-root)


def breakdown(raw_file: Path) -> tuple[Counter, int]:
    """Samples per stage in a py-spy raw (collapsed) file, and their total."""
    counts: Counter = Counter()
    total = 0
    for line in raw_file.read_text().splitlines():
        stack_text, _, n = line.rpartition(" ")
        if not stack_text or not n.isdigit():
            continue
        stack = [parse_frame(f) for f in stack_text.split(";")]
        # py-spy's raw format may prefix the thread: drop a leading "process"/"thread" frame
        stack = [f for f in stack if f[1] or "(" not in f[0]]
        if not stack:
            continue
        counts[stage_of(stack)] += int(n)
        total += int(n)
    return counts, total


def regions_ready(run: Path) -> dict[str, int] | None:
    """{region: pid} once every region is ready (from regions.json), else None."""
    path = run / "regions.json"
    events = run / "events.jsonl"
    if not path.exists() or not events.exists():
        return None
    if '"all_ready"' not in events.read_text():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    return {name: r["pid"] for name, r in data["regions"].items() if r.get("pid")}


def schedstat(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) over all threads of ``pid``
    so far, from /proc/PID/task/*/schedstat; (0, 0) where the kernel does not say."""
    on_cpu = waiting = 0.0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, 0.0
    for task in tasks:
        try:
            fields = Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()
        except OSError:
            continue
        on_cpu += int(fields[0]) / 1e9
        waiting += int(fields[1]) / 1e9
    return on_cpu, waiting


def area_epochs(run: Path) -> int:
    """Epochs the areas have recorded so far (metrics.jsonl lines with ``train_seconds``)."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    return path.read_text().count('"train_seconds"')


def profile_run(args: argparse.Namespace, flags: list[str]) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ccdni-prof-"))
    run = tmp / "prof"
    command = [
        sys.executable,
        str(ROOT / "launch.py"),
        "run",
        "--runs-dir",
        str(tmp),
        "--run-name",
        "prof",
        "--no-figures",
        "--no-progress",
        *flags,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    spies: dict[str, subprocess.Popen] = {}
    try:
        deadline = time.monotonic() + 300
        pids = None
        while pids is None and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
            pids = regions_ready(run)
        if pids is None:
            raise RuntimeError("the run did not get ready")
        started = time.monotonic()
        epochs_before = area_epochs(run)
        sched_before = {name: schedstat(pid) for name, pid in pids.items()}
        for name, pid in pids.items():
            spies[name] = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(args.seconds),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(tmp / f"{name}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(tmp / f"{name}.err", "w"),  # noqa: SIM115 - closed with the run
            )
        for spy in spies.values():
            spy.wait(timeout=args.seconds + 60)
        sched_after = {name: schedstat(pid) for name, pid in pids.items()}
        seconds = min(time.monotonic() - started, args.seconds)
        epochs = area_epochs(run) - epochs_before
        result = {
            "flags": flags,
            "seconds": seconds,
            "rate": args.rate,
            "epochs": epochs,
            "regions": {},
        }
        for name in pids:
            path = tmp / f"{name}.txt"
            if not path.exists():
                continue
            counts, total = breakdown(path)
            result["regions"][name] = {
                "samples": total,
                "busy": total / (args.rate * seconds) if seconds > 0 else 0.0,
                "stages": {s: counts.get(s, 0) / total if total else 0.0 for s in STAGES},
                "cpu_seconds": sched_after[name][0] - sched_before[name][0],
                "runqueue_seconds": sched_after[name][1] - sched_before[name][1],
            }
            if args.keep:  # the folder is made if it does not exist yet
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(path, Path(args.keep) / f"{name}.txt")
        return result
    finally:
        for spy in spies.values():
            if spy.poll() is None:
                spy.kill()
        if child.poll() is None:
            child.terminate()  # the orchestrator's staged shutdown
        child.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def report(result: dict) -> str:
    lines = [
        f"py-spy, {result['rate']} Hz, {result['seconds']:.1f} s, active samples only; "
        f"flags: {' '.join(result['flags'])}",
        f"{'stage':12} " + " ".join(f"{name:>11}" for name in result["regions"]),
    ]
    for stage in STAGES:
        row = [result["regions"][n]["stages"][stage] * 100 for n in result["regions"]]
        lines.append(f"{stage:12} " + " ".join(f"{v:10.1f}%" for v in row))
    busy = [result["regions"][n]["busy"] * 100 for n in result["regions"]]
    lines.append(f"{'busy':12} " + " ".join(f"{v:10.1f}%" for v in busy))
    epochs = result.get("epochs")
    if epochs:
        lines.append(f"{epochs} epochs in the window; CPU ms per epoch, by stage:")
        for stage in STAGES:
            row = [
                r["stages"][stage] * r["samples"] / result["rate"] / epochs * 1e3
                for r in result["regions"].values()
            ]
            lines.append(f"{stage:12} " + " ".join(f"{v:11.2f}" for v in row))
        total = [r["samples"] / result["rate"] / epochs * 1e3 for r in result["regions"].values()]
        lines.append(f"{'total':12} " + " ".join(f"{v:11.2f}" for v in total))
        regions = result["regions"].values()
        if all("cpu_seconds" in r for r in regions):
            lines.append("kernel's schedstat, ms per epoch (all threads of the region):")
            cpu = [r["cpu_seconds"] / epochs * 1e3 for r in regions]
            wait = [r["runqueue_seconds"] / epochs * 1e3 for r in regions]
            lines.append(f"{'on a CPU':12} " + " ".join(f"{v:11.2f}" for v in cpu))
            lines.append(f"{'run queue':12} " + " ".join(f"{v:11.2f}" for v in wait))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ScriptParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="profiled window")
    parser.add_argument("--rate", type=int, default=500, help="samples per second")
    parser.add_argument("--json", default="", help="also write the breakdown here")
    parser.add_argument("--keep", default="", help="copy the raw py-spy files to this folder")
    parser.add_argument(
        "--analyse",
        default="",
        metavar="FOLDER",
        help="only break down the raw files (REGION.txt) kept earlier in FOLDER",
    )
    parser.add_argument(
        "--source-root", default="", help="the tree the kept files were profiled in"
    )
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="-- then launch.py run flags")
    args = parser.parse_args(argv)
    flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    global SOURCE_ROOT
    if args.source_root:
        SOURCE_ROOT = Path(args.source_root).resolve()
    if args.analyse:
        result = {"flags": ["(kept files)"], "seconds": args.seconds, "rate": args.rate}
        result["regions"] = {}
        for path in sorted(Path(args.analyse).glob("*.txt")):
            counts, total = breakdown(path)
            result["regions"][path.stem] = {
                "samples": total,
                "busy": total / (args.rate * args.seconds),
                "stages": {s: counts.get(s, 0) / total if total else 0.0 for s in STAGES},
            }
        print(report(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return 0
    if shutil.which("py-spy") is None:
        print("error: py-spy is not installed", file=sys.stderr)
        return 2
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    result = profile_run(args, flags)
    print(report(result))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
