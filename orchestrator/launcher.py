"""The orchestrator proper: launch the regions, supervise them, lesion, revive, shut down.

Children are forked from a region template — a ``forkserver`` that has imported torch and every
region's modules once (:mod:`ccdni.base.template`) — instead of each importing them anew; set
``CCDNI_START_METHOD=spawn`` to start every region from a fresh interpreter instead. Each is its
own process with its own pid either way. How a death or a silence is noticed (each is
recorded in ``events.jsonl`` with its ``detected_by``):

- ``sentinel``: the process ended. Its sentinel is polled together with the control socket,
  so the death is seen within one loop of the supervisor (≤ 0.1 s plus that loop's work).
- ``heartbeat``: a ready region silent for ``heartbeat_timeout`` (stopped with SIGSTOP, hung).
- ``process_state``: a region still starting — importing, building its core, sending nothing
  yet — whose process the kernel reports stopped for ``heartbeat_timeout``.
- ``startup_timeout``: a region running but not ready within ``startup_timeout``.
- ``join``: an exit found while shutting down without a control socket.

What follows:

- A dead or silent cerebellum or olive is a lesion, never a failure: every region gets a
  ``lesion`` notice and carries on. Before the run starts that is a lesion at epoch 0 and the
  run says so (a ``lesion`` event with ``phase: "start-up"``, the summary's ``lesions``) —
  except where the spec needs the region from the first batch (:func:`essential_regions`):
  then the run fails at once, naming the region and the cause.
- A dead area stops the run, keeping every metric; so does an area whose process is stopped
  for ``heartbeat_timeout``, or silent for ``HUNG_AFTER`` heartbeat timeouts (an area merely
  busy, e.g. validating, is recorded ``unresponsive`` and waited for).
- A region that speaks again (SIGCONT) is recorded ``responsive`` but stays lesioned until
  ``revive``, which reinstates that same process.

Latency: every ``exit`` event has ``detection_latency_s`` and ``latency_from``: ``kill`` (a
kill by the orchestrator: from its kill to the detection) or ``sentinel_check`` (any other
death, whose moment this process cannot know: an upper bound, from the last poll that saw the
sentinel clear to the detection); ``silent_s`` is the time since the region's last message.

A ROUTER cannot reach a peer that has not connected yet, so a region learns of lesions when it
first speaks: its first message is answered with every notice it missed.

Live operations arrive on the same control socket from ``launch.py ablate|revive|status|stop``
(DEALER identities ``client-*``) and are always answered. Shutdown is staged — ``stop``
message → ``stop_deadline`` (cut short once every region left is stopped or silent) → SIGTERM
(with SIGCONT, so that a stopped process acts on it) → 2 s → SIGKILL — and every stage is
written to ``events.jsonl``. No process and no socket file outlives the run. A run directory
that cannot be written (a full disk) fails the run with that reason; it never stops the
shutdown.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from ccdni.base.region import region_main
from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import FORWARD_UNLOCKED_MODES, LESIONABLE, RunSpec
from ccdni.base.template import child_options, start_template, template_context
from orchestrator.client import process_start_ticks, process_state
from orchestrator.early import TEMPLATE_EXTRA
from orchestrator.placement import PlacementPlan, plan_placement
from orchestrator.progress import AREA_ROLES, Progress
from orchestrator.ray_backend import RayBackendError
from wire.channel import Counters, Endpoint, make_socket
from wire.protocol import Command, Kind, RegionState, control
from wire.transport import CLIENT_KEY, Security, TransportError, free_port, make_keys

IPC_PATH_LIMIT = 100  # sockaddr_un holds ~107 bytes
TERMINATE_GRACE = 2.0
HUNG_AFTER = 12  # heartbeat timeouts of silence after which a running area counts as hung
STOPPED_STATES = ("T", "t")  # /proc states of a stopped (SIGSTOP) or traced process


def region_context() -> Any:
    """The multiprocessing context regions start from: the region template (a
    ``forkserver``, :mod:`ccdni.base.template`), started once per orchestrator process with
    the first region, or ``spawn`` (``CCDNI_START_METHOD=spawn``, or no forkserver here)."""
    return template_context(TEMPLATE_EXTRA)


def start_region_template() -> bool:
    """Start the region template now (see :func:`ccdni.base.template.start_template`); a
    command calls it first thing so that the template's imports overlap its own."""
    return start_template(TEMPLATE_EXTRA)


class ShutdownStage(str, enum.Enum):
    """The stages of a staged shutdown, in order, as recorded in ``events.jsonl``."""

    STOP = "stop"  # a ``stop`` CONTROL message, then up to ``stop_deadline`` to exit
    TERMINATE = "terminate"  # SIGTERM (and SIGCONT), then TERMINATE_GRACE
    KILL = "kill"  # SIGKILL, then TERMINATE_GRACE


class RunFailed(RuntimeError):
    """The run cannot go on; the message names the region and the cause."""


def essential_regions(spec: RunSpec) -> tuple[str, ...]:
    """The regions a run cannot start without. In the forward-unlocked chain modes area k+1
    trains on the cerebellum's ĥ_k alone, which only the olive teaches, so losing either before
    the first batch fails the run; everywhere else none (such a loss is a lesion at epoch 0)."""
    if spec.topology == "chain" and spec.chain_mode in FORWARD_UNLOCKED_MODES:
        return LESIONABLE
    return ()


def describe_exit(exitcode: int | None) -> str:
    """``exit code 1``, ``exit code -9 (killed by SIGKILL)``, ..."""
    if exitcode is None:
        return "exit code unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"exit code {exitcode} (killed by {name})"
    return f"exit code {exitcode}"


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
    batch: int = 0  # an area's training batches done in its epoch (heartbeat)
    batches: int = 0  # …of this many per epoch
    last_metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    lesioned: bool = False  # not to be used: killed, dead or silent, and not revived
    announced: bool = False  # its lesion notice went out to the other regions
    lesion_cause: str | None = None
    kill_time: float | None = None  # wall-clock time of a deliberate kill
    generation: int = 0  # how many times the region was restarted
    sentinel_clear: float = field(default_factory=time.monotonic)  # last poll: still alive
    stopped_since: float | None = None  # first seen stopped while starting
    greeted: bool = False  # it spoke: the control ROUTER can reach it
    told_lesioned: frozenset[str] = frozenset()  # the lesions it was started knowing of


def socket_location(run: RunDirectory) -> tuple[str, Path | None]:
    """Where the ipc:// endpoints live, and the folder to remove afterwards: an owner-only
    ``RUN/sock`` when its paths fit in a socket address; else (Linux) the abstract socket
    namespace, which has no files at all; elsewhere a private temporary folder."""
    candidate = (run.path / "sock").resolve()
    if len(str(candidate)) + len("/orchestrator.sock") + 6 <= IPC_PATH_LIMIT:
        candidate.mkdir(mode=0o700, exist_ok=True)
        os.chmod(candidate, 0o700)  # whatever the umask
        return str(candidate), candidate
    # never Linux abstract names (no permission check): a private (0700) temporary folder
    folder = Path(tempfile.mkdtemp(prefix="ccdni-"))
    return str(folder), folder


class Supervisor:
    """Runs one multi-process run from launch to staged shutdown.

    ``resume_epoch``: continue from checkpoints (see :func:`orchestrator.runner.resume_run`);
    ``resume_lesioned``: regions that stay lesioned (they were at the end of the recorded run);
    ``resume_checkpoints``: regions whose checkpoint was verified and must be restored."""

    def __init__(
        self,
        spec: RunSpec,
        run: RunDirectory,
        log: Any,
        progress: Progress,
        resume_epoch: int | None = None,
        resume_lesioned: Sequence[str] = (),
        resume_checkpoints: Sequence[str] = (),
    ):
        self.spec = spec
        self.run = run
        self.log = log
        self.progress = progress
        self.resume_epoch = resume_epoch  # set when continuing from checkpoints
        self.resume_lesioned = tuple(resume_lesioned)
        self.resume_checkpoints = frozenset(resume_checkpoints)
        self.regions: dict[str, Region] = {}
        self.placement = PlacementPlan({})
        self.context = zmq.Context()
        self.ipc_prefix: str | None = None
        self.sock_dir: Path | None = None
        self._endpoints: dict[str, str] | None = None
        self.security = Security()  # CURVE on tcp (set at launch)
        self.backend: Any = None  # a RayBackend with backend = "ray"
        self.control: Endpoint | None = None
        self.counters = Counters()
        self.spawn_context = region_context()
        self.started = False  # ``start`` went out: lesions from now on are mid-run
        self.stopping = False
        self.stop_requested = False
        self.io_error: str | None = None  # the first failure to write the run directory
        self.lesions: list[dict[str, Any]] = []
        self.essential = essential_regions(spec)
        # a pipe only this process can write to: its read end in every region the template
        # forks closes (EOF) the moment this process dies, however it dies
        self.lifeline: tuple[int, int] | None = None

    # -- recording ------------------------------------------------------------------------------
    def event(self, name: str, **fields: Any) -> None:
        """Append to events.jsonl; a failure to write is remembered, never raised."""
        try:
            self.run.append_event(name, **fields)
        except OSError as exc:
            self.io_failure(exc)

    def io_failure(self, exc: OSError) -> None:
        if self.io_error is None:
            self.io_error = str(exc)
            self.log.error("run_directory_unwritable", error=self.io_error)

    def check_io(self) -> None:
        if self.io_error is not None:
            raise RunFailed(self.io_error)

    # -- launch ---------------------------------------------------------------------------------
    def endpoints(self) -> dict[str, str]:
        assert self._endpoints is not None, "endpoints are chosen at launch"
        return self._endpoints

    def choose_endpoints(self, devices: dict[str, str]) -> dict[str, str]:
        """Every party's endpoint: ipc files in the run's owner-only socket folder, or tcp
        ports (on ``tcp_host``, or with Ray on each region's node) behind the run's CURVE keys.
        A chain area binds its input side (a single area binds nothing: its name is unused)."""
        names = ["orchestrator", "cerebellum", "olive", *self.spec.area_names]
        if self.spec.transport == "ipc":
            self.ipc_prefix, self.sock_dir = socket_location(self.run)
            return {name: f"ipc://{self.ipc_prefix}/{name}.sock" for name in names}
        if self.spec.insecure_tcp:
            self.log.warning(
                "insecure_tcp",
                warning="tcp WITHOUT authentication or encryption: anyone who can reach these "
                "ports can read and inject messages; use only on a trusted closed network",
            )
            self.event("insecure_tcp")
        else:
            make_keys(self.run.keys_path, [*names, CLIENT_KEY])
            self.security = Security.for_process(
                self.context, str(self.run.keys_path), "orchestrator"
            )
        hosts = {name: self.spec.tcp_host for name in names}
        if self.spec.backend == "ray":
            from orchestrator.ray_backend import RayBackend

            self.backend = RayBackend(self.spec.ray_address, regions=len(devices))
            hosts.update(self.backend.place(devices))
            hosts["orchestrator"] = self.backend.driver_address()
            ports = {n: self.backend.free_port(n, hosts[n]) for n in devices}
        else:
            ports = {}
        return {
            name: f"tcp://{hosts[name]}:{ports.get(name) or free_port(hosts[name])}"
            for name in names
        }

    def launch(self) -> None:
        roles = [(name, self.spec.area_role) for name in self.spec.area_names]
        if self.spec.uses_cerebellum:
            roles += [("cerebellum", "cerebellum"), ("olive", "olive")]
        self.placement = plan_placement(self.spec, [name for name, _ in roles])
        devices = {name: self.placement.regions[name].device for name, _ in roles}
        self.await_template()
        self._endpoints = self.choose_endpoints(devices)
        sock = make_socket(self.context, zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a region that reconnects (SIGCONT) is heard
        self.security.server(self.context, sock)
        sock.bind(self.endpoints()["orchestrator"])
        self.control = Endpoint(sock, self.log, self.counters, routed=True)
        self.write_regions()  # at once: a client can tell this run is alive (or, later, dead)
        lesioned: list[str] = list(self.resume_lesioned)
        if self.resume_epoch is not None:  # lesions scheduled before the resume point stay
            lesioned += [r for r, e in self.spec.ablation_schedule if e < self.resume_epoch]
        lesioned = list(dict.fromkeys(lesioned))
        options: dict[str, Any] = {"resume": self.resume_epoch is not None, "lesioned": lesioned}
        if self.resume_epoch is not None:
            options["resume_epoch"] = self.resume_epoch
        self.event("placement", **self.placement.to_dict())
        self.log.info("placement", **self.placement.to_dict())
        self.check_io()  # a run directory that cannot record the spawns spawns nothing
        for name, role in roles:
            if name in lesioned:
                self.regions[name] = Region(
                    name,
                    role,
                    None,
                    alive=False,
                    ready=True,
                    lesioned=True,
                    announced=True,
                    lesion_cause="lesioned when the run was resumed",
                    state=RegionState.LESIONED,
                )
                self.event("lesioned_on_resume", region=name)
            else:
                expect = name in self.resume_checkpoints
                self.spawn(name, role, {**options, "expect_checkpoint": expect})
        self.write_regions()

    def await_template(self) -> None:
        """Wait until the region template can fork (its imports take seconds; a trivial
        child is forked and joined): the socket folder and the control socket are made only
        then, so an orchestrator killed meanwhile leaves no socket file (the regions, which
        clean up after a dead orchestrator, do not exist yet)."""
        if self.backend is not None or self.spawn_context.get_start_method() != "forkserver":
            return
        probe = self.spawn_context.Process(target=os.getpid, name="ccdni-template-probe")
        probe.start()  # returns once the template has forked it
        probe.join(self.spec.startup_timeout)
        if probe.is_alive():
            probe.kill()
            probe.join(1.0)

    def shell_for(self, name: str, role: str) -> str:
        """The shell the region's process runs: a key of ``ccdni.base.region.SHELLS`` or a
        ``"module:Class"`` (the hook tests use to run a deliberately broken region)."""
        return role

    def spawn(self, name: str, role: str, options: dict[str, Any]) -> Region:
        """Start (or restart) one region process: forked from the region template (it takes
        this process's environment and stdio as they are now), or spawned."""
        threads = str(self.spec.threads)
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        if self.backend is None and self.spawn_context.get_start_method() == "forkserver":
            if self.lifeline is None:
                self.lifeline = os.pipe()  # not inheritable: no exec'd process gets it
            options = {**options, **child_options(self.lifeline[0])}
        args = (
            self.shell_for(name, role),
            name,
            self.spec.to_dict(),
            str(self.run.path.resolve()),
            self.endpoints(),
            os.getpid(),
            {**options, "placement": self.placement.regions[name].to_dict()},
        )
        try:
            if self.backend is not None:  # a Ray actor in the region's bundle
                process = self.backend.process(name, self.placement.regions[name].device, args)
            else:
                process = self.spawn_context.Process(
                    target=region_main, args=args, name=f"ccdni-{name}"
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
            told_lesioned=frozenset(options.get("lesioned", ())),
        )
        self.regions[name] = region
        self.event("spawn", region=name, role=role, pid=process.pid, generation=region.generation)
        return region

    def region_table(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        return {
            r.name: {
                "role": r.role,
                "pid": r.pid,
                "alive": r.alive,
                "lesioned": r.lesioned,
                "lesion_cause": r.lesion_cause,
                "unresponsive": r.unresponsive,
                "state": str(getattr(r.state, "value", r.state)),
                "epoch": r.epoch,
                "last_heartbeat_s": round(now - r.last_heartbeat, 3) if r.alive else None,
                "generation": r.generation,
            }
            for r in self.regions.values()
        }

    def write_regions(self) -> None:
        try:
            self.run.write_json(
                self.run.regions_path,
                {
                    "orchestrator": {
                        "pid": os.getpid(),
                        "started": process_start_ticks(os.getpid()),
                        "alive": self.control is not None,
                        "state": "running" if self.control is not None else "ended",
                        "control": (self._endpoints or {}).get("orchestrator"),
                        "transport": self.spec.transport,
                        "backend": self.spec.backend,
                        "authenticated": self.security.keys is not None,
                        "endpoints": self._endpoints,
                    },
                    "regions": self.region_table(),
                },
            )
        except OSError as exc:
            self.io_failure(exc)

    def areas(self) -> list[Region]:
        return [r for r in self.regions.values() if r.role in AREA_ROLES]

    def area_epoch(self) -> int:
        """The epoch the areas are at (the slowest one); 0 before the run starts."""
        if not self.started:
            return 0
        return min((r.epoch for r in self.areas()), default=0)

    # -- the supervision loop ---------------------------------------------------------------------
    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a control message or a process exit; handle them all,
        then look for silent regions."""
        assert self.control is not None
        poller = zmq.Poller()
        poller.register(self.control.sock, zmq.POLLIN)
        sentinels = {r.process.sentinel: r for r in self.regions.values() if r.alive and r.process}
        for fd in sentinels:
            poller.register(fd, zmq.POLLIN)
        events = dict(poller.poll(int(timeout * 1000)))
        returned = time.monotonic()
        for fd, region in sentinels.items():
            if fd not in events:
                region.sentinel_clear = returned  # alive when this poll returned
        if self.control.sock in events:
            for _ in range(1000):
                received = self.control.receive_ready()
                if received is not None:
                    self.handle(*received)
                if not self.control.sock.poll(0, zmq.POLLIN):
                    break
        for fd, region in sentinels.items():
            if fd in events and region.alive:
                self.on_exit(region, detected_by="sentinel")
        self.check_silence()
        self.progress.update(self.regions)

    def check_silence(self) -> None:
        """Regions that stopped talking: by heartbeat once ready, by process state before."""
        now = time.monotonic()
        timeout = self.spec.heartbeat_timeout
        for region in list(self.regions.values()):
            if not region.alive or region.process is None:
                continue
            phase = "running" if self.started else "start-up"
            if not region.ready:  # still starting: silent by design; only a stopped one counts
                state = process_state(region.pid)
                if state not in STOPPED_STATES:
                    region.stopped_since = None
                    continue
                region.stopped_since = region.stopped_since or now
                stopped = now - region.stopped_since
                if stopped <= timeout or region.unresponsive:
                    continue
                region.unresponsive = True
                self.event(
                    "unresponsive",
                    region=region.name,
                    detected_by="process_state",
                    stopped_s=round(stopped, 3),
                    process_state=state,
                    phase=phase,
                    action="fail" if region.role in AREA_ROLES else "lesion",
                )
                self.on_silent(
                    region, f"stopped for {stopped:.1f} s before it was ready", "process_state"
                )
                continue
            silent = now - region.last_heartbeat
            if silent <= timeout:
                continue
            state = process_state(region.pid)
            stopped = state in STOPPED_STATES
            fatal = stopped or silent > HUNG_AFTER * timeout
            if region.role in AREA_ROLES and (region.done or not fatal):
                if not region.unresponsive:  # busy (or done): recorded, and waited for
                    region.unresponsive = True
                    self.event(
                        "unresponsive",
                        region=region.name,
                        detected_by="heartbeat",
                        silent_s=round(silent, 3),
                        process_state=state,
                        phase=phase,
                        action="waiting",
                    )
                    self.log.warning("region_unresponsive", region=region.name, silent=silent)
                continue
            if region.unresponsive and region.role not in AREA_ROLES:
                continue  # already lesioned for it
            region.unresponsive = True
            self.event(
                "unresponsive",
                region=region.name,
                detected_by="heartbeat",
                silent_s=round(silent, 3),
                process_state=state,
                phase=phase,
                action="fail" if region.role in AREA_ROLES else "lesion",
            )
            self.log.warning("region_unresponsive", region=region.name, silent=silent)
            reason = f"no heartbeat for {silent:.1f} s" + (" (process stopped)" if stopped else "")
            self.on_silent(region, reason, "heartbeat")

    def on_silent(self, region: Region, reason: str, detected_by: str) -> None:
        """A region that cannot answer: an area fails the run, a cerebellum or olive is
        lesioned (its process is left alone: ``revive`` reinstates it once it answers)."""
        if self.stopping:
            return
        if region.role in AREA_ROLES:
            raise RunFailed(f"area {region.name} is unresponsive: {reason}")
        if not self.started and region.name in self.essential:
            raise RunFailed(
                f"{region.name} is unresponsive before the run started ({reason}); chain_mode "
                f"{self.spec.chain_mode} needs it from the first batch"
            )
        region.lesioned = True
        self.announce_lesion(region, f"unresponsive: {reason}", detected_by)
        self.write_regions()

    def announce_lesion(self, region: Region, cause: str, detected_by: str) -> None:
        """Record a lesion once and tell every region that can be reached."""
        if region.announced:
            return
        region.announced = True
        region.lesion_cause = cause
        if not region.alive:
            region.state = RegionState.LESIONED
        record = {
            "region": region.name,
            "epoch": self.area_epoch(),
            "phase": "running" if self.started else "start-up",
            "cause": cause,
            "detected_by": detected_by,
            "process_alive": region.alive,
        }
        self.lesions.append(record)
        self.event("lesion", **record)
        self.log.warning("lesion", **record)
        self.notify_all(Command.LESION, region.name)

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
        if not region.greeted:
            self.greet(region)
        region.last_heartbeat = time.monotonic()
        region.stopped_since = None
        if region.unresponsive:
            region.unresponsive = False
            self.event("responsive", region=region.name, lesioned=region.lesioned)
            self.log.info("region_responsive", region=region.name, lesioned=region.lesioned)
        if message.kind == Kind.HEARTBEAT:
            region.state, region.epoch = header.state, header.epoch
            region.sent, region.received = header.sent, header.received
            region.rejected = header.rejected
            region.batch, region.batches = header.batch, header.batches
        elif message.kind == Kind.METRIC:
            try:
                self.run.append_metric({"region": region.name, **header.values})
            except OSError as exc:  # stop now: an area must not checkpoint epochs unrecorded
                self.io_failure(exc)
                if not self.stopping:
                    raise RunFailed(self.io_error) from None
            region.last_metrics.update(header.values)
            if "epoch" in header.values and region.role in AREA_ROLES:
                region.epoch = int(header.values["epoch"]) + 1
                region.batch = 0  # the next epoch: its heartbeats bring its batches
        elif message.kind == Kind.CONTROL:
            self.on_report(region, header.command, header.args)
        else:
            self.control.reject(f"unexpected {message.kind.name}", sender)

    def greet(self, region: Region) -> None:
        """A region's first message: it can be reached now, so tell it of every lesion (and
        revival) it was not started knowing of."""
        region.greeted = True
        for other in self.regions.values():
            if other is region:
                continue
            lesioned = other.lesioned and other.announced
            if lesioned and other.name not in region.told_lesioned:
                self.send(region, Command.LESION, target=other.name)
            elif not lesioned and other.name in region.told_lesioned:
                self.send(region, Command.REVIVED, target=other.name)

    def on_report(self, region: Region, command: Command, args: Any) -> None:
        """A region's CONTROL report; ``args`` is the command's typed argument struct."""
        if command == Command.READY:
            region.ready = True
            self.event("ready", region=region.name, generation=region.generation)
            if region.generation > 0 and not region.lesioned:
                self.notify_all(Command.REVIVED, region.name)
        elif command == Command.DONE:
            region.done = True
            self.event("done", region=region.name, epochs=args.epochs)
        elif command == Command.FAILED:
            region.error = args.error
            self.event("region_failed", region=region.name, error=region.error)
        elif command == Command.EXITING:
            region.state = RegionState.EXITING
        elif command == Command.REQUEST_ABLATION:
            target = args.target
            self.event("ablation_requested", region=target, by=region.name, epoch=args.epoch)
            if self.ablate(target, cause="scheduled") is not None:
                known = self.regions.get(target)
                if known is not None and known.lesioned and not known.alive:
                    self.send(region, Command.LESION, target=target)  # already gone: again
        else:
            assert self.control is not None
            self.control.reject(f"{command.value} is not a region's report", region.name)

    def on_exit(self, region: Region, detected_by: str) -> None:
        if region.process is not None:
            region.process.join(timeout=1.0)
        detected_wall, detected = time.time(), time.monotonic()
        region.alive = False
        region.exitcode = region.process.exitcode if region.process is not None else None
        region.state = RegionState.EXITED
        cause = getattr(region.process, "death_cause", None) or describe_exit(region.exitcode)
        record: dict[str, Any] = {
            "region": region.name,
            "pid": region.pid,
            "exitcode": region.exitcode,
            "cause": cause,
            "detected_by": detected_by,
            "expected": region.done or self.stopping,
            "phase": "stopping" if self.stopping else "running" if self.started else "start-up",
        }
        if region.kill_time is not None:
            record["detection_latency_s"] = round(detected_wall - region.kill_time, 4)
            record["latency_from"] = "kill"
        else:  # the moment of an external death is unknowable: bounded by the last clear poll
            record["detection_latency_s"] = round(detected - region.sentinel_clear, 4)
            record["latency_from"] = "sentinel_check"
        record["silent_s"] = round(detected - region.last_heartbeat, 3)
        if region.error:
            record["error"] = region.error
        self.event("exit", **record)
        if self.stopping:
            self.write_regions()
            return
        if region.role in AREA_ROLES and not region.done:
            self.write_regions()
            when = "before finishing" if self.started else "during start-up"
            raise RunFailed(f"area {region.name} died {when}: {region.error or cause}")
        if region.role not in AREA_ROLES:
            why = region.error or region.lesion_cause or cause
            if not self.started and region.name in self.essential:
                self.write_regions()
                raise RunFailed(
                    f"{region.name} died during start-up ({why}); chain_mode "
                    f"{self.spec.chain_mode} needs it from the first batch"
                )
            if not region.lesioned:  # killed by hand or crashed: a lesion all the same
                self.log.warning("region_lost", region=region.name, exitcode=region.exitcode)
            region.lesioned = True
            region.state = RegionState.LESIONED
            self.announce_lesion(region, why, detected_by)
        self.write_regions()

    def send(self, region: Region, command: Command, **args: Any) -> None:
        assert self.control is not None
        self.control.send(control(command, "orchestrator", **args), to=region.name)

    def notify_all(self, command: Command, target: str) -> None:
        """Tell every live region that has spoken (the others learn it when they do)."""
        for other in self.regions.values():
            if other.alive and other.greeted and other.name != target:
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
            self.event("stop_requested", by="command")
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
        region.lesion_cause = region.lesion_cause or f"ablated ({cause})"
        region.kill_time = time.time()
        self.event("ablate", region=name, pid=region.pid, cause=cause, epoch=self.area_epoch())
        if self.backend is not None:
            region.process.kill()  # ray.kill: the actor dies, Ray does not restart it
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(region.pid, signal.SIGKILL)
        return None

    def revive(self, name: str, from_checkpoint: bool) -> str | None:
        """Start a lesioned region again (fresh, or from its last checkpoint); a lesioned
        process that is alive and answering again (after SIGCONT) is reinstated as it is."""
        from ccdni.base.checkpoint import CheckpointError, load_checkpoint

        region = self.regions.get(name)
        if region is None or region.role in AREA_ROLES:
            return f"no revivable region {name!r} (choose cerebellum or olive)"
        if region.alive:
            if not region.lesioned:
                return f"{name} is running"
            if region.unresponsive or not region.announced:
                return f"{name} is lesioned but still silent (stopped?); revive it once it answers"
            region.lesioned, region.announced, region.lesion_cause = False, False, None
            self.event(
                "revive",
                region=name,
                from_checkpoint=from_checkpoint,
                reinstated=True,
                pid=region.pid,
                epoch=self.area_epoch(),
            )
            self.notify_all(Command.REVIVED, name)
            self.write_regions()
            return None
        if from_checkpoint:
            try:
                load_checkpoint(self.run.checkpoint_path(name), name, self.spec)
            except CheckpointError as exc:
                return f"cannot revive {name} from its checkpoint: {exc}"
        lesioned = [r.name for r in self.regions.values() if r.lesioned and r.name != name]
        options = {
            "from_checkpoint": from_checkpoint,
            "expect_checkpoint": from_checkpoint,
            "lesioned": lesioned,
        }
        self.spawn(name, region.role, options)
        self.event("revive", region=name, from_checkpoint=from_checkpoint, epoch=self.area_epoch())
        self.write_regions()
        return None

    def wait_ready(self) -> None:
        """Until every region is ready or lesioned. A cerebellum or olive that dies, stops or
        is not ready in ``startup_timeout`` is a lesion at epoch 0 (unless essential); an area
        fails the run."""
        deadline = time.monotonic() + self.spec.startup_timeout
        while True:
            self.check_io()
            pending = [r for r in self.regions.values() if r.alive and not r.ready]
            pending = [r for r in pending if not r.lesioned]
            if not pending:
                break
            if time.monotonic() > deadline:
                fatal = [
                    r.name for r in pending if r.role in AREA_ROLES or r.name in self.essential
                ]
                if fatal:
                    raise RunFailed(
                        f"regions not ready after {self.spec.startup_timeout:g} s: {fatal}"
                    )
                for region in pending:
                    self.event(
                        "startup_timeout", region=region.name, seconds=self.spec.startup_timeout
                    )
                    region.lesion_cause = f"not ready after {self.spec.startup_timeout:g} s"
                    self.ablate(region.name, cause="startup_timeout")
                continue
            self.poll(0.1)
        self.event("all_ready", lesioned=[r.name for r in self.regions.values() if r.lesioned])

    def supervise(self) -> None:
        areas = self.areas()
        self.started = True
        for region in areas:
            self.send(region, Command.START)
        self.event("start", epoch=self.resume_epoch or 0)
        last_written = time.monotonic()
        while not all(r.done for r in areas) and not self.stop_requested:
            self.poll(0.1)
            for region in areas:
                if region.error:
                    raise RunFailed(f"area {region.name} failed: {region.error}")
            self.check_io()
            if time.monotonic() - last_written > 1.0:
                self.write_regions()
                last_written = time.monotonic()

    # -- shutdown -------------------------------------------------------------------------------
    def cannot_hear(self, region: Region) -> bool:
        """Whether a live region cannot act on ``stop``: it never spoke (the ROUTER dropped the
        message: it is still starting), its process is stopped, or it has been silent for
        ``heartbeat_timeout``."""
        if not region.greeted or process_state(region.pid) in STOPPED_STATES:
            return True
        return time.monotonic() - region.last_heartbeat > self.spec.heartbeat_timeout

    def shutdown_poll(self, timeout: float, regions: list[Region]) -> None:
        """One wait of the shutdown; nothing it meets may end the shutdown itself."""
        try:
            if self.control is not None:
                self.poll(timeout)
                return
        except Exception as exc:  # a stage must run to its end whatever happens
            self.log.error("shutdown_poll_failed", error=repr(exc))
        time.sleep(timeout)
        for region in regions:
            if region.alive and region.process is not None and not region.process.is_alive():
                self.on_exit(region, detected_by="join")

    def shutdown(self) -> list[str]:
        """Stop every live child in stages; returns the stages that were needed."""
        self.stopping = True
        stages = []
        live = [r for r in self.regions.values() if r.alive]
        if live and self.control is not None:
            stages.append(ShutdownStage.STOP)
            for region in live:
                self.send(region, Command.STOP)
            self.event("shutdown", stage=ShutdownStage.STOP, regions=[r.name for r in live])
            deadline = time.monotonic() + self.spec.stop_deadline
            while any(r.alive for r in live) and time.monotonic() < deadline:
                self.shutdown_poll(0.05, live)
                waiting = [r for r in live if r.alive]
                if waiting and all(self.cannot_hear(r) for r in waiting):
                    self.event(
                        "shutdown_escalated",
                        regions=[r.name for r in waiting],
                        reason="not started yet, stopped or silent: cannot act on stop",
                    )
                    break
        for stage in (ShutdownStage.TERMINATE, ShutdownStage.KILL):
            remaining = [r for r in self.regions.values() if r.alive]
            if not remaining:
                break
            stages.append(stage)
            self.event("shutdown", stage=stage, regions=[r.name for r in remaining])
            for region in remaining:
                if stage == ShutdownStage.TERMINATE:
                    region.process.terminate()
                    with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
                        os.kill(region.pid, signal.SIGCONT)  # a stopped process acts on it
                else:
                    region.process.kill()
            deadline = time.monotonic() + TERMINATE_GRACE
            while any(r.alive for r in remaining) and time.monotonic() < deadline:
                self.shutdown_poll(0.05, remaining)
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
        self.security.close()
        self.context.term()
        if self.backend is not None:  # no actor outlives the run
            self.backend.close()
            self.backend = None
        if self.lifeline is not None:  # every region is gone by now
            for fd in self.lifeline:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.lifeline = None
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
        """Launch, supervise and stop; returns the outcome (status, reason, stages, lesions,
        and ``io_error`` when the run directory could not be written)."""
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
        except (RayBackendError, TransportError) as exc:  # Ray or the keys refused
            status, reason = "failed", str(exc)
            self.log.error("run_failed", reason=reason)
        except OSError as exc:  # the socket folder, a spawn: the machine refused
            self.io_failure(exc)
            status, reason = "failed", str(exc)
            self.log.error("run_failed", reason=reason)
        finally:
            stages = self.shutdown()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.event("run_end", status=status, reason=reason, stages=stages, lesions=self.lesions)
        return {
            "status": status,
            "reason": reason,
            "shutdown_stages": stages,
            "lesions": self.lesions,
            "io_error": self.io_error,
        }
