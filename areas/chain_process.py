"""One area of a chain as its own process: a thin shell driving :class:`areas.chain_core.ChainAreaCore`.

The core decides what the area exchanges (its :class:`~areas.chain_core.ChainRole`); this
module carries it over ZeroMQ (:class:`ZmqChainLinks`). Area k binds a ROUTER on its own
endpoint (its input side: ACTIVITY h_{k-1} arrives from area k-1, FEEDBACK ∂L/∂h_{k-1} leaves
for it) and connects a DEALER (identity ``area{k}``) to area k+1's ROUTER (ACTIVITY out,
FEEDBACK back). If its role asks the cerebellum it connects a DEALER to it (efferences out,
predictions back), if it sends targets one to the olive (targets and ``epoch_end`` out). Ids are
(epoch, batch, 0) for training batches and (epoch, chunk, 1) for validation.

Hand-shakes between neighbours (CONTROL): ``hello`` downstream before the first batch (a ROUTER
can only answer a DEALER whose connection is up); ``batch_done`` upstream after each training
batch when area k-1 is flow-controlled; ``feedback_withheld`` instead of FEEDBACK when there is
no gradient for a batch; ``validated`` upstream once every area below has validated the epoch,
so all areas begin the next epoch together and no training clock holds another's validation.

Lesions: the area remembers the regions the orchestrator reports dead (``lesion`` / ``revived``
notices). While the cerebellum is lesioned the area does not ask it; while the cerebellum or the
olive is lesioned no TARGET is sent. After a revival the area's error count starts again and it
tells the cerebellum so (``restart_count`` per interface it asks on). A scheduled lesion
(``spec.ablate``) is requested by area 0 at the start of its epoch; every area waits at the start
of that epoch until it has heard of it.

Every receive is bounded (``lockstep_timeout`` for a chain neighbour, and for the cerebellum
under lockstep; ``wait_timeout`` for the cerebellum otherwise, ended early by a lesion notice),
every send non-blocking.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import zmq

from areas.chain import chain_data
from areas.chain_core import ChainAreaCore, ChainRole, ChainTimeout
from ccdni.base.region import RegionShell
from ccdni.base.spec import RunSpec
from wire.channel import Endpoint
from wire.ids import StepId
from wire.protocol import (
    ActivityHeader,
    Command,
    EfferenceHeader,
    FeedbackHeader,
    Kind,
    Message,
    ProtocolError,
    RegionState,
    StepHeader,
    TargetHeader,
    control,
    expect_shape,
    step_header,
)


class ZmqChainLinks:
    """Area k's :class:`~areas.chain_core.ChainLinks` over ZeroMQ (sockets absent where its
    role needs none)."""

    def __init__(
        self,
        spec: RunSpec,
        role: ChainRole,
        run_id: str,
        tick: Callable[[], None],
        upstream: Endpoint | None = None,
        downstream: Endpoint | None = None,
        cerebellum: Endpoint | None = None,
        olive: Endpoint | None = None,
        lesioned: set[str] | None = None,
    ):
        self.spec = spec
        self.role = role
        self.run_id = run_id
        self.tick = tick
        self.upstream = upstream  # ROUTER: activity in, feedback out
        self.downstream = downstream  # DEALER: activity out, feedback in
        self.cerebellum = cerebellum
        self.olive = olive
        self.lesioned = set(lesioned or ())
        self.begun = 0  # training batches begun here (flow control) ...
        self.acknowledged = 0  # ... and those area k+1 said it finished

    @classmethod
    def connect(cls, shell: RegionShell, role: ChainRole, lesioned: set[str]) -> ZmqChainLinks:
        """The sockets ``role`` needs, bound and connected through ``shell``."""
        endpoints = shell.endpoints
        return cls(
            shell.spec,
            role,
            shell.run.path.name,
            shell.tick,
            upstream=shell.bind(zmq.ROUTER, endpoints[role.name]) if role.upstream else None,
            downstream=(
                shell.connect(zmq.DEALER, endpoints[role.downstream], identity=role.name)
                if role.downstream
                else None
            ),
            cerebellum=(
                shell.connect(zmq.DEALER, endpoints["cerebellum"], identity=role.name)
                if role.asked_interfaces
                else None
            ),
            olive=(
                shell.connect(zmq.DEALER, endpoints["olive"], identity=role.name)
                if role.target_interfaces
                else None
            ),
            lesioned=lesioned,
        )

    @property
    def cerebellum_alive(self) -> bool:
        return "cerebellum" not in self.lesioned

    @property
    def olive_alive(self) -> bool:
        return "olive" not in self.lesioned

    # -- neighbours ---------------------------------------------------------------------------------
    def greet(self) -> None:
        """Say hello downstream, wait for upstream's hello (in the forward-unlocked mode area
        k+1 may send its first FEEDBACK before area k has sent anything)."""
        if self.downstream is not None:
            self.downstream.send(control(Command.HELLO, self.role.name))
        if self.upstream is None:
            return
        deadline = time.monotonic() + self.spec.lockstep_timeout
        while time.monotonic() < deadline:
            received = self.upstream.receive(0.05)
            if received is None:
                self.tick()
                continue
            sender, message = received
            if message.kind == Kind.CONTROL and message.header.command == Command.HELLO:
                return
            self.upstream.reject(f"unexpected {message.kind.name} before hello", sender)
        raise ChainTimeout(f"no hello from {self.role.upstream}")

    def begin_batch(self, ids: StepId) -> None:
        """Count area k+1's ``batch_done`` notices; begin a batch only while fewer than the
        role's window are outstanding (without the cerebellum's lag bound, e.g. lesioned, area
        k would otherwise run ahead without limit and overflow the link's queues)."""
        assert self.downstream is not None
        deadline = time.monotonic() + self.spec.lockstep_timeout
        timeout = 0.0
        while True:
            received = self.downstream.receive(timeout)
            if received is not None:
                message = received[1]
                if message.kind == Kind.CONTROL and message.header.command == Command.BATCH_DONE:
                    self.acknowledged += 1
                else:
                    self.downstream.reject(f"unexpected {message.kind.name} from downstream")
                timeout = 0.0
                continue
            if self.begun - self.acknowledged < self.role.window:
                break
            if time.monotonic() > deadline:
                raise ChainTimeout(f"{self.role.downstream} finished no batch in time")
            self.tick()
            timeout = 0.05
        self.begun += 1

    def batch_done(self, ids: StepId) -> None:
        self._upstream_control(Command.BATCH_DONE, ids)

    def validated(self, epoch: int) -> None:
        """Wait until every area below has validated ``epoch`` (``validated`` from area k+1),
        then tell area k-1. ``batch_done`` notices still in the queue count."""
        if self.downstream is not None:
            deadline = time.monotonic() + self.spec.lockstep_timeout
            while True:
                received = self.downstream.receive(0.05)
                if received is not None:
                    header = received[1].header
                    command = getattr(header, "command", None)
                    if command == Command.VALIDATED and header.args.epoch == epoch:
                        break
                    if command == Command.BATCH_DONE:
                        self.acknowledged += 1
                    else:
                        self.downstream.reject(f"unexpected {received[1].kind.name} after epoch")
                elif time.monotonic() > deadline:
                    raise ChainTimeout(
                        f"{self.role.downstream} did not finish validating epoch {epoch}"
                    )
                self.tick()
        if self.upstream is not None:
            header = control(Command.VALIDATED, self.role.name, epoch=epoch)
            self.upstream.send(header, to=self.role.upstream)

    def activity_in(self, ids: StepId, rows: int) -> torch.Tensor:
        assert self.upstream is not None
        tensor = self._receive_valid(self.upstream, Kind.ACTIVITY, ids, rows)
        if not isinstance(tensor, torch.Tensor):
            raise ChainTimeout(f"no valid activity {tuple(ids)} from {self.role.upstream}")
        return tensor

    def activity_out(self, ids: StepId, activity: torch.Tensor) -> None:
        self._send(self.downstream, ActivityHeader, f"boundary{self.role.k}", ids, activity)

    def feedback_in(self, ids: StepId, rows: int) -> torch.Tensor | None:
        assert self.downstream is not None
        received = self._receive_valid(self.downstream, Kind.FEEDBACK, ids, rows)
        if isinstance(received, Message):  # feedback_withheld
            return None
        if received is None:
            raise ChainTimeout(f"no valid feedback {tuple(ids)} from {self.role.downstream}")
        return received

    def feedback_out(self, ids: StepId, feedback: torch.Tensor | None) -> None:
        if feedback is None:
            self._upstream_control(Command.FEEDBACK_WITHHELD, ids)
            return
        interface = f"boundary{self.role.k - 1}"
        self._send(self.upstream, FeedbackHeader, interface, ids, feedback, to=self.role.upstream)

    # -- the cerebellum and the olive -------------------------------------------------------------
    def request(
        self, interface: str, ids: StepId, efference: torch.Tensor, errors_expected: int
    ) -> bool:
        assert self.cerebellum is not None
        header = step_header(
            EfferenceHeader, self.run_id, interface, ids, errors_expected=errors_expected
        )
        return self.cerebellum.send(header, [efference])

    def prediction(self, interface: str, ids: StepId, rows: int) -> torch.Tensor | None:
        """The answer within ``wait_timeout`` (``lockstep_timeout`` under lockstep, where none
        is a ChainTimeout), or None (lesion notice, timeout, invalid)."""
        assert self.cerebellum is not None
        lockstep = self.spec.timing == "lockstep"
        timeout = self.spec.lockstep_timeout if lockstep else self.spec.wait_timeout
        message = self._wait(
            self.cerebellum,
            Kind.PREDICTION,
            ids,
            timeout,
            interface=interface,
            abort=lambda: not self.cerebellum_alive,
        )
        tensor = None if message is None else self._checked(self.cerebellum, message, rows)
        if tensor is None and lockstep and self.cerebellum_alive:
            raise ChainTimeout(f"the cerebellum did not answer {interface} {tuple(ids)} in time")
        return tensor

    def send_target(self, interface: str, ids: StepId, target: torch.Tensor) -> bool:
        assert self.olive is not None
        return self.olive.send(step_header(TargetHeader, self.run_id, interface, ids), [target])

    def end_epoch(self, epoch: int, interfaces: tuple[str, ...]) -> None:
        assert self.olive is not None
        header = control(
            Command.EPOCH_END, self.role.name, epoch=epoch, interfaces=list(interfaces)
        )
        self.olive.send(header)

    def restart_count(self) -> None:
        """Tell the cerebellum to count this area's errors from zero (after a revival)."""
        if self.cerebellum is None or not self.cerebellum_alive:
            return
        for interface in self.role.asked_interfaces:
            self.cerebellum.send(
                control(Command.RESTART_COUNT, self.role.name, interface=interface)
            )

    # -- sending and receiving ----------------------------------------------------------------------
    def _upstream_control(self, command: Command, ids: StepId) -> None:
        assert self.upstream is not None
        header = control(command, self.role.name, epoch=ids.epoch, batch=ids.batch)
        self.upstream.send(header, to=self.role.upstream)

    def _send(
        self,
        endpoint: Endpoint | None,
        cls: type[StepHeader],
        interface: str,
        ids: StepId,
        tensor: torch.Tensor,
        to: str | None = None,
    ) -> None:
        assert endpoint is not None
        endpoint.send(step_header(cls, self.run_id, interface, ids), [tensor], to=to)

    def _wait(
        self,
        endpoint: Endpoint,
        kind: Kind,
        ids: StepId,
        timeout: float,
        interface: str | None = None,
        abort: Callable[[], bool] | None = None,
    ) -> Message | None:
        """The message of ``kind`` for ``ids`` (and ``interface``) within ``timeout``, or None
        (also at once when ``abort()`` turns true, e.g. on a lesion notice). While waiting for
        FEEDBACK, a ``feedback_withheld`` notice for ``ids`` is returned as well."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if abort is not None and abort():
                return None
            received = endpoint.receive(min(remaining, 0.05))
            if received is None:
                self.tick()
                continue
            message = received[1]
            header = message.header
            if (
                message.kind == kind
                and header.ids == ids
                and (interface is None or header.interface == interface)
            ):
                return message
            if kind == Kind.PREDICTION and message.kind == Kind.PREDICTION:
                continue  # a late prediction for an earlier batch: useless now
            if (
                kind == Kind.FEEDBACK
                and message.kind == Kind.CONTROL
                and header.command == Command.FEEDBACK_WITHHELD
                and (header.args.epoch, header.args.batch) == (ids.epoch, ids.batch)
            ):
                return message
            endpoint.reject(f"unexpected {message.kind.name} {getattr(header, 'ids', '')}")
        return None

    def _receive_valid(
        self, endpoint: Endpoint, kind: Kind, ids: StepId, rows: int
    ) -> Message | torch.Tensor | None:
        """The valid tensor of ``kind`` for ``ids`` (an invalid one is rejected and the wait
        goes on), a ``feedback_withheld`` CONTROL message, or None after lockstep_timeout."""
        deadline = time.monotonic() + self.spec.lockstep_timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = self._wait(endpoint, kind, ids, remaining)
            if message is None or message.kind == Kind.CONTROL:
                return message
            tensor = self._checked(endpoint, message, rows)
            if tensor is not None:
                return tensor
        return None

    def _checked(self, endpoint: Endpoint, message: Message, rows: int) -> torch.Tensor | None:
        """The message's tensor if it is (rows, W) and finite; else rejected (logged), None."""
        try:
            return expect_shape(message, (rows, self.spec.chain_width))
        except ProtocolError as exc:
            endpoint.reject(str(exc))
            return None


class ChainAreaShell(RegionShell):
    role = "chain-area"

    def serve(self) -> None:
        k = int(self.name.removeprefix("area"))
        self.core = ChainAreaCore(self.spec, k, chain_data(self.spec))
        lesioned = set(self.options.get("lesioned", ()))
        self.links = ZmqChainLinks.connect(self, self.core.role, lesioned)
        self.await_start()
        self.links.greet()
        for epoch in range(self.spec.epochs):
            self.epoch = epoch
            self.scheduled_lesions(epoch)
            metrics = self.core.train_epoch(self.links, epoch)
            metrics.update(self.core.validate(self.links, epoch))
            self.links.validated(epoch)
            self.metric(metrics)
            self.log.info("epoch", **metrics)
        self.save_checkpoint(self.core.state_dict(), self.epoch)
        self.state = RegionState.DONE
        self.report(Command.DONE, epochs=self.spec.epochs)
        while True:  # keep the sockets open until told to stop (downstream may still read)
            self.tick()
            self.drain_control(0.1)

    def batch_progress(self) -> tuple[int, int]:
        """(training batches done in this epoch, batches per epoch), for the live table."""
        core = getattr(self, "core", None)
        return (core.batches_done, core.n_batches) if core is not None else (0, 0)

    def scheduled_lesions(self, epoch: int) -> None:
        """Lesions scheduled for this epoch: area 0 asks the orchestrator to carry them out;
        every area waits until it has heard of them, so each starts the epoch without them."""
        for region, at in self.spec.ablation_schedule:
            if at != epoch or region in self.links.lesioned:
                continue
            if self.core.role.first:
                self.report(Command.REQUEST_ABLATION, target=region, epoch=epoch)
            deadline = time.monotonic() + self.spec.lockstep_timeout
            while region not in self.links.lesioned:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"scheduled lesion of {region} was not carried out")
                self.tick()
                self.drain_control(0.05)

    def on_control(self, message: Message) -> None:
        command = message.header.command
        region = getattr(message.header.args, "target", None)
        if command == Command.LESION and hasattr(self, "links"):
            self.links.lesioned.add(region)
            self.log.info("lesion_noticed", target=region, epoch=self.epoch)
        elif command == Command.REVIVED and hasattr(self, "links"):
            self.links.lesioned.discard(region)
            self.core.restart_counts()
            self.links.restart_count()
            self.log.info("revival_noticed", target=region, epoch=self.epoch)
        else:
            super().on_control(message)
