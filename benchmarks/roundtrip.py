#!/usr/bin/env python
"""Transport benchmarks: what does running every region as its own process cost?

1. Round trip area → cerebellum → area against a raw pyzmq echo on the same transport.
   Every variant's server is its own spawned process; the client is this process. Variants
   are interleaved round by round (order rotated each round) so machine noise hits all alike:

   a      raw      raw pyzmq DEALER/ROUTER echo of one bytes frame as long as the whole
                   encoded efference message
   b      frames   the protocol frames of an EFFERENCE echoed untouched (client: encode via
                   ``Endpoint.send``, decode via ``Endpoint.receive``)
   b'     codec    server decodes, checks the shape and encodes a PREDICTION (no synthesiser);
                   client is the real ``areas.process.ZmqLink``
   c'     core     minimal server: codec + ``CerebellumCore.predict``; client ``ZmqLink``
   c      shell    the real ``CerebellumShell`` launched through ``ccdni.base.region.
                   region_main`` (this process plays the orchestrator's control ROUTER);
                   client ``ZmqLink``

2. Time per epoch of target reaching, multi-process vs in-process, through
   ``orchestrator.runner.execute_run``; per-epoch ``train_seconds`` from ``metrics.jsonl``
   (median over the epochs after the first few), total wall from ``summary.json`` and the
   startup / shutdown phases from ``events.jsonl``.

Run from the repository root::

    python -m benchmarks.roundtrip               # defaults: ~1.5 min on 2 cores
    python -m benchmarks.roundtrip --transport tcp --hidden 256
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Only the standard library at module level: spawned children (ours and the orchestrator's
# regions, which re-import this file as __mp_main__) import what they need themselves.

VARIANTS = ("raw", "frames", "codec", "core", "shell")
LABELS = {
    "raw": "a  raw pyzmq echo (1 bytes frame)",
    "frames": "b  protocol frames, raw echo",
    "codec": "b' codec server, no synthesiser",
    "core": "c' minimal server + CerebellumCore",
    "shell": "c  real CerebellumShell",
}
INTERFACE = "area0"
READY_TIMEOUT = 120.0  # seconds for a server child to import torch and bind
TRIP_TIMEOUT = 10.0  # seconds for one round trip before the variant is declared dead


class NullLog:
    """Stands in for structlog where the wire code wants a logger."""

    def _ignore(self, *args, **kwargs) -> None:
        pass

    debug = info = warning = error = _ignore


def limit_threads() -> None:
    import torch

    torch.set_num_threads(1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint_for(transport: str, tmp: Path, name: str) -> str:
    if transport == "tcp":
        return f"tcp://127.0.0.1:{free_port()}"
    return f"ipc://{tmp / name}.sock"


def bench_spec(args: argparse.Namespace, tmp: Path):
    from ccdni.base.spec import load_spec

    return load_spec(
        hidden=args.hidden,
        batch_size=args.batch,
        seed=0,
        timing="wait",
        wait_timeout=TRIP_TIMEOUT,
        threads=1,
        runs_dir=str(tmp / "runs"),
        figures=False,
        progress=False,
    )


# ---------------------------------------------------------------------------------------------
# Servers (each runs in its own spawned process)
# ---------------------------------------------------------------------------------------------
def serve(variant: str, endpoint: str, spec_dict: dict, ready, stop, parent_pid: int) -> None:
    """Echo / codec / core server for one variant; exits on ``stop`` or when orphaned."""
    limit_threads()
    import zmq

    from wire.channel import Counters, Endpoint, make_socket
    from wire.protocol import PredictionHeader, ProtocolError, expect_shape, step_header

    context = zmq.Context()
    if variant in ("raw", "frames"):
        sock = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
    else:
        sock = make_socket(context, zmq.ROUTER)
    sock.bind(endpoint)
    core = None
    state_size = None
    if variant in ("codec", "core"):
        from ccdni.base.spec import RunSpec

        spec = RunSpec(**spec_dict)
        state_size = spec.state_size
        link = Endpoint(sock, NullLog(), Counters(), routed=True)
        if variant == "core":
            from cerebellum.synthesiser import CerebellumCore

            core = CerebellumCore(spec, list(spec.interfaces))
    ready.set()
    try:
        while True:
            if not sock.poll(100, zmq.POLLIN):
                if stop.is_set() or os.getppid() != parent_pid:
                    return
                continue
            if variant in ("raw", "frames"):
                frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                continue
            received = link.receive_ready()
            if received is None:
                continue
            sender, message = received
            try:
                tensor = expect_shape(message, (None, state_size))
            except ProtocolError as exc:
                link.reject(str(exc), sender)
                continue
            header = message.header
            if core is not None:
                tensor = core.predict(header.interface, header.ids, tensor)
            reply = step_header(PredictionHeader, header.run, header.interface, header.ids)
            link.send(reply, [tensor], to=sender)
    finally:
        sock.close(linger=0)
        context.term()


# ---------------------------------------------------------------------------------------------
# Clients (in this process)
# ---------------------------------------------------------------------------------------------
class AreaStub:
    """What ``ZmqLink`` needs of an ``AreaShell``: spec, name, run, endpoints, connect, ..."""

    def __init__(self, spec, endpoints: dict[str, str], context, run_path: Path):
        from ccdni.base.rundir import RunDirectory
        from wire.channel import Counters

        self.spec = spec
        self.name = INTERFACE
        self.run = RunDirectory(run_path)
        self.endpoints = endpoints
        self.context = context
        self.log = NullLog()
        self.counters = Counters()
        self.sockets = []

    def connect(self, kind: int, endpoint: str, identity: str | None = None):
        import zmq

        from wire.channel import Endpoint, make_socket

        sock = make_socket(self.context, kind, identity=identity)
        sock.connect(endpoint)
        self.sockets.append(sock)
        return Endpoint(sock, self.log, self.counters, routed=kind == zmq.ROUTER)

    def check_parent(self) -> None:
        pass

    def drain_control(self, timeout: float = 0.0) -> None:
        pass

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)


def make_link(link_cls, stub):
    """``ZmqLink(stub)``, passing an empty set for ``lesioned`` where the link takes one."""
    import inspect

    params = list(inspect.signature(link_cls).parameters.values())[1:]
    extra = {p.name: set() for p in params if p.default is inspect.Parameter.empty}
    return link_cls(stub, **extra)


class Client:
    """One variant's client side: ``trip(i)`` does one round trip and returns seconds."""

    def __init__(self, variant: str, endpoint: str, spec, context, tmp: Path, state):
        import zmq

        from areas.cortex import Efference
        from areas.process import ZmqLink
        from wire.channel import Counters, Endpoint, make_socket
        from wire.ids import StepId
        from wire.protocol import EfferenceHeader, encode, step_header

        self.variant = variant
        self.state = state
        self.sockets = []
        self.stub = None
        self.round = 0
        self.Efference, self.StepId = Efference, StepId
        self.EfferenceHeader, self.step_header = EfferenceHeader, step_header
        frames = encode(step_header(EfferenceHeader, "bench", INTERFACE, StepId(0, 0, 0)), [state])
        self.message_bytes = sum(memoryview(f).nbytes for f in frames)
        if variant == "raw":
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            self.sockets.append(sock)
            self.sock = sock
            self.payload = os.urandom(self.message_bytes)
            self.trip = self._raw
        elif variant == "frames":
            sock = make_socket(context, zmq.DEALER, identity=INTERFACE)
            sock.connect(endpoint)
            self.sockets.append(sock)
            self.endpoint = Endpoint(sock, NullLog(), Counters(), routed=False)
            self.trip = self._frames
        else:
            endpoints = {"cerebellum": endpoint, "olive": f"ipc://{tmp / 'no-olive'}.sock"}
            self.stub = AreaStub(spec, endpoints, context, tmp / "shell")  # the shell's run name
            self.link = make_link(ZmqLink, self.stub)
            self.trip = self._link

    def _raw(self, i: int) -> float:
        import zmq

        t0 = time.perf_counter()
        self.sock.send_multipart([self.payload], flags=zmq.NOBLOCK, copy=False)
        if not self.sock.poll(int(TRIP_TIMEOUT * 1000), zmq.POLLIN):
            raise TimeoutError("raw echo server did not answer")
        reply = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        elapsed = time.perf_counter() - t0
        if len(reply) != 1 or len(reply[0]) != self.message_bytes:
            raise RuntimeError("raw echo returned the wrong bytes")
        return elapsed

    def _frames(self, i: int) -> float:
        ids = self.StepId(self.round, i, 0)
        t0 = time.perf_counter()
        header = self.step_header(self.EfferenceHeader, "bench", INTERFACE, ids)
        self.endpoint.send(header, [self.state])
        received = self.endpoint.receive(TRIP_TIMEOUT)
        elapsed = time.perf_counter() - t0
        if received is None:
            raise TimeoutError("frame echo server did not answer")
        if received[1].header.ids != ids or received[1].tensors[0].shape != self.state.shape:
            raise RuntimeError("frame echo returned the wrong message")
        return elapsed

    def _link(self, i: int) -> float:
        efference = self.Efference(self.StepId(self.round, i, 0), self.state)
        t0 = time.perf_counter()
        prediction = self.link.predict(efference)
        elapsed = time.perf_counter() - t0
        if prediction is None:
            raise TimeoutError(f"{self.variant}: no prediction within {TRIP_TIMEOUT:g} s")
        return elapsed

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)
        if self.stub is not None:
            self.stub.close()


# ---------------------------------------------------------------------------------------------
# Part 1: round trips
# ---------------------------------------------------------------------------------------------
class Servers:
    """Spawns, waits for, and stops every variant's server process."""

    def __init__(self, args: argparse.Namespace, spec, tmp: Path, context):
        self.args = args
        self.spec = spec
        self.tmp = tmp
        self.context = context
        self.mp = multiprocessing.get_context("spawn")
        self.stop = self.mp.Event()
        self.processes: dict[str, multiprocessing.process.BaseProcess] = {}
        self.ready: dict[str, object] = {}
        self.endpoints: dict[str, str] = {}
        self.control = None
        self.shell_error: str | None = None

    def start(self, variants: list[str]) -> None:
        from ccdni.base.region import region_main
        from ccdni.base.rundir import RunDirectory

        for variant in variants:
            self.endpoints[variant] = endpoint_for(self.args.transport, self.tmp, variant)
            if variant == "shell":
                import zmq

                from wire.channel import Counters, Endpoint, make_socket

                control_ep = f"ipc://{self.tmp / 'orchestrator'}.sock"
                sock = make_socket(self.context, zmq.ROUTER)
                sock.bind(control_ep)
                self.control = Endpoint(sock, NullLog(), Counters(), routed=True)
                run = RunDirectory.create(self.spec.replace(run_name="shell"))
                endpoints = {
                    "orchestrator": control_ep,
                    "cerebellum": self.endpoints[variant],
                    "olive": f"ipc://{self.tmp / 'olive'}.sock",
                }
                process = self.mp.Process(
                    target=region_main,
                    args=(
                        "cerebellum",
                        "cerebellum",
                        self.spec.to_dict(),
                        str(run.path),
                        endpoints,
                        os.getpid(),
                    ),
                    name="bench-cerebellum-shell",
                )
            else:
                self.ready[variant] = self.mp.Event()
                process = self.mp.Process(
                    target=serve,
                    args=(
                        variant,
                        self.endpoints[variant],
                        self.spec.to_dict(),
                        self.ready[variant],
                        self.stop,
                        os.getpid(),
                    ),
                    name=f"bench-{variant}",
                )
            process.start()
            self.processes[variant] = process

    def wait_ready(self) -> list[str]:
        """The variants whose server came up (a shell that fails is reported, not fatal)."""
        deadline = time.monotonic() + READY_TIMEOUT
        up = []
        for variant, process in self.processes.items():
            while True:
                if variant == "shell":
                    received = self.control.receive(0.1)
                    ok = received is not None and received[0] == "cerebellum"
                else:
                    ok = self.ready[variant].wait(0.1)
                if ok:
                    up.append(variant)
                    break
                if not process.is_alive() or time.monotonic() > deadline:
                    reason = f"exit code {process.exitcode}" if not process.is_alive() else "slow"
                    if variant != "shell":
                        raise RuntimeError(f"server {variant} did not start: {reason}")
                    self.shell_error = f"CerebellumShell did not start ({reason})"
                    break
        return up

    def drain_control(self) -> None:
        if self.control is not None:
            while self.control.receive(0.0) is not None:
                pass

    def close(self) -> None:
        self.stop.set()
        if self.control is not None and "shell" in self.processes:
            from wire.protocol import Command, control

            self.drain_control()
            self.control.send(control(Command.STOP, "orchestrator"), to="cerebellum")
        for process in self.processes.values():
            process.join(timeout=10)
        for process in self.processes.values():
            if process.is_alive():
                process.terminate()
                process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join(timeout=2)
        if self.control is not None:
            self.control.sock.close(linger=0)
            self.control = None


class ComponentCosts:
    """Seconds per call of the pieces a round trip pays, in this process, no transport.

    Measured once per round, between the variants, so the machine's noise hits it too.
    """

    def __init__(self, spec, state):
        from cerebellum.synthesiser import CerebellumCore
        from wire.ids import StepId
        from wire.protocol import EfferenceHeader, decode, encode, expect_shape, step_header

        header = step_header(EfferenceHeader, "bench", INTERFACE, StepId(0, 0, 0))
        frames = [bytes(memoryview(f)) for f in encode(header, [state])]
        core = CerebellumCore(spec, [INTERFACE])
        counter = iter(range(10**9))

        def predict() -> None:
            core.predict(INTERFACE, StepId(0, next(counter), 0), state)

        self.pieces = {
            "encode": lambda: encode(header, [state]),
            "decode": lambda: expect_shape(decode(frames), (None, spec.state_size)),
            "predict": predict,
        }
        self.samples: dict[str, list[float]] = {name: [] for name in self.pieces}

    def measure(self, calls: int) -> None:
        for name, fn in self.pieces.items():
            fn()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            self.samples[name].append((time.perf_counter() - t0) / calls)

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(v) for name, v in self.samples.items()}


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def part_roundtrip(args: argparse.Namespace, tmp: Path) -> dict:
    limit_threads()
    import torch
    import zmq

    spec = bench_spec(args, tmp)
    context = zmq.Context()
    servers = Servers(args, spec, tmp, context)
    clients: dict[str, Client] = {}
    results: dict[str, dict] = {}
    wanted = [v for v in VARIANTS if v != "shell" or not args.no_shell]
    print(
        f"\n== 1. round trip: {args.transport}, efference ({args.batch}, {2 * args.hidden}) "
        f"float32 = {args.batch * 2 * args.hidden * 4} B tensor"
    )
    try:
        t0 = time.perf_counter()
        servers.start(wanted)
        up = servers.wait_ready()
        print(f"servers up in {time.perf_counter() - t0:.1f} s: {', '.join(up)}")
        if servers.shell_error:
            print(f"  NOTE: {servers.shell_error}; the headline uses c' (minimal server)")
        state = torch.randn(args.batch, 2 * args.hidden, generator=torch.Generator().manual_seed(0))
        components = ComponentCosts(spec, state)
        for variant in up:
            clients[variant] = Client(
                variant, servers.endpoints[variant], spec, context, tmp, state
            )
        print(
            f"message: {clients[up[0]].message_bytes} B encoded (preamble + msgpack header + "
            f"tensor); raw echo sends one frame of that size"
        )
        per_round: dict[str, list[float]] = {v: [] for v in up}
        samples: dict[str, list[float]] = {v: [] for v in up}
        for r in range(args.rounds):
            order = up[r % len(up) :] + up[: r % len(up)]
            for variant in order:
                client = clients[variant]
                client.round = r
                for i in range(args.warmup):
                    client.trip(i)
                times = [client.trip(args.warmup + i) for i in range(args.trips)]
                per_round[variant].append(statistics.median(times))
                samples[variant].extend(times)
                servers.drain_control()
            components.measure(calls=500)
            print(
                f"  round {r + 1}/{args.rounds} "
                + " ".join(f"{v}={per_round[v][-1] * 1e6:.0f}" for v in up)
                + " µs"
            )
        for variant in up:
            pooled = sorted(samples[variant])
            results[variant] = {
                "median": statistics.median(per_round[variant]),
                "p10": percentile(pooled, 0.10),
                "p90": percentile(pooled, 0.90),
                "rounds": per_round[variant],
            }
    finally:
        for client in clients.values():
            client.close()
        servers.close()
        context.term()
    rejected = sum(c.stub.counters.rejected for c in clients.values() if c.stub is not None)
    late = sum(c.link.late for c in clients.values() if c.stub is not None)
    if rejected or late:
        print(f"  NOTE: clients rejected {rejected} messages and saw {late} late answers")
    costs = components.medians()
    base = results["raw"]["median"]
    print(f"\n{'variant':38} {'median µs':>10} {'p10':>7} {'p90':>7} {'× raw':>7}")
    for variant, res in results.items():
        print(
            f"{LABELS[variant]:38} {res['median'] * 1e6:10.1f} {res['p10'] * 1e6:7.1f} "
            f"{res['p90'] * 1e6:7.1f} {res['median'] / base:7.2f}"
        )
    real = "shell" if "shell" in results else "core"
    print(
        f"(median of {args.rounds} per-round medians of {args.trips} trips after "
        f"{args.warmup} warm-up; p10/p90 over all {args.rounds * args.trips} trips)"
    )
    print(f"c = {'real CerebellumShell via region_main' if real == 'shell' else 'minimal server'}")
    print(
        f"c/a  = {results[real]['median'] / base:.2f}×   "
        f"b/a = {results['frames']['median'] / base:.2f}×"
    )
    if "core" in results and real == "shell":
        print(
            f"c'/a = {results['core']['median'] / base:.2f}×   "
            f"b'/a = {results['codec']['median'] / base:.2f}×"
        )
    enc, dec, pred = (costs[k] * 1e6 for k in ("encode", "decode", "predict"))
    print(
        f"in-process cost per call (hot loop, no transport; median over rounds): encode "
        f"{enc:.0f} µs, decode+expect_shape {dec:.0f} µs, CerebellumCore.predict {pred:.0f} µs"
    )
    expected = {"frames": enc + dec, "codec": 2 * (enc + dec), real: 2 * (enc + dec) + pred}
    print(
        "  extra over a, measured vs codec/predict CPU alone: "
        + ", ".join(
            f"{v}: {(results[v]['median'] - base) * 1e6:.0f} vs {cpu:.0f} µs"
            for v, cpu in expected.items()
            if v in results
        )
    )
    return {"results": results, "real": real, "costs": costs}


# ---------------------------------------------------------------------------------------------
# Part 2: time per epoch, processes vs in-process
# ---------------------------------------------------------------------------------------------
def one_run(args: argparse.Namespace, tmp: Path, inprocess: bool, timing: str, epochs: int):
    from ccdni.base.spec import load_spec
    from orchestrator.runner import execute_run

    spec = load_spec(
        epochs=epochs,
        seed=0,
        model=args.model,
        truncation=args.truncation,
        figures=False,
        progress=False,
        runs_dir=str(tmp / "runs"),
        timing=timing,
        inprocess=inprocess,
    )
    outcome = execute_run(spec, console=False)
    run = outcome.run
    try:
        if outcome.summary["status"] != "completed":
            raise RuntimeError(
                f"run {run.path.name} {outcome.summary['status']}: {outcome.summary['reason']}"
            )
        area = sorted(
            (
                m
                for m in run.metrics()
                if m.get("region") in spec.interfaces and "train_seconds" in m
            ),
            key=lambda m: m["epoch"],
        )
        skip = args.skip_epochs if len(area) > args.skip_epochs else 0
        kept = area[skip:]
        events = run.events()
        times = {}
        for e in events:
            times.setdefault(e["event"], e["time"])
        record = {
            "epoch": statistics.median(m["train_seconds"] for m in kept),
            "wait": statistics.median(m.get("wait_seconds", 0.0) for m in kept),
            "predictions": statistics.median(m.get("predictions", 0) for m in kept),
            "train_total": sum(m["train_seconds"] for m in area),
            "wall": outcome.summary["wall_seconds"],
            "startup": None,
            "shutdown": None,
        }
        if not inprocess and {"spawn", "all_ready", "done", "run_end"} <= times.keys():
            record["startup"] = times["all_ready"] - times["spawn"]
            record["shutdown"] = times["run_end"] - times["done"]
        return record
    finally:
        shutil.rmtree(run.path, ignore_errors=True)


def medians(records: list[dict]) -> dict:
    """Field-wise medians (None where a field is missing from any record)."""
    out = {}
    for field in records[0]:
        values = [r[field] for r in records]
        out[field] = None if None in values else statistics.median(values)
    return out


def part_epochs(args: argparse.Namespace, tmp: Path) -> dict:
    timings = [t.strip() for t in args.timings.split(",") if t.strip()]
    print(
        f"\n== 2. time per epoch: target reaching, {args.model}, T={args.truncation}, "
        f"{args.epochs} epochs, timings {', '.join(timings)}, {args.repeats} repeats"
    )
    limit_threads()
    one_run(args, tmp, True, "wait", 2)  # warm-up: lazy imports, allocator; not reported
    records: dict[tuple[str, str], list[dict]] = {}
    for rep in range(args.repeats):
        for timing in timings:
            for inprocess in (True, False):
                mode = "inprocess" if inprocess else "processes"
                record = one_run(args, tmp, inprocess, timing, args.epochs)
                records.setdefault((timing, mode), []).append(record)
                print(
                    f"  repeat {rep + 1} {timing:8} {mode:9}: "
                    f"{record['epoch'] * 1e3:7.2f} ms/epoch, wall {record['wall']:6.2f} s"
                )
    med = {key: medians(recs) for key, recs in records.items()}
    print(
        f"\n{'timing':8} {'mode':9} {'ms/epoch':>9} {'wait ms':>8} {'µs/pred':>8} "
        f"{'wall s':>7} {'startup s':>9} {'shutdown s':>10}"
    )
    for (timing, mode), m in med.items():
        per_pred = m["wait"] / m["predictions"] * 1e6 if m["predictions"] else float("nan")
        startup = f"{m['startup']:9.2f}" if m["startup"] is not None else f"{'-':>9}"
        shutdown = f"{m['shutdown']:10.2f}" if m["shutdown"] is not None else f"{'-':>10}"
        print(
            f"{timing:8} {mode:9} {m['epoch'] * 1e3:9.2f} {m['wait'] * 1e3:8.2f} "
            f"{per_pred:8.0f} {m['wall']:7.2f} {startup} {shutdown}"
        )
    print(
        f"(medians over {args.repeats} repeats; ms/epoch = median train_seconds of epochs "
        f"{args.skip_epochs}..{args.epochs - 1}; wait = time in link.predict per epoch; µs/pred = "
        "wait / predictions; startup = spawn → all ready, shutdown = done → run end)"
    )
    ratios = {}
    for timing in timings:
        inproc, procs = med[(timing, "inprocess")], med[(timing, "processes")]
        ratios[timing] = procs["epoch"] / inproc["epoch"]
        phases = (
            f", of which startup {procs['startup']:.2f} s and shutdown {procs['shutdown']:.2f} s"
            if procs["startup"] is not None
            else ""
        )
        print(
            f"{timing}: processes / in-process per epoch = {ratios[timing]:.2f}×; "
            f"extra wall = {procs['wall'] - inproc['wall']:.2f} s{phases}"
        )
    return {"ratios": ratios, "medians": med}


# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Round trip area→cerebellum→area vs raw pyzmq echo, and time per epoch "
        "multi-process vs in-process (target reaching). Run from the repository root.",
    )
    parser.add_argument("--transport", choices=("ipc", "tcp"), default="ipc")
    parser.add_argument("--batch", type=int, default=50, help="B of the efference (B, 2H)")
    parser.add_argument("--hidden", type=int, default=10, help="H of the efference (B, 2H)")
    parser.add_argument("--trips", type=int, default=2000, help="timed round trips per round")
    parser.add_argument("--warmup", type=int, default=200, help="untimed trips before each")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument(
        "--no-shell", action="store_true", help="skip the real CerebellumShell variant"
    )
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--model", default="cc-dni", choices=("cc-dni", "scc-dni"))
    parser.add_argument("--truncation", type=int, default=2)
    parser.add_argument(
        "--timings", default="wait,lockstep", help="comma-separated: wait, lockstep, stale"
    )
    parser.add_argument("--repeats", type=int, default=2, help="alternated runs per mode")
    parser.add_argument("--skip-epochs", type=int, default=5, help="startup epochs left out")
    parser.add_argument("--only", choices=("roundtrip", "epochs"), help="run one part only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[key] = "1"  # inherited by every spawned child
    tmp = Path(tempfile.mkdtemp(prefix="ccdni-bench-"))
    started = time.perf_counter()
    print(
        f"ccdni transport benchmark · {os.cpu_count()} CPUs · python {sys.version.split()[0]} · "
        f"pid {os.getpid()}"
    )
    try:
        rt = part_roundtrip(args, tmp) if args.only != "epochs" else None
        ep = part_epochs(args, tmp) if args.only != "roundtrip" else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n== headline")
    if rt is not None:
        res, real = rt["results"], rt["real"]
        name = "area→cerebellum→area"
        if real != "shell":
            name = "area→cerebellum (minimal server)→area"
        print(
            f"round trip ({args.transport}, {args.batch}×{2 * args.hidden} f32): {name} / raw "
            f"pyzmq echo = {res[real]['median'] / res['raw']['median']:.2f}×  "
            f"({res[real]['median'] * 1e6:.0f} µs vs {res['raw']['median'] * 1e6:.0f} µs)"
        )
    if ep is not None:
        parts = ", ".join(f"{ratio:.2f}× ({timing})" for timing, ratio in ep["ratios"].items())
        print(f"time per epoch: processes / in-process = {parts}")
        startups = [
            (timing, ep["medians"][(timing, "processes")]["startup"]) for timing in ep["ratios"]
        ]
        extra = [
            ep["medians"][(t, "processes")]["wall"] - ep["medians"][(t, "inprocess")]["wall"]
            for t in ep["ratios"]
        ]
        print(
            "startup (spawn → all ready): "
            + ", ".join(f"{s:.1f} s ({t})" for t, s in startups if s is not None)
            + f"; extra wall per run vs in-process: {', '.join(f'{x:.1f} s' for x in extra)}"
        )
    leftovers = multiprocessing.active_children()
    print(
        f"total {time.perf_counter() - started:.0f} s; leftover child processes: "
        f"{[p.pid for p in leftovers] or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
