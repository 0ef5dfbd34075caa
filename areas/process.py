"""The cortical area's process: a thin shell driving :class:`areas.cortex.AreaCore`.

The area connects DEALERs to the cerebellum (efference out, prediction back) and to the olive
(targets out), waits for ``start``, runs its epochs, reports one METRIC per epoch, checkpoints,
and reports ``done``. How it waits on the cerebellum is the spec's timing policy.
"""

from __future__ import annotations

import time

import torch
import zmq

from areas.cortex import AreaCore, BootstrappedTarget, Efference
from orchestrator.inprocess import save_results
from orchestrator.region import RegionShell
from tasks import build_task
from wire.protocol import (
    EfferenceHeader,
    Kind,
    ProtocolError,
    TargetHeader,
    expect_shape,
    step_header,
)


class LockstepTimeout(RuntimeError):
    """Under lockstep the cerebellum did not answer in time."""


class ZmqLink:
    """The area's link to the cerebellum and olive over ZeroMQ."""

    def __init__(self, shell: AreaShell):
        self.shell = shell
        self.spec = shell.spec
        self.interface = shell.name
        self.run_id = shell.run.path.name
        self.cerebellum = shell.connect(zmq.DEALER, shell.endpoints["cerebellum"], shell.name)
        self.olive = shell.connect(zmq.DEALER, shell.endpoints["olive"], shell.name)
        self.targets_sent = 0
        self.freshest: torch.Tensor | None = None
        self.late = 0

    def _prediction(self, received, efference: Efference) -> torch.Tensor | None:
        sender, message = received
        if message.kind != Kind.PREDICTION:
            self.cerebellum.reject(f"unexpected {message.kind.name} from the cerebellum", sender)
            return None
        try:
            tensor = expect_shape(message, (None, self.spec.state_size))
        except ProtocolError as exc:
            self.cerebellum.reject(str(exc), sender)
            return None
        return tensor

    def predict(self, efference: Efference) -> torch.Tensor | None:
        header = step_header(
            EfferenceHeader,
            self.run_id,
            self.interface,
            efference.ids,
            errors_expected=self.targets_sent,
        )
        if not self.cerebellum.send(header, [efference.state]):
            return None
        timing = self.spec.timing
        if timing == "stale":
            while (received := self.cerebellum.receive(0.0)) is not None:
                tensor = self._prediction(received, efference)
                if tensor is not None:
                    self.freshest = tensor
            fresh = self.freshest
            if fresh is not None and fresh.shape == efference.state.shape:
                return fresh.to(efference.state.device)
            return None
        timeout = self.spec.lockstep_timeout if timing == "lockstep" else self.spec.wait_timeout
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            received = self.cerebellum.receive(min(remaining, 0.5))
            if received is None:
                self.shell.check_parent()
                continue
            tensor = self._prediction(received, efference)
            if tensor is None:
                continue
            if received[1].header.ids != efference.ids:
                self.late += 1  # an answer to an earlier efference: too late to use
                continue
            if tensor.shape != efference.state.shape:
                self.cerebellum.reject(f"prediction shape {tuple(tensor.shape)} != state shape")
                continue
            return tensor.to(efference.state.device)
        if timing == "lockstep":
            raise LockstepTimeout(f"the cerebellum did not answer within {timeout:g} s")
        return None

    def send_target(self, target: BootstrappedTarget) -> None:
        header = step_header(TargetHeader, self.run_id, self.interface, target.ids)
        if self.olive.send(header, [target.feedback]):
            self.targets_sent += 1


class AreaShell(RegionShell):
    role = "area"

    def serve(self) -> None:
        self.core = AreaCore(self.spec, build_task(self.spec), self.name)
        self.link = ZmqLink(self) if self.spec.uses_cerebellum else None
        self.state = "ready"
        self.report("ready")
        self.heartbeat(force=True)
        self.started = False
        while not self.started:
            self.tick()
            self.drain_control(0.1)
        self.state = "training"
        while self.core.epoch < self.spec.epochs:
            self.epoch = self.core.epoch
            metrics = self.core.run_epoch(self.link, on_truncation=self.tick)
            if self.link is not None:
                metrics["late_predictions"] = self.link.late
            self.metric(metrics)
            self.log.info("epoch", **{k: v for k, v in metrics.items() if not isinstance(v, dict)})
        self.epoch = self.core.epoch
        self.state = "done"
        self.save()
        self.report("done", epochs=self.core.epoch)
        while True:  # wait to be told to stop, still heartbeating
            self.tick()
            self.drain_control(0.1)

    def on_control(self, message) -> None:
        if message.header.command == "start":
            self.started = True
        else:
            super().on_control(message)

    def save(self) -> None:
        torch.save(self.core.state_dict(), self.run.checkpoint_path(self.name))
        save_results(self.core, self.run)
        self.saved = True

    def finish(self) -> None:
        if hasattr(self, "core") and not getattr(self, "saved", False):
            torch.save(self.core.state_dict(), self.run.checkpoint_path(self.name))
