"""The thin process shell every region shares, and the entry point of spawned regions.

A region process: limits itself to ``spec.threads`` intra-op threads, configures structlog once
(JSON lines to ``RUN/logs/REGION.jsonl``), connects a DEALER to the orchestrator's control
ROUTER, reports ``ready``, sends heartbeats (also while it waits on a peer), obeys ``stop``,
and exits by itself if the orchestrator disappears. Its maths lives in a socket-free core.

Orphans: on Linux the kernel sends SIGUSR1 to a region the moment its orchestrator dies
(``PR_SET_PDEATHSIG``, set first thing in :func:`region_main`, before torch is imported; a
signal of its own, because the parent pid may not have changed yet when it arrives),
everywhere else the parent-pid check between units of work notices it within
``POLL_INTERVAL``. Either way the region saves what it saves on the way out, closes its
sockets without lingering, removes its socket files (the last one out also the orchestrator's
and the socket folder), marks the run's ``regions.json`` "orchestrator dead" and exits (code
3). SIGTERM from the orchestrator itself (the staged shutdown's ``terminate``) takes the
same way out, once: a second SIGTERM is ignored so that nothing cuts the cleanup short.

Regions are normally forked from the orchestrator's region template (:mod:`ccdni.base.template`:
a ``forkserver`` that imported torch and the shells once), not started from a fresh
interpreter: the template is then the parent a region watches (it exits after the
orchestrator), and the orchestrator's lifeline pipe, which reads EOF the moment the
orchestrator dies, raises the same ``ORPHAN_SIGNAL``, so the orphan rules above still hold.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import zmq

from ccdni.base import template
from ccdni.base.logs import configure_logging
from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import RunSpec
from wire.channel import Counters, Endpoint, make_socket
from wire.protocol import (
    Command,
    HeartbeatHeader,
    Kind,
    Message,
    MetricHeader,
    RegionState,
    control,
)
from wire.transport import Security

if TYPE_CHECKING:  # the checkpoint module imports torch: not before the parent watch is set
    from ccdni.base.checkpoint import Checkpoint

SHELLS = {
    "area": "areas.process:AreaShell",
    "chain-area": "areas.chain_process:ChainAreaShell",
    "cerebellum": "cerebellum.process:CerebellumShell",
    "olive": "olive.process:OliveShell",
}
POLL_INTERVAL = 0.1  # seconds: the longest any region sleeps between checks
FINAL_REPORT_LINGER_MS = 500  # at exit, how long queued reports to the orchestrator may take
ORPHANED_EXIT_CODE = 3
RECENT_METRICS = 64  # an area's last epoch records, kept in its checkpoint for resume
TERMINATED_EXIT_CODE = 128 + signal.SIGTERM  # left through the SIGTERM handler
ORCHESTRATOR_DEAD = "orchestrator dead"  # a region's state in regions.json once it is orphaned
PR_SET_PDEATHSIG = 1  # prctl option: a signal for this process when its parent dies
ORPHAN_SIGNAL = signal.SIGUSR1  # the one the kernel sends then (nothing else sends it here)
assert ORPHAN_SIGNAL == template.ORPHAN_SIGNAL  # the lifeline sends the same notice


class StopRequested(Exception):
    """The orchestrator asked this region to stop."""


class OrphanedError(RuntimeError):
    """The orchestrator is gone."""


class Terminated(BaseException):
    """SIGTERM arrived: the staged shutdown's ``terminate`` stage, or (``orphaned``) the
    kernel's notice that the orchestrator died. A BaseException, so that no region's
    ``except Exception`` swallows it."""

    def __init__(self, orphaned: bool):
        super().__init__("orchestrator died" if orphaned else "terminated")
        self.orphaned = orphaned


TERMINATION: list[Terminated] = []  # set by the handler: Python may wrap what it raised


def termination(exc: BaseException) -> Terminated | None:
    """The :class:`Terminated` behind ``exc`` — itself, or the one the SIGTERM handler raised
    inside code that wrapped it (an import, a class body's ``__set_name__``) — else None."""
    if isinstance(exc, Terminated):
        return exc
    return TERMINATION[0] if TERMINATION else None


def key_folder(spec: RunSpec, run: RunDirectory) -> str | None:
    """The run's CURVE key folder when its sockets are authenticated (tcp, not insecure)."""
    if spec.transport == "tcp" and not spec.insecure_tcp:
        return str(run.keys_path)
    return None


def skip_template_teardown() -> None:
    """In the region template (a ``multiprocessing`` forkserver that imports this module):
    once it is told to end (the orchestrator is gone), leave with ``os._exit(0)`` instead of
    the interpreter's teardown, whose final garbage collection of torch's objects takes
    seconds on a loaded machine (the template would outlive its orchestrator by that long).
    Elsewhere, and in the regions forked from the template, nothing changes."""
    frame: Any = sys._getframe()
    while frame is not None:
        if (
            frame.f_code.co_name == "main"
            and frame.f_globals.get("__name__") == "multiprocessing.forkserver"
        ):
            break
        frame = frame.f_back
    else:
        return
    template_pid = os.getpid()

    def leave() -> None:
        if os.getpid() == template_pid:  # not in a forked region, which has its own way out
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(0)

    atexit.register(leave)


skip_template_teardown()


def watch_parent(parent_pid: int) -> None:
    """Turn SIGTERM into :class:`Terminated` (once) and, on Linux, ask the kernel for
    ``ORPHAN_SIGNAL`` when the orchestrator dies (an orphaned Terminated); raise at once if it
    already has."""

    def on_signal(signum: int, frame: Any) -> None:
        for each in (signal.SIGTERM, ORPHAN_SIGNAL):  # once: the way out is not cut short
            signal.signal(each, signal.SIG_IGN)
        orphaned = signum == ORPHAN_SIGNAL or os.getppid() != parent_pid
        TERMINATION.append(Terminated(orphaned=orphaned))
        raise TERMINATION[-1]

    signal.signal(signal.SIGTERM, on_signal)
    if sys.platform.startswith("linux"):
        signal.signal(ORPHAN_SIGNAL, on_signal)
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(ORPHAN_SIGNAL))
    if os.getppid() != parent_pid:  # it died before the request was made
        raise Terminated(orphaned=True)


class RegionShell(ABC):
    """Control link, heartbeats, logging and lifecycle; subclasses implement :meth:`serve`."""

    role = "region"

    def __init__(
        self,
        name: str,
        spec: RunSpec,
        run_path: str,
        endpoints: dict[str, str],
        parent_pid: int,
        options: dict[str, Any] | None = None,
    ):
        import torch

        torch.set_num_threads(spec.threads)
        self.name = name
        self.spec = spec
        self.run = RunDirectory(run_path)
        self.endpoints = endpoints
        self.parent_pid = parent_pid  # the orchestrator's
        self.options = dict(options or {})  # resume, lesioned, from_checkpoint
        # the process whose death means the orchestrator's: the orchestrator, or the region
        # template it started this region from (which exits with the orchestrator)
        self.watched_pid = int(self.options.get("watched_pid") or parent_pid)
        try:
            self.log = configure_logging(
                name,
                self.run.log_path(name),
                spec.log_level,
                run=self.run.path.name,
                pid=os.getpid(),
            )
        except OSError:  # an unwritable or full run directory: run on, report errors by message
            self.log = configure_logging(name, None, spec.log_level, run=self.run.path.name)
        self.log.info(
            "placed",
            device=spec.device,
            cores=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            threads=torch.get_num_threads(),
            started_by=self.options.get("started_by", "spawn"),
            parent=os.getppid(),
        )
        if self.options.get("placement_failed"):
            self.log.warning("placement_failed", reason=self.options["placement_failed"])
        self.counters = Counters()
        self.context = zmq.Context()
        # tcp: CURVE with this region's key pair, servers admitting only the run's own keys
        self.security = Security.for_process(self.context, key_folder(spec, self.run), name)
        self.sockets: list[zmq.Socket] = []
        self.bound_files: list[str] = []  # ipc socket files this process must remove
        self.control = self.connect(zmq.DEALER, endpoints["orchestrator"], identity=name)
        self.state = RegionState.STARTING
        self.epoch = 0
        self.stopping = False
        self.started = False
        self._last_heartbeat = 0.0
        self._recent_metrics: list[dict[str, Any]] = []  # see save_checkpoint

    # -- sockets ----------------------------------------------------------------------------
    def connect(self, kind: int, endpoint: str, identity: str | None = None) -> Endpoint:
        sock = make_socket(self.context, kind, identity=identity)
        server = next((n for n, e in self.endpoints.items() if e == endpoint), None)
        if server is not None:
            self.security.client(sock, server)  # the server's public key, from the run's keys
        sock.connect(endpoint)
        self.sockets.append(sock)
        return Endpoint(sock, self.log, self.counters, kind == zmq.ROUTER, self.run.path.name)

    def bind(self, kind: int, endpoint: str) -> Endpoint:
        sock = make_socket(self.context, kind)
        if kind == zmq.ROUTER:  # a peer that reconnects (after a SIGSTOP) keeps its identity
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.security.server(self.context, sock)
        sock.bind(endpoint)
        self.sockets.append(sock)
        if endpoint.startswith("ipc://"):
            self.bound_files.append(endpoint.removeprefix("ipc://"))
        return Endpoint(sock, self.log, self.counters, kind == zmq.ROUTER, self.run.path.name)

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], epoch: int) -> None:
        """Atomically save this region's state after ``epoch`` (see :mod:`ccdni.base.checkpoint`).

        A state's ``last_metric`` (an area's record of the epoch it just trained) also joins
        ``recent_metrics``, the last ``RECENT_METRICS`` such records: an area may finish an
        epoch or two between its orchestrator's death and noticing it, and none of their
        records reach metrics.jsonl; ``resume`` restores them from here."""
        from ccdni.base.checkpoint import save_checkpoint

        if state.get("last_metric"):
            kept = self._recent_metrics[-(RECENT_METRICS - 1) :]
            self._recent_metrics = [*kept, dict(state["last_metric"])]
            state = {**state, "recent_metrics": list(self._recent_metrics)}
        save_checkpoint(self.run.checkpoint_path(self.name), state, self.name, epoch, self.spec)

    def load_checkpoint(self) -> Checkpoint | None:
        """This region's verified checkpoint, None if it has none; CheckpointError if it is
        damaged, altered, another region's or another spec's."""
        from ccdni.base.checkpoint import load_checkpoint

        path = self.run.checkpoint_path(self.name)
        saved = load_checkpoint(path, self.name, self.spec) if path.exists() else None
        if saved is not None:  # the window of records goes on where it was
            self._recent_metrics = list(saved.state.get("recent_metrics", []))[-RECENT_METRICS:]
        return saved

    # -- talking to the orchestrator --------------------------------------------------------
    def report(self, command: Command, **args: Any) -> None:
        """A CONTROL report to the orchestrator (``args``: the command's argument struct)."""
        self.control.send(control(command, self.name, **args))

    def metric(self, values: dict[str, Any]) -> None:
        self.control.send(MetricHeader(region=self.name, values=values))

    def heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_heartbeat >= self.spec.heartbeat_interval:
            self._last_heartbeat = now
            batch, batches = self.batch_progress()
            self.control.send(
                HeartbeatHeader(
                    region=self.name,
                    pid=os.getpid(),
                    state=self.state,
                    epoch=self.epoch,
                    sent=self.counters.sent,
                    received=self.counters.received,
                    rejected=self.counters.rejected,
                    batch=batch,
                    batches=batches,
                )
            )

    def batch_progress(self) -> tuple[int, int]:
        """(training batches done in this epoch, batches per epoch): an area's progress inside
        an epoch, shown in the live table; (0, 0) for the other regions."""
        return 0, 0

    def check_parent(self) -> None:
        if os.getppid() != self.watched_pid:
            raise OrphanedError("the orchestrator is gone")

    def on_control(self, message: Message) -> None:
        """React to a CONTROL message (``start`` and ``stop`` by default)."""
        header = message.header
        if header.command == Command.STOP:
            self.stopping = True
        elif header.command == Command.START:
            self.started = True
        else:
            self.log.warning("unexpected_control", command=header.command.value)

    def drain_control(self, timeout: float = 0.0) -> None:
        """Handle every waiting control message (waiting up to ``timeout`` for the first).

        Every wait on a peer calls this, so it also heartbeats (at most once per
        ``heartbeat_interval``): a region waiting for a silent peer is not silent itself."""
        self.heartbeat()
        while True:
            received = self.control.receive(timeout)
            if received is None:
                return
            _, message = received
            if message.kind == Kind.CONTROL:
                self.on_control(message)
            else:
                self.control.reject(f"unexpected {message.kind.name} on the control link")
            timeout = 0.0

    def await_start(self, **ready: Any) -> None:
        """Report ``ready`` and wait (heartbeating, obeying ``stop``) for ``start``."""
        self.state = RegionState.READY
        self.report(Command.READY, **ready)
        self.heartbeat(force=True)
        while not self.started:
            self.tick()
            self.drain_control(0.1)
        self.state = RegionState.TRAINING

    def tick(self) -> None:
        """Between units of work: heartbeat, control messages (read only when one is
        waiting: a getsockopt, not a poll), parent check."""
        self.heartbeat()
        if self.control.waiting():
            self.drain_control()
        self.check_parent()
        if self.stopping:
            raise StopRequested()

    # -- lifecycle ----------------------------------------------------------------------------
    @abstractmethod
    def serve(self) -> None:
        """The region's main loop; returns or raises StopRequested when told to stop."""

    def finish(self) -> None:  # noqa: B027 - optional hook, nothing to save by default
        """Called once on the way out (normal stop or error): save what should be saved."""

    def main(self) -> int:
        code = 0
        try:
            self.log.info("region_start", role=self.role)
            self.serve()
        except StopRequested:
            self.log.info("stop_requested")
        except OrphanedError as exc:
            self.log.error("orphaned", reason=str(exc))
            code = ORPHANED_EXIT_CODE
        except Terminated as exc:
            self.log.warning("terminated", orphaned=exc.orphaned)
            code = ORPHANED_EXIT_CODE if exc.orphaned else TERMINATED_EXIT_CODE
        except Exception as exc:
            terminated = termination(exc)
            if terminated is not None:  # SIGTERM, wrapped on its way up
                code = ORPHANED_EXIT_CODE if terminated.orphaned else TERMINATED_EXIT_CODE
            else:
                code = 1
                self.report(Command.FAILED, error=f"{type(exc).__name__}: {exc}")
                self.log.error("region_failed", error=repr(exc), traceback=traceback.format_exc())
        orphaned = code == ORPHANED_EXIT_CODE or os.getppid() != self.watched_pid
        code = ORPHANED_EXIT_CODE if orphaned else code
        try:
            self.finish()
        except (Exception, Terminated) as exc:
            code = code or 1
            self.log.error("finish_failed", error=repr(exc))
        self.state = RegionState.STOPPED
        if not orphaned:
            self.heartbeat(force=True)
            self.report(Command.EXITING, code=code)
        self.log.info("region_exit", code=code, orphaned=orphaned, **vars(self.counters))
        for sock in self.sockets:
            # the control link gets a bounded linger so the final reports (metrics, "exiting")
            # reach the orchestrator; data links (and every link of an orphan) drop what is left
            linger = FINAL_REPORT_LINGER_MS if sock is self.control.sock and not orphaned else 0
            sock.close(linger=linger)
        self.security.close()
        self.context.term()
        self.remove_socket_files(orphaned=orphaned)
        if orphaned:
            mark_orchestrator_dead(self.run.regions_path, self.parent_pid, self.name, self.epoch)
        return code

    def remove_socket_files(self, orphaned: bool) -> None:
        """Remove the ipc files this region bound; if the orchestrator died without cleaning
        up, also its socket file and (the last region out) the socket folder."""
        remove_socket_files(self.bound_files, self.endpoints if orphaned else None)


def remove_socket_files(bound: list[str], orphaned_endpoints: dict[str, str] | None) -> None:
    """Unlink the ipc socket files in ``bound``; given the run's endpoints (the orchestrator
    is dead), also the orchestrator's file and the socket folder once it is empty. Abstract
    endpoints (``ipc://@…``) and tcp endpoints have no file."""
    paths = [p for p in bound if not p.startswith("@")]
    if orphaned_endpoints is not None:
        own = orphaned_endpoints["orchestrator"]
        if own.startswith("ipc://") and not own.startswith("ipc://@"):
            paths.append(own.removeprefix("ipc://"))
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
    if orphaned_endpoints is not None and paths:
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(paths[-1]))


def mark_orchestrator_dead(regions_path: Any, parent_pid: int, name: str, epoch: int = 0) -> None:
    """An orphan's last act: rewrite the run's ``regions.json`` so that it no longer claims
    a live orchestrator and live regions (each orphan does it; the last writer wins, and each
    write is whole), with the orphan's own ``epoch`` if later than the recorded one (the
    orchestrator wrote the file before its death). Nothing happens if the file belongs to
    another orchestrator. The orphans take turns (a lock on the run directory, waited for at
    most half a second), so no one's update is lost to another's."""
    with run_directory_lock(os.path.dirname(regions_path), timeout=0.5):
        update_regions_file(regions_path, parent_pid, name, epoch)


@contextlib.contextmanager
def run_directory_lock(folder: str, timeout: float) -> Any:
    """Hold an exclusive ``flock`` on ``folder`` (POSIX), or go on without it once
    ``timeout`` has passed or where there is none."""
    fd = -1
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.002)
    except (ImportError, OSError):
        pass
    try:
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # releases the lock


def update_regions_file(regions_path: Any, parent_pid: int, name: str, epoch: int) -> None:
    """The rewrite of :func:`mark_orchestrator_dead`; any error leaves the file as it was."""
    try:
        data = json.loads(regions_path.read_text())
        orchestrator = data["orchestrator"]
        if orchestrator.get("pid") != parent_pid:
            return
        orchestrator.update(alive=False, state="dead", noticed_by=name, noticed_at=time.time())
        for region, entry in data.get("regions", {}).items():
            if region == name:
                entry.update(alive=False, state=ORCHESTRATOR_DEAD, last_heartbeat_s=None)
                entry["epoch"] = max(int(entry.get("epoch") or 0), epoch)
            elif entry.get("alive"):
                entry.update(state=ORCHESTRATOR_DEAD, last_heartbeat_s=None)
        tmp = regions_path.with_name(f"{regions_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, regions_path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return


def region_main(
    role: str,
    name: str,
    spec_dict: dict[str, Any],
    run_path: str,
    endpoints: dict[str, str],
    parent_pid: int,
    options: dict[str, Any] | None = None,
) -> None:
    """Entry point of a spawned (or template-forked) region process: run it, then exit."""
    code = region_run(role, name, spec_dict, run_path, endpoints, parent_pid, options)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)  # everything is saved and closed: skip the slow interpreter teardown


def region_run(
    role: str,
    name: str,
    spec_dict: dict[str, Any],
    run_path: str,
    endpoints: dict[str, str],
    parent_pid: int,
    options: dict[str, Any] | None = None,
    hosted: bool = False,
) -> int:
    """Run one region to its end and return its exit code. ``role`` names a shell of
    :data:`SHELLS`, or is itself ``"module:Class"`` (a shell defined elsewhere, e.g. a test's
    broken region).

    ``hosted``: the process belongs to a host that owns its lifetime (a Ray worker, whose
    parent is Ray's raylet and which Ray ends when the orchestrator, its owner, dies): the
    region watches that parent instead of the orchestrator, and keeps the host's signal
    handlers where it cannot install its own."""
    shell: RegionShell | None = None
    code = 1
    try:
        if hosted:
            options = {**(options or {}), "watched_pid": os.getppid(), "started_by": "ray"}
        with contextlib.suppress(ValueError):  # not the main thread: the host's handlers
            # Ctrl-C and a closed terminal are the orchestrator's to handle (staged shutdown)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        watched = int((options or {}).get("watched_pid") or parent_pid)
        lifeline = None
        if (options or {}).get("started_by") == template.TEMPLATE:
            try:
                watched, lifeline = template.leave_template(options or {}, parent_pid)
            except template.OrchestratorGone:
                raise Terminated(orphaned=True) from None
            options = {**(options or {}), "watched_pid": watched}
        if not hosted or threading.current_thread() is threading.main_thread():
            watch_parent(watched)  # first: a dead orchestrator must not wait for torch's import
        if lifeline is not None:
            template.watch_lifeline(lifeline)
        placement = (options or {}).get("placement")
        failed = apply_placement(placement)  # the cores first: everything after runs there
        if failed:
            options = {**(options or {}), "placement_failed": failed}
        if placement and placement["device"] != spec_dict["device"]:
            spec_dict = {**spec_dict, "device": placement["device"]}  # this region's device
        module, _, cls = SHELLS.get(role, role).partition(":")
        shell_cls = getattr(importlib.import_module(module), cls)
        shell = shell_cls(name, RunSpec(**spec_dict), run_path, endpoints, parent_pid, options)
        code = shell.main()
    except BaseException as exc:  # before main() took over: nothing bound, nothing to save
        terminated = termination(exc)
        if terminated is None:  # the shell could not even be built: one line, the exit code
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"ccdni {name}: cannot start: {type(exc).__name__}: {exc}\n")
        elif terminated.orphaned:
            code = ORPHANED_EXIT_CODE
            remove_socket_files([], endpoints)
            mark_orchestrator_dead(RunDirectory(run_path).regions_path, parent_pid, name)
        else:
            code = TERMINATED_EXIT_CODE
    return code


def apply_placement(placement: dict[str, Any] | None) -> str | None:
    """In a region process: pin to the planned cores (where the OS supports affinity).

    Returns why pinning failed (the cores changed since planning, no affinity support), or
    None; the region then runs unpinned and logs the reason instead of dying."""
    if not placement or not placement.get("cores"):
        return None
    if not hasattr(os, "sched_setaffinity"):
        return "this OS cannot pin processes to cores"
    try:
        os.sched_setaffinity(0, set(placement["cores"]))
    except OSError as exc:
        return f"cannot pin to cores {placement['cores']}: {exc}"
    return None
