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
from wire.protocol import (
    ClimbingHeader,
    Command,
    EfferenceHeader,
    control,
    decode,
    encode,
    step_header,
)

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
    """A stand-in for the cerebellum's ROUTER: ``inbox`` holds the messages waiting, delivered
    oldest first; records what is sent, with the errors applied when it was sent."""

    class sock:  # noqa: N801 - the attribute the shell polls on the way out
        @staticmethod
        def poll(timeout, flags=None):
            return 0

    def __init__(self, *waiting):
        self.inbox: list = list(waiting)
        self.sent: list = []
        self.shell: CerebellumShell | None = None

    def waiting(self) -> bool:
        return bool(self.inbox)

    def receive_ready(self):
        return self.inbox.pop(0) if self.inbox else None

    def send(self, header, tensors=(), to=None):
        applied = self.shell.core.errors_applied["area0"] if self.shell else None
        self.sent.append((header, list(tensors), to, applied))
        return True

    def reject(self, reason, sender=None):
        raise AssertionError(reason)


def shell_with(router, timing: str = "wait") -> CerebellumShell:
    spec = load_spec(hidden=4, cerebellum_hidden=12, timing=timing)
    shell = object.__new__(CerebellumShell)
    shell.spec, shell.name = spec, "cerebellum"
    shell.core = CerebellumCore(spec, ["area0"])
    shell.router = router
    router.shell = shell
    shell.olive_known, shell.olive_lesioned = True, False
    shell.exact = timing == "lockstep"
    shell.deferred, shell.predictions, shell.epoch = [], 0, -1
    shell.records = []
    shell.metric = shell.records.append
    shell.checkpoint = lambda: None
    return shell


def message(header, tensor: torch.Tensor, sender: str = "area0"):
    """(sender, the decoded message) as the router hands it over."""
    return sender, decode(encode(header, [tensor]))


def efference_of(epoch: int, batch: int, state: torch.Tensor, expected: int = 0):
    header = step_header(
        EfferenceHeader, "run", "area0", StepId(epoch, batch, 0), errors_expected=expected
    )
    return message(header, state)


def climbing_for(batch: int, error: torch.Tensor):
    return message(step_header(ClimbingHeader, "run", "area0", StepId(0, batch, 0)), error, "olive")


def answers(router: WaitingRouter) -> list[tuple[StepId, torch.Tensor, int]]:
    """(ids, prediction, errors applied when it was sent) of each answer sent to the area."""
    return [(h.ids, t[0], applied) for h, t, to, applied in router.sent if to == "area0"]


def test_queued_errors_yield_to_a_waiting_efference_and_none_is_lost() -> None:
    """Outside lockstep the errors left after a burst's answers are applied one at a time: at
    least one per burst, none further while a message waits that needs the step's end (the
    next epoch's first efferences, which write the epoch's record); over the following bursts
    (and at the way out) every error received is applied exactly once, none dropped."""
    router = WaitingRouter()
    shell = shell_with(router)
    generator = torch.Generator().manual_seed(0)
    for step in range(5):
        shell.handle(*efference_of(0, step, torch.randn(6, 8, generator=generator)))
    shell.end_burst()
    for step in range(5):
        shell.handle(*climbing_for(step, torch.randn(6, 8, generator=generator)))
    router.inbox = [efference_of(1, b, torch.randn(6, 8, generator=generator)) for b in (0, 1)]
    shell.end_burst()  # the next epoch waits: one error is applied, then it yields
    assert shell.core.errors_applied["area0"] == 1
    assert [ids for ids, _, _ in answers(router)] == [StepId(0, b, 0) for b in range(5)]
    assert len(shell.held) == 1 and len(router.inbox) == 1, "held from the first stage on"
    shell.serve_burst()  # the held efference first, then the one still waiting, then learning
    assert [ids for ids, _, _ in answers(router)][5:] == [StepId(1, 0, 0), StepId(1, 1, 0)]
    assert [applied for _, _, applied in answers(router)][5:] == [1, 1], "before learning"
    assert shell.records[0]["epoch"] == 0 and shell.records[0]["errors_applied"] == 1
    assert shell.core.errors_applied["area0"] == 5 and not shell.core.queued["area0"]
    shell.finish()
    assert shell.records[-1] == {
        "predictions_total": 7,
        "errors_applied": 5,
        "dropped_errors": 0,
        "answered_between_stages": 0,
    }


def test_an_efference_arriving_during_a_learning_step_is_answered_between_its_stages() -> None:
    """An efference waiting while an error is being applied is answered between the step's
    stages, from the weights before that step (those of a core that applied one error
    fewer); the step then ends with exactly the weights of an uninterrupted one, and the
    error counts are those of a core that applied every error."""
    router = WaitingRouter()
    shell = shell_with(router)
    reference = CerebellumCore(shell.spec, ["area0"])
    generator = torch.Generator().manual_seed(1)
    states = [torch.randn(6, 8, generator=generator) for _ in range(3)]
    errors = [torch.randn(6, 8, generator=generator) for _ in range(2)]
    for step in (0, 1):
        shell.handle(*efference_of(0, step, states[step]))
        reference.predict("area0", StepId(0, step, 0), states[step])
    shell.end_burst()
    shell.handle(*climbing_for(0, errors[0]))
    shell.end_burst()  # nothing waits: the first error is applied whole
    assert reference.learn("area0", StepId(0, 0, 0), errors[0])
    shell.handle(*climbing_for(1, errors[1]))
    router.inbox = [efference_of(0, 2, states[2])]
    shell.end_burst()
    ((ids, prediction, applied),) = answers(router)[2:]
    assert ids == StepId(0, 2, 0) and applied == 1, "answered in the middle of the second step"
    want = reference.predict("area0", StepId(0, 2, 0), states[2])
    torch.testing.assert_close(prediction, want, rtol=0, atol=0)
    assert prediction.abs().sum() > 0
    assert reference.learn("area0", StepId(0, 1, 0), errors[1])
    for got, expected in zip(
        shell.core.synthesisers["area0"].parameters(),
        reference.synthesisers["area0"].parameters(),
        strict=True,
    ):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert shell.core.errors_applied == reference.errors_applied == {"area0": 2}
    assert shell.held == () and router.inbox == [] and shell.answered_between_stages == 1
    assert [h.ids for h, _, to, _ in router.sent if to == "olive"] == [
        StepId(0, b, 0) for b in range(3)
    ], "the mid-step answer also went to the olive"


@pytest.mark.parametrize("needs", ["errors", "control"])
def test_a_request_that_needs_more_than_the_weights_waits_for_the_step_to_end(needs) -> None:
    """A request arriving during a learning step that expects an error not yet applied, or a
    control request (a barrier), is not handled between the stages: it is held, the step ends,
    and the next burst handles it first, before what arrived after it (whose answer keeps its
    place behind it)."""
    router = WaitingRouter()
    shell = shell_with(router)
    generator = torch.Generator().manual_seed(2)
    states = [torch.randn(6, 8, generator=generator) for _ in range(3)]
    shell.handle(*efference_of(0, 0, states[0]))
    shell.end_burst()
    shell.handle(*climbing_for(0, torch.randn(6, 8, generator=generator)))
    if needs == "errors":
        first = efference_of(0, 1, states[1], expected=1)
    else:
        header = control(Command.BARRIER, "area0", interface="area0", errors_expected=1)
        first = ("area0", decode(encode(header, [])))
    router.inbox = [first, efference_of(0, 2, states[2])]
    shell.end_burst()
    assert shell.held == (first,) and len(router.inbox) == 1
    assert shell.answered_between_stages == 0
    assert len(answers(router)) == 1 and shell.core.errors_applied["area0"] == 1
    shell.serve_burst()
    sent = [(h, to) for h, _, to, _ in router.sent if to == "area0"][1:]
    if needs == "errors":
        assert [h.ids for h, _ in sent] == [StepId(0, 1, 0), StepId(0, 2, 0)]
    else:
        assert sent[0][0].command == Command.BARRIER_OK
        assert sent[1][0].ids == StepId(0, 2, 0)
    assert shell.held == () and router.inbox == []


@pytest.mark.timeout(600)
def test_through_the_processes_answers_between_stages_lose_no_error(tmp_path: Path) -> None:
    """A `wait` run in one thread whose cerebellum learns slowly (4096 granule units) while the
    area asks at every step (T=1) answers efferences in the middle of learning steps, ends
    without a lesion, and applies exactly as many errors as the area sent targets, dropping
    none; the weights change."""
    spec = load_spec(
        epochs=10,
        seed=4,
        timing="wait",
        truncation=1,
        cerebellum_hidden=4096,
        run_name="stages",
        runs_dir=str(tmp_path),
        figures=False,
        progress=False,
    )
    assert not spec.concurrent_learning
    outcome = execute_run(spec, console=False)
    assert outcome.summary["status"] == "completed", outcome.summary["reason"]
    assert outcome.summary["lesions"] == [], outcome.summary["lesions"]
    metrics = records(outcome.run.path / "metrics.jsonl")
    sent = sum(r["targets_sent"] for r in metrics if r["region"] == "area0" and "epoch" in r)
    (total,) = [r for r in metrics if r["region"] == "cerebellum" and "predictions_total" in r]
    assert sent > 0 and total["errors_applied"] == sent and total["dropped_errors"] == 0
    assert total["answered_between_stages"] > 0, total
    prints = [r["weight_fingerprint"] for r in metrics if "weight_fingerprint" in r]
    assert len(set(prints)) > 1, prints
    assert_no_process_left(outcome.run.path, expected_regions=3)


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
