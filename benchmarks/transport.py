"""What the transport costs: ipc, tcp and tcp with CURVE, side by side in one run.

A child process (spawned) runs a ROUTER that echoes every message back; the main process's
DEALER sends one message of the given size and waits for its echo (round trip), then streams
messages for throughput (MB/s, each message echoed, a window of messages in flight). The
sockets are made exactly as the regions make them (``wire.channel.make_socket``) and CURVE is
set up by the regions' own ``wire.transport.Security`` with per-run keys (``zmq.auth``),
servers behind a ZAP allow-list. Variants are interleaved and their order rotates from round
to round, so machine noise hits all alike; the script prints medians over rounds and the
ratios to ipc.

Run: ``python -m benchmarks.transport`` (about 1 minute on 2 cores); ``--sizes 4096,1048576``
(bytes), ``--rounds``, ``--trips``, ``--json FILE``.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import zmq

from orchestrator.cli import ScriptParser
from wire.channel import make_socket
from wire.transport import Security, free_port, make_keys

VARIANTS = ("ipc", "tcp", "tcp+curve")


def echo_server(endpoint: str, key_dir: str | None, ready: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    """The child: echo every message until an empty frame arrives."""
    context = zmq.Context()
    security = Security.for_process(context, key_dir, "server")
    sock = make_socket(context, zmq.ROUTER)
    security.server(context, sock)
    sock.bind(endpoint)
    ready.set()
    while True:
        if not sock.poll(60_000):
            break
        frames = sock.recv_multipart(copy=False)
        if len(frames[-1].bytes) == 0:
            break
        sock.send_multipart(frames, copy=False)
    sock.close(linger=0)
    security.close()
    context.term()


class Variant:
    """One transport: its echo child and the client socket of this process."""

    def __init__(self, name: str, folder: Path):
        self.name = name
        key_dir = None
        if name == "ipc":
            endpoint = f"ipc://{folder}/echo.sock"
        else:
            endpoint = f"tcp://127.0.0.1:{free_port('127.0.0.1')}"
            if name == "tcp+curve":
                key_dir = str(folder / "keys")
                make_keys(Path(key_dir), ["server", "client"])
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        self.child = ctx.Process(target=echo_server, args=(endpoint, key_dir, ready), daemon=True)
        self.child.start()
        if not ready.wait(60):
            raise RuntimeError(f"{name}: the echo server did not start")
        self.context = zmq.Context()
        self.security = Security.for_process(self.context, key_dir, "client")
        self.sock = make_socket(self.context, zmq.DEALER, identity="client")
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.security.client(self.sock, "server")
        self.sock.connect(endpoint)

    def trip(self, payload: bytes) -> float:
        start = time.perf_counter()
        self.sock.send(payload, copy=len(payload) < 65536)
        if not self.sock.poll(10_000):
            raise RuntimeError(f"{self.name}: no echo within 10 s")
        self.sock.recv(copy=False)
        return time.perf_counter() - start

    def round_trip_us(self, payload: bytes, trips: int) -> float:
        for _ in range(20):
            self.trip(payload)
        return statistics.median(self.trip(payload) for _ in range(trips)) * 1e6

    def throughput_mb_s(self, payload: bytes, total_bytes: int, window: int = 8) -> float:
        count = max(8, total_bytes // len(payload))
        start, sent, received = time.perf_counter(), 0, 0
        while received < count:
            while sent < count and sent - received < window:
                self.sock.send(payload, copy=len(payload) < 65536)
                sent += 1
            if not self.sock.poll(10_000):
                raise RuntimeError(f"{self.name}: no echo within 10 s")
            self.sock.recv(copy=False)
            received += 1
        # every byte crosses the socket twice (there and back)
        return 2 * count * len(payload) / (time.perf_counter() - start) / 1e6

    def close(self) -> None:
        self.sock.send(b"")
        self.child.join(10)
        if self.child.is_alive():
            self.child.kill()
            self.child.join(5)
        self.sock.close(linger=0)
        self.security.close()
        self.context.term()


def measure(sizes: list[int], rounds: int, trips: int, total_mb: float) -> dict:
    """Per size and variant: medians over rounds of the round trip (µs) and of MB/s."""
    results: dict = {
        str(size): {v: {"round_trip_us": [], "mb_s": []} for v in VARIANTS} for size in sizes
    }
    with tempfile.TemporaryDirectory(prefix="ccdni-transport-") as folder:
        variants = [
            Variant(name, Path(folder) / name) for name in VARIANTS if _mkdir(Path(folder) / name)
        ]
        try:
            for r in range(rounds):
                order = variants[r % len(variants) :] + variants[: r % len(variants)]
                for size in sizes:
                    payload = bytes(size)
                    for variant in order:
                        cell = results[str(size)][variant.name]
                        cell["round_trip_us"].append(variant.round_trip_us(payload, trips))
                        cell["mb_s"].append(variant.throughput_mb_s(payload, int(total_mb * 1e6)))
        finally:
            for variant in variants:
                variant.close()
    return {
        size: {v: {k: statistics.median(x) for k, x in cell.items()} for v, cell in row.items()}
        for size, row in results.items()
    }


def _mkdir(path: Path) -> bool:
    path.mkdir(mode=0o700)
    return True


def report(figures: dict) -> str:
    lines = [
        "| size | variant | round trip (median, µs) | ÷ ipc | throughput (MB/s) | ÷ ipc |",
        "|---|---|---|---|---|---|",
    ]
    for size, row in figures.items():
        base = row["ipc"]
        for variant, cell in row.items():
            lines.append(
                f"| {int(size):,} B | {variant} | {cell['round_trip_us']:.0f} | "
                f"{cell['round_trip_us'] / base['round_trip_us']:.2f} | {cell['mb_s']:.0f} | "
                f"{cell['mb_s'] / base['mb_s']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ScriptParser(
        prog="python -m benchmarks.transport",
        description="Round trip and throughput of ipc, tcp and tcp+CURVE, side by side.",
    )
    parser.add_argument("--sizes", default="4096,1048576", help="message sizes in bytes")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--trips", type=int, default=500, help="timed round trips per round")
    parser.add_argument("--total-mb", type=float, default=64.0, help="MB streamed per throughput")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: comma-separated integers expected")
    if not sizes or min(sizes) < 1 or args.rounds < 1 or args.trips < 1 or args.total_mb <= 0:
        parser.error("--sizes, --rounds, --trips and --total-mb must be positive")
    figures = measure(sizes, args.rounds, args.trips, args.total_mb)
    sys.stdout.write(report(figures) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
