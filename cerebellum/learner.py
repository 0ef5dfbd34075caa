"""Concurrent learning: the cerebellum learns in a second thread while it answers (socket-free).

Outside lockstep an area never asks for errors to have been applied before it is answered, so
nothing obliges a prediction to wait for a learning step — yet answered one after the other, a
prediction that arrives during a step (≈ 1 ms at the paper's seqMNIST sizes) waits for it.
:class:`ConcurrentLearner` takes the learning off the answering path:

- the *learning* synthesisers are the core's own; a learner thread applies the queued
  climbing-fibre errors to them, oldest first per interface (as the core's lazy errors are);
- the *answering* synthesisers are copies that predictions are computed from; after every
  learning step the learner copies the new weights into them (a few tens of µs), so an answer
  never sees a half-updated weight and uses every error applied before it was asked for,
  within one step;
- an error counts as applied (``errors_counted``) only once its step is copied into the
  answering weights, so a request that expects ``n`` errors and is answered after the count
  reached ``n`` has them in its prediction;
- :meth:`paused` holds the learner between two steps, for whatever must see the weights,
  optimisers and counts as one consistent state (epoch records, checkpoints, restarting a
  count, the way out).

Torch releases the GIL inside its operators and grad mode is per thread, so the answering
thread's forward passes (without autograd) and the learner's backward passes and Adam steps
run side by side; on a second core they overlap. The learner thread runs at a lower CPU
priority (niceness :data:`LEARNER_NICE`, on Linux), so a waking answer (or the area's own
work) takes a core from it first — but only a little lower: the two threads share Python's
interpreter lock, and a thread the kernel deschedules while holding it stalls the answering
thread as well, so a learner at the lowest priority starves on a loaded machine and takes the
cerebellum's heartbeat with it. The learner runs each step with the same
code as :meth:`CerebellumCore.learn`, so the weights after a set of errors are those of the
core applying them in the same order. A failure in the learner thread is kept and raised by
:meth:`check` in the answering thread, so the region fails loudly instead of serving frozen
weights.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
from collections.abc import Iterator

import torch

from cerebellum.synthesiser import CerebellumCore, Synthesiser, predict_without_autograd
from wire.ids import StepId

# The learner thread's niceness: a waking answer takes a core from it, yet it is never starved
# for long. It shares the interpreter lock with the answering thread, and a thread descheduled
# while holding it stalls that thread too: at 19 the cerebellum went 5 s without a heartbeat
# beside two busy loops (lesioned as unresponsive, 5 runs of 6); at 10, 2 runs of 6 failed
# beside four; at 5, 11 of 11 passed beside two or four (the runs of benchmarks/README.md).
LEARNER_NICE = 5


class LearnerFailed(RuntimeError):
    """The learner thread raised; the text names what it raised."""


class ConcurrentLearner:
    """Applies ``core``'s queued errors in a thread; answers from copies of its weights."""

    def __init__(self, core: CerebellumCore):
        self.core = core
        self.answering: dict[str, Synthesiser] = {
            name: copy.deepcopy(synthesiser) for name, synthesiser in core.synthesisers.items()
        }
        for synthesiser in self.answering.values():
            synthesiser.requires_grad_(False)
        self.state = threading.Condition()  # guards the core's queues, efferences and counts
        self.weights = threading.Lock()  # guards the answering copies (one copy or forward)
        self.step = threading.RLock()  # held for each learning step; :meth:`paused` takes it
        self.learn_seconds = 0.0  # CPU seconds of learning steps since last taken
        self.failure: BaseException | None = None
        self._stopping = False
        self._wake_read, self._wake_write = os.pipe()  # the answering thread polls the read end
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self.wake_wanted = False  # set by the answering thread while requests wait for errors
        self.native_id: int | None = None  # the learner thread's id, once it runs
        self._thread = threading.Thread(target=self._run, name="ccdni-learner", daemon=True)

    # -- the answering thread ---------------------------------------------------------------
    @property
    def wake_fd(self) -> int:
        """A file descriptor that becomes readable when an error was applied while
        :attr:`wake_wanted` was set (register it with the poller; :meth:`drain_wakes`)."""
        return self._wake_read

    def start(self) -> None:
        self._thread.start()

    def predict(self, interface: str, ids: StepId, efference: torch.Tensor) -> torch.Tensor:
        """ĝ = C(s) from the answering copy (B, N_in) → (B, N_out); remembers ``s`` for its
        error, as :meth:`CerebellumCore.predict` does."""
        core = self.core
        if efference.device != core.device:
            efference = efference.to(core.device)
        with self.weights:
            prediction = predict_without_autograd(self.answering[interface], efference)
        with self.state:
            core.remember(interface, ids, efference)
        return prediction

    def receive_error(
        self, interface: str, ids: StepId, climbing_fibre_error: torch.Tensor
    ) -> None:
        """Queue e (B, N_out) for the learner (oldest ``ids`` first per interface)."""
        with self.state:
            self.core.receive_error(interface, ids, climbing_fibre_error)
            self.state.notify()

    def errors_counted(self, interface: str) -> int:
        """Errors of ``interface`` applied (and copied into the answering weights) or dropped."""
        with self.state:
            return self.core.errors_counted(interface)

    def queued(self) -> int:
        """Errors received and not yet applied, over every interface."""
        with self.state:
            return sum(len(queue) for queue in self.core.queued.values())

    def drain_wakes(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 4096):
                pass

    def check(self) -> None:
        """Raise :class:`LearnerFailed` if the learner thread failed."""
        if self.failure is not None:
            raise LearnerFailed(f"the cerebellum's learner failed: {self.failure!r}")

    @contextlib.contextmanager
    def paused(self) -> Iterator[CerebellumCore]:
        """The core between two learning steps: weights, optimisers and counts consistent;
        what is done to the weights inside is copied into the answering copies on leaving."""
        with self.step:
            try:
                yield self.core
            finally:
                self._publish_all()

    def restart_count(self, interface: str) -> None:
        """Apply what is queued for ``interface`` and count its errors from zero again."""
        with self.paused() as core, self.state:
            core.restart_count(interface)

    def catch_up(self) -> int:
        """Apply every queued error now, in the calling thread, with the learner paused: what
        was received is learned before the caller goes on (the olive lost: its last errors
        are not left to a thread that may not run for a while). How many were applied."""
        with self.paused() as core, self.state:
            started = time.thread_time()
            applied = core.apply_errors()
            self.learn_seconds += time.thread_time() - started
            return applied

    def take_learn_seconds(self) -> float:
        with self.state:
            seconds, self.learn_seconds = self.learn_seconds, 0.0
        return seconds

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the step in progress (errors still queued stay queued) and join the
        thread, bounded by ``timeout`` (:class:`LearnerFailed` if it does not stop). A
        failure is left to :meth:`check`: the way out still records what was learned."""
        with self.state:
            self._stopping = True
            self.state.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise LearnerFailed(f"the cerebellum's learner did not stop within {timeout} s")
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the learner thread ---------------------------------------------------------------------
    def _wait_for_work(self) -> bool:
        """Block until an error is queued (True) or the learner is stopping (False)."""
        with self.state:
            while not self._stopping:
                if any(self.core.queued.values()):
                    return True
                self.state.wait()
            return False

    def _next(self) -> tuple[str, StepId, torch.Tensor | None, torch.Tensor] | None:
        """The next error to apply, taken with the step lock held (so whoever pauses the
        learner never sees an error out of the queue and not yet counted): (interface, ids,
        efference or None if unknown, error); None if the queue was emptied meanwhile.
        Interfaces take turns (the least served first), each oldest first."""
        core = self.core
        with self.state:
            pending = [name for name, queue in core.queued.items() if queue]
            if not pending:
                return None
            name = min(pending, key=lambda n: core.consumed[n])
            ids, error = core.queued[name].pop(0)
            return name, ids, core.outstanding[name].pop(ids, None), error

    def _run(self) -> None:
        core = self.core
        self.native_id = threading.get_native_id()
        with contextlib.suppress(OSError, AttributeError):  # per-thread niceness: Linux
            os.setpriority(os.PRIO_PROCESS, self.native_id, LEARNER_NICE)
        try:
            while self._wait_for_work():
                with self.step:
                    work = self._next()
                    if work is None:
                        continue
                    name, _, efference, error = work
                    started = time.thread_time()  # CPU: a niced thread waits for cores
                    if efference is not None and core.learning:
                        core.step(name, efference, error)
                        self._publish(name)
                    seconds = time.thread_time() - started
                    with self.state:
                        core.count(name, applied=efference is not None)
                        self.learn_seconds += seconds
                        wake = self.wake_wanted
                if wake:
                    with contextlib.suppress(BlockingIOError, OSError):
                        os.write(self._wake_write, b"!")
        except BaseException as exc:  # kept for the answering thread, which raises it
            self.failure = exc
            with contextlib.suppress(OSError):
                os.write(self._wake_write, b"!")

    def _publish(self, interface: str) -> None:
        learned = self.core.synthesisers[interface]
        with self.weights, torch.no_grad():
            for target, source in zip(
                self.answering[interface].parameters(), learned.parameters(), strict=True
            ):
                target.copy_(source)

    def _publish_all(self) -> None:
        for name in self.answering:
            self._publish(name)
