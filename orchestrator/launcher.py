"""The orchestrator proper: launch the regions, supervise them, shut them down in stages.

Children are started with the ``spawn`` method. Death is detected in layers: process
sentinels (immediate), application heartbeats (``heartbeat_timeout``), and ZMTP heartbeats on
every link. Shutdown is staged — ``stop`` message → ``stop_deadline`` → SIGTERM → 2 s →
SIGKILL — and every stage is written to ``events.jsonl`` so tests can check it. No process and
no socket file outlives the run.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from orchestrator.progress import Progress
from orchestrator.region import region_main
from orchestrator.rundir import RunDirectory
from orchestrator.spec import RunSpec
from wire.channel import Counters, Endpoint, make_socket
from wire.protocol import ControlHeader, Kind

IPC_PATH_LIMIT = 100  # sockaddr_un holds ~107 bytes
TERMINATE_GRACE = 2.0


class RunFailed(RuntimeError):
    """The run cannot go on; the message names the region and the cause."""


@dataclass
class Region:
    """What the orchestrator knows about one child process."""

    name: str
    role: str
    process: Any
    pid: int | None = None
    state: str = "spawned"
    epoch: int = 0
    alive: bool = True
    ready: bool = False
    done: bool = False
    exitcode: int | None = None
    last_heartbeat: float = field(default_factory=time.monotonic)
    unresponsive: bool = False
    sent: int = 0
    received: int = 0
    rejected: int = 0
    last_metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def socket_directory(run: RunDirectory) -> Path:
    """Owner-only folder for the ipc:// endpoints (in the run directory if the path is short)."""
    candidate = (run.path / "sock").resolve()
    if len(str(candidate)) + len("/cerebellum.sock") + 6 <= IPC_PATH_LIMIT:
        candidate.mkdir(mode=0o700)
        return candidate
    return Path(tempfile.mkdtemp(prefix="ccdni-"))


class Supervisor:
    """Runs one multi-process run from launch to staged shutdown."""

    def __init__(self, spec: RunSpec, run: RunDirectory, log: Any, progress: Progress):
        self.spec = spec
        self.run = run
        self.log = log
        self.progress = progress
        self.regions: dict[str, Region] = {}
        self.context = zmq.Context()
        self.sock_dir: Path | None = None
        self.control: Endpoint | None = None
        self.counters = Counters()

    # -- launch ---------------------------------------------------------------------------------
    def endpoints(self) -> dict[str, str]:
        assert self.sock_dir is not None
        names = ["orchestrator", "cerebellum", "olive"]
        return {name: f"ipc://{self.sock_dir / name}.sock" for name in names}

    def launch(self) -> None:
        self.sock_dir = socket_directory(self.run)
        endpoints = self.endpoints()
        sock = make_socket(self.context, zmq.ROUTER)
        sock.bind(endpoints["orchestrator"])
        self.control = Endpoint(sock, self.log, self.counters, routed=True)
        roles = [(name, "area") for name in self.spec.interfaces]
        if self.spec.uses_cerebellum:
            roles += [("cerebellum", "cerebellum"), ("olive", "olive")]
        context = multiprocessing.get_context("spawn")
        threads = str(self.spec.threads)
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        try:
            for name, role in roles:
                process = context.Process(
                    target=region_main,
                    args=(
                        role,
                        name,
                        self.spec.to_dict(),
                        str(self.run.path),
                        endpoints,
                        os.getpid(),
                    ),
                    name=f"ccdni-{name}",
                )
                process.start()
                self.regions[name] = Region(name, role, process, pid=process.pid)
                self.run.append_event("spawn", region=name, role=role, pid=process.pid)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self.write_regions()

    def write_regions(self) -> None:
        self.run.write_json(
            self.run.regions_path,
            {
                "orchestrator": {"pid": os.getpid(), "sockets": str(self.sock_dir)},
                "regions": {
                    r.name: {"role": r.role, "pid": r.pid, "alive": r.alive, "state": r.state}
                    for r in self.regions.values()
                },
            },
        )

    # -- the supervision loop ---------------------------------------------------------------------
    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a control message or a process exit; handle them all."""
        assert self.control is not None
        poller = zmq.Poller()
        poller.register(self.control.sock, zmq.POLLIN)
        sentinels = {r.process.sentinel: r for r in self.regions.values() if r.alive}
        for fd in sentinels:
            poller.register(fd, zmq.POLLIN)
        events = dict(poller.poll(int(timeout * 1000)))
        if self.control.sock in events:
            for _ in range(1000):
                received = self.control.receive_ready()
                if received is not None:
                    self.handle(*received)
                if not self.control.sock.poll(0, zmq.POLLIN):
                    break
        for fd, region in sentinels.items():
            if fd in events:
                self.on_exit(region, detected_by="sentinel")
        now = time.monotonic()
        for region in self.regions.values():
            silent = now - region.last_heartbeat
            if region.alive and not region.unresponsive and silent > self.spec.heartbeat_timeout:
                region.unresponsive = True
                self.run.append_event(
                    "unresponsive", region=region.name, silent_seconds=round(silent, 3)
                )
                self.log.warning("region_unresponsive", region=region.name, silent=silent)
        self.progress.update(self.regions)

    def handle(self, sender: str | None, message: Any) -> None:
        region = self.regions.get(sender or "")
        if region is None:
            self.control.reject(f"message from unknown region {sender!r}", sender)
            return
        region.last_heartbeat = time.monotonic()
        region.unresponsive = False
        header = message.header
        if message.kind == Kind.HEARTBEAT:
            region.state, region.epoch = header.state, header.epoch
            region.sent, region.received = header.sent, header.received
            region.rejected = header.rejected
        elif message.kind == Kind.METRIC:
            record = {"region": region.name, **header.values}
            self.run.append_metric(record)
            region.last_metrics.update(header.values)
            if "epoch" in header.values and region.role == "area":
                region.epoch = int(header.values["epoch"]) + 1
        elif message.kind == Kind.CONTROL:
            self.on_report(region, header.command, header.args)
        else:
            self.control.reject(f"unexpected {message.kind.name}", sender)

    def on_report(self, region: Region, command: str, args: dict[str, Any]) -> None:
        if command == "ready":
            region.ready = True
            self.run.append_event("ready", region=region.name)
        elif command == "done":
            region.done = True
            self.run.append_event("done", region=region.name, **args)
        elif command == "failed":
            region.error = str(args.get("error", "unknown error"))
            self.run.append_event("region_failed", region=region.name, error=region.error)
        elif command == "exiting":
            region.state = "exiting"
        else:
            self.log.warning("unknown_report", region=region.name, command=command)

    def on_exit(self, region: Region, detected_by: str) -> None:
        region.process.join(timeout=1.0)
        region.alive = False
        region.exitcode = region.process.exitcode
        region.state = "exited"
        self.run.append_event(
            "exit",
            region=region.name,
            pid=region.pid,
            exitcode=region.exitcode,
            detected_by=detected_by,
            expected=region.done or self.stopping,
        )
        self.write_regions()
        if self.stopping:
            return
        if region.role == "area" and not region.done:
            cause = region.error or f"exit code {region.exitcode}"
            raise RunFailed(f"area {region.name} died before finishing: {cause}")
        if region.role != "area" and self.spec.timing == "lockstep":
            cause = region.error or f"exit code {region.exitcode}"
            raise RunFailed(f"{region.name} died under lockstep timing: {cause}")
        self.log.warning("region_lost", region=region.name, exitcode=region.exitcode)

    def send(self, region: Region, command: str, **args: Any) -> None:
        assert self.control is not None
        self.control.send(
            ControlHeader(command=command, region=region.name, args=args), to=region.name
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.spec.startup_timeout
        while not all(r.ready for r in self.regions.values()):
            if time.monotonic() > deadline:
                late = [r.name for r in self.regions.values() if not r.ready]
                raise RunFailed(f"regions not ready after {self.spec.startup_timeout:g} s: {late}")
            self.poll(0.1)
        self.run.append_event("all_ready")

    def supervise(self) -> None:
        areas = [r for r in self.regions.values() if r.role == "area"]
        for region in areas:
            self.send(region, "start")
        self.run.append_event("start")
        while not all(r.done for r in areas):
            self.poll(0.1)
            for region in self.regions.values():
                if region.error and region.role == "area":
                    raise RunFailed(f"area {region.name} failed: {region.error}")

    # -- shutdown -------------------------------------------------------------------------------
    stopping = False

    def shutdown(self) -> list[str]:
        """Stop every live child in stages; returns the stages that were needed."""
        self.stopping = True
        stages = []
        live = [r for r in self.regions.values() if r.alive]
        if live:
            stages.append("stop")
            for region in live:
                self.send(region, "stop")
            self.run.append_event("shutdown", stage="stop", regions=[r.name for r in live])
            deadline = time.monotonic() + self.spec.stop_deadline
            while any(r.alive for r in live) and time.monotonic() < deadline:
                self.poll(0.05)
        for stage, action, grace in (
            ("terminate", "terminate", TERMINATE_GRACE),
            ("kill", "kill", TERMINATE_GRACE),
        ):
            remaining = [r for r in self.regions.values() if r.alive]
            if not remaining:
                break
            stages.append(stage)
            self.run.append_event("shutdown", stage=stage, regions=[r.name for r in remaining])
            for region in remaining:
                getattr(region.process, action)()
            deadline = time.monotonic() + grace
            while any(r.alive for r in remaining) and time.monotonic() < deadline:
                self.poll(0.05)
        for region in self.regions.values():
            if region.alive:  # the sentinel must have fired by now; make sure
                region.process.join(timeout=1.0)
                self.on_exit(region, detected_by="join")
        self.close()
        return stages

    def close(self) -> None:
        if self.control is not None:
            # drain what arrived during shutdown (final metrics), without blocking
            while self.control.sock.poll(0, zmq.POLLIN):
                received = self.control.receive_ready()
                if received is not None:
                    self.handle(*received)
            self.control.sock.close(linger=0)
            self.control = None
        self.context.term()
        if self.sock_dir is not None and self.sock_dir.exists():
            shutil.rmtree(self.sock_dir, ignore_errors=True)
        self.write_regions()

    # -- the whole run ---------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        """Launch, supervise and stop; returns the outcome (status, reason, stages)."""
        status, reason = "completed", None
        try:
            self.launch()
            self.wait_ready()
            self.supervise()
        except KeyboardInterrupt:
            status, reason = "interrupted", "interrupted by the user"
        except RunFailed as exc:
            status, reason = "failed", str(exc)
            self.log.error("run_failed", reason=reason)
        finally:
            stages = self.shutdown()
        self.run.append_event("run_end", status=status, reason=reason, stages=stages)
        return {"status": status, "reason": reason, "shutdown_stages": stages}
