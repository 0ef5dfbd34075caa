"""Talking to a running orchestrator: ``launch.py ablate|revive|status|stop``.

The orchestrator's control endpoint is in ``RUN/regions.json``; a client connects a DEALER
with a ``client-*`` identity, sends one CONTROL message and waits (bounded) for the reply.
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


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orchestrator_alive(run_dir: Path) -> bool:
    info = read_regions(run_dir)["orchestrator"]
    return bool(info.get("alive")) and pid_alive(info.get("pid"))


def send_command(run_dir: Path, command: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    """Send one command to the run's orchestrator and return its reply's arguments."""
    info = read_regions(run_dir)["orchestrator"]
    if not (info.get("alive") and pid_alive(info.get("pid")) and info.get("control")):
        raise ControlError(f"the run in {run_dir} is not running")
    context = zmq.Context()
    sock = make_socket(context, zmq.DEALER, identity=f"client-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
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
