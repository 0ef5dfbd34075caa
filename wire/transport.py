"""Where the sockets of a run live, and who may talk to them.

Two transports:

- ``ipc`` (the default, one machine): ``ipc://`` socket files in a per-run folder of mode 0700
  (never Linux abstract ``ipc://@name`` sockets: those have no permission check).
- ``tcp`` (regions on several machines): ``tcp://HOST:PORT`` endpoints on ephemeral ports,
  authenticated and encrypted with CURVE by default. Every run has its own key pairs, one per
  region and one for the orchestrator and its clients, made with :mod:`zmq.auth` into
  ``RUN/keys/``: public keys in ``keys/public/`` (the run's allow-list), secret keys in
  ``keys/private/`` (folder 0700, files 0600). Every socket that binds is a CURVE server and
  runs a ZAP authenticator that admits only the public keys of the allow-list — a client
  with another key, or with none, cannot connect, so nothing it sends ever reaches a region.
  ``insecure`` tcp (``--insecure-tcp``) is for trusted clusters only.

Measured cost of CURVE: ``python -m benchmarks.transport`` (see benchmarks/README.md). The
libzmq bundled in the pyzmq wheel is slow at CURVE for large frames (1 MB: about 6x the round
trip of plain tcp, measured there); the remedy is pyzmq built against a system libzmq that
links libsodium (``pip install --no-binary pyzmq pyzmq`` with the system's libzmq and
libsodium development packages installed, or conda's ``zeromq``), or, on a trusted network,
``--insecure-tcp`` inside an encrypted tunnel (WireGuard, IPsec) that encrypts in the kernel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

TRANSPORTS = ("ipc", "tcp")
CLIENT_KEY = "client"  # the key pair that launch.py ablate|revive|status|stop use


class TransportError(RuntimeError):
    """A transport that cannot be set up; the text says why."""


def free_port(host: str) -> int:
    """An ephemeral port on ``host`` that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def make_keys(key_dir: Path, names: list[str]) -> None:
    """A CURVE key pair per name: ``public/NAME.key`` and ``private/NAME.key_secret`` (0600)."""
    public, private = key_dir / "public", key_dir / "private"
    for folder, mode in ((key_dir, 0o700), (public, 0o755), (private, 0o700)):
        folder.mkdir(mode=mode, parents=True, exist_ok=True)
        os.chmod(folder, mode)
    for name in names:
        if (private / f"{name}.key_secret").exists():
            continue  # a revived region keeps its keys
        public_file, secret_file = zmq.auth.create_certificates(private, name)
        shutil.move(public_file, public / f"{name}.key")
        os.chmod(secret_file, 0o600)


@dataclass(frozen=True)
class CurveKeys:
    """One party's key pair and the run's allow-list of public keys."""

    key_dir: Path
    name: str

    @property
    def allow_list(self) -> Path:
        return self.key_dir / "public"

    def pair(self) -> tuple[bytes, bytes]:
        """(public, secret) of this party."""
        path = self.key_dir / "private" / f"{self.name}.key_secret"
        try:
            public, secret = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot read the CURVE key {path}: {exc}") from None
        if secret is None:
            raise TransportError(f"{path} holds no secret key")
        return public, secret

    def public_of(self, name: str) -> bytes:
        path = self.allow_list / f"{name}.key"
        try:
            public, _ = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot read the CURVE public key {path}: {exc}") from None
        return public


@dataclass
class Security:
    """How one process secures its sockets: nothing (ipc, insecure tcp) or CURVE."""

    keys: CurveKeys | None = None
    authenticator: ThreadAuthenticator | None = None

    @classmethod
    def for_process(cls, context: zmq.Context, key_dir: str | None, name: str) -> Security:
        """CURVE with this process's keys when the run has a key folder, else none. A process
        that binds starts a ZAP authenticator admitting only the run's own public keys."""
        if not key_dir:
            return cls()
        keys = CurveKeys(Path(key_dir), name)
        keys.pair()  # fail now, naming the file, rather than at the first bind
        return cls(keys)

    def server(self, context: zmq.Context, sock: zmq.Socket) -> None:
        """Make ``sock`` (about to bind) a CURVE server behind the allow-list."""
        if self.keys is None:
            return
        if self.authenticator is None:
            self.authenticator = ThreadAuthenticator(context)
            self.authenticator.start()
            # only the run's own public keys: never CURVE_ALLOW_ANY
            self.authenticator.configure_curve(domain="*", location=str(self.keys.allow_list))
        public, secret = self.keys.pair()
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True

    def client(self, sock: zmq.Socket, server: str) -> None:
        """Make ``sock`` (about to connect to ``server``'s socket) a CURVE client."""
        if self.keys is None:
            return
        public, secret = self.keys.pair()
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_serverkey = self.keys.public_of(server)

    def close(self) -> None:
        if self.authenticator is not None:
            with contextlib.suppress(Exception):
                self.authenticator.stop()
            self.authenticator = None
