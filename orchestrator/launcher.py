"""The orchestrator proper: launch the regions, supervise them, lesion, revive, shut down.

Children are started with the ``spawn`` method. Death is detected in layers: process
sentinels (immediate), application heartbeats (``heartbeat_timeout``), and ZMTP heartbeats on
every link. A dead cerebellum or olive is a lesion, never a failure: the other regions get a
``lesion`` notice and carry on (DESIGN §3). A dead area stops the run, keeping every metric.

Live operations arrive on the same control socket from ``launch.py ablate|revive|status|stop``
(DEALER identities ``client-*``) and are always answered. Shutdown is staged — ``stop``
message → ``stop_deadline`` → SIGTERM → 2 s → SIGKILL — and every stage is written to
``events.jsonl`` so tests can check it. No process and no socket file outlives the run.
"""

from __future__ import annotations

import contextlib
import enum
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from ccdni.base.region import region_main
from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import RunSpec
from orchestrator.placement import PlacementPlan, plan_placement
from orchestrator.progress import Progress
from wire.channel import Counters, Endpoint, make_socket
from wire.protocol import Command, Kind, RegionState, control

AREA_ROLES = ("area", "chain-area")  # roles whose processes are cortical areas
IPC_PATH_LIMIT = 100  # sockaddr_un holds ~107 bytes
TERMINATE_GRACE = 2.0


class ShutdownStage(str, enum.Enum):
    """The stages of a staged shutdown, in order, as recorded in ``events.jsonl``."""

    STOP = "stop"  # a ``stop`` CONTROL message, then up to ``stop_deadline`` to exit
    TERMINATE = "terminate"  # SIGTERM, then TERMINATE_GRACE
    KILL = "kill"  # SIGKILL, then TERMINATE_GRACE


class RunFailed(RuntimeError):
    """The run cannot go on; the message names the region and the cause."""


@dataclass
class Region:
    """What the orchestrator knows about one child process."""

    name: str
    role: str
    process: Any
    pid: int | None = None
    state: str = RegionState.SPAWNED
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
    lesioned: bool = False
    kill_time: float | None = None  # wall-clock time of a deliberate kill
    generation: int = 0  # how many times the region was restarted


def socket_directory(run: RunDirectory) -> Path:
    """Owner-only folder for the ipc:// endpoints (in the run directory if the path is short)."""
    candidate = (run.path / "sock").resolve()
    if len(str(candidate)) + len("/orchestrator.sock") + 6 <= IPC_PATH_LIMIT:
        candidate.mkdir(mode=0o700, exist_ok=True)
        return candidate
    return Path(tempfile.mkdtemp(prefix="ccdni-"))


class Supervisor:
    """Runs one multi-process run from launch to staged shutdown."""

    def __init__(
        self,
        spec: RunSpec,
        run: RunDirectory,
        log: Any,
        progress: Progress,
        resume_epoch: int | None = None,
    ):
        self.spec = spec
        self.run = run
        self.log = log
        self.progress = progress
        self.resume_epoch = resume_epoch  # set when continuing from checkpoints
        self.regions: dict[str, Region] = {}
        self.placement = PlacementPlan({})
        self.context = zmq.Context()
        self.sock_dir: Path | None = None
        self.control: Endpoint | None = None
        self.counters = Counters()
        self.spawn_context = multiprocessing.get_context("spawn")
        self.stopping = False
        self.stop_requested = False

    # -- launch ---------------------------------------------------------------------------------
    def endpoints(self) -> dict[str, str]:
        assert self.sock_dir is not None
        names = ["orchestrator", "cerebellum", "olive"]
        if self.spec.topology == "chain":  # each chain area binds its input side
            names += list(self.spec.area_names)
        return {name: f"ipc://{self.sock_dir / name}.sock" for name in names}

    def launch(self) -> None:
        self.sock_dir = socket_directory(self.run)
        sock = make_socket(self.context, zmq.ROUTER)
        sock.bind(self.endpoints()["orchestrator"])
        self.control = Endpoint(sock, self.log, self.counters, routed=True)
        area_role = "chain-area" if self.spec.topology == "chain" else "area"
        roles = [(name, area_role) for name in self.spec.area_names]
        if self.spec.uses_cerebellum:
            roles += [("cerebellum", "cerebellum"), ("olive", "olive")]
        lesioned: list[str] = []
        if self.resume_epoch is not None:  # lesions scheduled before the resume point stay
            lesioned = [r for r, e in self.spec.ablation_schedule if e < self.resume_epoch]
        options = {"resume": self.resume_epoch is not None, "lesioned": lesioned}
        self.placement = plan_placement(self.spec, [name for name, _ in roles])
        self.run.append_event("placement", **self.placement.to_dict())
        self.log.info("placement", **self.placement.to_dict())
        for name, role in roles:
            if name in lesioned:
                self.regions[name] = Region(
                    name,
                    role,
                    None,
                    alive=False,
                    ready=True,
                    lesioned=True,
                    state=RegionState.LESIONED,
                )
                self.run.append_event("lesioned_on_resume", region=name)
            else:
                self.spawn(name, role, options)
        self.write_regions()

    def spawn(self, name: str, role: str, options: dict[str, Any]) -> Region:
        """Start (or restart) one region process with the ``spawn`` method."""
        threads = str(self.spec.threads)
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        try:
            process = self.spawn_context.Process(
                target=region_main,
                args=(
                    role,
                    name,
                    self.spec.to_dict(),
                    str(self.run.path),
                    self.endpoints(),
                    os.getpid(),
                    {**options, "placement": self.placement.regions[name].to_dict()},
                ),
                name=f"ccdni-{name}",
            )
            process.start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        previous = self.regions.get(name)
        region = Region(
            name,
            role,
            process,
            pid=process.pid,
            generation=previous.generation + 1 if previous else 0,
        )
        self.regions[name] = region
        self.run.append_event(
            "spawn", region=name, role=role, pid=process.pid, generation=region.generation
        )
        return region

    def region_table(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        return {
            r.name: {
                "role": r.role,
                "pid": r.pid,
                "alive": r.alive,
                "lesioned": r.lesioned,
                "state": r.state,
                "epoch": r.epoch,
                "last_heartbeat_s": round(now - r.last_heartbeat, 3) if r.alive else None,
                "generation": r.generation,
            }
            for r in self.regions.values()
        }

    def write_regions(self) -> None:
        self.run.write_json(
            self.run.regions_path,
            {
                "orchestrator": {
                    "pid": os.getpid(),
                    "alive": self.control is not None,
                    "control": self.endpoints()["orchestrator"] if self.sock_dir else None,
                },
                "regions": self.region_table(),
            },
        )

    def areas(self) -> list[Region]:
        return [r for r in self.regions.values() if r.role in AREA_ROLES]

    # -- the supervision loop ---------------------------------------------------------------------
    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a control message or a process exit; handle them all."""
        assert self.control is not None
        poller = zmq.Poller()
        poller.register(self.control.sock, zmq.POLLIN)
        sentinels = {r.process.sentinel: r for r in self.regions.values() if r.alive and r.process}
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
            if (
                region.alive
                and region.ready  # before that, startup_timeout governs
                and not region.unresponsive
                and silent > self.spec.heartbeat_timeout
            ):
                region.unresponsive = True
                self.run.append_event(
                    "unresponsive", region=region.name, silent_seconds=round(silent, 3)
                )
                self.log.warning("region_unresponsive", region=region.name, silent=silent)
        self.progress.update(self.regions)

    def handle(self, sender: str | None, message: Any) -> None:
        assert self.control is not None
        if sender and sender.startswith("client-"):
            self.on_client(sender, message)
            return
        region = self.regions.get(sender or "")
        if region is None or not region.alive:
            self.control.reject(f"message from unknown region {sender!r}", sender)
            return
        header = message.header
        claimed = getattr(header, "region", region.name)
        if claimed != region.name or getattr(header, "pid", region.pid) not in (region.pid, 0):
            self.control.reject(f"{region.name} sent a message as {claimed!r}", sender)
            return
        region.last_heartbeat = time.monotonic()
        region.unresponsive = False
        if message.kind == Kind.HEARTBEAT:
            region.state, region.epoch = header.state, header.epoch
            region.sent, region.received = header.sent, header.received
            region.rejected = header.rejected
        elif message.kind == Kind.METRIC:
            self.run.append_metric({"region": region.name, **header.values})
            region.last_metrics.update(header.values)
            if "epoch" in header.values and region.role in AREA_ROLES:
                region.epoch = int(header.values["epoch"]) + 1
        elif message.kind == Kind.CONTROL:
            self.on_report(region, header.command, header.args)
        else:
            self.control.reject(f"unexpected {message.kind.name}", sender)

    def on_report(self, region: Region, command: Command, args: Any) -> None:
        """A region's CONTROL report; ``args`` is the command's typed argument struct."""
        if command == Command.READY:
            region.ready = True
            self.run.append_event("ready", region=region.name, generation=region.generation)
            if region.generation > 0:
                self.notify_all(Command.REVIVED, region.name)
        elif command == Command.DONE:
            region.done = True
            self.run.append_event("done", region=region.name, epochs=args.epochs)
        elif command == Command.FAILED:
            region.error = args.error
            self.run.append_event("region_failed", region=region.name, error=region.error)
        elif command == Command.EXITING:
            region.state = RegionState.EXITING
        elif command == Command.REQUEST_ABLATION:
            target = args.target
            self.run.append_event(
                "ablation_requested", region=target, by=region.name, epoch=args.epoch
            )
            if self.ablate(target, cause="scheduled") is not None:
                known = self.regions.get(target)
                if known is not None and known.lesioned and not known.alive:
                    self.send(region, Command.LESION, target=target)  # already gone: again
        else:
            self.control.reject(f"{command.value} is not a region's report", region.name)

    def on_exit(self, region: Region, detected_by: str) -> None:
        region.process.join(timeout=1.0)
        detected = time.time()
        region.alive = False
        region.exitcode = region.process.exitcode
        region.state = RegionState.EXITED
        record: dict[str, Any] = {
            "region": region.name,
            "pid": region.pid,
            "exitcode": region.exitcode,
            "detected_by": detected_by,
            "expected": region.done or self.stopping,
        }
        if region.kill_time is not None:
            record["detection_latency_s"] = round(detected - region.kill_time, 4)
        self.run.append_event("exit", **record)
        if self.stopping:
            self.write_regions()
            return
        if region.role in AREA_ROLES and not region.done:
            self.write_regions()
            cause = region.error or f"exit code {region.exitcode}"
            raise RunFailed(f"area {region.name} died before finishing: {cause}")
        if region.role not in AREA_ROLES:
            if not region.lesioned:  # killed by hand or crashed: a lesion all the same
                region.lesioned = True
                self.log.warning("region_lost", region=region.name, exitcode=region.exitcode)
            region.state = RegionState.LESIONED
            self.run.append_event("lesion", region=region.name, detected_by=detected_by)
            self.notify_all(Command.LESION, region.name)
        self.write_regions()

    def send(self, region: Region, command: Command, **args: Any) -> None:
        assert self.control is not None
        self.control.send(control(command, "orchestrator", **args), to=region.name)

    def notify_all(self, command: Command, target: str) -> None:
        for other in self.regions.values():
            if other.alive and other.name != target:
                self.send(other, command, target=target)

    # -- live operations: ablate, revive, status, stop --------------------------------------------
    def on_client(self, sender: str, message: Any) -> None:
        """A command from ``launch.py ablate|revive|status|stop``; always answered."""
        assert self.control is not None
        if message.kind != Kind.CONTROL:
            self.control.reject(f"client sent {message.kind.name}", sender)
            return
        header = message.header
        error: str | None = None
        if header.command == Command.ABLATE:
            error = self.ablate(header.args.region, cause="command")
        elif header.command == Command.REVIVE:
            error = self.revive(header.args.region, header.args.from_checkpoint)
        elif header.command == Command.STOP:
            self.stop_requested = True
            self.run.append_event("stop_requested", by="command")
        elif header.command != Command.STATUS:
            error = f"{header.command.value} is not a client command"
        reply = control(
            Command.REPLY,
            "orchestrator",
            ok=error is None,
            error=error or "",
            run=self.run.path.name,
            regions=self.region_table(),
        )
        self.control.send(reply, to=sender)

    def ablate(self, name: str, cause: str) -> str | None:
        """Kill a region's process (a live lesion); None on success, else the reason."""
        region = self.regions.get(name)
        if region is None or region.role in AREA_ROLES:
            return f"no lesionable region {name!r} (choose cerebellum or olive)"
        if not region.alive:
            return f"{name} is not running"
        region.lesioned = True
        region.kill_time = time.time()
        epoch = min((r.epoch for r in self.areas()), default=None)
        self.run.append_event("ablate", region=name, pid=region.pid, cause=cause, epoch=epoch)
        with contextlib.suppress(ProcessLookupError):
            os.kill(region.pid, signal.SIGKILL)
        return None

    def revive(self, name: str, from_checkpoint: bool) -> str | None:
        """Start a lesioned region again (fresh, or from its last checkpoint)."""
        region = self.regions.get(name)
        if region is None or region.role in AREA_ROLES:
            return f"no revivable region {name!r} (choose cerebellum or olive)"
        if region.alive:
            return f"{name} is running"
        lesioned = [r.name for r in self.regions.values() if r.lesioned and r.name != name]
        self.spawn(name, region.role, {"from_checkpoint": from_checkpoint, "lesioned": lesioned})
        self.run.append_event("revive", region=name, from_checkpoint=from_checkpoint)
        self.write_regions()
        return None

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.spec.startup_timeout
        while not all(r.ready for r in self.regions.values()):
            if time.monotonic() > deadline:
                late = [r.name for r in self.regions.values() if not r.ready]
                raise RunFailed(f"regions not ready after {self.spec.startup_timeout:g} s: {late}")
            self.poll(0.1)
        self.run.append_event("all_ready")

    def supervise(self) -> None:
        areas = self.areas()
        for region in areas:
            self.send(region, Command.START)
        self.run.append_event("start", epoch=self.resume_epoch or 0)
        last_written = time.monotonic()
        while not all(r.done for r in areas) and not self.stop_requested:
            self.poll(0.1)
            for region in areas:
                if region.error:
                    raise RunFailed(f"area {region.name} failed: {region.error}")
            if time.monotonic() - last_written > 1.0:
                self.write_regions()
                last_written = time.monotonic()

    # -- shutdown -------------------------------------------------------------------------------
    def shutdown(self) -> list[str]:
        """Stop every live child in stages; returns the stages that were needed."""
        self.stopping = True
        stages = []
        live = [r for r in self.regions.values() if r.alive]
        if live and self.control is not None:
            stages.append(ShutdownStage.STOP)
            for region in live:
                self.send(region, Command.STOP)
            self.run.append_event(
                "shutdown", stage=ShutdownStage.STOP, regions=[r.name for r in live]
            )
            deadline = time.monotonic() + self.spec.stop_deadline
            while any(r.alive for r in live) and time.monotonic() < deadline:
                self.poll(0.05)
        for stage in (ShutdownStage.TERMINATE, ShutdownStage.KILL):
            remaining = [r for r in self.regions.values() if r.alive]
            if not remaining:
                break
            stages.append(stage)
            self.run.append_event("shutdown", stage=stage, regions=[r.name for r in remaining])
            for region in remaining:
                getattr(region.process, stage.value)()  # Process.terminate / Process.kill
            deadline = time.monotonic() + TERMINATE_GRACE
            while any(r.alive for r in remaining) and time.monotonic() < deadline:
                if self.control is not None:
                    self.poll(0.05)
                else:
                    time.sleep(0.05)
                    for r in remaining:
                        if r.alive and not r.process.is_alive():
                            self.on_exit(r, detected_by="join")
        for region in self.regions.values():
            if region.alive and region.process:  # the sentinel must have fired by now
                region.process.join(timeout=1.0)
                self.on_exit(region, detected_by="join")
        self.close()
        return stages

    def close(self) -> None:
        if self.control is not None:
            # what arrived during shutdown (final metrics), without blocking
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
    @staticmethod
    def install_signal_handlers() -> dict[int, Any]:
        """SIGTERM and SIGHUP (a closed terminal) end the run like Ctrl-C: staged shutdown."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

        return {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}

    def execute(self) -> dict[str, Any]:
        """Launch, supervise and stop; returns the outcome (status, reason, stages)."""
        status, reason = "completed", None
        previous = self.install_signal_handlers()
        try:
            self.launch()
            self.wait_ready()
            self.supervise()
            if self.stop_requested:
                status, reason = "stopped", "stopped by command"
        except KeyboardInterrupt as exc:
            status, reason = "interrupted", str(exc) or "interrupted by the user"
        except RunFailed as exc:
            status, reason = "failed", str(exc)
            self.log.error("run_failed", reason=reason)
        finally:
            stages = self.shutdown()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.run.append_event("run_end", status=status, reason=reason, stages=stages)
        return {"status": status, "reason": reason, "shutdown_stages": stages}
