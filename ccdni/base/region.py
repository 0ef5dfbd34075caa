"""The thin process shell every region shares, and the entry point of spawned regions.

A region process: limits itself to ``spec.threads`` intra-op threads, configures structlog once
(JSON lines to ``RUN/logs/REGION.jsonl``), connects a DEALER to the orchestrator's control
ROUTER, reports ``ready``, sends heartbeats, obeys ``stop``, and exits by itself if the
orchestrator disappears (its parent pid changes). Its maths lives in a socket-free core.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import time
import traceback
from abc import ABC, abstractmethod
from typing import Any

import zmq

from ccdni.base.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
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

SHELLS = {
    "area": "areas.process:AreaShell",
    "chain-area": "areas.chain_process:ChainAreaShell",
    "cerebellum": "cerebellum.process:CerebellumShell",
    "olive": "olive.process:OliveShell",
}
POLL_INTERVAL = 0.1  # seconds: the longest any region sleeps between checks
FINAL_REPORT_LINGER_MS = 500  # at exit, how long queued reports to the orchestrator may take


class StopRequested(Exception):
    """The orchestrator asked this region to stop."""


class OrphanedError(RuntimeError):
    """The orchestrator is gone."""


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
        self.parent_pid = parent_pid
        self.options = dict(options or {})  # resume, lesioned, from_checkpoint
        self.log = configure_logging(
            name, self.run.log_path(name), spec.log_level, run=self.run.path.name, pid=os.getpid()
        )
        self.log.info(
            "placed",
            device=spec.device,
            cores=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        )
        if self.options.get("placement_failed"):
            self.log.warning("placement_failed", reason=self.options["placement_failed"])
        self.counters = Counters()
        self.context = zmq.Context()
        self.sockets: list[zmq.Socket] = []
        self.bound_files: list[str] = []  # ipc socket files this process must remove
        self.control = self.connect(zmq.DEALER, endpoints["orchestrator"], identity=name)
        self.state = RegionState.STARTING
        self.epoch = 0
        self.stopping = False
        self.started = False
        self._last_heartbeat = 0.0

    # -- sockets ----------------------------------------------------------------------------
    def connect(self, kind: int, endpoint: str, identity: str | None = None) -> Endpoint:
        sock = make_socket(self.context, kind, identity=identity)
        sock.connect(endpoint)
        self.sockets.append(sock)
        return Endpoint(sock, self.log, self.counters, kind == zmq.ROUTER, self.run.path.name)

    def bind(self, kind: int, endpoint: str) -> Endpoint:
        sock = make_socket(self.context, kind)
        sock.bind(endpoint)
        self.sockets.append(sock)
        if endpoint.startswith("ipc://"):
            self.bound_files.append(endpoint.removeprefix("ipc://"))
        return Endpoint(sock, self.log, self.counters, kind == zmq.ROUTER, self.run.path.name)

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], epoch: int) -> None:
        """Atomically save this region's state after ``epoch`` (see :mod:`ccdni.base.checkpoint`)."""
        save_checkpoint(self.run.checkpoint_path(self.name), state, self.name, epoch, self.spec)

    def load_checkpoint(self) -> Checkpoint | None:
        """This region's verified checkpoint, None if it has none; CheckpointError if it is
        damaged, altered, another region's or another spec's."""
        path = self.run.checkpoint_path(self.name)
        return load_checkpoint(path, self.name, self.spec) if path.exists() else None

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
            self.control.send(
                HeartbeatHeader(
                    region=self.name,
                    pid=os.getpid(),
                    state=self.state,
                    epoch=self.epoch,
                    sent=self.counters.sent,
                    received=self.counters.received,
                    rejected=self.counters.rejected,
                )
            )

    def check_parent(self) -> None:
        if os.getppid() != self.parent_pid:
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
        """Handle every waiting control message (waiting up to ``timeout`` for the first)."""
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
        """Between units of work: heartbeat, control messages, parent check."""
        self.heartbeat()
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
            code = 3
        except Exception as exc:
            code = 1
            self.log.error("region_failed", error=repr(exc), traceback=traceback.format_exc())
            self.report(Command.FAILED, error=f"{type(exc).__name__}: {exc}")
        try:
            self.finish()
        except Exception as exc:
            code = code or 1
            self.log.error("finish_failed", error=repr(exc))
        self.state = RegionState.STOPPED
        self.heartbeat(force=True)
        self.report(Command.EXITING, code=code)
        self.log.info("region_exit", code=code, **vars(self.counters))
        for sock in self.sockets:
            # the control link gets a bounded linger so the final reports (metrics, "exiting")
            # reach the orchestrator; data links drop whatever is left
            sock.close(linger=FINAL_REPORT_LINGER_MS if sock is self.control.sock else 0)
        self.context.term()
        self.remove_socket_files(orphaned=code == 3)
        return code

    def remove_socket_files(self, orphaned: bool) -> None:
        """Remove the ipc files this region bound; if the orchestrator died without cleaning
        up, also its socket file and (the last region out) the socket folder."""
        paths = list(self.bound_files)
        if orphaned:
            paths.append(self.endpoints["orchestrator"].removeprefix("ipc://"))
        for path in paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if orphaned and paths:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(paths[-1]))


def region_main(
    role: str,
    name: str,
    spec_dict: dict[str, Any],
    run_path: str,
    endpoints: dict[str, str],
    parent_pid: int,
    options: dict[str, Any] | None = None,
) -> None:
    """Entry point of a spawned region process."""
    # Ctrl-C and a closed terminal are the orchestrator's to handle (staged shutdown)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    placement = (options or {}).get("placement")
    failed = apply_placement(placement)  # the cores first: everything after runs there
    if failed:
        options = {**(options or {}), "placement_failed": failed}
    if placement and placement["device"] != spec_dict["device"]:
        spec_dict = {**spec_dict, "device": placement["device"]}  # this region's device
    module, _, cls = SHELLS[role].partition(":")
    shell_cls = getattr(importlib.import_module(module), cls)
    shell = shell_cls(name, RunSpec(**spec_dict), run_path, endpoints, parent_pid, options)
    code = shell.main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # everything is saved and closed: skip the slow interpreter teardown


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
