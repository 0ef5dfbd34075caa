"""Sockets with the project's rules: linger 0, bounded queues, never a blocking call.

Every receive goes through a poll with a timeout, every send is non-blocking (a full queue
towards a dead peer drops the message and counts it), and invalid messages are logged with
their reason and dropped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zmq
from zmq.backend import Socket as _Backend

if TYPE_CHECKING:
    import torch

from wire.protocol import Header, Message, ProtocolError, decode, encode

HIGH_WATER_MARK = 1000
# A connecting socket whose peer has not bound yet retries after RECONNECT_IVL ms, doubling up
# to RECONNECT_IVL_MAX. libzmq's default (100 ms, constant) lost every target of a short run:
# an area forked from the template connects before the olive binds, its targets wait in the
# pipe for the retry, and the run ended (the socket closed, linger 0) before it came.
RECONNECT_IVL = 5
RECONNECT_IVL_MAX = 100  # never slower than libzmq's default to reconnect to a revived peer
# pyzmq's own (Cython) send / recv / get, called directly: its Python layer (send_multipart's
# type checks, send's routing and group handling) costs more than the call itself per frame
_SEND, _RECV, _GET = _Backend.send, _Backend.recv, _Backend.get
ZERO_COPY_THRESHOLD = 64 * 1024  # bytes; below this pyzmq copies frames even with copy=False
# the flags as plain ints: zmq's are enum.Flag members, whose | and & run in Python
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_RCVMORE, _EVENTS, _POLLIN = int(zmq.RCVMORE), int(zmq.EVENTS), int(zmq.POLLIN)


def make_socket(
    context: zmq.Context, kind: int, identity: str | None = None, router_mandatory: bool = True
) -> zmq.Socket:
    """A socket with linger 0, bounded high-water marks, tcp keepalive and quick reconnects."""
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX)
    sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
    sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
    # No ZMTP heartbeats: with them libzmq 4.3.5 aborts the whole process ("Assertion failed:
    # !_io_error (src/stream_engine_base.cpp:310)") when a peer disconnects while this side's
    # input is stopped at its high-water mark — the heartbeat timer then writes on a broken
    # connection (a flooding region that exits crashed the orchestrator). Liveness is the
    # regions' own heartbeats' job; a tcp peer whose machine vanished is dropped by keepalive.
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 10)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 2)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity.encode())
    if kind == zmq.ROUTER and router_mandatory:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a vanished peer is an error
    return sock


@dataclass
class Counters:
    sent: int = 0
    received: int = 0
    rejected: int = 0
    dropped: int = 0


class Endpoint:
    """A socket plus the codec: ``send`` never blocks, ``receive`` always has a timeout."""

    def __init__(
        self, sock: zmq.Socket, log: Any, counters: Counters, routed: bool, run: str | None = None
    ):
        self.sock = sock
        self.log = log
        self.counters = counters
        self.routed = routed  # ROUTER: frames carry the peer identity first
        self.run = run  # step messages of any other run are rejected (None: not checked)
        self._header_frames = 3 if routed else 2  # identity, preamble, header: bytes
        self._poller = zmq.Poller()  # made once: Socket.poll builds a Poller per call
        self._poller.register(sock, zmq.POLLIN)

    def send(
        self, header: Header, tensors: Sequence[torch.Tensor] = (), to: str | None = None
    ) -> bool:
        """Send without blocking; False (and counted) when the peer cannot take it."""
        if self.routed and to is None:
            raise ValueError("a ROUTER send needs a destination identity")
        return self._send_frames(header, encode(header, tensors), len(tensors), to)

    def send_each(
        self, header: Header, tensors: Sequence[torch.Tensor], destinations: Sequence[str]
    ) -> list[bool]:
        """A ROUTER's send of one message to several peers, encoded once."""
        if not self.routed:
            raise ValueError("only a ROUTER sends to several peers")
        frames = encode(header, tensors)
        return [self._send_frames(header, frames, len(tensors), to) for to in destinations]

    def _send_frames(self, header: Header, frames: list[Any], n_tensors: int, to: str | None):
        # zero-copy only pays off for large buffers: pyzmq copies small frames anyway
        copy = True
        for buffer in frames[len(frames) - n_tensors :] if n_tensors else ():
            if buffer.nbytes > ZERO_COPY_THRESHOLD:
                copy = False
        sock = self.sock
        try:  # as send_multipart does, without its Python layer
            if self.routed:
                _SEND(sock, to.encode(), _NOBLOCK_MORE, True, False)  # type: ignore[union-attr]
            last = len(frames) - 1
            for i in range(last):
                _SEND(sock, frames[i], _NOBLOCK_MORE, copy, False)
            _SEND(sock, frames[last], _NOBLOCK, copy, False)
        except (zmq.Again, zmq.ZMQError) as exc:
            self.counters.dropped += 1
            self.log.debug("send_dropped", kind=header.kind.name, to=to, reason=str(exc))
            return False
        self.counters.sent += 1
        return True

    def receive(self, timeout: float) -> tuple[str | None, Message] | None:
        """The next valid message within ``timeout`` seconds, or None.

        Invalid messages are logged and dropped; the wait continues until the deadline.
        """
        deadline = time.monotonic() + timeout
        poll = self._poller.poll
        while True:
            remaining = deadline - time.monotonic()
            if not poll(int(remaining * 1000) if remaining > 0 else 0):
                return None
            result = self.receive_ready()
            if result is not None:
                return result
            if time.monotonic() >= deadline:
                return None

    def receive_ready(self) -> tuple[str | None, Message] | None:
        """Decode one message already waiting (after a poll said so); None if invalid.

        The identity, preamble and header frames arrive as bytes; tensor frames arrive as
        ``zmq.Frame`` objects (``copy=False``), which :func:`wire.protocol.decode` turns into
        tensors in place — no copy of the payload after the one into the frame."""
        sock = self.sock
        try:
            frames: list[Any] = [_RECV(sock, _NOBLOCK, True, False)]
        except zmq.Again:
            return None
        as_bytes = self._header_frames
        while _GET(sock, _RCVMORE):  # the rest of a multipart message is already here
            frames.append(_RECV(sock, _NOBLOCK, len(frames) < as_bytes, False))
        self.counters.received += 1
        sender = None
        if self.routed:
            sender = frames[0].decode(errors="replace")
            frames = frames[1:]
        try:
            message = decode(frames)
        except ProtocolError as exc:
            self.reject(str(exc), sender)
            return None
        except Exception as exc:  # a decoder bug must not kill the region either
            self.reject(f"undecodable message ({type(exc).__name__}: {exc})", sender)
            return None
        run = getattr(message.header, "run", None)
        if self.run is not None and run is not None and run != self.run:
            self.reject(f"{message.kind.name} from another run ({run!r})", sender)
            return None
        return sender, message

    def waiting(self) -> bool:
        """Whether a message is waiting (ZMQ_EVENTS: one getsockopt, no Poller)."""
        events: Any = _GET(self.sock, _EVENTS)
        return bool(events & _POLLIN)

    def reject(self, reason: str, sender: str | None = None) -> None:
        self.counters.rejected += 1
        self.log.warning("message_rejected", reason=reason, sender=sender)
