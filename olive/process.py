"""The inferior olive's process: a thin shell around :class:`olive.comparator.InferiorOlive`.

It binds a ROUTER for targets from the areas and connects a DEALER (identity ``olive``) to the
cerebellum, through which predictions arrive and climbing-fibre errors leave. It says hello to
the cerebellum with heartbeats, and reports the mean cerebellar loss of each epoch, also per
interface it paired (``cerebellar_loss/area0``; a chain's ``cerebellar_loss/boundary0``,
``cerebellar_loss/forward0``, …: feedback and activity losses have different scales).

Each area tells the olive when it has sent all targets of an epoch (CONTROL ``epoch_end``,
after them on the same link); ``args["interfaces"]`` names the interfaces it sent targets for
(default: the sender's identity, a single area's interface). Once every interface has ended
an epoch, that epoch is reported.
"""

from __future__ import annotations

import time

import zmq

from ccdni.base.region import POLL_INTERVAL, RegionShell, StopRequested
from olive.comparator import InferiorOlive
from wire.channel import Endpoint
from wire.protocol import (
    ClimbingHeader,
    Command,
    HeartbeatHeader,
    Kind,
    Message,
    ProtocolError,
    RegionState,
    expect_shape,
    step_header,
)


class OliveShell(RegionShell):
    role = "olive"

    def serve(self) -> None:
        self.core = InferiorOlive()
        self.targets = self.bind(zmq.ROUTER, self.endpoints["olive"])
        self.cerebellum = self.connect(zmq.DEALER, self.endpoints["cerebellum"], identity="olive")
        self.reported_through = -1  # epochs up to this one have been reported
        self.ended: dict[str, int] = {}  # last epoch each interface's target sender finished
        self.pending_report: int | None = None  # finished epoch not reported yet
        saved = self.load_checkpoint() if self.options.get("resume") else None
        if saved is not None:
            self.reported_through = int(saved.state["reported_through"])
            self.epoch = self.reported_through + 1
        self.errors_sent = 0
        self.busy_seconds = 0.0  # pairing work since the last epoch report
        self.interfaces = frozenset(self.spec.interfaces)
        self.sizes = dict(self.spec.interface_io)
        poller = zmq.Poller()
        for endpoint in (self.control, self.targets, self.cerebellum):
            poller.register(endpoint.sock, zmq.POLLIN)
        self.state = RegionState.READY
        self.report(Command.READY)
        last_hello = 0.0
        hello_interval = min(self.spec.heartbeat_interval, 0.2)
        timeout = int(POLL_INTERVAL * 1000)
        links = ((self.targets, self.targets.sock), (self.cerebellum, self.cerebellum.sock))
        while True:
            now = time.monotonic()
            if now - last_hello >= hello_interval:
                self.cerebellum.send(HeartbeatHeader(region=self.name, state=self.state))
                last_hello = now
            events = dict(poller.poll(timeout))
            started = time.perf_counter()
            for endpoint, sock in links:
                if sock in events:
                    self.drain(endpoint)
            self.busy_seconds += time.perf_counter() - started
            self.heartbeat()
            if self.control.sock in events:  # control is read when the poll says it waits
                self.drain_control()
            self.check_parent()
            if self.stopping:
                raise StopRequested()

    def drain(self, endpoint: Endpoint) -> None:
        for _ in range(100):
            received = endpoint.receive_ready()
            if received is not None:
                self.handle(endpoint, *received)
            if not endpoint.waiting():
                return

    def handle(self, endpoint: Endpoint, sender: str | None, message: Message) -> None:
        expected = Kind.TARGET if endpoint is self.targets else Kind.PREDICTION
        if endpoint is self.targets and message.kind == Kind.CONTROL:
            self.on_epoch_end(sender, message)
            return
        if message.kind != expected:
            endpoint.reject(f"unexpected {message.kind.name}", sender)
            return
        header = message.header
        io = self.sizes.get(header.interface) if header.interface in self.interfaces else None
        if io is None:
            endpoint.reject(f"unknown interface {header.interface!r}", sender)
            return
        try:  # predictions and targets both have the synthesiser's output size
            tensor = expect_shape(message, (None, io[1]))
        except ProtocolError as exc:
            endpoint.reject(str(exc), sender)
            return
        self.state = RegionState.COMPARING
        self.epoch = max(self.epoch, header.epoch)
        try:
            if expected == Kind.TARGET:
                fibre = self.core.receive_target(header.interface, header.ids, tensor)
            else:
                fibre = self.core.receive_prediction(header.interface, header.ids, tensor)
        except ValueError as exc:  # its pair has another shape: both are dropped
            endpoint.reject(str(exc), sender)
            return
        if fibre is None:
            return
        reply = step_header(ClimbingHeader, header.run, header.interface, fibre.ids)
        if self.cerebellum.send(reply, [fibre.error]):  # the error first, bookkeeping after
            self.errors_sent += 1
        self.maybe_report()

    def on_epoch_end(self, sender: str | None, message: Message) -> None:
        """An area sent all targets of an epoch: once every area has, report that epoch."""
        if message.header.command != Command.EPOCH_END:
            self.targets.reject(f"unexpected {message.header.command.value}", sender)
            return
        epoch = message.header.args.epoch
        interfaces = message.header.args.interfaces or [sender]
        unknown = [name for name in interfaces if name not in self.spec.interfaces]
        if unknown:
            self.targets.reject(f"epoch_end for unknown interfaces {unknown}", sender)
            return
        for name in interfaces:
            self.ended[name] = max(self.ended.get(name, -1), epoch)
        if len(self.ended) < len(self.spec.interfaces):
            return
        finished = min(self.ended.values())
        if self.pending_report is not None and finished > self.pending_report:
            self.report_epochs(before=self.pending_report + 1)  # waited long enough
        self.pending_report = finished
        self.maybe_report()

    def maybe_report(self) -> None:
        """Report the finished epoch once none of its targets still waits for a prediction."""
        if self.pending_report is None:
            return
        if not any(key[1].epoch <= self.pending_report for key in self.core.targets):
            self.report_epochs(before=self.pending_report + 1)
            self.pending_report = None

    def report_epochs(self, before: int) -> None:
        """Report each finished epoch's cerebellar loss; forget stale unpaired items."""
        for epoch in range(self.reported_through + 1, before):
            summary = self.core.epoch_summary(epoch, per_interface=True)
            if summary is not None:
                self.metric({**summary, "busy_seconds": getattr(self, "busy_seconds", 0.0)})
                self.busy_seconds = 0.0
        for epoch in [
            e for e in self.core.loss_counts if e <= max(before - 1, self.reported_through)
        ]:
            self.core.epoch_summary(epoch)  # pairs completed after their epoch was reported
        if before - 1 > self.reported_through:
            self.reported_through = before - 1
            self.checkpoint()
        self.core.forget_before(before - 1)

    def checkpoint(self) -> None:
        """The olive learns nothing; its checkpoint is its bookkeeping."""
        state = {
            "epoch": self.epoch,
            "reported_through": self.reported_through,
            "errors_sent": self.errors_sent,
            "expired": self.core.expired,
        }
        self.save_checkpoint(state, self.reported_through)

    def on_control(self, message: Message) -> None:
        command = message.header.command
        if command == Command.LESION and message.header.args.target == "cerebellum":
            # predictions that can no longer be paired (and targets for them) are dropped
            dropped = len(self.core.predictions) + len(self.core.targets)
            self.core.predictions.clear()
            self.core.targets.clear()
            self.core.expired += dropped
            self.log.info("cerebellum_lesion_noticed", dropped=dropped)
        elif command in (Command.LESION, Command.REVIVED):
            pass
        else:
            super().on_control(message)

    def finish(self) -> None:
        if hasattr(self, "core"):
            self.report_epochs(before=self.epoch + 1)
            self.metric({"errors_sent": self.errors_sent, "expired": self.core.expired})
