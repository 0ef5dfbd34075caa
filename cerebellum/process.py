"""The cerebellum's process: a thin shell around :class:`cerebellum.synthesiser.CerebellumCore`.

One ROUTER socket serves everything: efference copies arrive from areas (answered with a
PREDICTION to the area and a copy to the olive), climbing-fibre errors and hello heartbeats
arrive from the olive. Under ``lockstep`` an efference (or a ``barrier`` request) is answered
only once every error the area has caused so far has been applied, so the run is
deterministic. With the olive lesioned no error comes any more: the cerebellum keeps answering
with frozen weights.

A chain's areas use the same deferral with a window (``errors_expected`` = efferences sent on
the interface − ``chain_max_lag``). Its count cannot survive an olive lesion (errors in flight
are lost), so for a chain a revived olive starts a new count: ``errors_applied`` restarts at
zero (the areas restart theirs on the same notice) and requests deferred under the old count
are answered at once.
"""

from __future__ import annotations

import torch
import zmq

from ccdni.base.region import POLL_INTERVAL, RegionShell
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


class CerebellumShell(RegionShell):
    role = "cerebellum"

    def serve(self) -> None:
        self.core = CerebellumCore(self.spec, list(self.spec.interfaces))
        if self.options.get("resume") or self.options.get("from_checkpoint"):
            self.restore()
        self.router = self.bind(zmq.ROUTER, self.endpoints["cerebellum"])
        self.olive_known = False
        self.olive_lesioned = "olive" in self.options.get("lesioned", ())
        self.deferred: list[tuple[str | None, Message, torch.Tensor | None]] = []
        self.predictions = 0
        self.epoch = -1
        if self.olive_lesioned:
            self.announce_ready()
        poller = zmq.Poller()
        poller.register(self.control.sock, zmq.POLLIN)
        poller.register(self.router.sock, zmq.POLLIN)
        self.heartbeat(force=True)
        while True:
            events = dict(poller.poll(int(POLL_INTERVAL * 1000)))
            if self.router.sock in events:
                for _ in range(100):  # bounded burst, then look at control again
                    received = self.router.receive_ready()
                    if received is not None:
                        self.handle(*received)
                    if not self.router.sock.poll(0, zmq.POLLIN):
                        break
            self.tick()

    def announce_ready(self) -> None:
        if self.state not in (RegionState.READY, RegionState.SERVING):
            self.state = RegionState.READY
            self.report(Command.READY)

    def handle(self, sender: str | None, message: Message) -> None:
        kind = message.kind
        if kind == Kind.HEARTBEAT and sender == OLIVE:
            if not self.olive_known:
                self.olive_known = True
                self.olive_lesioned = False
                self.announce_ready()
            return
        if kind == Kind.CONTROL and message.header.command == Command.BARRIER:
            if message.header.args.interface not in self.core.synthesisers:
                self.router.reject(f"barrier for unknown {message.header.args.interface!r}", sender)
                return
            self.deferred.append((sender, message, None))
            self.answer_deferred()
            return
        header = message.header
        if kind not in (Kind.EFFERENCE, Kind.CLIMBING):
            self.router.reject(f"unexpected {kind.name}", sender)
            return
        if header.interface not in self.core.synthesisers:
            self.router.reject(f"unknown interface {header.interface!r}", sender)
            return
        try:  # an efference has the synthesiser's input size, an error its output size
            input_size, output_size = self.spec.interface_io[header.interface]
            size = input_size if kind == Kind.EFFERENCE else output_size
            tensor = expect_shape(message, (None, size))
        except ProtocolError as exc:
            self.router.reject(str(exc), sender)
            return
        if kind == Kind.EFFERENCE:
            if header.epoch > self.epoch:
                self.end_epoch(header.epoch)
            self.state = RegionState.SERVING
            self.deferred.append((sender, message, tensor))
        elif sender != OLIVE:
            self.router.reject("climbing-fibre error from a region that is not the olive", sender)
            return
        else:
            self.core.learn(header.interface, header.ids, tensor)
        self.answer_deferred()

    def waiting(self, interface: str, errors_expected: int) -> bool:
        """Lockstep (or a chain's lag bound): errors this area caused are still on their way."""
        return (
            (self.spec.timing == "lockstep" or self.spec.topology == "chain")
            and not self.olive_lesioned
            and self.core.errors_applied[interface] < errors_expected
        )

    def answer_deferred(self, waive: bool = False) -> None:
        """Answer every request whose lockstep condition holds (all, outside lockstep, or
        with ``waive``)."""
        still = []
        for sender, message, state in self.deferred:
            header = message.header
            if state is None:  # a barrier
                args = header.args
                if not waive and self.waiting(args.interface, args.errors_expected):
                    still.append((sender, message, state))
                else:
                    self.router.send(control(Command.BARRIER_OK, self.name), to=sender)
                continue
            if not waive and self.waiting(header.interface, header.errors_expected):
                still.append((sender, message, state))
                continue
            prediction = self.core.predict(header.interface, header.ids, state)
            reply = step_header(PredictionHeader, header.run, header.interface, header.ids)
            self.router.send(reply, [prediction], to=sender)
            if self.olive_known:
                self.router.send(reply, [prediction], to=OLIVE)
            self.predictions += 1
        self.deferred = still

    def on_control(self, message: Message) -> None:
        command = message.header.command
        region = getattr(message.header.args, "target", None)
        if command == Command.LESION and region == "olive":
            self.olive_known = False
            self.olive_lesioned = True
            self.log.info("olive_lesion_noticed", epoch=self.epoch)
            self.answer_deferred()
        elif command == Command.LESION and region == "cerebellum":
            pass
        elif command == Command.REVIVED and region == "olive":
            self.olive_lesioned = False
            if self.spec.topology == "chain":  # a new error count (see the module docstring)
                self.core.errors_applied = dict.fromkeys(self.core.errors_applied, 0)
                self.answer_deferred(waive=True)
                self.log.info("olive_revival_noticed", epoch=self.epoch)
        elif command in (Command.LESION, Command.REVIVED):
            pass
        else:
            super().on_control(message)

    def end_epoch(self, new_epoch: int) -> None:
        """A new epoch began: report and checkpoint the one that ended."""
        if self.epoch >= 0:
            self.metric(
                {
                    "epoch": self.epoch,
                    "predictions": self.predictions,
                    "errors_applied": sum(self.core.errors_applied.values()),
                    "weight_fingerprint": self.core.fingerprint(),
                    "olive_lesioned": self.olive_lesioned,
                }
            )
            self.checkpoint()
        self.epoch = new_epoch

    def checkpoint(self) -> None:
        self.save_checkpoint(self.core.state_dict(), self.epoch)

    def restore(self) -> None:
        saved = self.load_checkpoint()
        if saved is not None:
            self.core.load_state_dict(saved.state)
            self.log.info("restored", epoch=saved.epoch)

    def finish(self) -> None:
        if hasattr(self, "core"):
            self.end_epoch(self.epoch + 1)
            self.metric(
                {
                    "predictions_total": self.predictions,
                    "errors_applied": sum(self.core.errors_applied.values()),
                    "dropped_errors": self.core.dropped_errors,
                }
            )
