"""The supervisor against deliberately broken regions: real processes that ignore ``stop`` (and
SIGTERM), never become ready, die or stop themselves at start, or flood the control socket with
invalid messages. Each test checks the stages the supervisor went through in events.jsonl.

The broken shells are defined here; the supervisor's ``shell_for`` hook makes it spawn one in
place of a region (the child imports this module by name: ``test_supervisor:Class``)."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import assert_no_process_left, records

from ccdni.base.logs import configure_logging
from ccdni.base.region import RegionShell
from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import load_spec
from orchestrator.launcher import ShutdownStage, Supervisor
from orchestrator.progress import Progress
from wire.protocol import (
    MAGIC,
    VERSION,
    Command,
    HeartbeatHeader,
    Kind,
    MetricHeader,
    RegionState,
    control,
    encode,
)

pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[1]


# -- broken regions (run in their own processes) -------------------------------------------------


class IgnoresStop(RegionShell):
    """Reports ready and heartbeats, but drops every control message, ``stop`` included; with
    ``ignore_sigterm`` it also ignores SIGTERM, so only SIGKILL ends it."""

    role = "cerebellum"

    def serve(self) -> None:
        if self.options.get("ignore_sigterm"):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.state = RegionState.READY
        self.report(Command.READY)
        while True:
            self.heartbeat()
            self.check_parent()
            self.control.receive(0.05)  # read and ignore


class NeverReady(RegionShell):
    """Heartbeats and obeys ``stop`` but never reports ready."""

    role = "area"

    def serve(self) -> None:
        while True:
            self.tick()
            self.drain_control(0.05)


class DiesAtStart(RegionShell):
    """Exits with code 7 before saying anything."""

    def serve(self) -> None:
        os._exit(7)


class StopsAtStart(RegionShell):
    """Stops itself (SIGSTOP) before it is ready; continued, it behaves like IgnoresStop."""

    def serve(self) -> None:
        os.kill(os.getpid(), signal.SIGSTOP)
        IgnoresStop.serve(self)  # type: ignore[arg-type]


class Flooder(RegionShell):
    """Reports ready, heartbeats, obeys ``stop``, and between heartbeats floods the control
    socket with invalid messages of every kind; reports how many it sent in a metric every
    50 ms and at the end (on a loaded machine the orchestrator may not drain the last
    flood before the exit's linger is over, so the final one can be lost)."""

    role = "cerebellum"

    def serve(self) -> None:
        self.flooded = 0
        rng = random.Random(7)
        sock = self.control.sock
        junk = [
            lambda: [rng.randbytes(rng.randrange(1, 40))],  # not a ccdni message
            lambda: [MAGIC + bytes([VERSION + 1, Kind.METRIC]), b"\x80"],  # wrong version
            lambda: [MAGIC + bytes([VERSION, Kind.CONTROL]), b"\xc1"],  # header not msgpack
            lambda: [MAGIC + bytes([VERSION, Kind.CONTROL]), msgpack.packb({"command": "x"})],
            lambda: encode(MetricHeader(region="area0", values={"epoch": 999})),  # impostor
            lambda: encode(HeartbeatHeader(region=self.name, pid=1)),  # another pid
            lambda: encode(control(Command.ABLATE, self.name, region="olive")),  # a client's
            lambda: encode(control(Command.EPOCH_END, self.name, epoch=3)),  # not a report
        ]
        self.state = RegionState.READY
        self.report(Command.READY)
        reported = 0.0
        while True:
            # the count first, while the queue has room (a short run may end in under 0.5 s)
            if time.monotonic() - reported >= 0.05 and self.control.send(
                MetricHeader(region=self.name, values={"flooded": self.flooded})
            ):
                reported = time.monotonic()
            for _ in range(200):
                try:
                    sock.send_multipart(rng.choice(junk)(), flags=zmq.NOBLOCK)
                    self.flooded += 1
                except zmq.Again:
                    break
            self.tick()
            time.sleep(0.005)

    def finish(self) -> None:
        # its own flood may have filled the send queue: wait (bounded) for room, as the final
        # metric is what the test reads
        header = MetricHeader(region=self.name, values={"flooded": getattr(self, "flooded", 0)})
        deadline = time.monotonic() + 5.0
        while not self.control.send(header) and time.monotonic() < deadline:
            time.sleep(0.01)


# -- helpers -------------------------------------------------------------------------------------


class BrokenSupervisor(Supervisor):
    """A supervisor that spawns the given broken shells in place of some regions."""

    broken: dict[str, str] = {}
    options: dict[str, dict] = {}

    def shell_for(self, name: str, role: str) -> str:
        return self.broken.get(name, role)

    def spawn(self, name: str, role: str, options: dict):
        return super().spawn(name, role, {**options, **self.options.get(name, {})})


def supervise(spec, broken: dict[str, str], **options: dict) -> tuple[Path, dict, float]:
    """Run ``spec`` with ``broken`` regions (name → class here); (run dir, outcome, wall s)."""
    run = RunDirectory.create(spec)
    log = configure_logging("orchestrator", run.log_path("orchestrator"), "info", console=False)
    supervisor = BrokenSupervisor(spec, run, log, Progress(spec, log, enabled=False))
    supervisor.broken = {name: f"test_supervisor:{cls}" for name, cls in broken.items()}
    supervisor.options = options
    started = time.monotonic()
    outcome = supervisor.execute()
    return run.path, outcome, time.monotonic() - started


def events_of(run: Path, name: str, **match) -> list[dict]:
    return [
        e
        for e in records(run / "events.jsonl")
        if e["event"] == name and all(e.get(k) == v for k, v in match.items())
    ]


def stages(run: Path) -> list[str]:
    return [e["stage"] for e in events_of(run, "shutdown")]


def spec_for(tmp_path: Path, **fields):
    common = dict(
        epochs=3,
        timing="stale",  # the area never waits on a broken cerebellum
        runs_dir=str(tmp_path),
        figures=False,
        progress=False,
        stop_deadline=1.0,
    )
    return load_spec(**{**common, **fields})


# -- the tests -----------------------------------------------------------------------------------


def test_region_ignoring_stop_is_terminated(tmp_path: Path) -> None:
    """A cerebellum that ignores ``stop`` gets SIGTERM after ``stop_deadline`` and exits on it;
    the stop and terminate stages are both in events.jsonl."""
    run, outcome, _ = supervise(spec_for(tmp_path), {"cerebellum": "IgnoresStop"})
    assert outcome["status"] == "completed", outcome["reason"]
    assert outcome["shutdown_stages"] == [ShutdownStage.STOP, ShutdownStage.TERMINATE]
    assert stages(run) == ["stop", "terminate"]
    (exit_event,) = events_of(run, "exit", region="cerebellum")
    assert exit_event["exitcode"] == 128 + signal.SIGTERM  # left through its SIGTERM handler
    stop = events_of(run, "shutdown", stage="stop")[0]["time"]
    terminate = events_of(run, "shutdown", stage="terminate")[0]["time"]
    assert 1.0 <= terminate - stop < 3.0  # after stop_deadline, not before
    assert_no_process_left(run, expected_regions=3)


def test_region_ignoring_stop_and_sigterm_is_killed(tmp_path: Path) -> None:
    """A cerebellum that ignores ``stop`` and SIGTERM is SIGKILLed after the terminate grace;
    stop, terminate and kill all appear in events.jsonl."""
    run, outcome, _ = supervise(
        spec_for(tmp_path),
        {"cerebellum": "IgnoresStop"},
        cerebellum={"ignore_sigterm": True},
    )
    assert outcome["status"] == "completed", outcome["reason"]
    assert stages(run) == ["stop", "terminate", "kill"]
    (exit_event,) = events_of(run, "exit", region="cerebellum")
    assert exit_event["exitcode"] == -signal.SIGKILL
    assert events_of(run, "shutdown", stage="kill")[0]["regions"] == ["cerebellum"]
    assert_no_process_left(run, expected_regions=3)


def test_area_never_ready_hits_the_startup_timeout(tmp_path: Path) -> None:
    """An area that never reports ready fails the run when ``startup_timeout`` expires — not
    before, not much after — with a reason naming it; it is then stopped normally."""
    spec = spec_for(tmp_path, model="lstm", startup_timeout=4.0)
    run, outcome, wall = supervise(spec, {"area0": "NeverReady"})
    assert outcome["status"] == "failed"
    assert outcome["reason"] == "regions not ready after 4 s: ['area0']"
    spawn = events_of(run, "spawn", region="area0")[0]["time"]
    failed_at = events_of(run, "shutdown", stage="stop")[0]["time"]
    assert 4.0 <= failed_at - spawn < 6.0
    assert not events_of(run, "ready")
    assert stages(run) == ["stop"]
    assert_no_process_left(run, expected_regions=1)


def test_cerebellum_dying_at_start_is_a_lesion_at_epoch_0(tmp_path: Path) -> None:
    """A cerebellum that dies before it is ready is a lesion at epoch 0: the run starts without
    waiting for it, trains every epoch with plain truncated BPTT, and says so."""
    run, outcome, _ = supervise(spec_for(tmp_path, timing="wait"), {"cerebellum": "DiesAtStart"})
    assert outcome["status"] == "completed", outcome["reason"]
    (lesion,) = events_of(run, "lesion", region="cerebellum")
    assert lesion["phase"] == "start-up" and lesion["epoch"] == 0
    assert lesion["cause"] == "exit code 7" and lesion["detected_by"] == "sentinel"
    assert outcome["lesions"] == [{k: v for k, v in lesion.items() if k not in ("time", "event")}]
    (died,) = events_of(run, "exit", region="cerebellum")
    # no wait for the dead one: the run starts once the others are ready and the death is seen
    # (on a loaded machine the cerebellum may still be starting when the others are ready)
    last = max([e["time"] for e in events_of(run, "ready")] + [died["time"]])
    assert events_of(run, "all_ready")[0]["time"] - last < 1.0
    assert died["detection_latency_s"] < 1.0
    assert events_of(run, "all_ready")[0]["lesioned"] == ["cerebellum"]
    area = [r for r in records(run / "metrics.jsonl") if r["region"] == "area0" and "epoch" in r]
    assert [r["epoch"] for r in area] == [0, 1, 2]
    assert all(r["predictions"] == 0 and not r["cerebellum_alive"] for r in area)
    assert all(r["wait_seconds"] < 0.5 for r in area), "the area knew before it asked"
    assert_no_process_left(run, expected_regions=3)


def test_area_dying_at_start_fails_the_run_at_once(tmp_path: Path) -> None:
    """An area that dies during start-up fails the run at once, naming it and its exit code;
    the regions still starting (which cannot hear ``stop`` yet) are terminated, not waited
    for."""
    run, outcome, _ = supervise(spec_for(tmp_path), {"area0": "DiesAtStart"})
    assert outcome["status"] == "failed"
    assert outcome["reason"] == "area area0 died during start-up: exit code 7"
    died = events_of(run, "exit", region="area0")[0]["time"]
    assert events_of(run, "shutdown", stage="stop")[0]["time"] - died < 0.5
    assert events_of(run, "run_end")[0]["time"] - died < 2.0 + 2.0  # terminate grace at most
    assert_no_process_left(run, expected_regions=3)


def test_cerebellum_stopped_at_start_is_lesioned_by_its_process_state(tmp_path: Path) -> None:
    """A cerebellum that stops (SIGSTOP) before it is ready is seen stopped by its process
    state after ``heartbeat_timeout`` and lesioned at epoch 0; at shutdown it is continued and
    terminated rather than waited for."""
    spec = spec_for(tmp_path, heartbeat_timeout=2.0, stop_deadline=10.0)
    run, outcome, _ = supervise(spec, {"cerebellum": "StopsAtStart"})
    assert outcome["status"] == "completed", outcome["reason"]
    (silent,) = events_of(run, "unresponsive", region="cerebellum")
    assert silent["detected_by"] == "process_state" and silent["process_state"] == "T"
    assert 2.0 <= silent["stopped_s"] < 4.0
    (lesion,) = events_of(run, "lesion", region="cerebellum")
    assert lesion["phase"] == "start-up" and lesion["process_alive"]
    assert events_of(run, "shutdown_escalated")  # not the 10 s stop deadline
    stop = events_of(run, "shutdown", stage="stop")[0]["time"]
    assert events_of(run, "shutdown", stage="terminate")[0]["time"] - stop < 1.0
    assert_no_process_left(run, expected_regions=3)


def test_flooding_region_does_not_stall_supervision(tmp_path: Path) -> None:
    """A cerebellum flooding the control socket with invalid messages has them all rejected
    while the run completes: every epoch recorded, no region taken for silent, no lesion."""
    run, outcome, _ = supervise(spec_for(tmp_path, epochs=30), {"cerebellum": "Flooder"})
    assert outcome["status"] == "completed", outcome["reason"]
    metrics = records(run / "metrics.jsonl")
    area = [r for r in metrics if r["region"] == "area0" and "epoch" in r]
    assert [r["epoch"] for r in area] == list(range(30))  # the impostor's epoch 999 is not
    flood = [r for r in metrics if "flooded" in r][-1]  # the latest count that arrived
    rejected = [
        line
        for line in records(run / "logs" / "orchestrator.jsonl")
        if line["event"] == "message_rejected"
    ]
    assert flood["flooded"] >= 1000 and len(rejected) >= 0.9 * flood["flooded"]
    reasons = {line["reason"].split(" ")[0] for line in rejected}
    assert len(reasons) >= 4, reasons  # every kind of junk was seen and named
    assert not events_of(run, "unresponsive") and not events_of(run, "lesion")
    assert stages(run) == ["stop"]
    assert_no_process_left(run, expected_regions=3)


def test_essential_cerebellum_dying_at_start_fails_within_2_s(tmp_path: Path) -> None:
    """In a forward-unlocked chain the cerebellum is needed from the first batch: its death
    during start-up fails the run within 2 s, naming it and the cause."""
    spec = spec_for(
        tmp_path,
        topology="chain",
        chain_mode="forward-unlocked",
        chain_width=32,
        train_subset=200,
        val_subset=100,
        epochs=1,
    )
    run, outcome, _ = supervise(spec, {"cerebellum": "DiesAtStart"})
    assert outcome["status"] == "failed"
    assert outcome["reason"].startswith("cerebellum died during start-up (exit code 7)")
    assert "forward-unlocked" in outcome["reason"]
    died = events_of(run, "exit", region="cerebellum")[0]["time"]
    assert events_of(run, "shutdown", stage="stop")[0]["time"] - died < 2.0
    assert not events_of(run, "start")
    assert_no_process_left(run, expected_regions=4)
