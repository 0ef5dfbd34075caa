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
   c+     staged   the same shell with every stage of its answer path timed (wall and CPU):
                   :class:`StagedCerebellumShell`; not part of the target

   The target ratio is c ÷ (a + encode + decode + predict, each timed in a hot loop here);
   a stage-timed client (encode, send, wait, receive, decode), the stage-timed shell and the
   shell's own timers (work per answer) say where a trip's time goes, and the same pieces
   timed once per idle wait (as a region runs them: once per message, after sleeping in a
   poll) say what that work costs when it is not in a hot loop.

2. Time per epoch, multi-process vs in-process, through ``orchestrator.runner.execute_run``
   (per-epoch ``train_seconds`` from ``metrics.jsonl``, median over the kept epochs), for
   target reaching and for seqMNIST at the paper's sizes (LSTM 30, cerebellum 300, batch 50,
   T=5, 10 000 training images: 200 batches), in-process and processes alternating.

3. Start-up of the default run, each a fresh ``launch.py run`` process: regions forked from
   the region template (cold: the Supervisor starts it; early: started first thing, before
   the CLI's own imports) and regions spawned from fresh interpreters.

Every figure goes to ``--json FILE`` too. Run from the repository root::

    python -m benchmarks.roundtrip               # everything: ~10 min on 2 loaded cores
    python -m benchmarks.roundtrip --only roundtrip --transport tcp --hidden 256
    python -m benchmarks.roundtrip --only epochs --task seqmnist --data-dir ../shared/data
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

from orchestrator.cli import ScriptParser, add_data_arguments

ROOT = Path(__file__).resolve().parent.parent

# Only the standard library at module level: spawned children (ours and the orchestrator's
# regions, which re-import this file as __mp_main__) import what they need themselves.

VARIANTS = ("raw", "frames", "codec", "core", "shell", "staged")
SHELLS = ("shell", "staged")  # the variants served by a CerebellumShell through region_main
LABELS = {
    "raw": "a  raw pyzmq echo (1 bytes frame)",
    "frames": "b  protocol frames, raw echo",
    "codec": "b' codec server, no synthesiser",
    "core": "c' minimal server + CerebellumCore",
    "shell": "c  real CerebellumShell",
    "staged": "c+ the shell, stage-timed",
}
SHELL_ROLES = {"shell": "cerebellum", "staged": "benchmarks.roundtrip:StagedCerebellumShell"}
INTERFACE = "area0"
IDLE_WAIT = 300e-6  # seconds: the idle wait before each call of the pieces' once-per-wake loop
READY_TIMEOUT = 120.0  # seconds for a server child to import torch and bind
TRIP_TIMEOUT = 10.0  # seconds for one round trip before the variant is declared dead


class NullLog:
    """Stands in for structlog where the wire code wants a logger."""

    def _ignore(self, *args, **kwargs) -> None:
        pass

    debug = info = warning = error = _ignore


STAGES = ("receive", "checks", "predict", "encode", "send", "rest")


def _staged_shell_class():
    """:class:`cerebellum.process.CerebellumShell` with its answer path timed stage by stage,
    built on first use (torch and the shells are imported in the child only)."""
    import wire.channel
    from cerebellum.process import BURST, CerebellumShell

    wall, cpu = time.perf_counter, time.thread_time

    class Staged(CerebellumShell):
        """The real shell; each answer's stages are added up, as wall and as this thread's
        CPU time, and sent with every epoch record: receive (the frames and their decode and
        validation), checks (``handle``: interface, shape, queueing), predict, encode, send
        (to the area, and the olive's copy when it has one) and rest (the rest of the burst:
        ``waiting``, ``ready``, the reply's header, the timers, bookkeeping). Each timestamp
        pair costs ~1 µs (``thread_time`` is a system call), which the total includes."""

        stage_wall: dict[str, float]
        stage_cpu: dict[str, float]

        def serve_burst(self) -> None:
            if not hasattr(self, "stage_wall"):
                self.stage_wall = dict.fromkeys(STAGES, 0.0)
                self.stage_cpu = dict.fromkeys(STAGES, 0.0)
                self.in_burst = False
                self.core.predict = self._timed("predict", self.core.predict)
                wire.channel.encode = self._timed("encode", wire.channel.encode)
                self.router._send_frames = self._timed("send", self.router._send_frames)
            timed = ("predict", "encode", "send")
            before = [sum(self.stage_wall[k] for k in timed), sum(self.stage_cpu[k] for k in timed)]
            w_start, c_start = wall(), cpu()
            self.in_burst = True
            router = self.router
            outer_wall = outer_cpu = 0.0
            for _ in range(BURST):
                w0, c0 = wall(), cpu()
                received = router.receive_ready()
                w1, c1 = wall(), cpu()
                if received is not None:
                    self.handle(*received)
                w2, c2 = wall(), cpu()
                self._add("receive", w1 - w0, c1 - c0)
                self._add("checks", w2 - w1, c2 - c1)
                outer_wall += w2 - w0
                outer_cpu += c2 - c0
                if not router.waiting():
                    break
            self.end_burst()
            self.in_burst = False
            inner_wall = sum(self.stage_wall[k] for k in timed) - before[0]
            inner_cpu = sum(self.stage_cpu[k] for k in timed) - before[1]
            self._add(
                "rest",
                wall() - w_start - outer_wall - inner_wall,
                cpu() - c_start - outer_cpu - inner_cpu,
            )

        def _add(self, stage: str, wall_s: float, cpu_s: float) -> None:
            self.stage_wall[stage] += wall_s
            self.stage_cpu[stage] += cpu_s

        def _timed(self, stage: str, fn):
            """``fn``, its time added to ``stage`` when it runs inside a burst."""

            def timed(*args, **kwargs):
                if not self.in_burst:
                    return fn(*args, **kwargs)
                w0, c0 = wall(), cpu()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self._add(stage, wall() - w0, cpu() - c0)

            return timed

        def metric(self, values: dict) -> None:
            if "busy_seconds" in values and hasattr(self, "stage_wall"):
                values = {
                    **values,
                    "stage_wall": dict(self.stage_wall),
                    "stage_cpu": dict(self.stage_cpu),
                }
            super().metric(values)

    return Staged


_STAGED: list[type] = []


def __getattr__(name: str):
    """``StagedCerebellumShell``, the role ``region_main`` is given for the staged variant."""
    if name == "StagedCerebellumShell":
        if not _STAGED:
            _STAGED.append(_staged_shell_class())
        return _STAGED[0]
    raise AttributeError(name)


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
    poller = zmq.Poller()  # made once: Socket.poll would build one per call
    poller.register(sock, zmq.POLLIN)
    ready.set()
    try:
        while True:
            if not poller.poll(100):
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
            self.poller = zmq.Poller()
            self.poller.register(sock, zmq.POLLIN)
            self.trip = self._raw
        elif variant == "frames":
            sock = make_socket(context, zmq.DEALER, identity=INTERFACE)
            sock.connect(endpoint)
            self.sockets.append(sock)
            self.endpoint = Endpoint(sock, NullLog(), Counters(), routed=False)
            self.trip = self._frames
        else:
            endpoints = {"cerebellum": endpoint, "olive": f"ipc://{tmp / 'no-olive'}.sock"}
            run_name = variant if variant in SHELLS else "shell"  # a shell checks the run name
            self.stub = AreaStub(spec, endpoints, context, tmp / run_name)
            self.link = make_link(ZmqLink, self.stub)
            self.trip = self._link

    def _raw(self, i: int) -> float:
        import zmq

        t0 = time.perf_counter()
        self.sock.send_multipart([self.payload], flags=zmq.NOBLOCK, copy=False)
        if not self.poller.poll(int(TRIP_TIMEOUT * 1000)):
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
        self.controls: dict[str, object] = {}  # a shell variant → its orchestrator ROUTER
        self.shell_error: str | None = None
        # each shell's epoch records (its own timers; the staged shell's stages)
        self.shell_metrics: dict[str, list[dict]] = {v: [] for v in SHELLS}

    def start(self, variants: list[str]) -> None:
        from ccdni.base.region import region_main
        from ccdni.base.rundir import RunDirectory

        for variant in variants:
            self.endpoints[variant] = endpoint_for(self.args.transport, self.tmp, variant)
            if variant in SHELLS:
                import zmq

                from wire.channel import Counters, Endpoint, make_socket

                control_ep = f"ipc://{self.tmp / f'orchestrator-{variant}'}.sock"
                sock = make_socket(self.context, zmq.ROUTER)
                sock.bind(control_ep)
                self.controls[variant] = Endpoint(sock, NullLog(), Counters(), routed=True)
                run = RunDirectory.create(self.spec.replace(run_name=variant))
                endpoints = {
                    "orchestrator": control_ep,
                    "cerebellum": self.endpoints[variant],
                    "olive": f"ipc://{self.tmp / f'olive-{variant}'}.sock",
                }
                process = self.mp.Process(
                    target=region_main,
                    args=(
                        SHELL_ROLES[variant],
                        "cerebellum",
                        self.spec.to_dict(),
                        str(run.path),
                        endpoints,
                        os.getpid(),
                    ),
                    name=f"bench-cerebellum-{variant}",
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
                if variant in SHELLS:
                    received = self.controls[variant].receive(0.1)
                    ok = received is not None and received[0] == "cerebellum"
                else:
                    ok = self.ready[variant].wait(0.1)
                if ok:
                    up.append(variant)
                    break
                if not process.is_alive() or time.monotonic() > deadline:
                    reason = f"exit code {process.exitcode}" if not process.is_alive() else "slow"
                    if variant not in SHELLS:
                        raise RuntimeError(f"server {variant} did not start: {reason}")
                    if variant == "shell":
                        self.shell_error = f"CerebellumShell did not start ({reason})"
                    break
        return up

    def drain_control(self) -> None:
        """Read what the shells sent the orchestrator; keep their METRIC records."""
        for variant, control in self.controls.items():
            while (received := control.receive(0.0)) is not None:
                header = received[1].header
                values = getattr(header, "values", None)
                if isinstance(values, dict) and "busy_seconds" in values:
                    self.shell_metrics[variant].append(values)

    def close(self) -> None:
        self.stop.set()
        if self.controls:
            from wire.protocol import Command, control

            self.drain_control()
            for endpoint in self.controls.values():
                endpoint.send(control(Command.STOP, "orchestrator"), to="cerebellum")
        for process in self.processes.values():
            process.join(timeout=10)
        for process in self.processes.values():
            if process.is_alive():
                process.terminate()
                process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join(timeout=2)
        for endpoint in self.controls.values():
            endpoint.sock.close(linger=0)
        self.controls = {}


class ComponentCosts:
    """Seconds per call of the pieces a round trip pays, in this process, no transport.

    Measured once per round, between the variants, both as wall time and as this thread's CPU
    time: on a loaded machine a hot loop's wall time also counts the time it was preempted,
    its CPU time only the work, which is what the target divides by.

    Each piece is also timed once per idle wait (``IDLE_WAIT`` of sleep before each call, CPU
    time of the call alone): a region runs it that way, once per message after sleeping in a
    poll, and the same code then costs several times its hot-loop CPU time (caches and
    branch predictors hold other code by then; on a virtual machine the idle core may have
    run someone else's).
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
        self.cpu_samples: dict[str, list[float]] = {name: [] for name in self.pieces}
        self.idle_samples: dict[str, list[float]] = {name: [] for name in self.pieces}

    def measure(self, calls: int, idle_calls: int = 0) -> None:
        for name, fn in self.pieces.items():
            fn()
            t0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                fn()
            c1, t1 = time.thread_time(), time.perf_counter()
            self.samples[name].append((t1 - t0) / calls)
            self.cpu_samples[name].append((c1 - c0) / calls)
        cpu, sleep = time.thread_time, time.sleep
        for name, fn in self.pieces.items():  # once per idle wait, as a region runs them
            each = []
            for _ in range(idle_calls):
                sleep(IDLE_WAIT)
                c0 = cpu()
                fn()
                each.append(cpu() - c0)
            if each:
                self.idle_samples[name].append(statistics.median(each))

    def idle_medians(self) -> dict[str, float]:
        """CPU seconds per call once per idle wait (median of the per-round medians)."""
        return {name: statistics.median(v) for name, v in self.idle_samples.items() if v}

    def medians(self) -> dict[str, float]:
        """Wall seconds per call, median over rounds."""
        return {name: statistics.median(v) for name, v in self.samples.items()}

    def cpu_medians(self) -> dict[str, float]:
        """CPU seconds per call (this thread), median over rounds."""
        return {name: statistics.median(v) for name, v in self.cpu_samples.items()}


class StageClient:
    """A client of the real shell that does what ``ZmqLink.predict`` does, one stage at a time,
    with a timestamp after each: encode (header + codec), send, wait (until the poll returns:
    the wire and the shell), receive (the frames), decode (+ expect_shape and the checks)."""

    STAGES = ("encode", "send", "wait", "receive", "decode")

    def __init__(self, endpoint: str, context, state):
        import zmq

        from wire.channel import Counters, Endpoint, make_socket
        from wire.ids import StepId
        from wire.protocol import EfferenceHeader, decode, encode, expect_shape, step_header

        self.zmq = zmq
        self.sock = make_socket(context, zmq.DEALER, identity="stages")
        self.sock.connect(endpoint)
        self.endpoint = Endpoint(self.sock, NullLog(), Counters(), routed=False)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.state = state
        self.StepId, self.EfferenceHeader, self.step_header = StepId, EfferenceHeader, step_header
        self.encode, self.decode, self.expect_shape = encode, decode, expect_shape
        self.samples: dict[str, list[float]] = {name: [] for name in self.STAGES}
        self.round = 0

    def trip(self, i: int, keep: bool = True) -> None:
        zmq = self.zmq
        ids = self.StepId(self.round, 1_000_000 + i, 0)  # the round's epoch, batches of its own
        t0 = time.perf_counter()
        frames = self.encode(
            self.step_header(self.EfferenceHeader, "shell", INTERFACE, ids), [self.state]
        )
        t1 = time.perf_counter()
        for frame in frames[:-1]:
            self.sock.send(frame, zmq.NOBLOCK | zmq.SNDMORE)
        self.sock.send(frames[-1], zmq.NOBLOCK)
        t2 = time.perf_counter()
        if not self.poller.poll(int(TRIP_TIMEOUT * 1000)):
            raise TimeoutError("the shell did not answer the stage client")
        t3 = time.perf_counter()
        received = [self.sock.recv(zmq.NOBLOCK)]
        while self.sock.get(zmq.RCVMORE):
            received.append(self.sock.recv(zmq.NOBLOCK, copy=len(received) < 2))
        t4 = time.perf_counter()
        message = self.decode(received)
        tensor = self.expect_shape(message, (None, self.state.shape[1]))
        if message.header.ids != ids or tensor.shape != self.state.shape:
            raise RuntimeError("the shell answered the stage client wrongly")
        t5 = time.perf_counter()
        if keep:
            for name, value in zip(self.STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                self.samples[name].append(value)

    def medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.samples.items() if v}

    def close(self) -> None:
        self.sock.close(linger=0)


def stage_report(records: list[dict]) -> dict:
    """Per answer, the staged shell's seconds by stage (wall and CPU), from its epoch records
    after the first (which holds the warm-up trips); empty without two records."""
    kept = [r for r in records if "stage_cpu" in r]
    if len(kept) < 2:
        return {}
    answers = kept[-1]["predictions"] - kept[0]["predictions"]
    if answers <= 0:
        return {}
    report: dict = {"answers": answers}
    for key in ("wall", "cpu"):
        first, last = kept[0][f"stage_{key}"], kept[-1][f"stage_{key}"]
        report[key] = {k: (last[k] - first[k]) / answers for k in STAGES}
    return report


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def load() -> float:
    return os.getloadavg()[0]


def part_roundtrip(args: argparse.Namespace, tmp: Path) -> dict:
    limit_threads()
    import torch
    import zmq

    spec = bench_spec(args, tmp)
    context = zmq.Context()
    servers = Servers(args, spec, tmp, context)
    clients: dict[str, Client] = {}
    stages: StageClient | None = None
    results: dict[str, dict] = {}
    wanted = [v for v in VARIANTS if v not in SHELLS or not args.no_shell]
    load_before = load()
    print(
        f"\n== 1. round trip: {args.transport}, efference ({args.batch}, {2 * args.hidden}) "
        f"float32 = {args.batch * 2 * args.hidden * 4} B tensor; load average {load_before:.2f}"
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
        if "shell" in up:
            stages = StageClient(servers.endpoints["shell"], context, state)
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
                if variant == "shell" and stages is not None:
                    stages.round = r
                    for i in range(args.warmup):
                        stages.trip(i, keep=False)
                    for i in range(args.trips // 4):
                        stages.trip(args.warmup + i)
            components.measure(calls=500, idle_calls=args.idle_calls)
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
        if stages is not None:
            stages.close()
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
    wall_costs = costs
    costs = components.cpu_medians()
    print(
        "in-process cost per call (hot loop, no transport; median over rounds), CPU time "
        "(wall time): "
        + ", ".join(
            f"{label} {costs[k] * 1e6:.0f} µs ({wall_costs[k] * 1e6:.0f})"
            for k, label in (
                ("encode", "encode"),
                ("decode", "decode+expect_shape"),
                ("predict", "CerebellumCore.predict"),
            )
        )
    )
    enc, dec, pred = (costs[k] for k in ("encode", "decode", "predict"))
    expected = {
        "frames": enc + dec,
        "codec": 2 * (enc + dec),
        real: 2 * (enc + dec) + pred,
    }
    print(
        "  extra over a, measured vs codec/predict CPU alone: "
        + ", ".join(
            f"{v}: {(results[v]['median'] - base) * 1e6:.0f} vs {cpu * 1e6:.0f} µs"
            for v, cpu in expected.items()
            if v in results
        )
    )
    trip = results[real]["median"]
    explained_once = base + enc + dec + pred
    explained_trip = base + 2 * (enc + dec) + pred
    target = {
        "round_trip": trip,
        "raw": base,
        "encode": enc,
        "decode": dec,
        "predict": pred,
        "ratio": trip / explained_once,
        "ratio_both_directions": trip / explained_trip,
        "wall_costs": wall_costs,
        "ratio_wall_costs": trip
        / (base + wall_costs["encode"] + wall_costs["decode"] + wall_costs["predict"]),
    }
    print(
        f"TARGET round trip ÷ (raw echo + codec + predict CPU) = {trip * 1e6:.0f} / "
        f"({base * 1e6:.0f} + {(enc + dec) * 1e6:.0f} + {pred * 1e6:.0f}) = "
        f"{target['ratio']:.2f} (goal ≤ 1.5: {'met' if target['ratio'] <= 1.5 else 'not met'})"
    )
    print(
        f"  counting the codec of both directions (2 encodes + 2 decodes, what a trip does): "
        f"{trip * 1e6:.0f} / {explained_trip * 1e6:.0f} = {target['ratio_both_directions']:.2f}"
    )
    print(
        f"  with the hot loops' wall time instead of their CPU time (preemption counted): "
        f"{target['ratio_wall_costs']:.2f}"
    )
    idle = components.idle_medians()
    if len(idle) == 3:
        i_enc, i_dec, i_pred = (idle[k] for k in ("encode", "decode", "predict"))
        target["idle_costs"] = idle
        target["ratio_idle_costs"] = trip / (base + i_enc + i_dec + i_pred)
        target["ratio_idle_costs_both_directions"] = trip / (base + 2 * (i_enc + i_dec) + i_pred)
        print(
            f"the same pieces once per idle wait ({IDLE_WAIT * 1e6:.0f} µs of sleep before each "
            f"call, CPU time, median): encode {i_enc * 1e6:.0f} µs, decode+expect_shape "
            f"{i_dec * 1e6:.0f} µs, predict {i_pred * 1e6:.0f} µs "
            f"({(i_enc + i_dec + i_pred) / (enc + dec + pred):.1f}× the hot loop)"
        )
        print(
            f"  round trip ÷ (raw echo + codec + predict, each once per idle wait) = "
            f"{trip * 1e6:.0f} / ({base * 1e6:.0f} + {(i_enc + i_dec) * 1e6:.0f} + "
            f"{i_pred * 1e6:.0f}) = {target['ratio_idle_costs']:.2f}; codec both ways: "
            f"{target['ratio_idle_costs_both_directions']:.2f}"
        )
    stage_medians = stages.medians() if stages is not None else {}
    if stage_medians:
        total = sum(stage_medians.values())
        print(
            "client stages against the real shell (medians, µs): "
            + ", ".join(f"{k} {v * 1e6:.0f}" for k, v in stage_medians.items())
            + f"; sum {total * 1e6:.0f}"
        )
    shell = {}
    staged = stage_report(servers.shell_metrics["staged"])
    if staged:
        print(
            "the stage-timed shell's answer path (per answer, µs, CPU (wall)): "
            + ", ".join(
                f"{k} {staged['cpu'][k] * 1e6:.0f} ({staged['wall'][k] * 1e6:.0f})" for k in STAGES
            )
            + f"; sum {sum(staged['cpu'].values()) * 1e6:.0f} "
            f"({sum(staged['wall'].values()) * 1e6:.0f}) over {staged['answers']} answers"
        )
        shell["stages"] = staged
    if servers.shell_metrics["shell"]:
        kept = servers.shell_metrics["shell"]  # one per round after the first: warm-ups first
        busy = sum(m["busy_seconds"] for m in kept[1:])
        predict = sum(m["predict_seconds"] for m in kept[1:])
        answers = kept[-1]["predictions"] - kept[0]["predictions"]
        if len(kept) > 1 and answers > 0:
            shell = {"busy_per_answer": busy / answers, "predict_per_answer": predict / answers}
            print(
                f"the shell's own timers: {shell['busy_per_answer'] * 1e6:.0f} µs of work per "
                f"answer (recv, decode, checks, predict, encode, send), of which predict "
                f"{shell['predict_per_answer'] * 1e6:.0f} µs"
            )
    load_after = load()
    print(f"load average {load_before:.2f} before, {load_after:.2f} after")
    return {
        "results": results,
        "real": real,
        "costs": costs,
        "wall_costs": wall_costs,
        "target": target,
        "client_stages": stage_medians,
        "shell_timers": shell,
        "load": [load_before, load_after],
    }


# ---------------------------------------------------------------------------------------------
# Part 2: time per epoch, processes vs in-process
# ---------------------------------------------------------------------------------------------
TASKS = ("target-reaching", "seqmnist")
# a timing's suffixes (any order): "-concurrent" turns concurrent_learning on (the cerebellum
# learns in a second thread; off by default), "-pinned" turns pin_cores on for the processes
# (area0 on one core, the cerebellum and olive on the other; the in-process twin is unpinned)
SUFFIXES = ("concurrent", "pinned")


def timing_parts(timing: str) -> tuple[str, set[str]]:
    """'wait-concurrent-pinned' → ('wait', {'concurrent', 'pinned'}); unknown suffix: error."""
    base, *suffixes = timing.split("-")
    unknown = set(suffixes) - set(SUFFIXES)
    if unknown:
        raise ValueError(f"timing {timing!r}: unknown suffix {sorted(unknown)} ({SUFFIXES})")
    return base, set(suffixes)


def task_spec(args: argparse.Namespace, task: str, tmp: Path, inprocess: bool, timing: str, epochs):
    from ccdni.base.spec import load_spec

    base, suffixes = timing_parts(timing)
    common = dict(
        epochs=epochs,
        seed=0,
        model=args.model,
        figures=False,
        progress=False,
        runs_dir=str(tmp / "runs"),
        timing=base,
        concurrent_learning="concurrent" in suffixes,
        pin_cores="pinned" in suffixes and not inprocess,
        inprocess=inprocess,
    )
    if task == "seqmnist":  # the paper's sizes: LSTM 30, cerebellum 300 (the preset), B 50, T 5
        return load_spec(
            task="seqmnist",
            truncation=5,
            batch_size=50,
            train_subset=args.seq_train_subset,
            val_subset=args.seq_val_subset,
            data_dir=args.data_dir,
            **common,
        )
    return load_spec(truncation=args.truncation, **common)


def one_run(args, tmp: Path, task: str, inprocess: bool, timing: str, epochs: int) -> dict:
    from orchestrator.runner import execute_run

    spec = task_spec(args, task, tmp, inprocess, timing, epochs)
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
        skip = min(args.skip_epochs if task == "target-reaching" else 1, len(area) - 1)
        kept = area[skip:]
        cerebellum = [m for m in run.metrics("cerebellum") if "busy_seconds" in m]
        cerebellum = [m for m in cerebellum if m["epoch"] >= skip]
        events = run.events()
        times: dict[str, float] = {}
        for e in events:
            times.setdefault(e["event"], e["time"])
        record = {
            "epoch": statistics.median(m["train_seconds"] for m in kept),
            "wait": statistics.median(m.get("wait_seconds", 0.0) for m in kept),
            "predictions": statistics.median(m.get("predictions", 0) for m in kept),
            "train_total": sum(m["train_seconds"] for m in area),
            "wall": outcome.summary["wall_seconds"],
            "startup": None,
            "launch": None,
            "shutdown": None,
            "cerebellum_busy": None,
            "cerebellum_learn": None,
            "final_loss": area[-1].get("train_loss"),
        }
        if cerebellum:
            epochs_seen = len(cerebellum)
            record["cerebellum_busy"] = sum(m["busy_seconds"] for m in cerebellum) / epochs_seen
            record["cerebellum_learn"] = sum(m["learn_seconds"] for m in cerebellum) / epochs_seen
        if not inprocess and {"spawn", "all_ready", "done", "run_end"} <= times.keys():
            record["startup"] = times["all_ready"] - times["spawn"]
            record["launch"] = times["all_ready"] - times.get("placement", times["spawn"])
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
    tasks = list(TASKS) if args.task == "all" else [args.task]
    limit_threads()
    one_run(args, tmp, "target-reaching", True, "wait", 2)  # warm-up: lazy imports; not kept
    out: dict[str, dict] = {}
    for task in tasks:
        timings = [t.strip() for t in (args.timings if task == "target-reaching" else
                   args.seq_timings).split(",") if t.strip()]  # fmt: skip
        epochs = args.epochs if task == "target-reaching" else args.seq_epochs
        load_before = load()
        print(
            f"\n== 2. time per epoch: {task}, {args.model}, "
            + (
                f"T={args.truncation}, {epochs} epochs"
                if task == "target-reaching"
                else f"LSTM 30, cerebellum 300, batch 50, T=5, {args.seq_train_subset} training "
                f"images ({args.seq_train_subset // 50} batches), {epochs} epochs"
            )
            + f", timings {', '.join(timings)}, {args.repeats} repeats; load average "
            f"{load_before:.2f}"
        )
        if task == "seqmnist":
            try:
                from orchestrator.runner import check_task_data

                check_task_data(task_spec(args, task, tmp, True, "wait", epochs))
            except Exception as exc:  # no MNIST here: say so, go on with the rest
                print(f"  skipped: {exc}")
                continue
        records: dict[tuple[str, str], list[dict]] = {}
        for rep in range(args.repeats):
            for timing in timings:
                order = (True, False) if rep % 2 == 0 else (False, True)
                for inprocess in order:
                    mode = "inprocess" if inprocess else "processes"
                    record = one_run(args, tmp, task, inprocess, timing, epochs)
                    records.setdefault((timing, mode), []).append(record)
                    print(
                        f"  repeat {rep + 1} {timing:16} {mode:9}: "
                        f"{record['epoch'] * 1e3:8.2f} ms/epoch, wall {record['wall']:6.2f} s"
                    )
        med = {key: medians(recs) for key, recs in records.items()}
        print(
            f"\n{'timing':16} {'mode':9} {'ms/epoch':>9} {'wait ms':>8} {'µs/pred':>8} "
            f"{'wall s':>7} {'launch s':>8} {'spawn s':>8} {'cb busy':>8} {'cb learn':>8}"
        )
        for (timing, mode), m in med.items():
            per_pred = m["wait"] / m["predictions"] * 1e6 if m["predictions"] else float("nan")

            def cell(value, scale=1.0, width=8):
                return f"{value * scale:{width}.2f}" if value is not None else f"{'-':>{width}}"

            print(
                f"{timing:16} {mode:9} {m['epoch'] * 1e3:9.2f} {m['wait'] * 1e3:8.2f} "
                f"{per_pred:8.0f} {m['wall']:7.2f} {cell(m['launch'])} {cell(m['startup'])} "
                f"{cell(m['cerebellum_busy'], 1e3)} {cell(m['cerebellum_learn'], 1e3)}"
            )
        print(
            f"(medians over {args.repeats} repeats, in-process and processes alternating; "
            "ms/epoch = median train_seconds of the kept epochs; wait = time in link.predict per "
            "epoch; µs/pred = wait / predictions; launch = first spawn call → all ready, spawn = "
            "first spawn event → all ready; cb busy / learn = the cerebellum's work / learning "
            "per epoch, ms)"
        )
        ratios = {}
        for timing in timings:
            inproc, procs = med[(timing, "inprocess")], med[(timing, "processes")]
            ratios[timing] = procs["epoch"] / inproc["epoch"]
            goal = ""
            if task == "seqmnist" and timing == "wait":
                verdict = "met" if ratios[timing] <= 1.0 else "not met"
                goal = f" (TARGET ≤ 1.0: {verdict})"
            print(
                f"{timing}: processes / in-process per epoch = {ratios[timing]:.2f}×{goal}; "
                f"extra wall = {procs['wall'] - inproc['wall']:.2f} s"
            )
        load_after = load()
        print(f"load average {load_before:.2f} before, {load_after:.2f} after")
        out[task] = {
            "ratios": ratios,
            "medians": {f"{t}/{m}": v for (t, m), v in med.items()},
            "runs": {f"{t}/{m}": v for (t, m), v in records.items()},
            "load": [load_before, load_after],
        }
    return out


# ---------------------------------------------------------------------------------------------
# Part 3: start-up of the default run, each a fresh launch.py
# ---------------------------------------------------------------------------------------------
STARTUPS = {
    "template": ("forkserver", False),  # the region template, started by the Supervisor
    "template-early": ("forkserver", True),  # started first thing, before the CLI's imports
    "spawn": ("spawn", False),  # every region a fresh interpreter
}
EARLY = (  # a script that starts the template before anything else (where the code has it)
    "import sys\ntry:\n    from ccdni.base.template import start_template\n"
    "    start_template(['orchestrator.cli'])\nexcept ImportError:\n    pass\n"
    "from orchestrator.cli import main\nsys.exit(main(sys.argv[1:]))"
)


def startup_run(args: argparse.Namespace, tmp: Path, how: str, n: int) -> dict:
    import json
    import subprocess

    method, early = STARTUPS[how]
    name = f"startup-{how}-{n}"
    flags = ["run", "--epochs", str(args.startup_epochs), "--no-figures", "--no-progress"]
    flags += ["--runs-dir", str(tmp / "startup"), "--run-name", name]
    command = [sys.executable, "-c", EARLY, *flags] if early else [
        sys.executable, str(ROOT / "launch.py"), *flags
    ]  # fmt: skip
    env = {**os.environ, "CCDNI_START_METHOD": method}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    run = tmp / "startup" / name
    try:
        if result.returncode != 0:
            raise RuntimeError(f"{how} run failed: {result.stderr[-500:]}")
        times: dict[str, float] = {}
        for line in (run / "events.jsonl").read_text().splitlines():
            event = json.loads(line)
            times.setdefault(event["event"], event["time"])
        return {
            "launch": times["all_ready"] - times["placement"],
            "spawn": times["all_ready"] - times["spawn"],
            "process_wall": wall,
        }
    finally:
        shutil.rmtree(run, ignore_errors=True)


def part_startup(args: argparse.Namespace, tmp: Path) -> dict:
    load_before = load()
    print(
        f"\n== 3. start-up of the default run (target reaching, {args.startup_epochs} epochs), "
        f"each a fresh `launch.py run` process, {args.repeats} repeats; load average "
        f"{load_before:.2f}"
    )
    records: dict[str, list[dict]] = {how: [] for how in STARTUPS}
    inprocess: list[float] = []
    for rep in range(args.repeats):
        order = list(STARTUPS)[rep % len(STARTUPS) :] + list(STARTUPS)[: rep % len(STARTUPS)]
        for how in order:
            record = startup_run(args, tmp, how, rep)
            records[how].append(record)
            print(
                f"  repeat {rep + 1} {how:15}: launch → all ready {record['launch']:.2f} s, "
                f"spawn → all ready {record['spawn']:.2f} s, process {record['process_wall']:.2f} s"
            )
        started = time.perf_counter()
        import subprocess

        subprocess.run(
            [sys.executable, str(ROOT / "launch.py"), "run", "--inprocess", "--epochs",
             str(args.startup_epochs), "--no-figures", "--no-progress", "--runs-dir",
             str(tmp / "startup"), "--run-name", f"startup-inprocess-{rep}"],
            cwd=ROOT, capture_output=True, check=True,
        )  # fmt: skip
        inprocess.append(time.perf_counter() - started)
    med = {how: medians(recs) for how, recs in records.items()}
    print(f"\n{'start':15} {'launch s':>9} {'spawn s':>8} {'process s':>10}")
    for how, m in med.items():
        print(f"{how:15} {m['launch']:9.2f} {m['spawn']:8.2f} {m['process_wall']:10.2f}")
    print(f"{'--inprocess':15} {'-':>9} {'-':>8} {statistics.median(inprocess):10.2f}")
    print(
        "(launch = the first region's start call → all ready: with the template, its preload "
        "of torch and the shells when it is cold; spawn = the first spawn event → all ready: "
        "the spawn event is written when Process.start() returns, after a cold template's "
        "preload)"
    )
    for how in ("template", "template-early"):
        verdict = "met" if med[how]["launch"] <= 1.0 else "not met"
        print(f"TARGET start-up ≤ 1.0 s, {how}: launch → all ready {med[how]['launch']:.2f} s "
              f"({verdict})")  # fmt: skip
    load_after = load()
    print(f"load average {load_before:.2f} before, {load_after:.2f} after")
    return {
        "medians": med,
        "runs": records,
        "inprocess_process_wall": inprocess,
        "load": [load_before, load_after],
    }


# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ScriptParser(
        description="Round trip area→cerebellum→area vs raw pyzmq echo, time per epoch "
        "multi-process vs in-process (target reaching, seqMNIST) and start-up. Run from the "
        "repository root.",
    )
    parser.add_argument(
        "--transport", choices=("ipc", "tcp"), default="ipc", help="part 1's transport"
    )
    parser.add_argument("--batch", type=int, default=50, help="B of the efference (B, 2H)")
    parser.add_argument("--hidden", type=int, default=10, help="H of the efference (B, 2H)")
    parser.add_argument("--trips", type=int, default=2000, help="timed round trips per round")
    parser.add_argument("--warmup", type=int, default=200, help="untimed trips before each")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument(
        "--idle-calls",
        type=int,
        default=300,
        help="calls per round of each piece once per idle wait (300 µs of sleep before each)",
    )
    parser.add_argument(
        "--no-shell", action="store_true", help="skip the real CerebellumShell variant"
    )
    parser.add_argument("--task", choices=(*TASKS, "all"), default="all", help="part 2's task")
    parser.add_argument("--epochs", type=int, default=100, help="target reaching epochs")
    parser.add_argument(
        "--model", default="cc-dni", choices=("cc-dni", "scc-dni"), help="part 2's model"
    )
    parser.add_argument("--truncation", type=int, default=2, help="target reaching T")
    parser.add_argument(
        "--timings",
        default="wait,wait-concurrent,lockstep",
        help="target reaching: wait, lockstep, stale, each as the default spec runs it, or with "
        "suffixes: '-concurrent' (the cerebellum learns in a second thread), '-pinned' (the "
        "processes pinned: area0 on one core, the cerebellum and olive on the rest)",
    )
    parser.add_argument(
        "--seq-timings",
        default="wait,wait-concurrent,wait-pinned",
        help="seqMNIST: the same, with the suffixes of --timings",
    )
    parser.add_argument(
        "--seq-epochs", type=int, default=3, help="seqMNIST epochs (first left out)"
    )
    parser.add_argument(
        "--seq-train-subset", type=int, default=10000, help="seqMNIST images: 200 batches of 50"
    )
    parser.add_argument(
        "--seq-val-subset", type=int, default=1000, help="seqMNIST validation images"
    )
    add_data_arguments(parser)  # --data-dir, --download (part 2's seqMNIST reads MNIST)
    parser.add_argument("--repeats", type=int, default=2, help="alternated runs per mode")
    parser.add_argument("--skip-epochs", type=int, default=5, help="startup epochs left out")
    parser.add_argument("--startup-epochs", type=int, default=20, help="part 3's run length")
    parser.add_argument(
        "--only", choices=("roundtrip", "epochs", "startup"), help="run one part only"
    )
    parser.add_argument("--json", default="", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    for flag, timings in (("--timings", args.timings), ("--seq-timings", args.seq_timings)):
        for timing in (t.strip() for t in timings.split(",") if t.strip()):
            try:
                timing_parts(timing)
            except ValueError as exc:
                parser.error(f"{flag}: {exc}")
    if args.only in (None, "epochs") and args.task in ("seqmnist", "all"):
        from ccdni.base.spec import load_spec
        from ccdni.tasks.mnist_data import DataMissingError, check_mnist

        try:  # before anything is measured: a missing data folder is one line, exit 2
            check_mnist(load_spec(data_dir=args.data_dir).resolved_data_dir, args.download)
        except DataMissingError as exc:
            parser.exit(2, f"{parser.prog}: error: {exc}\n")
    return args


def main(argv: list[str] | None = None) -> int:
    import json

    args = parse_args(argv)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[key] = "1"  # inherited by every spawned child
    tmp = Path(tempfile.mkdtemp(prefix="ccdni-bench-"))
    started = time.perf_counter()
    print(
        f"ccdni transport benchmark · {os.cpu_count()} CPUs · python {sys.version.split()[0]} · "
        f"pid {os.getpid()} · load average {load():.2f}"
    )
    rt = ep = su = None
    try:
        rt = part_roundtrip(args, tmp) if args.only in (None, "roundtrip") else None
        ep = part_epochs(args, tmp) if args.only in (None, "epochs") else None
        su = part_startup(args, tmp) if args.only in (None, "startup") else None
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
            f"({res[real]['median'] * 1e6:.0f} µs vs {res['raw']['median'] * 1e6:.0f} µs); "
            f"÷ (raw + codec + predict) = {rt['target']['ratio']:.2f} (goal ≤ 1.5)"
        )
    if ep is not None:
        for task, result in ep.items():
            parts = ", ".join(f"{ratio:.2f}× ({t})" for t, ratio in result["ratios"].items())
            goal = " (goal ≤ 1.0 under wait)" if task == "seqmnist" else ""
            print(f"time per epoch, {task}: processes / in-process = {parts}{goal}")
    if su is not None:
        print(
            "start-up of the default run (launch → all ready): "
            + ", ".join(f"{how} {m['launch']:.2f} s" for how, m in su["medians"].items())
            + " (goal ≤ 1.0 s)"
        )
    leftovers = multiprocessing.active_children()
    print(
        f"total {time.perf_counter() - started:.0f} s; load average {load():.2f}; leftover "
        f"child processes: {[p.pid for p in leftovers] or 'none'}"
    )
    if args.json:
        figures = {
            "args": vars(args),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "roundtrip": rt,
            "epochs": ep,
            "startup": su,
            "total_seconds": time.perf_counter() - started,
        }
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
