"""The fast paths keep every guarantee: zero-copy frames stay alive as long as their tensors,
predictions before learning lose no error and change no lockstep number, regions forked from
the template are still separate single-threaded processes that shut down in stages, and the
numpy MNIST reader gives torchvision's tensors. None of these tests times anything."""

from __future__ import annotations

import gc
import json
import multiprocessing
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq
from conftest import assert_no_process_left, assert_same_losses, records

from ccdni.base.spec import load_spec
from cerebellum.process import CerebellumShell
from cerebellum.synthesiser import CerebellumCore
from orchestrator.runner import execute_run
from wire.channel import Counters, Endpoint, make_socket
from wire.ids import StepId
from wire.protocol import ClimbingHeader, EfferenceHeader, decode, encode, step_header

pytestmark = pytest.mark.timeout(300)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class QuietLog:
    def _ignore(self, *args, **kwargs) -> None:
        pass

    debug = info = warning = error = _ignore


@pytest.fixture
def pair():
    """(router Endpoint, dealer Endpoint 'area0') over inproc://."""
    context = zmq.Context()
    router_sock = make_socket(context, zmq.ROUTER)
    router_sock.bind("inproc://fast-paths")
    dealer_sock = make_socket(context, zmq.DEALER, identity="area0")
    dealer_sock.connect("inproc://fast-paths")
    try:
        yield (
            Endpoint(router_sock, QuietLog(), Counters(), routed=True),
            Endpoint(dealer_sock, QuietLog(), Counters(), routed=False),
        )
    finally:
        router_sock.close(linger=0)
        dealer_sock.close(linger=0)
        context.term()


def efference(batch: int, state: torch.Tensor, expected: int = 0) -> EfferenceHeader:
    return step_header(
        EfferenceHeader, "run", "area0", StepId(0, batch, 0), errors_expected=expected
    )


# -- zero-copy receive -------------------------------------------------------------------------
def test_a_received_tensor_views_its_frame_which_lives_as_long_as_the_tensor(pair) -> None:
    """A tensor decoded from a received zmq frame shares that frame's memory (no copy) and
    keeps the frame alive: after every other reference is gone and many later messages have
    been received, it still holds its own values, and writing into it changes no other
    message."""
    router, dealer = pair
    state = torch.arange(400, dtype=torch.float32).reshape(20, 20)
    assert dealer.send(efference(0, state), [state])
    router.sock.poll(5000)
    sock = router.sock
    frames = [sock.recv(), sock.recv(), sock.recv(), sock.recv(copy=False)]  # id, pre, hdr, t
    frame = frames[-1]
    message = decode(frames[1:])
    (tensor,) = message.tensors
    address = np.frombuffer(frame.buffer, dtype=np.uint8).ctypes.data
    assert tensor.data_ptr() == address, "the tensor is a view of the frame, not a copy"
    watch = weakref.ref(frame)
    del frames, frame, message
    gc.collect()
    assert watch() is not None, "the tensor keeps its frame alive"
    later = []
    for batch in range(1, 200):  # reuse whatever memory could have been freed
        other = torch.full((20, 20), float(batch))
        assert dealer.send(efference(batch, other), [other])
        received = router.receive(5.0)
        assert received is not None
        later.append(received[1].tensors[0])
    assert torch.equal(tensor, state), "still its own values"
    tensor.mul_(-1.0)  # the region may write into what it received
    for batch, other in enumerate(later, start=1):
        assert torch.equal(other, torch.full((20, 20), float(batch)))
    del tensor
    gc.collect()
    assert watch() is None, "and the frame goes with the last tensor"


def test_a_tensor_decoded_from_bytes_or_a_view_is_a_copy() -> None:
    """Frames that are not received zmq frames (bytes, a view of a sender's tensor) are copied:
    the decoded tensor never aliases someone else's memory."""
    state = torch.ones(3, 4)
    frames = encode(efference(0, state), [state])
    for given in (frames, [bytes(f) for f in frames]):
        (tensor,) = decode(given).tensors
        tensor.add_(1.0)
        assert torch.equal(state, torch.ones(3, 4))


# -- the prediction's fast path -------------------------------------------------------------
@pytest.mark.parametrize("model", ["cc-dni", "scc-dni"])
@pytest.mark.parametrize("grad_before", [True, False])
def test_predict_gives_the_modules_numbers_without_autograd_and_restores_grad_mode(
    model: str, grad_before: bool
) -> None:
    """CerebellumCore.predict equals the synthesiser module called under torch.no_grad
    bitwise (dense, sparse and two-layer), its result needs no gradient, the efference it keeps
    is the one it was given, and the grad mode is what it was before, also after an error."""
    for layers in (1, 2):
        spec = load_spec(model=model, hidden=10, cerebellum_layers=layers, seed=3)
        core = CerebellumCore(spec, ["area0"])
        with torch.no_grad():  # a non-zero output layer, so that every layer counts
            core.synthesisers["area0"].nuclei.weight.normal_()
        state = torch.randn(50, spec.state_size)
        with torch.no_grad():
            expected = core.synthesisers["area0"](state)
        torch.set_grad_enabled(grad_before)
        try:
            got = core.predict("area0", StepId(0, 0, 0), state)
            assert torch.is_grad_enabled() is grad_before
            with pytest.raises(RuntimeError):
                core.predict("area0", StepId(0, 1, 0), torch.randn(50, spec.state_size + 1))
            assert torch.is_grad_enabled() is grad_before
        finally:
            torch.set_grad_enabled(True)
        assert torch.equal(got, expected) and not got.requires_grad
        assert core.outstanding["area0"][StepId(0, 0, 0)] is state


# -- predictions before learning ------------------------------------------------------------
class WaitingRouter:
    """A stand-in for the cerebellum's ROUTER that says an efference is waiting ``busy``
    times, and records what is sent."""

    class sock:  # noqa: N801 - the attribute the shell polls on the way out
        @staticmethod
        def poll(timeout, flags=None):
            return 0

    def __init__(self, busy: int):
        self.busy = busy
        self.sent: list = []

    def waiting(self) -> bool:
        self.busy -= 1
        return self.busy >= 0

    def send(self, header, tensors=(), to=None):
        self.sent.append((header, list(tensors), to))
        return True

    def reject(self, reason, sender=None):
        raise AssertionError(reason)


def shell_with(router, timing: str = "wait") -> CerebellumShell:
    spec = load_spec(hidden=4, cerebellum_hidden=12, timing=timing)
    shell = object.__new__(CerebellumShell)
    shell.spec, shell.name = spec, "cerebellum"
    shell.core = CerebellumCore(spec, ["area0"])
    shell.router = router
    shell.olive_known, shell.olive_lesioned = True, False
    shell.exact = timing == "lockstep"
    shell.deferred, shell.predictions, shell.epoch = [], 0, -1
    shell.records = []
    shell.metric = shell.records.append
    shell.checkpoint = lambda: None
    return shell


def test_queued_errors_yield_to_a_waiting_efference_and_none_is_lost() -> None:
    """Outside lockstep the errors left after a burst's answers are applied one at a time: at
    least one per burst, none while an efference waits; over the following bursts (and at
    the way out) every error received is applied exactly once, none dropped."""
    router = WaitingRouter(busy=2)
    shell = shell_with(router)
    generator = torch.Generator().manual_seed(0)
    for step in range(5):
        state = torch.randn(6, 8, generator=generator)
        shell.handle("area0", decode(encode(efference(step, state), [state])))
    shell.end_burst()
    for step in range(5):
        error = torch.randn(6, 8, generator=generator)
        header = step_header(ClimbingHeader, "run", "area0", StepId(0, step, 0))
        shell.handle("olive", decode(encode(header, [error])))
    shell.end_burst()  # an efference "waits" twice: one error is applied, then it yields
    assert shell.core.errors_applied["area0"] == 1
    shell.end_burst()  # still waiting once: one more
    assert shell.core.errors_applied["area0"] == 2
    shell.end_burst()  # nothing waits: the rest
    assert shell.core.errors_applied["area0"] == 5 and not shell.core.queued["area0"]
    shell.finish()
    assert shell.records[-1] == {"predictions_total": 5, "errors_applied": 5, "dropped_errors": 0}


@pytest.mark.timeout(600)
def test_single_area_lockstep_equals_inprocess_and_applies_every_target(tmp_path: Path) -> None:
    """A single area under lockstep (answers before learning, the epoch written after the
    answers) still equals the in-process run to 1e-6, and the cerebellum applies exactly as
    many errors as the area sent targets, dropping none."""
    common = dict(
        epochs=6, seed=5, timing="lockstep", runs_dir=str(tmp_path), figures=False, progress=False
    )
    reference = execute_run(load_spec(inprocess=True, run_name="ref", **common), console=False)
    processes = execute_run(load_spec(run_name="proc", **common), console=False)
    assert processes.summary["status"] == "completed", processes.summary["reason"]
    assert_same_losses(reference.run.path, processes.run.path)
    metrics = records(processes.run.path / "metrics.jsonl")
    sent = sum(r["targets_sent"] for r in metrics if r["region"] == "area0" and "epoch" in r)
    (total,) = [r for r in metrics if r["region"] == "cerebellum" and "predictions_total" in r]
    assert sent > 0 and total["errors_applied"] == sent and total["dropped_errors"] == 0
    assert_no_process_left(processes.run.path, expected_regions=3)


# -- start-up through the region template -----------------------------------------------------
@pytest.mark.timeout(600)
def test_regions_forked_from_the_template_are_separate_and_stop_in_stages(
    tmp_path: Path, monkeypatch
) -> None:
    """Through the template, every region is still its own process: its own pid in
    regions.json (none the orchestrator's or the template's), forked by the template, one
    intra-op thread; the run ends with the ``stop`` stage alone, every exit code 0, and
    nothing left behind."""
    monkeypatch.delenv("CCDNI_START_METHOD", raising=False)
    spec = load_spec(epochs=3, runs_dir=str(tmp_path), run_name="t", figures=False, progress=False)
    outcome = execute_run(spec, console=False)
    assert outcome.summary["status"] == "completed", outcome.summary["reason"]
    run = outcome.run.path
    from multiprocessing import forkserver

    template = forkserver._forkserver._forkserver_pid
    regions = json.loads((run / "regions.json").read_text())
    pids = {name: entry["pid"] for name, entry in regions["regions"].items()}
    assert set(pids) == {"area0", "cerebellum", "olive"}
    assert len(set(pids.values())) == 3
    assert regions["orchestrator"]["pid"] not in pids.values() and template not in pids.values()
    for name, pid in pids.items():
        (placed,) = [r for r in records(run / "logs" / f"{name}.jsonl") if r["event"] == "placed"]
        assert placed["pid"] == pid and placed["parent"] == template, name
        assert placed["threads"] == 1 and placed["started_by"] == "template", name
    events = records(run / "events.jsonl")
    stages = [e["stage"] for e in events if e["event"] == "shutdown"]
    assert stages == ["stop"], stages
    exits = {e["region"]: e["exitcode"] for e in events if e["event"] == "exit"}
    assert exits == dict.fromkeys(pids, 0)
    assert_no_process_left(run, expected_regions=3)
    assert not [p for p in multiprocessing.active_children() if p.pid in pids.values()]


def test_the_template_imports_every_shell_and_nothing_heavy_to_start() -> None:
    """The template preloads the module of every region shell, and the module that starts it
    imports only the standard library (so a command can start it before its own imports)."""
    import subprocess
    import sys

    from ccdni.base.region import SHELLS
    from ccdni.base.template import PRELOAD

    assert {target.partition(":")[0] for target in SHELLS.values()} <= set(PRELOAD)
    probe = (
        "import sys, ccdni.base.template; "
        "print(sorted(m for m in ('torch', 'numpy', 'zmq', 'structlog') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


# -- the MNIST reader ---------------------------------------------------------------------------
def test_the_numpy_reader_gives_torchvisions_tensors() -> None:
    """The IDX files read with numpy give exactly torchvision's MNIST training tensors (uint8
    images, int64 labels), and a file that is not an IDX file is refused."""
    torchvision = pytest.importorskip("torchvision")
    from ccdni.tasks.mnist_data import raw_folder, read_idx, read_training_set

    root = Path(__import__("os").environ.get("CCDNI_DATA") or DATA).resolve()
    if not (raw_folder(root) / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"no MNIST under {root}")
    images, labels = read_training_set(root)
    reference = torchvision.datasets.MNIST(str(root), train=True, download=False)
    assert images.dtype == reference.data.dtype and torch.equal(images, reference.data)
    assert labels.dtype == reference.targets.dtype and torch.equal(labels, reference.targets)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(raw_folder(root) / "train-labels-idx1-ubyte", 3)
