"""The cerebellum's concurrent learning (outside lockstep): the learner thread ends with the
weights the core reaches applying the same errors in one thread, a prediction is answered
while a learning step runs, a failure in the thread reaches the answering thread, and through
the processes no error is lost."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ccdni.base.spec import load_spec
from cerebellum.learner import LEARNER_NICE, ConcurrentLearner, LearnerFailed
from cerebellum.synthesiser import CerebellumCore
from orchestrator.runner import execute_run
from tests.conftest import records
from wire.ids import StepId

INTERFACES = ["area0", "area1"]


def small_spec(**overrides):
    return load_spec(hidden=4, cerebellum_hidden=12, seed=3, **overrides)


def until(condition, timeout: float = 10.0) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def parameters(synthesiser) -> list[torch.Tensor]:
    return [p.detach().clone() for p in synthesiser.parameters()]


def test_the_learner_reaches_the_weights_of_the_core_applying_the_same_errors() -> None:
    """Efferences then errors for two interfaces: once every error is counted, the learning
        and the answering weights both equal a core that applied the same errors in one thread
        (exactly), and so do the Adam moments; nothing is dropped; the learner thread runs at the
    lowest CPU priority, the answering thread does not."""
    spec = small_spec()
    reference = CerebellumCore(spec, INTERFACES)
    learner = ConcurrentLearner(CerebellumCore(spec, INTERFACES))
    learner.start()
    generator = torch.Generator().manual_seed(0)
    steps = [StepId(0, b, 0) for b in range(12)]
    try:
        for name in INTERFACES:
            for ids in steps:
                state = torch.randn(6, 8, generator=generator)
                expected = reference.predict(name, ids, state)
                assert torch.equal(learner.predict(name, ids, state), expected)
        for ids in steps:
            for name in INTERFACES:
                error = torch.randn(6, 8, generator=generator)
                reference.learn(name, ids, error)
                learner.receive_error(name, ids, error)
        until(lambda: all(learner.errors_counted(n) == len(steps) for n in INTERFACES))
        assert learner.native_id is not None and learner.native_id != threading.get_native_id()
        if sys.platform == "linux":  # learning yields the core to answers
            assert os.getpriority(os.PRIO_PROCESS, learner.native_id) == LEARNER_NICE
            assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < LEARNER_NICE
    finally:
        learner.stop()
    core = learner.core
    for name in INTERFACES:
        want = parameters(reference.synthesisers[name])
        assert all(torch.equal(a, b) for a, b in zip(parameters(core.synthesisers[name]), want))
        assert all(torch.equal(a, b) for a, b in zip(parameters(learner.answering[name]), want))
        ours, theirs = core.optimisers[name].state_dict(), reference.optimisers[name].state_dict()
        for key, moments in theirs["state"].items():
            assert torch.equal(ours["state"][key]["exp_avg_sq"], moments["exp_avg_sq"])
    assert core.errors_applied == {n: len(steps) for n in INTERFACES}
    assert core.dropped_errors == 0 and learner.queued() == 0


def test_a_prediction_is_answered_while_a_learning_step_runs(monkeypatch) -> None:
    """With a learning step held half-way, a prediction comes back at once from the weights
    before that step, the error is not yet counted, and pausing waits for the step; released,
    the step counts, the answering copy takes the new weights and a waiting caller is woken
    through the wake pipe."""
    spec = small_spec()
    core = CerebellumCore(spec, ["area0"])
    entered, release = threading.Event(), threading.Event()
    step = core.step

    def held_step(*args) -> None:
        entered.set()
        assert release.wait(10.0)
        step(*args)

    monkeypatch.setattr(core, "step", held_step)
    learner = ConcurrentLearner(core)
    learner.start()
    generator = torch.Generator().manual_seed(1)
    first, second = torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator)
    try:
        before = learner.predict("area0", StepId(0, 0, 0), first)
        learner.wake_wanted = True
        learner.receive_error("area0", StepId(0, 0, 0), torch.ones(6, 8))
        assert entered.wait(10.0)
        answered = learner.predict("area0", StepId(0, 1, 0), first)  # the step is held
        assert torch.equal(answered, before) and learner.errors_counted("area0") == 0
        paused = threading.Event()

        def pause() -> None:
            with learner.paused():
                paused.set()

        pauser = threading.Thread(target=pause, daemon=True)
        pauser.start()
        assert not paused.wait(0.2)  # the step in progress holds it off
        release.set()
        until(lambda: learner.errors_counted("area0") == 1)
        assert paused.wait(10.0)
        pauser.join(10.0)
        assert select.select([learner.wake_fd], [], [], 10.0)[0]  # woken: an error applied
        learner.drain_wakes()
        after = learner.predict("area0", StepId(0, 2, 0), second)
        learned = core.synthesisers["area0"]
        with torch.no_grad():
            assert torch.equal(after, learned(second))
        assert not torch.equal(learner.predict("area0", StepId(0, 3, 0), first), before)
    finally:
        release.set()
        learner.stop()


def test_catching_up_applies_every_queued_error_in_the_calling_thread() -> None:
    """Errors queued while the learner thread is not running (as when the olive dies and the
    niced thread has no core): catch_up applies them all at once, in order, and the learning
    and answering weights equal a core that applied them in one thread, so they are frozen
    from there on."""
    spec = small_spec()
    reference = CerebellumCore(spec, INTERFACES)
    learner = ConcurrentLearner(CerebellumCore(spec, INTERFACES))  # its thread never starts
    generator = torch.Generator().manual_seed(4)
    steps = [StepId(0, b, 0) for b in range(5)]
    for name in INTERFACES:
        for ids in steps:
            state = torch.randn(6, 8, generator=generator)
            reference.predict(name, ids, state)
            learner.predict(name, ids, state)
    for ids in steps:
        for name in INTERFACES:
            error = torch.randn(6, 8, generator=generator)
            reference.learn(name, ids, error)
            learner.receive_error(name, ids, error)
    assert learner.queued() == 2 * len(steps) and learner.errors_counted("area0") == 0
    assert learner.catch_up() == 2 * len(steps)
    assert learner.queued() == 0 and learner.catch_up() == 0
    for name in INTERFACES:
        assert learner.errors_counted(name) == len(steps)
        want = parameters(reference.synthesisers[name])
        for copy in (learner.core.synthesisers[name], learner.answering[name]):
            assert all(torch.equal(a, b) for a, b in zip(parameters(copy), want))
    assert learner.take_learn_seconds() > 0
    learner.stop()


def test_a_failure_in_the_learner_is_raised_in_the_answering_thread(monkeypatch) -> None:
    """A learning step that raises: the answering thread's check raises LearnerFailed naming
    the error, and the wake pipe becomes readable so a poller notices; stopping still works."""
    core = CerebellumCore(small_spec(), ["area0"])

    def broken_step(*args) -> None:
        raise ValueError("a broken synthesiser")

    monkeypatch.setattr(core, "step", broken_step)
    learner = ConcurrentLearner(core)
    learner.start()
    learner.predict("area0", StepId(0, 0, 0), torch.zeros(6, 8))
    learner.receive_error("area0", StepId(0, 0, 0), torch.ones(6, 8))
    assert select.select([learner.wake_fd], [], [], 10.0)[0]
    with pytest.raises(LearnerFailed, match="a broken synthesiser"):
        learner.check()
    learner.stop()  # the way out goes on (records are written); check still raises
    with pytest.raises(LearnerFailed, match="ValueError"):
        learner.check()


@contextlib.contextmanager
def busy_loops(n: int) -> Iterator[None]:
    """``n`` processes that spin at normal priority (a loaded machine), killed on leaving."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait(10)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("load", [0, 2], ids=["quiet", "two-busy-loops"])
def test_through_the_processes_concurrent_learning_loses_no_error(tmp_path: Path, load) -> None:
    """A `wait` run with the learner thread completes without a lesion, the cerebellum's weights
    change and it applies exactly as many errors as the area sent targets, dropping none — also
    beside two busy loops, where a learner niced to the lowest priority starved while holding
    the interpreter lock and stalled the heartbeat — and the same run in one thread does too."""
    for concurrent in (True, False):
        spec = load_spec(
            epochs=4,
            seed=2,
            timing="wait",
            concurrent_learning=concurrent,
            run_name=f"concurrent-{concurrent}",
            runs_dir=str(tmp_path),
            figures=False,
            progress=False,
        )
        with busy_loops(load):
            result = execute_run(spec, console=False)
        assert result.summary["status"] == "completed", result.summary["reason"]
        assert result.summary["lesions"] == [], result.summary["lesions"]
        metrics = records(result.run.path / "metrics.jsonl")
        area = [r for r in metrics if r["region"] == "area0" and "epoch" in r]
        sent = sum(r["targets_sent"] for r in area)
        (total,) = [r for r in metrics if r["region"] == "cerebellum" and "predictions_total" in r]
        assert sent > 0 and total["errors_applied"] == sent and total["dropped_errors"] == 0
        prints = [
            r["weight_fingerprint"]
            for r in metrics
            if r["region"] == "cerebellum" and "weight_fingerprint" in r
        ]
        assert len(set(prints)) > 1, prints
