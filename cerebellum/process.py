"""The cerebellum's process: a thin shell around :class:`cerebellum.synthesiser.CerebellumCore`.

One ROUTER socket serves everything: efference copies arrive from areas (answered with a
PREDICTION to the area and a copy to the olive), climbing-fibre errors and hello heartbeats
arrive from the olive. Every efference (and ``barrier`` request) says how many errors of its
interface must have been applied before the answer (``errors_expected``; 0: don't wait); the
request waits until that many have arrived. With the olive lesioned no error comes any more:
the cerebellum answers at once, with frozen weights.

Messages are handled in bursts. Errors are queued; then every waiting request that can be
answered is — predictions before learning. Under ``lockstep`` a request applies exactly the
errors it expects, oldest first, and later ones stay queued until a request needs them, so no
answer depends on when an error arrived. Otherwise, with ``concurrent_learning`` on, a
learner thread (:class:`cerebellum.learner.ConcurrentLearner`) applies the queued errors while
this thread answers from a copy of the weights refreshed after every step; a request that
expects errors is answered once the learner has counted them (it wakes the poll through a
pipe). Without it (the default), the errors left in the queue are applied after the
answers, one at a time, and an efference that arrives meanwhile is answered between two
stages of the step in progress (forward, backward, clip, Adam; the weights change only in
the last), from the weights before it — a prediction waits for one stage, not a whole step;
a message that needs more (a new epoch, errors not yet applied, a control request) is held
until the step ends and handled first by the next burst (at least one error is applied per
burst, so learning always progresses). An area that
restarts its count after a revival says so (``restart_count``): the interface's count starts
again and its waiting requests are answered.

An epoch's record and checkpoint are taken when the next epoch's first efference arrives, as
its state was then, but written after that burst's answers: the area never waits for the
cerebellum's disk. Control messages are read when the poll says they are waiting, and the
parent check and heartbeat run after every burst and at least every ``POLL_INTERVAL``.
"""

from __future__ import annotations

import contextlib
import time

import torch
import zmq

from ccdni.base.region import POLL_INTERVAL, RegionShell, StopRequested
from cerebellum.learner import ConcurrentLearner
from cerebellum.synthesiser import CerebellumCore
from wire.protocol import (
    Command,
    Kind,
    Message,
    PredictionHeader,
    ProtocolError,
    RegionState,
    control,
    expect_shape,
    step_header,
)

OLIVE = "olive"
BURST = 100  # messages handled before control is looked at again


class CerebellumShell(RegionShell):
    role = "cerebellum"
    # Class-level defaults, so that a shell built without serve() (the tests' socket-free
    # shells) has them too. Seconds of work since the last epoch record:
    predict_seconds = 0.0
    learn_seconds = 0.0
    busy_seconds = 0.0
    closing: tuple[int, int] | None = None  # (ended epoch, predictions then): not written yet
    sizes: dict[str, tuple[int, int]] | None = None  # interface → (input, output) size
    saving: int | None = None  # the epoch :meth:`checkpoint` is writing, when not the current
    learner: ConcurrentLearner | None = None  # outside lockstep: learning in a second thread
    # messages received during a learning step that had to wait for its end (see
    # :meth:`answer_between_stages`), handled first by the next burst, in arrival order
    held: tuple[tuple[str | None, Message], ...] = ()
    answered_between_stages = 0  # predictions sent in the middle of a learning step

    def serve(self) -> None:
        self.core = CerebellumCore(self.spec, list(self.spec.interfaces))
        if self.options.get("resume") or self.options.get("from_checkpoint"):
            self.restore()
        self.router = self.bind(zmq.ROUTER, self.endpoints["cerebellum"])
        self.olive_known = False
        self.olive_lesioned = "olive" in self.options.get("lesioned", ())
        self.exact = self.spec.timing == "lockstep"  # apply exactly the errors expected
        self.deferred: list[tuple[str | None, Message, torch.Tensor | None]] = []
        self.predictions = 0
        self.epoch = -1
        if self.olive_lesioned:
            self.announce_ready()
        poller = zmq.Poller()
        poller.register(self.control.sock, zmq.POLLIN)
        poller.register(self.router.sock, zmq.POLLIN)
        router, control_link = self.router.sock, self.control.sock
        learner = None
        if not self.exact and self.spec.concurrent_learning and self.spec.topology != "chain":
            # (a chain's areas wait on applied errors to bound their lag: not behind a niced
            # thread, so a chain's cerebellum learns between answers)
            learner = self.learner = ConcurrentLearner(self.core)
            poller.register(learner.wake_fd, zmq.POLLIN)
            learner.start()
        timeout = int(POLL_INTERVAL * 1000)
        self.heartbeat(force=True)
        while True:
            events = dict(poller.poll(0 if self.held else timeout))
            if learner is not None:
                learner.check()
                if learner.wake_fd in events:  # errors applied that waiting requests expect
                    learner.drain_wakes()
                    if router not in events:
                        self.end_burst()
            if router in events or self.held:
                started = time.perf_counter()
                self.serve_burst()
                self.busy_seconds += time.perf_counter() - started
            self.between_bursts(control_link in events)

    def between_bursts(self, control_waiting: bool) -> None:
        """Heartbeat (at most every ``heartbeat_interval``), control messages if the poll saw
        any, the parent check, and ``stop``."""
        self.heartbeat()
        if control_waiting:
            self.drain_control()
        self.check_parent()
        if self.stopping:
            raise StopRequested()

    def serve_burst(self) -> None:
        """Handle what a learning step held, up to BURST waiting messages, then
        :meth:`end_burst`."""
        router = self.router
        held, self.held = self.held, ()
        for received in held:
            self.handle(*received)
        for _ in range(BURST):
            received = router.receive_ready()
            if received is not None:
                self.handle(*received)
            if not router.waiting():
                break
        self.end_burst()

    def end_burst(self) -> None:
        """Answer what can be answered, write an epoch that ended, then (outside lockstep)
        apply the errors still queued: predictions before bookkeeping and learning."""
        self.answer_deferred()
        self.close_epoch()
        if not self.exact and self.learner is None:
            self.learn_queued()

    def learn_queued(self) -> None:
        """Apply the queued errors, oldest first per interface; stop early (after at least
        one) when an efference is waiting, which the next burst answers first. Between the
        stages of each step, efferences that arrived meanwhile are answered
        (:meth:`answer_between_stages`): a prediction waits for at most one stage of a
        learning step, not the whole step."""
        router = getattr(self.router, "waiting", None)
        core = self.core
        first = True
        while True:
            pending = [name for name, queue in core.queued.items() if queue]
            if not pending:
                return
            if not first and (self.held or (router is not None and router())):
                return
            first = False
            started = time.perf_counter()
            answering = 0.0
            for name in pending:  # one error of each interface, in StepId order
                for _ in core.learning_next(name):
                    if router is not None and not self.held and router():
                        answering += self.answer_between_stages()
            self.learn_seconds += time.perf_counter() - started - answering

    def answer_between_stages(self) -> float:
        """Between two stages of a learning step (whose weights change only in its last
        stage): answer the efferences that are waiting and need no further error applied, with
        the weights as they were before the step, and queue the errors that arrived. The
        first message that needs more (a new epoch's efference, which writes the last epoch's
        record; one that expects errors not yet counted; a control request) is held, with all
        that comes after it, until the step is done. Nothing is answered while earlier
        requests are still waiting (answers keep their order). Seconds spent."""
        if self.deferred:
            return 0.0
        started = time.perf_counter()
        router, core = self.router, self.core
        for _ in range(BURST):
            if not router.waiting():
                break
            received = router.receive_ready()
            if received is None:  # invalid: rejected by the router
                continue
            sender, message = received
            kind, header = message.kind, message.header
            if kind is Kind.EFFERENCE and header.interface in core.consumed:
                if header.epoch > self.epoch or (
                    header.errors_expected > core.errors_counted(header.interface)
                    and not self.olive_lesioned
                ):
                    self.held = (received,)
                    break
                self.handle(sender, message)
                answered = self.predictions
                self.answer_deferred()
                self.answered_between_stages += self.predictions - answered
            elif kind in (Kind.EFFERENCE, Kind.CLIMBING, Kind.HEARTBEAT):
                self.handle(sender, message)  # queued, the olive heard from, or rejected
            else:
                self.held = (received,)
                break
        return time.perf_counter() - started

    def announce_ready(self) -> None:
        if self.state not in (RegionState.READY, RegionState.SERVING):
            self.state = RegionState.READY
            self.report(Command.READY)

    def handle(self, sender: str | None, message: Message) -> None:
        """Queue a request or an error (answered and applied by :meth:`end_burst`)."""
        kind = message.kind
        if kind == Kind.HEARTBEAT and sender == OLIVE:
            # a lesioned olive that speaks again (SIGCONT) stays lesioned until it is revived:
            # the areas send it no targets, so no error it could send is to be waited for
            if not self.olive_known and not self.olive_lesioned:
                self.olive_known = True
                self.announce_ready()
            return
        if kind == Kind.CONTROL:
            self.on_request(sender, message)
            return
        header = message.header
        if kind is not Kind.EFFERENCE and kind is not Kind.CLIMBING:
            self.router.reject(f"unexpected {kind.name}", sender)
            return
        sizes = self.sizes
        if sizes is None:
            sizes = self.sizes = dict(self.spec.interface_io)
        io = sizes.get(header.interface)
        if io is None or header.interface not in self.core.synthesisers:
            self.router.reject(f"unknown interface {header.interface!r}", sender)
            return
        try:  # an efference has the synthesiser's input size, an error its output size
            tensor = expect_shape(message, (None, io[0] if kind is Kind.EFFERENCE else io[1]))
        except ProtocolError as exc:
            self.router.reject(str(exc), sender)
            return
        if kind is Kind.EFFERENCE:
            if header.epoch > self.epoch:
                self.end_epoch(header.epoch)
            self.state = RegionState.SERVING
            self.deferred.append((sender, message, tensor))
        elif sender != OLIVE:
            self.router.reject("climbing-fibre error from a region that is not the olive", sender)
        else:
            (self.learner or self.core).receive_error(header.interface, header.ids, tensor)

    def on_request(self, sender: str | None, message: Message) -> None:
        """An area's CONTROL: a ``barrier`` (answered like an efference, without a prediction)
        or ``restart_count``."""
        command, args = message.header.command, message.header.args
        if command not in (Command.BARRIER, Command.RESTART_COUNT):
            self.router.reject(f"unexpected {command.value}", sender)
        elif args.interface not in self.core.synthesisers:
            self.router.reject(f"{command.value} for unknown {args.interface!r}", sender)
        elif command == Command.BARRIER:
            self.deferred.append((sender, message, None))
        else:  # requests counted before the restart are answered at once
            self.answer_deferred(waive=args.interface)
            self.close_epoch()  # restarting the count applies what is queued: learning
            (self.learner or self.core).restart_count(args.interface)
            self.log.info("count_restarted", interface=args.interface, area=sender)

    def ready(self, interface: str, errors_expected: int) -> bool:
        """Whether a request can be answered now (having applied the errors it expects)."""
        if self.learner is not None:  # the learner applies them; the count says when it has
            counted = self.learner.errors_counted(interface)
            return counted >= errors_expected or self.olive_lesioned
        if self.closing is not None and errors_expected > self.core.errors_counted(interface):
            self.close_epoch()  # settle may learn: the ended epoch is written as it was
        started = time.perf_counter()
        settled = self.core.settle(interface, errors_expected)
        self.learn_seconds += time.perf_counter() - started
        return settled or self.olive_lesioned

    def answer_deferred(self, waive: str | None = None) -> None:
        """Answer, in arrival order, every request whose errors have been applied (every
        request of interface ``waive`` regardless). The prediction is encoded once and sent
        to the area and the olive."""
        still = []
        predictor = self.learner or self.core
        for sender, message, state in self.deferred:
            header = message.header
            barrier = state is None
            interface = header.args.interface if barrier else header.interface
            expected = header.args.errors_expected if barrier else header.errors_expected
            if interface != waive and not self.ready(interface, expected):
                still.append((sender, message, state))
            elif barrier:
                self.router.send(control(Command.BARRIER_OK, self.name), to=sender)
            else:
                started = time.perf_counter()
                prediction = predictor.predict(interface, header.ids, state)
                self.predict_seconds += time.perf_counter() - started
                reply = step_header(PredictionHeader, header.run, interface, header.ids)
                send_each = getattr(self.router, "send_each", None)
                if send_each is not None:
                    send_each(
                        reply, [prediction], [sender, OLIVE] if self.olive_known else [sender]
                    )
                else:  # a stand-in router (tests) without it
                    self.router.send(reply, [prediction], to=sender)
                    if self.olive_known:
                        self.router.send(reply, [prediction], to=OLIVE)
                self.predictions += 1
        self.deferred = still
        if self.learner is not None:  # wake up when the learner has applied an error
            self.learner.wake_wanted = bool(still)

    def on_control(self, message: Message) -> None:
        command = message.header.command
        region = getattr(message.header.args, "target", None)
        if command == Command.LESION and region == "olive":
            self.olive_known = False
            self.olive_lesioned = True
            self.log.info("olive_lesion_noticed", epoch=self.epoch)
            if self.learner is not None:  # the olive's last errors are learned now:
                self.learner.catch_up()  # the weights are frozen from here on
            elif not self.exact:  # (lockstep applies exactly the errors each answer expects)
                started = time.perf_counter()
                self.core.apply_errors()
                self.learn_seconds += time.perf_counter() - started
            self.announce_ready()  # an olive lost during start-up: ready without it
            self.answer_deferred()
        elif command == Command.REVIVED and region == "olive":
            self.olive_lesioned = False
            self.log.info("olive_revival_noticed", epoch=self.epoch)
        elif command in (Command.LESION, Command.REVIVED):
            pass
        else:
            super().on_control(message)

    def end_epoch(self, new_epoch: int) -> None:
        """A new epoch began: the one that ended is recorded and checkpointed as it is now —
        by :meth:`close_epoch`, after this burst's answers and before any further learning."""
        if self.epoch >= 0:
            self.close_epoch()  # an earlier one still open (two epochs in one burst)
            self.closing = (self.epoch, self.predictions)
        self.epoch = new_epoch

    def close_epoch(self) -> None:
        """Report and checkpoint the epoch that ended, if one is waiting to be written."""
        if self.closing is None:
            return
        epoch, predictions = self.closing
        self.closing = None
        with self.consistent():
            if self.learner is not None:  # the learner's seconds are work too
                learned = self.learner.take_learn_seconds()
                self.learn_seconds += learned
                self.busy_seconds += learned
            self.metric(
                {
                    "epoch": epoch,
                    "predictions": predictions,
                    "errors_applied": sum(self.core.errors_applied.values()),
                    "weight_fingerprint": self.core.fingerprint(),
                    "olive_lesioned": self.olive_lesioned,
                    "busy_seconds": self.busy_seconds,
                    "predict_seconds": self.predict_seconds,
                    "learn_seconds": self.learn_seconds,
                }
            )
            self.busy_seconds = self.predict_seconds = self.learn_seconds = 0.0
            self.saving = epoch
            try:
                self.checkpoint()
            finally:
                self.saving = None

    def consistent(self) -> contextlib.AbstractContextManager:
        """The core between two learning steps (the learner paused, if there is one)."""
        return self.learner.paused() if self.learner is not None else contextlib.nullcontext()

    def checkpoint(self) -> None:
        epoch = self.epoch if self.saving is None else self.saving
        with self.consistent():
            self.save_checkpoint(self.core.state_dict(), epoch)

    def restore(self) -> None:
        saved = self.load_checkpoint()
        if saved is None and self.options.get("expect_checkpoint"):
            from ccdni.base.checkpoint import CheckpointError

            path = self.run.checkpoint_path(self.name)
            raise CheckpointError(f"{path}: checkpoint does not exist")
        if saved is not None:
            self.core.load_state_dict(saved.state)
            self.log.info("restored", epoch=saved.epoch)

    def finish(self) -> None:
        """On the way out: the errors that arrived (still in the socket or queued) are applied,
        then the last epoch is reported and saved."""
        if not hasattr(self, "core"):
            return
        if self.learner is not None:  # stopped after its step; what it left stays queued
            self.learner.stop()
        for _ in range(BURST * 10 if hasattr(self, "router") else 0):
            if not self.router.sock.poll(0, zmq.POLLIN):
                break
            received = self.router.receive_ready()
            if received is not None and received[1].kind == Kind.CLIMBING:
                self.handle(*received)
        self.close_epoch()
        self.core.apply_errors()
        self.end_epoch(self.epoch + 1)
        self.close_epoch()
        self.metric(
            {
                "predictions_total": self.predictions,
                "errors_applied": sum(self.core.errors_applied.values()),
                "dropped_errors": self.core.dropped_errors,
                "answered_between_stages": self.answered_between_stages,
            }
        )
