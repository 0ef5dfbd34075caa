"""tcp with CURVE: only the run's own keys get through; keys are private on disk."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import zmq

from wire.transport import CurveKeys, Security, free_port, make_keys

pytestmark = pytest.mark.timeout(60)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    key_dir = tmp_path / "keys"
    make_keys(key_dir, ["cerebellum", "area0"])
    make_keys(tmp_path / "other-run", ["area0"])  # a foreign run's keys, same names
    return key_dir


def test_key_files_are_private(keys: Path) -> None:
    """Secret keys are 0600 in a 0700 folder; the allow-list holds only public keys."""
    assert mode(keys) == 0o700 and mode(keys / "private") == 0o700
    secrets = sorted((keys / "private").iterdir())
    assert [p.name for p in secrets] == ["area0.key_secret", "cerebellum.key_secret"]
    assert all(mode(p) == 0o600 for p in secrets)
    assert sorted(p.name for p in (keys / "public").iterdir()) == ["area0.key", "cerebellum.key"]
    assert all("secret-key" not in p.read_text() for p in (keys / "public").iterdir())


def served(keys: Path):
    """A CURVE ROUTER of the cerebellum on an ephemeral loopback port."""
    context = zmq.Context()
    security = Security.for_process(context, str(keys), "cerebellum")
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    security.server(context, router)
    endpoint = f"tcp://127.0.0.1:{free_port('127.0.0.1')}"
    router.bind(endpoint)
    return context, security, router, endpoint


def dealer(context: zmq.Context, endpoint: str, setup) -> zmq.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    setup(sock)
    sock.connect(endpoint)
    return sock


def test_only_the_runs_own_key_gets_through(keys: Path, tmp_path: Path) -> None:
    """A client with the run's key is served; one with a foreign key and one with no key
    cannot connect, so nothing they send reaches the server."""
    context, security, router, endpoint = served(keys)
    try:
        own = Security(CurveKeys(keys, "area0"))
        foreign_keys = CurveKeys(tmp_path / "other-run", "area0")
        foreign = dealer(
            context,
            endpoint,
            lambda s: (
                setattr(s, "curve_secretkey", foreign_keys.pair()[1]),
                setattr(s, "curve_publickey", foreign_keys.pair()[0]),
                setattr(s, "curve_serverkey", CurveKeys(keys, "area0").public_of("cerebellum")),
            ),
        )
        plain = dealer(context, endpoint, lambda s: None)
        good = dealer(context, endpoint, lambda s: own.client(s, "cerebellum"))
        for sock, text in ((foreign, b"foreign"), (plain, b"plain"), (good, b"own")):
            sock.send(text)
        received = []
        while router.poll(2000):
            received.append(router.recv_multipart())
        assert [frames[-1] for frames in received] == [b"own"]
        router.send_multipart([received[0][0], b"answer"])  # and the answer gets back
        assert good.poll(5000) and good.recv() == b"answer"
        for sock in (foreign, plain, good):
            sock.close()
    finally:
        router.close()
        security.close()
        context.term()
