"""Fault injection: N randomised scenarios against real multi-process runs.

    python -m benchmarks.faults --n 100                  # the table in docs/results-lesions.md
    python -m benchmarks.faults --n 6 --json out.json    # what CI runs
    python -m benchmarks.faults --help

Every scenario runs ``python launch.py`` (a few epochs of the default target-reaching task, a
random timing policy, ``heartbeat_timeout`` 2 s) as its own process tree and injects one fault
of its class at a random moment:

- ``kill-startup``: ``kill -9`` of a random region (area, cerebellum, olive) 0–0.25 s after
  its spawn, while the regions are still starting (forked from the region template they are
  ready in about 0.2 s);
- ``kill-mid-epoch``: ``kill -9`` of a random region after a random number of epochs, at a
  random point of the next;
- ``kill-checkpoint``: ``kill -9`` of a random region the instant it creates the temporary
  file of its n-th checkpoint, or the instant it closes it before the rename (inotify), i.e.
  while it writes it;
- ``kill-shutdown``: ``kill -9`` of a random region once the area is done, during the staged
  shutdown;
- ``stop-cont``: SIGSTOP of a random region at start-up, mid-run or during shutdown, held for
  0.5–5 s (shorter and longer than the heartbeat timeout), then SIGCONT;
- ``kill-orchestrator``: ``kill -9`` of the orchestrator while it waits for the region
  template, during the regions' start-up, or mid-run;
- ``corrupt-checkpoint`` / ``missing-checkpoint``: a run whose area was killed mid-run gets one
  checkpoint truncated, altered, replaced by another spec's, another region's or an earlier
  one (or deleted); ``resume`` must refuse in one line naming the file, exit 2, the run
  directory byte for byte unchanged; the file is put back and ``resume`` must complete;
- ``full-disk``: the run's directory is a tmpfs of 24–160 KB in a private mount namespace
  (``unshare -rm``; skipped where that is impossible): the run completes or fails with one
  error line and exit 2, no torn record, and (space freed) ``resume`` completes it.

A run that fails by design (a dead or stopped area, a dead orchestrator) is then resumed once.
Per scenario class the script prints: runs survived / total (the run ends with every epoch
recorded exactly once, errors are one line with the expected status, refusals change
nothing); epochs lost (recorded epochs missing or changed afterwards: metrics.jsonl before a
recovery must be a byte prefix of it after — must be 0); stray processes (any process still
carrying the scenario's environment tag 10 s after it is over) and stray socket files (under the
run directory) — both must be 0; and the worst detection latency: from the injection (this
script's own clock) to the orchestrator's ``exit`` or ``unresponsive`` event, or, for a dead
orchestrator, to the last orphan's exit.

Orphans are re-parented to this script (it is a child subreaper), which reaps them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import random
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.cli import ScriptParser

ROOT = Path(__file__).resolve().parents[1]
CLASSES = (
    "kill-startup",
    "kill-mid-epoch",
    "kill-checkpoint",
    "kill-shutdown",
    "stop-cont",
    "kill-orchestrator",
    "corrupt-checkpoint",
    "missing-checkpoint",
    "full-disk",
)
REGIONS = ("area0", "cerebellum", "olive")
STARTUP_WINDOW = 0.25  # s after a spawn: regions forked from the template are ready in ~0.2 s
STRAY_GRACE = 10.0  # s after a scenario before a process still alive counts as stray
TIMINGS = ("wait", "lockstep", "stale")
TAG = "CCDNI_FAULT_TAG"  # every process of a scenario inherits it: how strays are found
PR_SET_CHILD_SUBREAPER = 36
IN_CREATE = 0x100  # inotify: a file was created (opened for writing)
IN_CLOSE_WRITE = 0x8  # inotify: a file opened for writing was closed


class ScenarioError(Exception):
    """The scenario did not end as it must; the text says how."""


@dataclass
class Outcome:
    """What one scenario did and found."""

    index: int
    cls: str
    detail: str = ""
    survived: bool = False
    why: str = ""
    epochs_lost: int = 0
    stray_processes: int = 0
    stray_sockets: int = 0
    latency_s: float | None = None  # injection → detection, this script's clock
    recorded_latency_s: float | None = None  # the orchestrator's detection_latency_s
    hit: bool | None = None  # the moment aimed at was hit (start-up, mid-write, shutdown)
    resumed: int = 0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)


# -- processes ---------------------------------------------------------------------------------


def read_proc(pid: int, name: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return None


def state_of(pid: int) -> str | None:
    stat = read_proc(pid, "stat")
    return stat.rsplit(b")", 1)[1].split()[0].decode() if stat else None


def alive(pid: int) -> bool:
    return state_of(pid) not in (None, "Z")


def tagged(tag: str) -> list[int]:
    """Live processes whose environment carries ``TAG=tag``."""
    marker = f"{TAG}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            environ = read_proc(int(entry), "environ")
            if environ and marker in environ.split(b"\0") and alive(int(entry)):
                found.append(int(entry))
    return found


def children() -> set[int]:
    """This script's child processes (its threads' ``children`` lists, or a scan of /proc)."""
    found: set[int] = set()
    try:
        for task in os.listdir("/proc/self/task"):
            found.update(map(int, Path(f"/proc/self/task/{task}/children").read_text().split()))
        return found
    except OSError:  # no CONFIG_PROC_CHILDREN: every process whose parent is this one
        me = str(os.getpid()).encode()
        for entry in filter(str.isdigit, os.listdir("/proc")):
            stat = read_proc(int(entry), "stat")
            if stat and stat.rsplit(b")", 1)[1].split()[1] == me:
                found.add(int(entry))
        return found


def reap_orphans(stop: threading.Event) -> None:
    """Wait for the zombies re-parented to this script (its own children wait for theirs)."""
    while not stop.wait(0.05):
        for pid in children() - POPENED:
            if state_of(pid) == "Z":
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)


POPENED: set[int] = set()  # pids of this script's own subprocesses (Popen waits for them)


class CreationWatch:
    """Names created (``IN_CREATE``) or written and closed (``IN_CLOSE_WRITE``) in a folder,
    as it happens (inotify on Linux; else polling, which sees creations only)."""

    def __init__(self, folder: Path, mask: int = IN_CREATE):
        self.folder = folder
        self.fd = -1
        self.seen = set(os.listdir(folder))
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(folder), mask) >= 0:
                self.fd = fd
            elif fd >= 0:
                os.close(fd)

    def created(self, timeout: float) -> list[str]:
        if self.fd < 0:
            time.sleep(min(timeout, 0.0005))
            now = set(os.listdir(self.folder))
            new, self.seen = now - self.seen, now
            return sorted(new)
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        data, names, offset = os.read(self.fd, 65536), [], 0
        while offset + 16 <= len(data):
            _, _, _, length = struct.unpack_from("iIII", data, offset)
            names.append(data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode())
            offset += 16 + length
        return names

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- one scenario ----------------------------------------------------------------------------------


def records(path: Path) -> list[dict[str, Any]]:
    """The whole JSON lines of ``path`` (a torn line would be a finding: ScenarioError)."""
    if not path.exists():
        return []
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise ScenarioError(f"{path.name} line {number} is torn") from None
    return out


class Scenario:
    """One run of ``launch.py`` with one fault; the checks every class shares."""

    def __init__(self, outcome: Outcome, rng: random.Random, work: Path, args: Any):
        self.outcome = outcome
        self.rng = rng
        self.args = args
        self.dir = work / f"s{outcome.index:03d}"
        self.dir.mkdir(parents=True)
        self.runs = self.dir / "runs"
        self.run = self.runs / "run"
        self.epochs = rng.randint(args.min_epochs, args.max_epochs)
        self.timing = rng.choice(TIMINGS)
        self.tag = f"{os.getpid()}-{outcome.index}"
        self.env = {**os.environ, TAG: self.tag}
        self.snapshots: list[bytes] = []  # metrics.jsonl before each recovery
        self.logs = 0

    # -- running --------------------------------------------------------------------------------
    def command(self, runs: Path | None = None) -> list[str]:
        return [
            sys.executable,
            "launch.py",
            "--epochs",
            str(self.epochs),
            "--timing",
            self.timing,
            "--runs-dir",
            str(runs or self.runs),
            "--run-name",
            "run",
            "--no-figures",
            "--no-progress",
            "--heartbeat-timeout",
            str(self.args.heartbeat_timeout),
        ]

    def popen(self, command: list[str]) -> subprocess.Popen:
        self.logs += 1
        out = open(self.dir / f"out{self.logs}.txt", "w")  # noqa: SIM115 - closed in wait
        err = open(self.dir / f"err{self.logs}.txt", "w")  # noqa: SIM115
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )
        process.files = (out, err)  # type: ignore[attr-defined]
        POPENED.add(process.pid)
        return process

    def wait(self, process: subprocess.Popen, timeout: float | None = None) -> tuple[int, str]:
        """Exit status and stderr; a process that outlives the timeout is killed (a hang)."""
        try:
            process.wait(timeout or self.args.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            limit = timeout or self.args.timeout
            raise ScenarioError(f"hung: still running after {limit} s") from None
        finally:
            for fh in process.files:  # type: ignore[attr-defined]
                fh.close()
            POPENED.discard(process.pid)
        return process.returncode, Path(process.files[1].name).read_text()  # type: ignore[attr-defined]

    def launch(self, *args: str) -> tuple[int, str]:
        return self.wait(self.popen([sys.executable, "launch.py", *args]))

    def events(self) -> list[dict[str, Any]]:
        try:
            return records(self.run / "events.jsonl")
        except ScenarioError:
            return []  # being written: read again

    def area_count(self) -> int:
        """How many epochs of the area metrics.jsonl holds (cheap: for polling)."""
        path = self.run / "metrics.jsonl"
        data = path.read_bytes() if path.exists() else b""
        return sum(
            1
            for line in data.split(b"\n")[:-1]
            if b'"region": "area0"' in line and b'"epoch": ' in line
        )

    def area(self) -> list[dict[str, Any]]:
        return [
            r
            for r in records(self.run / "metrics.jsonl")
            if r.get("region") == "area0" and isinstance(r.get("epoch"), int)
        ]

    def until(self, predicate: Callable[[], Any], timeout: float, step: float = 0.005) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ScenarioError, FileNotFoundError):
                value = predicate()
                if value:
                    return value
            time.sleep(step)
        return None

    def spawned(self, region: str) -> dict[str, Any] | None:
        found = [e for e in self.events() if e["event"] == "spawn" and e["region"] == region]
        return found[-1] if found else None

    def event_after(self, name: str, region: str, since: float) -> dict[str, Any] | None:
        for e in self.events():
            if e["event"] == name and e.get("region") == region and e["time"] >= since:
                return e
        return None

    def kill(self, pid: int, how: int = signal.SIGKILL) -> float | None:
        """Signal ``pid``; the moment, or None if it was gone already."""
        try:
            os.kill(pid, how)
        except ProcessLookupError:
            return None
        return time.time()

    def detected(self, pid: int, at: float | None) -> None:
        """Record the detection latency of a kill of ``pid`` at ``at``."""
        if at is None:
            return
        for e in self.events():
            if e["event"] == "exit" and e.get("pid") == pid:
                self.outcome.latency_s = round(e["time"] - at, 4)
                self.outcome.recorded_latency_s = e.get("detection_latency_s")
                return
        self.outcome.notes.append("no exit event for the killed pid")

    def summary(self) -> dict[str, Any]:
        path = self.run / "summary.json"
        return json.loads(path.read_text()) if path.exists() else {}

    # -- recovery and the shared checks ------------------------------------------------------------
    def recover(self) -> None:
        """Resume a run that did not complete (once); it must then complete."""
        if self.summary().get("status") == "completed":
            return
        recorded = len(self.area())
        self.snapshot()
        rc, err = self.launch("resume", str(self.run))
        self.outcome.resumed += 1
        lines = err.strip().splitlines()
        if rc == 2 and recorded == 0 and lines and "never finished an epoch" in lines[-1]:
            self.outcome.notes.append("nothing to resume (no epoch was recorded)")
            return
        if rc == 2 and recorded == self.epochs and lines and "already completed" in lines[-1]:
            self.outcome.notes.append("nothing to resume (every epoch was recorded)")
            return
        if rc != 0:
            raise ScenarioError(f"resume ended with {rc}: {lines[-1] if lines else ''}")

    def snapshot(self) -> None:
        path = self.run / "metrics.jsonl"
        self.snapshots.append(path.read_bytes() if path.exists() else b"")

    def check(self, expect_complete: bool = True) -> None:
        """The checks every scenario ends with (stray processes and sockets are counted by
        :func:`run_scenario` whatever happened)."""
        path = self.run / "metrics.jsonl"
        final = path.read_bytes() if path.exists() else b""
        for before in self.snapshots:
            if not final.startswith(before):
                kept = set(final.splitlines())
                self.outcome.epochs_lost += sum(
                    1
                    for line in before.splitlines()
                    if line not in kept and b'"region": "area0"' in line and b'"epoch"' in line
                )
        area = self.area()
        epochs = [r["epoch"] for r in area]
        nothing = any("nothing to resume" in note for note in self.outcome.notes)
        if expect_complete and epochs != list(range(self.epochs)) and not nothing:
            raise ScenarioError(f"area epochs {epochs[:3]}…{epochs[-3:]} of {self.epochs}")
        if len(set(epochs)) != len(epochs):
            raise ScenarioError("an area epoch was recorded twice")
        if self.outcome.epochs_lost:
            raise ScenarioError(f"{self.outcome.epochs_lost} recorded epochs lost")


# -- the classes -------------------------------------------------------------------------------


def kill_startup(sc: Scenario) -> None:
    region, delay = sc.rng.choice(REGIONS), sc.rng.uniform(0.0, STARTUP_WINDOW)
    sc.outcome.detail = f"kill -9 {region} {delay:.2f} s after its spawn ({sc.timing})"
    process = sc.popen(sc.command())
    spawn = sc.until(lambda: sc.spawned(region), 60)
    if spawn is None:
        raise ScenarioError(f"{region} was never spawned")
    time.sleep(max(0.0, spawn["time"] + delay - time.time()))
    sc.outcome.hit = not any(e["event"] == "all_ready" for e in sc.events())
    at = sc.kill(spawn["pid"])
    rc, err = sc.wait(process)
    sc.detected(spawn["pid"], at)
    expect_run_end(sc, rc, err, failed=region == "area0" and at is not None)
    sc.recover()
    sc.check()


def kill_mid_epoch(sc: Scenario) -> None:
    region, after = sc.rng.choice(REGIONS), sc.rng.randint(1, sc.epochs - 2)
    sc.outcome.detail = f"kill -9 {region} during epoch {after} ({sc.timing})"
    process = sc.popen(sc.command())
    reached = sc.until(lambda: sc.area_count() >= after, 120, step=0.002)
    time.sleep(sc.rng.uniform(0.0, 0.05))
    spawn = sc.spawned(region)
    at = sc.kill(spawn["pid"]) if reached and spawn else None
    sc.outcome.hit = at is not None and sc.summary() == {}
    rc, err = sc.wait(process)
    sc.detected(spawn["pid"] if spawn else -1, at)
    done_first = any(e["event"] == "done" and e["time"] < (at or 0) for e in sc.events())
    expect_run_end(sc, rc, err, failed=region == "area0" and at is not None and not done_first)
    sc.recover()
    sc.check()


def watch_and_kill(folder: str, target: str, nth: int, mask: int, pid: int) -> None:
    """In a helper process of its own (no other thread competes for its interpreter): wait
    for the ``nth`` inotify event ``mask`` on ``folder/target`` and SIGKILL ``pid`` at once;
    print the moment. Returns when ``pid`` is gone."""
    watch = CreationWatch(Path(folder), mask)
    seen = 0
    while alive(pid):
        for name in watch.created(0.05):
            seen += name == target
            if seen == nth:
                os.kill(pid, signal.SIGKILL)
                print(time.time(), flush=True)
                return


def kill_checkpoint(sc: Scenario) -> None:
    region, nth = sc.rng.choice(REGIONS), sc.rng.randint(1, 4)
    phase = sc.rng.choice(("open", "closed"))  # mid-write, or written but not yet renamed
    when = "writing" if phase == "open" else "about to rename"
    sc.outcome.detail = f"kill -9 {region} {when} its checkpoint #{nth} ({sc.timing})"
    process = sc.popen(sc.command())
    spawn = sc.until(lambda: sc.spawned(region), 60)
    folder = sc.run / "checkpoints"
    if spawn is None or not folder.is_dir():
        raise ScenarioError(f"{region} was never spawned")
    target = f"{region}.pt.tmp"
    mask = IN_CREATE if phase == "open" else IN_CLOSE_WRITE
    call = f"{str(folder)!r}, {target!r}, {nth}, {mask}, {spawn['pid']}"
    watcher = sc.popen(
        [sys.executable, "-c", f"from benchmarks.faults import watch_and_kill as w; w({call})"]
    )
    rc, err = sc.wait(process)
    sc.wait(watcher, timeout=30)
    printed = (sc.dir / f"out{sc.logs}.txt").read_text().split()
    at = float(printed[0]) if printed else None
    sc.outcome.hit = at is not None and (folder / target).exists()  # the rename never came
    sc.detected(spawn["pid"], at)
    done_first = any(e["event"] == "done" and e["time"] < (at or 0) for e in sc.events())
    expect_run_end(sc, rc, err, failed=region == "area0" and at is not None and not done_first)
    sc.recover()
    sc.check()


def kill_shutdown(sc: Scenario) -> None:
    region, delay = sc.rng.choice(REGIONS), sc.rng.uniform(0.0, 0.15)
    sc.outcome.detail = f"kill -9 {region} {delay:.2f} s into the shutdown ({sc.timing})"
    process = sc.popen(sc.command())
    done = sc.until(lambda: [e for e in sc.events() if e["event"] == "done"], 120, step=0.002)
    time.sleep(delay)
    spawn = sc.spawned(region)
    at = sc.kill(spawn["pid"]) if done and spawn else None
    sc.outcome.hit = at is not None
    rc, err = sc.wait(process)
    if spawn:
        sc.detected(spawn["pid"], at)
    expect_run_end(sc, rc, err, failed=False)
    sc.check()


def stop_cont(sc: Scenario) -> None:
    region = sc.rng.choice(REGIONS)
    moment = sc.rng.choice(("start-up", "mid-run", "shutdown"))
    hold = sc.rng.uniform(0.5, 2.5 * sc.args.heartbeat_timeout)
    sc.outcome.detail = f"SIGSTOP {region} at {moment} for {hold:.1f} s, SIGCONT ({sc.timing})"
    process = sc.popen(sc.command())
    spawn = sc.until(lambda: sc.spawned(region), 60)
    if spawn is None:
        raise ScenarioError(f"{region} was never spawned")
    if moment == "start-up":
        time.sleep(max(0.0, spawn["time"] + sc.rng.uniform(0.0, STARTUP_WINDOW) - time.time()))
        sc.outcome.hit = not any(e["event"] == "all_ready" for e in sc.events())
    elif moment == "mid-run":
        after = sc.rng.randint(1, max(1, sc.epochs - 3))
        sc.outcome.hit = bool(sc.until(lambda: sc.area_count() >= after, 120, step=0.002))
    else:
        sc.outcome.hit = bool(
            sc.until(lambda: [e for e in sc.events() if e["event"] == "done"], 120, step=0.002)
        )
    at = sc.kill(spawn["pid"], signal.SIGSTOP)
    time.sleep(hold)
    sc.kill(spawn["pid"], signal.SIGCONT)
    rc, err = sc.wait(process)
    if at is not None:
        silent = sc.event_after("unresponsive", region, at)
        if silent is not None:
            sc.outcome.latency_s = round(silent["time"] - at, 4)
            sc.outcome.notes.append(f"detected by {silent['detected_by']}")
    fails = region == "area0" and any(
        e["event"] == "unresponsive" and e.get("region") == "area0" and e.get("action") == "fail"
        for e in sc.events()
    )
    expect_run_end(sc, rc, err, failed=fails)
    sc.recover()
    sc.check()


def kill_orchestrator(sc: Scenario) -> None:
    moment = sc.rng.choice(("before-spawn", "start-up", "mid-run"))
    sc.outcome.detail = f"kill -9 the orchestrator at {moment} ({sc.timing})"
    process = sc.popen(sc.command())
    if moment == "before-spawn":  # while it waits for the regions' template to import
        sc.until(lambda: (sc.run / "spec.toml").exists(), 60)
        time.sleep(sc.rng.uniform(0.0, 1.0))
        sc.outcome.hit = sc.spawned("area0") is None
    elif moment == "start-up":
        sc.until(lambda: sc.spawned("olive"), 60)
        time.sleep(sc.rng.uniform(0.0, STARTUP_WINDOW))
        sc.outcome.hit = not any(e["event"] == "all_ready" for e in sc.events())
    else:
        after = sc.rng.randint(1, max(1, sc.epochs - 3))
        sc.outcome.hit = bool(sc.until(lambda: sc.area_count() >= after, 120, step=0.002))
    pids = [e["pid"] for e in sc.events() if e["event"] == "spawn"]
    ended = any(e["event"] == "run_end" for e in sc.events())
    at = sc.kill(process.pid)
    rc, _ = sc.wait(process)
    if ended or rc != -signal.SIGKILL:  # it had finished: nothing was killed
        sc.outcome.hit = False
        sc.outcome.notes.append(f"the run ended (exit {rc}) before the kill")
        sc.check()
        return
    gone = sc.until(lambda: not any(alive(p) for p in pids), 10, step=0.002)
    if at is not None and gone:
        sc.outcome.latency_s = round(time.time() - at, 4)
    if not gone:
        raise ScenarioError("orphaned regions still alive 10 s after the orchestrator died")
    if sc.outcome.latency_s is not None and sc.outcome.latency_s > 1.0:
        sc.outcome.notes.append(f"orphans took {sc.outcome.latency_s:.2f} s (> 1 s)")
    regions = sc.run / "regions.json"
    if regions.exists():  # marked dead by the orphans, or at least its pid is gone
        recorded = json.loads(regions.read_text())["orchestrator"]
        if recorded.get("alive") and alive(recorded["pid"]):
            raise ScenarioError("regions.json names a live orchestrator")
        if recorded.get("alive"):
            sc.outcome.notes.append("regions.json not marked (no region had started)")
        rc, _ = sc.launch("status", str(sc.run))
        text = Path(sc.dir / f"out{sc.logs}.txt").read_text()
        if rc != 0 or "orchestrator dead" not in text:
            raise ScenarioError(f"status did not say 'orchestrator dead': {text[:200]!r}")
    sc.recover()
    sc.check()


DAMAGES = ("truncate", "flip", "zero", "foreign-spec", "other-region", "earlier-epoch")


def damage(path: Path, how: str, spec_path: Path) -> None:
    from ccdni.base.checkpoint import load_checkpoint, save_checkpoint
    from ccdni.base.spec import load_spec

    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x55
        path.write_bytes(bytes(flipped))
    elif how == "zero":
        path.write_bytes(b"")
    elif how == "foreign-spec":
        saved = load_checkpoint(path)
        other = load_spec(spec_path).replace(seed=12345)
        save_checkpoint(path, saved.state, saved.region, saved.epoch, other)
    elif how == "other-region":
        donor = "olive" if path.name != "olive.pt" else "area0"
        shutil.copyfile(path.with_name(f"{donor}.pt"), path)
    else:  # earlier-epoch (the area's only: its epoch is checked against the metrics)
        saved = load_checkpoint(path)
        epoch = max(0, saved.epoch - 2)
        state = {**saved.state, "epoch": epoch}
        save_checkpoint(path, state, saved.region, epoch, load_spec(spec_path))


def tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def bad_checkpoint(sc: Scenario, missing: bool) -> None:
    process = sc.popen(sc.command())
    after = sc.rng.randint(3, max(3, sc.epochs - 3))
    sc.until(lambda: sc.area_count() >= after, 120, step=0.005)
    spawn = sc.spawned("area0")
    at = sc.kill(spawn["pid"]) if spawn else None
    rc, err = sc.wait(process)
    sc.detected(spawn["pid"] if spawn else -1, at)
    if sc.summary().get("status") == "completed":
        sc.outcome.detail = "the run completed before its area could be killed"
        sc.check()
        return
    folder = sc.run / "checkpoints"
    present = sorted(p.name for p in folder.glob("*.pt"))
    name = sc.rng.choice(present)
    region = name.removesuffix(".pt")
    if missing:
        how = "delete"
    else:
        choices = [d for d in DAMAGES if d != "earlier-epoch" or region == "area0"]
        if len(present) < 2:
            choices.remove("other-region")
        how = sc.rng.choice(choices)
    sc.outcome.detail = f"{how} {name} after killing the area at epoch {after} ({sc.timing})"
    backup = (folder / name).read_bytes()
    if missing:
        (folder / name).unlink()
    else:
        damage(folder / name, how, sc.run / "spec.toml")
    recorded = {
        r["region"]
        for r in records(sc.run / "metrics.jsonl")
        if isinstance(r.get("epoch"), int) and "region" in r
    }
    must_refuse = region == "area0" or not missing or region in recorded
    before = tree(sc.run)
    rc, err = sc.launch("resume", str(sc.run))
    lines = err.strip().splitlines()
    if rc == 2:
        if len(lines) != 1 or str(folder / name) not in lines[0]:
            raise ScenarioError(f"refusal not one line naming {name}: {lines[-2:]}")
        if tree(sc.run) != before:
            raise ScenarioError("a refused resume changed the run directory")
        sc.outcome.hit = True
        (folder / name).write_bytes(backup)
        sc.recover()
    elif must_refuse:
        raise ScenarioError(f"resume with {how} {name} was not refused (exit {rc})")
    else:
        sc.outcome.notes.append(f"{name} was not needed: resumed without it")
        sc.outcome.resumed += 1
    sc.check()


def full_disk(sc: Scenario) -> None:
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode:
        raise ScenarioError("skipped: cannot mount a tmpfs here (no unshare -rm)")
    size = sc.rng.randrange(24, 161, 8)
    sc.outcome.detail = f"run directory on a {size} KB tmpfs ({sc.timing})"
    mount, copy = sc.dir / "mnt", sc.dir / "copy"
    mount.mkdir()
    copy.mkdir()
    inner = (
        f"mount -t tmpfs -o size={size}k tmpfs {mount} || exit 99; "
        f"{' '.join(sc.command(mount))} > {sc.dir}/out1.txt 2> {sc.dir}/err1.txt; "
        f"echo $? > {sc.dir}/rc1.txt; find {mount} -type s > {sc.dir}/sockets1.txt; "
        f"cp -a {mount}/. {copy}/"
    )
    process = sc.popen(["unshare", "-rm", "sh", "-c", inner])
    rc, _ = sc.wait(process)
    if rc == 99:
        raise ScenarioError("skipped: the tmpfs could not be mounted")
    sc.run = copy / "run"
    rc = int((sc.dir / "rc1.txt").read_text())
    err = (sc.dir / "err1.txt").read_text()
    sockets = (sc.dir / "sockets1.txt").read_text().split()
    sc.outcome.stray_sockets += len(sockets)
    sc.outcome.hit = rc != 0
    if "Traceback" in err:
        raise ScenarioError("a traceback on a full disk")
    lines = err.strip().splitlines()
    if rc == 2:
        if not lines or not lines[-1].startswith("launch.py") or "No space left" not in lines[-1]:
            raise ScenarioError(f"not one error line naming the full disk: {lines[-1:]}")
    elif rc != 0:
        raise ScenarioError(f"exit status {rc} on a full disk (expected 0 or 2)")
    if not sc.run.exists():  # the run directory itself could not be made
        sc.outcome.notes.append("no run directory could be created")
        sc.epochs = 0
        return
    sc.events()  # raises on a torn line
    records(sc.run / "metrics.jsonl")
    if rc == 2:
        recorded = len(sc.area())
        sc.snapshot()
        before = tree(sc.run)
        rc, err = sc.launch("resume", str(sc.run))
        sc.outcome.resumed += 1
        lines = err.strip().splitlines()
        last = lines[-1] if lines else ""
        if rc == 2 and recorded == 0 and ("never finished an epoch" in last or "spec.toml" in last):
            sc.outcome.notes.append("nothing to resume (no epoch was recorded)")
        elif rc == 2 and "already completed" in last:
            pass
        elif rc == 2 and len(lines) == 1 and ".pt: " in last and tree(sc.run) == before:
            # a checkpoint the full disk kept from being written: refused, nothing changed
            sc.outcome.notes.append(f"resume refused: {last.split('error: ', 1)[-1]}")
            sc.epochs = 0
        elif rc != 0:
            raise ScenarioError(f"resume after freeing space ended with {rc}: {last}")
    sc.check(expect_complete=sc.epochs > 0)


def expect_run_end(sc: Scenario, rc: int, err: str, failed: bool) -> None:
    """The run ended as the fault requires: completed (0), or failed (1) naming the area."""
    if "Traceback" in err:
        raise ScenarioError("a traceback on stderr")
    summary = sc.summary()
    if failed:
        if rc != 1 or summary.get("status") != "failed" or "area0" not in str(summary["reason"]):
            raise ScenarioError(
                f"expected a failure naming area0, got {rc} {summary.get('reason')}"
            )
    elif rc != 0 or summary.get("status") != "completed":
        raise ScenarioError(f"expected completion, got {rc}: {summary.get('reason')}")


RUNNERS: dict[str, Callable[[Scenario], None]] = {
    "kill-startup": kill_startup,
    "kill-mid-epoch": kill_mid_epoch,
    "kill-checkpoint": kill_checkpoint,
    "kill-shutdown": kill_shutdown,
    "stop-cont": stop_cont,
    "kill-orchestrator": kill_orchestrator,
    "corrupt-checkpoint": lambda sc: bad_checkpoint(sc, missing=False),
    "missing-checkpoint": lambda sc: bad_checkpoint(sc, missing=True),
    "full-disk": full_disk,
}


def run_scenario(index: int, cls: str, seed: int, work: Path, args: Any) -> Outcome:
    outcome = Outcome(index, cls)
    rng = random.Random(f"{seed}/{index}")
    started = time.monotonic()
    sc: Scenario | None = None
    try:
        sc = Scenario(outcome, rng, work, args)
        RUNNERS[cls](sc)
        outcome.survived = True
    except ScenarioError as exc:
        outcome.why = str(exc)
    except Exception as exc:  # a bug of this script is a finding too
        outcome.why = f"{type(exc).__name__}: {exc} ({traceback.format_exc(limit=3)!r})"
    if sc is not None:
        strays = sc.until(lambda: not tagged(sc.tag), STRAY_GRACE, step=0.05) is None
        if strays:
            leftover = tagged(sc.tag)
            outcome.stray_processes = len(leftover)
            for pid in leftover:
                command = (read_proc(pid, "cmdline") or b"").replace(b"\0", b" ")[:120]
                outcome.notes.append(f"stray {pid} ({state_of(pid)}): {command.decode()}")
            for pid in leftover:  # counted; now cleaned up
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for root in {sc.runs, sc.run.parent}:
            if root.exists():
                outcome.stray_sockets += sum(1 for p in root.rglob("*") if p.is_socket())
        if (outcome.stray_processes or outcome.stray_sockets) and outcome.survived:
            outcome.survived = False
            outcome.why = "stray processes or socket files"
        if outcome.why.startswith("skipped"):
            outcome.survived = False
        if not args.keep and outcome.survived:
            shutil.rmtree(sc.dir, ignore_errors=True)
    outcome.wall_s = round(time.monotonic() - started, 2)
    return outcome


# -- the report ----------------------------------------------------------------------------------


def summarise(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for cls in CLASSES:
        mine = [o for o in outcomes if o.cls == cls and not o.why.startswith("skipped")]
        skipped = sum(1 for o in outcomes if o.cls == cls and o.why.startswith("skipped"))
        if not mine and not skipped:
            continue
        latencies = [o.latency_s for o in mine if o.latency_s is not None]
        recorded = [o.recorded_latency_s for o in mine if o.recorded_latency_s is not None]
        table[cls] = {
            "survived": sum(o.survived for o in mine),
            "total": len(mine),
            "skipped": skipped,
            "epochs_lost": sum(o.epochs_lost for o in mine),
            "stray_processes": sum(o.stray_processes for o in mine),
            "stray_sockets": sum(o.stray_sockets for o in mine),
            "worst_latency_s": max(latencies) if latencies else None,
            "median_latency_s": statistics.median(latencies) if latencies else None,
            "detections": len(latencies),
            "worst_recorded_latency_s": max(recorded) if recorded else None,
            "moment_hit": sum(1 for o in mine if o.hit),
            "resumed": sum(o.resumed for o in mine),
        }
    return table


def ms(value: float | None) -> str:
    return "—" if value is None else f"{1000 * value:.0f} ms"


def print_table(table: dict[str, dict[str, Any]]) -> None:
    header = (
        "| scenario class | runs survived / total | epochs lost | stray processes | stray "
        "socket files | worst detection latency (median, n) | moment hit | resumes |"
    )
    print(header)
    print("|" + " --- |" * 8)
    for cls, row in table.items():
        latency = ms(row["worst_latency_s"])
        if row["detections"]:
            latency += f" ({ms(row['median_latency_s'])}, {row['detections']})"
        total = f"{row['survived']} / {row['total']}"
        if row["skipped"]:
            total += f" ({row['skipped']} skipped)"
        print(
            f"| {cls} | {total} | {row['epochs_lost']} | {row['stray_processes']} | "
            f"{row['stray_sockets']} | {latency} | {row['moment_hit']}/{row['total']} | "
            f"{row['resumed']} |"
        )
    totals = {k: sum(r[k] for r in table.values()) for k in ("survived", "total", "epochs_lost")}
    print(
        f"| all | {totals['survived']} / {totals['total']} | {totals['epochs_lost']} | "
        f"{sum(r['stray_processes'] for r in table.values())} | "
        f"{sum(r['stray_sockets'] for r in table.values())} | | | |"
    )


def write_json(path: Path, command: str, wall: float, outcomes: list[Outcome]) -> None:
    """The results so far (the table, every scenario, the failures) as JSON, atomically."""
    report = {
        "command": command,
        "wall_seconds": round(wall, 1),
        "classes": summarise(outcomes),
        "scenarios": [asdict(o) for o in outcomes],
        "failures": [asdict(o) for o in outcomes if not o.survived],
    }
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(path)


def build_parser() -> argparse.ArgumentParser:
    parser = ScriptParser(
        prog="python -m benchmarks.faults",
        description="Run N randomised fault-injection scenarios (kill -9 and SIGSTOP/SIGCONT of "
        "every region at random moments, a dead orchestrator, damaged and missing checkpoints "
        "on resume, a full disk) against real multi-process runs, and print per scenario "
        "class: runs survived / total, epochs lost, stray processes and socket files, and the "
        "worst detection latency.",
    )
    parser.add_argument("--n", type=int, default=18, help="number of scenarios (default: 18)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of every random choice (default: 0)"
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=2,
        help="scenarios run at the same time (default: 2; each is 3 region processes)",
    )
    parser.add_argument(
        "--classes",
        default=",".join(CLASSES),
        help="comma-separated scenario classes to draw from, cycled in a shuffled order "
        f"(default: all: {', '.join(CLASSES)})",
    )
    parser.add_argument(
        "--min-epochs", type=int, default=12, help="fewest epochs of a run (default: 12)"
    )
    parser.add_argument(
        "--max-epochs", type=int, default=30, help="most epochs of a run (default: 30)"
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=2.0,
        help="the runs' heartbeat_timeout in seconds (default: 2.0)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=240.0,
        help="seconds one launch.py may take before it counts as hung (default: 240)",
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="where the scenarios' run directories go (default: a new temporary folder)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the run directories of scenarios that survived (failed ones are always kept)",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="also write the results as JSON to FILE (rewritten after every scenario)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown or not classes or args.n < 1 or args.parallel < 1:
        sys.stderr.write(f"faults: error: unknown classes {unknown} or n/parallel < 1\n")
        return 2
    if not 3 <= args.min_epochs <= args.max_epochs:
        sys.stderr.write("faults: error: need 3 ≤ --min-epochs ≤ --max-epochs\n")
        return 2
    if sys.platform.startswith("linux"):  # orphans come to this script, which reaps them
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="faults-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    order: list[str] = []
    while len(order) < args.n:
        batch = list(classes)
        rng.shuffle(batch)
        order += batch
    order = order[: args.n]
    command = "python -m benchmarks.faults " + " ".join(argv if argv is not None else sys.argv[1:])
    stop = threading.Event()
    reaper = threading.Thread(target=reap_orphans, args=(stop,), daemon=True)
    reaper.start()
    started = time.monotonic()
    outcomes: list[Outcome] = []
    try:
        with ThreadPoolExecutor(args.parallel) as pool:
            futures = [
                pool.submit(run_scenario, i, cls, args.seed, work, args)
                for i, cls in enumerate(order)
            ]
            for future in futures:
                outcome = future.result()
                outcomes.append(outcome)
                mark = "ok " if outcome.survived else "FAIL"
                print(
                    f"[{len(outcomes):3d}/{args.n}] {mark} {outcome.cls:<19} "
                    f"{outcome.detail}  {outcome.why}".rstrip(),
                    flush=True,
                )
                if args.json:  # after every scenario: an interrupted run keeps what it found
                    write_json(Path(args.json), command, time.monotonic() - started, outcomes)
    finally:
        stop.set()
    table = summarise(outcomes)
    wall = time.monotonic() - started
    print()
    print(f"{command}  ({len(outcomes)} scenarios in {wall / 60:.1f} min, work dir {work})")
    print()
    print_table(table)
    failures = [asdict(o) for o in outcomes if not o.survived]
    if args.json:
        write_json(Path(args.json), command, wall, outcomes)
    if not args.keep and not failures and not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    clean = all(
        r["epochs_lost"] == 0 and r["stray_processes"] == 0 and r["stray_sockets"] == 0
        for r in table.values()
    )
    return 0 if clean and all(o.survived or o.why.startswith("skipped") for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
