"""Talking to a running orchestrator: ``launch.py ablate|revive|status|stop``.

The orchestrator's control endpoint is in ``RUN/regions.json``; a client connects a DEALER
with a ``client-*`` identity, sends one CONTROL message and waits (bounded) for the reply.

Whether a run is alive is read from the pids in ``regions.json``, never from the states it
records: an orchestrator killed with ``kill -9`` cannot update the file, so a run whose
orchestrator pid is gone (or was reused by another process: the recorded start time differs)
is "orchestrator dead", whatever the file says.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from pathlib import Path
from typing import Any

import structlog
import zmq

from wire.channel import Counters, Endpoint, make_socket
from wire.protocol import Command, Kind, control


class ControlError(RuntimeError):
    """The run cannot be reached or refused the command; the text says why."""


def read_regions(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "regions.json"
    if not path.exists():
        raise ControlError(f"{run_dir} is not a run directory (no regions.json)")
    try:
        regions = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ControlError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(regions, dict) or not isinstance(regions.get("orchestrator"), dict):
        raise ControlError(f"{path} names no orchestrator: not written by a run")
    return regions


def process_state(pid: int | None) -> str | None:
    """The kernel's one-letter state of ``pid`` (``R`` running, ``S`` sleeping, ``T`` stopped,
    ``Z`` zombie, ...), or None when it is gone or unknown (no ``/proc``)."""
    if not pid:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields[0] if fields else None


def process_start_ticks(pid: int | None) -> int | None:
    """When ``pid`` started (clock ticks since boot, from ``/proc``): a pid's identity across
    reuse. None when unknown."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid: int | None, started: int | None = None) -> bool:
    """Whether ``pid`` is a live process (a zombie is not; with ``started``, only the process
    that started then counts, not a later one that reused the pid)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if process_state(pid) == "Z":
        return False
    if started is not None:
        now = process_start_ticks(pid)
        if now is not None and now != started:
            return False
    return True


def orchestrator_alive(run_dir: Path) -> bool:
    return run_state(read_regions(run_dir)) == "running"


def run_state(regions: dict[str, Any]) -> str:
    """'running', 'orchestrator dead' (its pid is gone but it never recorded an end), or
    'not running' (it ended and said so)."""
    info = regions["orchestrator"]
    alive = pid_alive(info.get("pid"), info.get("started"))
    if info.get("alive") and alive:
        return "running"
    if info.get("state") == "dead" or info.get("alive"):
        return "orchestrator dead"
    return "not running"


RAY_REVIVE_TIMEOUT = 120.0  # seconds: a new Ray actor (a fresh worker process) may take long


def send_command(run_dir: Path, command: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    """Send one command to the run's orchestrator and return its reply's arguments."""
    regions = read_regions(run_dir)
    info = regions["orchestrator"]
    state = run_state(regions)
    if state != "running" or not info.get("control"):
        dead = f" (orchestrator pid {info.get('pid')} is gone)" if state != "not running" else ""
        raise ControlError(f"the run in {run_dir} is not running{dead}")
    if command == Command.REVIVE.value and info.get("backend") == "ray":
        timeout = max(timeout, RAY_REVIVE_TIMEOUT)  # the orchestrator waits for a new actor
    context = zmq.Context()
    sock = make_socket(context, zmq.DEALER, identity=f"client-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        if info.get("authenticated"):  # tcp + CURVE: the run's client key pair
            from wire.transport import CLIENT_KEY, Security

            security = Security.for_process(context, str(run_dir / "keys"), CLIENT_KEY)
            security.client(sock, "orchestrator")
        sock.connect(info["control"])
        endpoint = Endpoint(sock, structlog.get_logger(), Counters(), routed=False)
        endpoint.send(control(Command(command), "client", **args))
        received = endpoint.receive(timeout)
        if received is None:
            raise ControlError(f"the orchestrator did not answer within {timeout:g} s")
        message = received[1]
        if message.kind != Kind.CONTROL or message.header.command != Command.REPLY:
            raise ControlError("the orchestrator sent an unexpected reply")
        return dataclasses.asdict(message.header.args)
    finally:
        sock.close(linger=0)
        context.term()


def running_runs(runs_dir: Path) -> list[Path]:
    """Run directories under ``runs_dir`` whose orchestrator is alive."""
    if not runs_dir.is_dir():
        return []
    found = []
    for path in sorted(runs_dir.iterdir()):
        if (path / "regions.json").exists():
            try:
                if orchestrator_alive(path):
                    found.append(path)
            except (ControlError, json.JSONDecodeError, KeyError):
                continue
    return found
