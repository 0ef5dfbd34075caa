"""Typed CONTROL commands: every command round-trips with its argument struct, and a command
with a missing, extra or mistyped argument is refused with the reason."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from ccdni.base.spec import load_spec
from orchestrator.runner import execute_run
from wire.protocol import (
    ARGUMENTS,
    MAGIC,
    VERSION,
    Command,
    ControlHeader,
    HeartbeatHeader,
    Kind,
    NoArguments,
    ProtocolError,
    RegionState,
    control,
    decode,
    encode,
)

pytestmark = pytest.mark.timeout(120)

SAMPLE_ARGUMENTS = {  # one value per argument of every command, none its default
    Command.READY: {"epoch": 7},
    Command.DONE: {"epochs": 300},
    Command.FAILED: {"error": "ValueError: boom"},
    Command.EXITING: {"code": 3},
    Command.REQUEST_ABLATION: {"target": "cerebellum", "epoch": 50},
    Command.LESION: {"target": "olive"},
    Command.REVIVED: {"target": "cerebellum"},
    Command.BARRIER: {"interface": "area0", "errors_expected": 12},
    Command.RESTART_COUNT: {"interface": "boundary0"},
    Command.EPOCH_END: {"epoch": 4, "interfaces": ["boundary0", "forward0"]},
    Command.BATCH_DONE: {"epoch": 2, "batch": 17},
    Command.FEEDBACK_WITHHELD: {"epoch": 2, "batch": 18},
    Command.VALIDATED: {"epoch": 9},
    Command.ABLATE: {"region": "cerebellum"},
    Command.REVIVE: {"region": "olive", "from_checkpoint": True},
    Command.REPLY: {"ok": False, "run": "r1", "regions": {"area0": {"pid": 1}}, "error": "no"},
}


def frames_of(command: str, args) -> list[bytes]:
    """A CONTROL message written by hand, bypassing the typed constructor."""
    body = {"command": command, "region": "x", "args": args, "tensors": []}
    return [MAGIC + bytes([VERSION, int(Kind.CONTROL)]), msgpack.packb(body, use_bin_type=True)]


@pytest.mark.parametrize("command", list(Command), ids=lambda c: c.value)
def test_every_command_round_trips(command: Command) -> None:
    """Each command, with its arguments, decodes back to an equal typed header."""
    header = control(command, "area0", **SAMPLE_ARGUMENTS.get(command, {}))
    assert type(header.args) is ARGUMENTS[command]
    frames = [bytes(f) for f in encode(header)]
    decoded = decode(frames).header
    assert decoded == header
    assert isinstance(decoded.command, Command)
    if ARGUMENTS[command] is not NoArguments:
        assert dataclasses.asdict(decoded.args) == {
            **dataclasses.asdict(ARGUMENTS[command](**SAMPLE_ARGUMENTS[command]))
        }


@pytest.mark.parametrize(
    ("command", "args", "reason"),
    [
        ("lesion", {}, "missing arguments \\['target'\\]"),
        ("lesion", {"target": "olive", "when": 3}, "unknown arguments \\['when'\\]"),
        ("lesion", {"target": 5}, "'target' should be str, got int"),
        ("barrier", {"interface": "a", "errors_expected": True}, "should be int, got bool"),
        ("barrier", {"interface": "a", "errors_expected": "3"}, "should be int, got str"),
        ("epoch_end", {"epoch": 1, "interfaces": ["a", 2]}, "list of str"),
        ("revive", {"region": "olive", "from_checkpoint": 1}, "should be bool"),
        ("reboot", {}, "unknown command 'reboot'"),
        ("done", [1, 2], "arguments must be a map"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(command: str, args, reason: str) -> None:
    """A CONTROL message with a missing, extra or mistyped argument (or an unknown command)
    does not decode, and the error says which argument and why."""
    with pytest.raises(ProtocolError, match=reason):
        decode(frames_of(command, args))


def test_senders_cannot_build_a_bad_command() -> None:
    """The typed constructor refuses wrong arguments before anything is sent."""
    with pytest.raises(ProtocolError, match="missing"):
        control(Command.DONE, "area0")
    with pytest.raises(ProtocolError, match="takes TargetArguments"):
        ControlHeader(Command.LESION, "orchestrator", NoArguments())
    with pytest.raises(ProtocolError, match="unknown region state"):
        HeartbeatHeader(region="area0", state="dancing")
    assert HeartbeatHeader(state=RegionState.SERVING).state == "serving"


def test_regions_keep_serving_after_bad_control_messages(tmp_path: Path) -> None:
    """Malformed CONTROL messages sent to the orchestrator's control socket during a run are
    rejected and the run completes normally."""
    spec = load_spec(
        epochs=400, runs_dir=str(tmp_path), run_name="r", figures=False, progress=False
    )
    import threading

    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(run=execute_run(spec, console=False)))
    thread.start()
    run = tmp_path / "r"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (run / "regions.json").exists():
        time.sleep(0.05)
    import json

    endpoint = json.loads((run / "regions.json").read_text())["orchestrator"]["control"]
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, b"client-fuzz")
    sock.connect(endpoint)
    for command, args in (("ablate", {}), ("ablate", {"region": 3}), ("revive", {"x": 1})):
        sock.send_multipart(frames_of(command, args))
    sock.send_multipart([bytes(f) for f in encode(control(Command.STATUS, "client"))])
    assert sock.poll(10_000), "the orchestrator stopped answering after bad commands"
    reply = decode(sock.recv_multipart()).header
    assert reply.command == Command.REPLY and reply.args.ok
    sock.send_multipart([bytes(f) for f in encode(control(Command.STOP, "client"))])
    sock.close()
    context.term()
    thread.join(timeout=60)
    assert outcome["run"].summary["status"] == "stopped"
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "shutdown" and e["stage"] == "stop" for e in events)


def test_a_message_from_another_run_is_rejected() -> None:
    """A step message whose ``run`` is not the receiver's is dropped with the reason; one of
    the receiver's own run is taken."""
    import torch

    from wire.channel import Counters, Endpoint, make_socket
    from wire.ids import StepId
    from wire.protocol import TargetHeader, step_header

    class Log:
        def __init__(self):
            self.lines = []

        def warning(self, event, **fields):
            self.lines.append((event, fields))

        debug = info = warning

    context = zmq.Context()
    try:
        receiver = make_socket(context, zmq.PULL)
        receiver.bind("inproc://runs")
        sender = make_socket(context, zmq.PUSH)
        sender.connect("inproc://runs")
        log = Log()
        endpoint = Endpoint(receiver, log, Counters(), routed=False, run="run-a")
        tensor = torch.zeros(2, 4)
        for run in ("run-b", "run-a"):
            header = step_header(TargetHeader, run, "area0", StepId(0, 0, 1))
            sender.send_multipart(encode(header, [tensor]))
        got = endpoint.receive(5.0)
        assert got is not None and got[1].header.run == "run-a"
        assert endpoint.counters.rejected == 1
        assert "another run" in log.lines[0][1]["reason"]
    finally:
        context.destroy(linger=0)
