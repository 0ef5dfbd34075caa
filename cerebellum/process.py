"""The cerebellum's process: a thin shell around :class:`cerebellum.synthesiser.CerebellumCore`.

One ROUTER socket serves everything: efference copies arrive from areas (answered with a
PREDICTION to the area and a copy to the olive), climbing-fibre errors and hello heartbeats
arrive from the olive. Under ``lockstep`` an efference is answered only once every error the
area has caused so far has been applied, so the run is deterministic.
"""

from __future__ import annotations

import torch
import zmq

from cerebellum.synthesiser import CerebellumCore
from orchestrator.region import POLL_INTERVAL, RegionShell
from wire.protocol import Kind, Message, PredictionHeader, ProtocolError, expect_shape, step_header

OLIVE = "olive"


class CerebellumShell(RegionShell):
    role = "cerebellum"

    def serve(self) -> None:
        self.core = CerebellumCore(self.spec, list(self.spec.interfaces))
        self.router = self.bind(zmq.ROUTER, self.endpoints["cerebellum"])
        self.olive_known = False
        self.deferred: list[tuple[str, Message, torch.Tensor]] = []
        self.predictions = 0
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

    def handle(self, sender: str | None, message: Message) -> None:
        kind = message.kind
        if kind == Kind.HEARTBEAT and sender == OLIVE:
            if not self.olive_known:
                self.olive_known = True
                self.state = "ready"
                self.report("ready")
            return
        header = message.header
        if kind not in (Kind.EFFERENCE, Kind.CLIMBING):
            self.router.reject(f"unexpected {kind.name}", sender)
            return
        if header.interface not in self.core.synthesisers:
            self.router.reject(f"unknown interface {header.interface!r}", sender)
            return
        try:
            tensor = expect_shape(message, (None, self.spec.state_size))
        except ProtocolError as exc:
            self.router.reject(str(exc), sender)
            return
        if kind == Kind.EFFERENCE:
            self.state = "serving"
            self.epoch = header.epoch
            self.deferred.append((sender, message, tensor))
        elif sender != OLIVE:
            self.router.reject("climbing-fibre error from a region that is not the olive", sender)
            return
        else:
            self.core.learn(header.interface, header.ids, tensor)
        self.answer_deferred()

    def answer_deferred(self) -> None:
        """Answer every efference whose lockstep condition holds (all, outside lockstep)."""
        waiting = []
        for sender, message, state in self.deferred:
            header = message.header
            applied = self.core.errors_applied[header.interface]
            if self.spec.timing == "lockstep" and applied < header.errors_expected:
                waiting.append((sender, message, state))
                continue
            prediction = self.core.predict(header.interface, header.ids, state)
            reply = step_header(PredictionHeader, header.run, header.interface, header.ids)
            self.router.send(reply, [prediction], to=sender)
            if self.olive_known:
                self.router.send(reply, [prediction], to=OLIVE)
            self.predictions += 1
        self.deferred = waiting

    def finish(self) -> None:
        if hasattr(self, "core"):
            torch.save(self.core.state_dict(), self.run.checkpoint_path(self.name))
            self.metric(
                {
                    "predictions": self.predictions,
                    "errors_applied": sum(self.core.errors_applied.values()),
                    "dropped_errors": self.core.dropped_errors,
                }
            )
