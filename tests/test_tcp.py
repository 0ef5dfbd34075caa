"""The tcp transport: a run over tcp with CURVE equals its in-process run, a client without the
run's keys reaches no region, key files and socket folders are private."""

from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path

import pytest
import torch
import zmq
import zmq.auth
from conftest import assert_no_process_left, assert_same_losses, records

from ccdni.base.spec import SpecError, load_spec
from orchestrator.runner import execute_run
from wire.protocol import EfferenceHeader, TargetHeader, encode

pytestmark = pytest.mark.timeout(240)


def common(tmp_path: Path, **extra) -> dict:
    spec = dict(
        model="cc-dni",
        epochs=5,
        seed=2,
        timing="lockstep",
        runs_dir=str(tmp_path),
        figures=False,
        progress=False,
    )
    return {**spec, **extra}


class Intruder(threading.Thread):
    """Once the run's regions.json names its endpoints, connects to the cerebellum and the
    olive with a key pair of its own (or none) and floods them, until told to stop, with junk
    frames and with well-formed efferences and targets of the run's own name."""

    def __init__(self, run: Path, run_name: str, curve: bool, hijack: bool = True):
        super().__init__(daemon=True)
        self.hijack = hijack  # claim the area's identity and send well-formed messages too
        self.run_path, self.run_name, self.curve = run, run_name, curve
        self.done = threading.Event()
        self.sent = 0

    def endpoints(self) -> dict[str, str] | None:
        try:
            info = json.loads((self.run_path / "regions.json").read_text())["orchestrator"]
        except (OSError, ValueError, KeyError):
            return None
        return info.get("endpoints") if info.get("alive") else None

    def run(self) -> None:
        deadline = time.monotonic() + 120
        endpoints = None
        while endpoints is None and not self.done.is_set() and time.monotonic() < deadline:
            endpoints = self.endpoints()
            time.sleep(0.02)
        if endpoints is None:
            return
        context = zmq.Context()
        sockets = []
        for target in ("cerebellum", "olive"):
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IDENTITY, b"area0" if self.hijack else b"intruder")
            if self.curve:
                # a key pair of its own, and the server's real public key (public keys are
                # no secret): the server must still refuse it
                _, secret = zmq.auth.create_certificates(self.run_path.parent, f"x-{target}")
                sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(secret)
                server = self.run_path / "keys" / "public" / f"{target}.key"
                sock.curve_serverkey = zmq.auth.load_certificate(server)[0]
            sock.connect(endpoints[target])
            sockets.append(sock)
        tensor = torch.randn(50, 20)
        batch = 0
        while not self.done.is_set():
            for sock in sockets:
                messages = [[b"not a ccdni message"]]
                if self.hijack:
                    messages += [
                        encode(EfferenceHeader(run=self.run_name, interface="area0", batch=batch), [tensor]),
                        encode(TargetHeader(run=self.run_name, interface="area0", batch=batch), [tensor]),
                    ]  # fmt: skip
                for frames in messages:
                    try:
                        sock.send_multipart(frames, flags=zmq.NOBLOCK)
                        self.sent += 1
                    except zmq.Again:
                        pass
            batch += 1
            time.sleep(0.002)
        for sock in sockets:
            sock.close(linger=0)
        context.term()


def rejected_by(run: Path, region: str) -> int:
    (exit_line,) = [
        r for r in records(run / "logs" / f"{region}.jsonl") if r["event"] == "region_exit"
    ]
    return exit_line["rejected"]


def run_with_intruder(
    tmp_path: Path, name: str, curve: bool, hijack: bool = True, **spec
) -> tuple[Path, Intruder]:
    run = tmp_path / name
    intruder = Intruder(run, name, curve, hijack)
    intruder.start()
    try:
        outcome = execute_run(load_spec(run_name=name, **spec), console=False)
    finally:
        intruder.done.set()
        intruder.join(10)
    assert outcome.summary["status"] == "completed", outcome.summary["reason"]
    return outcome.run.path, intruder


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The in-process run the tcp runs must equal."""
    folder = tmp_path_factory.mktemp("reference")
    spec = load_spec(inprocess=True, run_name="ref", **common(folder))
    return execute_run(spec, console=False).run.path


@pytest.mark.parametrize("curve", [False, True], ids=["no-key", "foreign-key"])
def test_tcp_curve_run_equals_inprocess_and_shuts_out_intruders(
    tmp_path: Path, reference: Path, curve: bool
) -> None:
    """Over tcp with CURVE, a lockstep run equals its in-process run (1e-6) while a client with
    no key, or with a key pair of its own, floods the cerebellum and olive: nothing it sends
    reaches them (not even to be rejected); the secret keys are 0600 in a 0700 folder."""
    run, intruder = run_with_intruder(tmp_path, "tcp", curve, **common(tmp_path, transport="tcp"))
    assert intruder.sent > 0, "the intruder never got to send"
    assert_same_losses(reference, run)
    assert rejected_by(run, "cerebellum") == 0 and rejected_by(run, "olive") == 0
    info = json.loads((run / "regions.json").read_text())["orchestrator"]
    assert info["transport"] == "tcp" and info["authenticated"]
    assert all(e.startswith("tcp://127.0.0.1:") for e in info["endpoints"].values())
    private = run / "keys" / "private"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    secrets = sorted(private.glob("*.key_secret"))
    assert {p.stem for p in secrets} == {"orchestrator", "client", "area0", "cerebellum", "olive"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in secrets)
    assert_no_process_left(run, expected_regions=3)


def test_insecure_tcp_lets_the_same_intruder_in(tmp_path: Path) -> None:
    """The control for the test above: with --insecure-tcp the same intruder's junk (sent under
    an identity of its own: claiming the area's would hijack its replies) reaches the cerebellum
    and olive and is rejected there, so a zero count above means CURVE kept it out."""
    spec = common(tmp_path, transport="tcp", insecure_tcp=True)
    run, intruder = run_with_intruder(tmp_path, "insecure", False, hijack=False, **spec)
    assert intruder.sent > 0
    assert rejected_by(run, "cerebellum") > 0 and rejected_by(run, "olive") > 0
    assert not (run / "keys").exists()
    assert any(e["event"] == "insecure_tcp" for e in records(run / "events.jsonl"))


def test_ipc_socket_folder_is_owner_only(tmp_path: Path) -> None:
    """The default ipc transport puts its sockets in an owner-only (0700) folder, removed after
    the run; no abstract socket names are used."""
    seen: dict[str, object] = {}

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "mode" not in seen:
            folder = tmp_path / "ipc" / "sock"
            try:
                info = json.loads((tmp_path / "ipc" / "regions.json").read_text())["orchestrator"]
                seen["control"] = info["control"]
                seen["mode"] = stat.S_IMODE(folder.stat().st_mode)
            except (OSError, ValueError, KeyError):
                time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    outcome = execute_run(load_spec(run_name="ipc", **common(tmp_path, epochs=2)), console=False)
    watcher.join(5)
    assert outcome.summary["status"] == "completed"
    assert seen["mode"] == 0o700
    assert str(seen["control"]).startswith(f"ipc://{tmp_path / 'ipc' / 'sock'}")
    assert_no_process_left(outcome.run.path)


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"backend": "ray"}, "backend ray needs transport tcp"),
        ({"insecure_tcp": True}, "insecure_tcp only applies to transport tcp"),
        ({"transport": "udp"}, "transport='udp' is not one of"),
        ({"transport": "tcp", "tcp_host": "a b"}, "is not a host address"),
    ],
)
def test_transport_spec_errors_name_the_problem(flags: dict, message: str) -> None:
    """Meaningless transport combinations are refused with a message naming the field."""
    with pytest.raises(SpecError, match=message):
        load_spec(**flags)


def test_transport_benchmark_prints_every_variant(tmp_path: Path) -> None:
    """The transport benchmark, at a tiny budget, measures ipc, tcp and tcp+curve and writes
    every figure to its JSON file."""
    from benchmarks.transport import VARIANTS, main

    out = tmp_path / "t.json"
    assert (
        main(
            [
                "--sizes",
                "4096",
                "--rounds",
                "1",
                "--trips",
                "5",
                "--total-mb",
                "0.05",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    figures = json.loads(out.read_text())["4096"]
    assert set(figures) == set(VARIANTS)
    assert all(cell["round_trip_us"] > 0 and cell["mb_s"] > 0 for cell in figures.values())
