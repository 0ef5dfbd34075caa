"""The cortical area's process: a thin shell driving :class:`areas.cortex.AreaCore`.

The area connects DEALERs to the cerebellum (efference out, prediction back) and to the olive
(targets out), waits for ``start``, runs its epochs, reports one METRIC per epoch, checkpoints
every epoch, and reports ``done``. How it waits on the cerebellum is the spec's timing policy.

Lesions: the orchestrator announces a dead region with a ``lesion`` CONTROL message. Without a
cerebellum the area trains with plain truncated BPTT from the next truncation on (under
``wait`` it loses at most one timeout before the notice arrives); without an olive it stops
sending targets. ``revived`` undoes that. A scheduled lesion is requested by the area itself
at the start of its epoch (after a lockstep barrier), so it lands at exactly that epoch.
"""

from __future__ import annotations

import time

import torch
import zmq

from areas.cortex import AreaCore, BootstrappedTarget, Efference
from areas.results import save_results
from ccdni.base.region import RegionShell
from ccdni.tasks import build_task
from wire.ids import StepId
from wire.protocol import (
    Command,
    EfferenceHeader,
    Kind,
    Message,
    ProtocolError,
    RegionState,
    TargetHeader,
    control,
    expect_shape,
    step_header,
)


class LockstepTimeout(RuntimeError):
    """Under lockstep the cerebellum did not answer in time."""


class ZmqLink:
    """The area's link to the cerebellum and olive over ZeroMQ."""

    def __init__(self, shell: AreaShell, lesioned: set[str]):
        self.shell = shell
        self.spec = shell.spec
        self.interface = shell.name
        self.run_id = shell.run.path.name
        self.cerebellum = shell.connect(zmq.DEALER, shell.endpoints["cerebellum"], shell.name)
        self.olive = shell.connect(zmq.DEALER, shell.endpoints["olive"], shell.name)
        self.lesioned = set(lesioned)
        self.asked: set[StepId] = set()  # efferences sent to the living cerebellum
        self.targets_sent = 0  # targets since the cerebellum (re)started: lockstep accounting
        self.freshest: torch.Tensor | None = None
        self.late = 0

    # -- lesions ---------------------------------------------------------------------------------
    def lesion(self, region: str) -> None:
        self.lesioned.add(region)
        if region == "cerebellum":
            self.asked.clear()
            self.freshest = None

    def revive(self, region: str) -> None:
        self.lesioned.discard(region)
        if region == "cerebellum":
            self.targets_sent = 0  # a new cerebellum has applied no error yet
            self.asked.clear()

    @property
    def cerebellum_alive(self) -> bool:
        return "cerebellum" not in self.lesioned

    @property
    def errors_expected(self) -> int:
        """Errors the cerebellum must have applied before it answers: under lockstep every
        one this area caused (a target sent), otherwise 0 (don't wait)."""
        return self.targets_sent if self.spec.timing == "lockstep" else 0

    # -- the CerebellarLink protocol -----------------------------------------------------------------
    def _prediction(self, sender: str | None, message: Message) -> torch.Tensor | None:
        if message.kind != Kind.PREDICTION:
            if not (message.kind == Kind.CONTROL and message.header.command == Command.BARRIER_OK):
                self.cerebellum.reject(f"unexpected {message.kind.name} from the cerebellum")
            return None
        try:
            return expect_shape(message, (None, self.spec.state_size))
        except ProtocolError as exc:
            self.cerebellum.reject(str(exc), sender)
            return None

    def predict(self, efference: Efference) -> torch.Tensor | None:
        if not self.cerebellum_alive:
            return None
        header = step_header(
            EfferenceHeader,
            self.run_id,
            self.interface,
            efference.ids,
            errors_expected=self.errors_expected,
        )
        if not self.cerebellum.send(header, [efference.state]):
            return None
        self.asked.add(efference.ids)
        timing = self.spec.timing
        if timing == "stale":
            while (received := self.cerebellum.receive(0.0)) is not None:
                tensor = self._prediction(*received)
                if tensor is not None:
                    self.freshest = tensor
            fresh = self.freshest
            if fresh is not None and fresh.shape == efference.state.shape:
                return fresh.to(efference.state.device)
            return None
        timeout = self.spec.lockstep_timeout if timing == "lockstep" else self.spec.wait_timeout
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0 and self.cerebellum_alive:
            received = self.cerebellum.receive(min(remaining, 0.05))
            if received is None:
                self.shell.check_parent()
                self.shell.drain_control()  # a lesion notice ends the wait at once
                continue
            tensor = self._prediction(*received)
            if tensor is None:
                continue
            header = received[1].header
            if (header.epoch, header.batch, header.truncation) != efference.ids:
                self.late += 1  # an answer to an earlier efference: too late to use
                continue
            state = efference.state
            if tensor.shape != state.shape:
                self.cerebellum.reject(f"prediction shape {tuple(tensor.shape)} != state shape")
                continue
            return tensor if tensor.device == state.device else tensor.to(state.device)
        if timing == "lockstep" and self.cerebellum_alive:
            raise LockstepTimeout(f"the cerebellum did not answer within {timeout:g} s")
        return None

    def send_target(self, target: BootstrappedTarget) -> bool:
        if target.ids not in self.asked or "olive" in self.lesioned or not self.cerebellum_alive:
            return False
        self.asked.discard(target.ids)
        header = step_header(TargetHeader, self.run_id, self.interface, target.ids)
        if not self.olive.send(header, [target.feedback]):
            return False
        self.targets_sent += 1
        return True

    def end_epoch(self, epoch: int) -> None:
        """Tell the olive this area sent all of the epoch's targets (after them, in order)."""
        if "olive" in self.lesioned:
            return
        header = control(Command.EPOCH_END, self.interface, epoch=epoch)
        self.olive.send(header)

    def barrier(self) -> None:
        """Lockstep only: wait until the cerebellum has applied every error caused so far."""
        if not self.cerebellum_alive or "olive" in self.lesioned:
            return
        header = control(
            Command.BARRIER,
            self.interface,
            interface=self.interface,
            errors_expected=self.targets_sent,
        )
        self.cerebellum.send(header)
        deadline = time.monotonic() + self.spec.lockstep_timeout
        while time.monotonic() < deadline and self.cerebellum_alive:
            received = self.cerebellum.receive(0.05)
            if received is None:
                self.shell.drain_control()
                continue
            message = received[1]
            if message.kind == Kind.CONTROL and message.header.command == Command.BARRIER_OK:
                return
        if self.cerebellum_alive:
            raise LockstepTimeout("the cerebellum did not pass the barrier in time")


class AreaShell(RegionShell):
    role = "area"

    def serve(self) -> None:
        self.core = AreaCore(self.spec, build_task(self.spec), self.name)
        if self.options.get("resume"):
            self.restore()
        lesioned = set(self.options.get("lesioned", ()))
        self.link = ZmqLink(self, lesioned) if self.spec.uses_cerebellum else None
        self.epoch = self.core.epoch
        self.await_start(epoch=self.core.epoch)
        while self.core.epoch < self.spec.epochs:
            self.epoch = self.core.epoch
            self.scheduled_lesions()
            metrics = self.core.run_epoch(self.link, on_truncation=self.tick)
            if self.link is not None:
                self.link.end_epoch(metrics["epoch"])
                metrics["late_predictions"] = self.link.late
                metrics["cerebellum_alive"] = self.link.cerebellum_alive
            self.checkpoint(metrics)  # with the metric: a kill between the two loses neither
            self.metric(metrics)
            self.log.info("epoch", **metrics)
        self.epoch = self.core.epoch
        self.state = RegionState.DONE
        save_results(self.core, self.run)
        self.report(Command.DONE, epochs=self.core.epoch)
        while True:  # wait to be told to stop, still heartbeating
            self.tick()
            self.drain_control(0.1)

    def batch_progress(self) -> tuple[int, int]:
        core = getattr(self, "core", None)
        return (core.batches_done, core.batches_per_epoch) if core is not None else (0, 0)

    def scheduled_lesions(self) -> None:
        """Ask the orchestrator to kill the regions scheduled for this epoch; wait for it."""
        if self.link is None:
            return
        for region, epoch in self.spec.ablation_schedule:
            if epoch != self.core.epoch or region in self.link.lesioned:
                continue
            if self.spec.timing == "lockstep":
                self.link.barrier()
            self.report(Command.REQUEST_ABLATION, target=region, epoch=epoch)
            deadline = time.monotonic() + self.spec.lockstep_timeout
            while region not in self.link.lesioned:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"scheduled lesion of {region} was not carried out")
                self.tick()
                self.drain_control(0.05)

    def on_control(self, message) -> None:
        command = message.header.command
        region = getattr(message.header.args, "target", None)
        if command == Command.LESION and self.link is not None:
            self.link.lesion(region)
            self.log.info("lesion_noticed", target=region, epoch=self.core.epoch)
        elif command == Command.REVIVED and self.link is not None:
            self.link.revive(region)
            self.log.info("revival_noticed", target=region, epoch=self.core.epoch)
        else:
            super().on_control(message)

    def checkpoint(self, metric: dict | None = None) -> None:
        """Save everything needed to continue after this epoch, and the epoch's metric
        (``resume`` restores it if the kill came before the metric was recorded)."""
        state = self.core.state_dict()
        self.save_checkpoint({**state, "last_metric": metric or {}}, self.core.epoch)

    def restore(self) -> None:
        """Resume from this area's checkpoint, which must exist and be the one the
        orchestrator verified (after ``options["resume_epoch"]`` epochs)."""
        from ccdni.base.checkpoint import CheckpointError

        saved = self.load_checkpoint()
        path = self.run.checkpoint_path(self.name)
        if saved is None:
            raise CheckpointError(f"{path}: checkpoint does not exist")
        expected = self.options.get("resume_epoch")
        if expected is not None and saved.epoch != expected:
            raise CheckpointError(f"{path}: after epoch {saved.epoch}, expected {expected}")
        state = dict(saved.state)
        state.pop("last_metric", None)
        self.core.load_state_dict(state)
        self.log.info("restored", epoch=self.core.epoch)
