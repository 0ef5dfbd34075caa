"""One area of a feed-forward chain as its own process (spatial DNI; DESIGN §3).

Area k binds a ROUTER on its own endpoint (its input side: ACTIVITY h_{k-1} arrives from area
k-1, FEEDBACK ∂L/∂h_{k-1} leaves for it) and connects a DEALER (identity ``area{k}``) to area
k+1's ROUTER (ACTIVITY out, FEEDBACK back). Ids are (epoch, batch, 0) for training batches and
(epoch, chunk, 1) for the validation pass that follows every epoch (forward only).

Modes (``spec.chain_mode``):

- ``locked``: area k sends h_k, waits for FEEDBACK of that batch, back-propagates it, steps,
  sends ∂L/∂h_{k-1} upstream and only then takes the next batch — true backprop.
- ``backward-unlocked``: area k sends h_k downstream and its efference h_k to the cerebellum
  (interface ``boundary{k}``), back-propagates the prediction ĝ_k (waiting at most
  ``wait_timeout``; none: no update of the block this batch), steps, and moves on. Area k+1
  computes ∂L/∂h_k (true for the last area, bootstrapped from ĝ_{k+1} otherwise) and sends it
  to the olive as the TARGET of ``boundary{k}`` (DEALER identity ``boundary{k}``).

Forward unlocking (ĥ from the cerebellum) is not implemented. Every receive is bounded
(``lockstep_timeout`` for a chain neighbour), every send non-blocking. Each epoch the area
reports a METRIC with its compute time (forward + backward + step), wall time and busy
fraction; the last area adds the training loss and the validation accuracy.
"""

from __future__ import annotations

import os
import time

import torch
import zmq

from areas.chain import ChainArea, batch_order, batches_per_epoch, chain_data, flat_images
from orchestrator.region import RegionShell
from wire.channel import Endpoint
from wire.ids import StepId
from wire.protocol import (
    ActivityHeader,
    ControlHeader,
    EfferenceHeader,
    FeedbackHeader,
    Kind,
    Message,
    ProtocolError,
    StepHeader,
    TargetHeader,
    expect_shape,
    step_header,
)

VALIDATION = 1  # the truncation field of validation activities


class ChainTimeout(RuntimeError):
    """A chain neighbour did not send what this area waits for in time."""


class ChainAreaShell(RegionShell):
    role = "chain-area"

    def serve(self) -> None:
        spec = self.spec
        self.k = int(self.name.removeprefix("area"))
        self.core = ChainArea(spec, self.k)
        self.unlocked = spec.chain_mode == "backward-unlocked"
        self.run_id = self.run.path.name
        data = chain_data(spec)
        self.train_x = flat_images(data.train_images) if self.core.first else None
        self.train_y = data.train_labels
        self.val_x = flat_images(data.val_images) if self.core.first else None
        self.val_y = data.val_labels
        self.n_train = data.train_images.shape[0]
        self.upstream: Endpoint | None = None  # ROUTER: activity in, feedback out
        self.downstream: Endpoint | None = None  # DEALER: activity out, feedback in
        self.cerebellum: Endpoint | None = None
        self.olive: Endpoint | None = None
        if not self.core.first:
            self.upstream = self.bind(zmq.ROUTER, self.endpoints[self.name])
        if not self.core.last:
            self.downstream = self.connect(
                zmq.DEALER, self.endpoints[f"area{self.k + 1}"], identity=self.name
            )
        if self.unlocked and not self.core.last:
            self.cerebellum = self.connect(
                zmq.DEALER, self.endpoints["cerebellum"], identity=self.name
            )
        if self.unlocked and not self.core.first:
            self.olive = self.connect(
                zmq.DEALER, self.endpoints["olive"], identity=f"boundary{self.k - 1}"
            )
        self.missing_predictions = 0
        self.efferences_sent = 0
        self.await_start()
        order = batch_order(spec, self.n_train)
        for epoch in range(spec.epochs):
            self.epoch = epoch
            metrics = self.train_epoch(epoch, order)
            metrics.update(self.validate(epoch))
            self.metric(metrics)
            self.log.info("epoch", **metrics)
        self.checkpoint()
        self.state = "done"
        self.report("done", epochs=spec.epochs)
        while True:  # keep the sockets open until told to stop (downstream may still read)
            self.tick()
            self.drain_control(0.1)

    # -- one epoch --------------------------------------------------------------------------------
    def train_epoch(self, epoch: int, order) -> dict[str, float]:
        n_batches = batches_per_epoch(self.spec, self.n_train)
        compute = wait = 0.0
        warmup = 0.0  # compute of epoch 0's first batch (allocations, first-call costs)
        loss_sum = 0.0
        predictions = 0
        started = time.perf_counter()
        for b in range(n_batches):
            self.tick()
            idx = next(order)
            ids = StepId(epoch, b, 0)
            t0 = time.perf_counter()
            x = self.train_x[idx] if self.core.first else self.receive_activity(ids)
            t1 = time.perf_counter()
            h = self.core.forward(x)
            t2 = time.perf_counter()
            compute += t2 - t1
            wait += t1 - t0
            if self.core.last:
                loss, grad_x = self.core.loss_backward(self.train_y[idx])
                loss_sum += loss
                compute += time.perf_counter() - t2
            else:
                if self.unlocked:  # the efference first: the cerebellum starts at once
                    efference = step_header(
                        EfferenceHeader,
                        self.run_id,
                        f"boundary{self.k}",
                        ids,
                        errors_expected=self.errors_expected(),
                    )
                    asked = self.cerebellum.send(efference, [h])
                self.send(self.downstream, ActivityHeader, f"boundary{self.k}", ids, h)
                if self.unlocked:
                    t3 = time.perf_counter()
                    self.efferences_sent += asked
                    grad_h = self.prediction(ids, h) if asked else None
                    wait += time.perf_counter() - t3
                    predictions += grad_h is not None
                    if grad_h is None:
                        self.missing_predictions += 1
                        grad_h = torch.zeros_like(h)
                else:
                    t3 = time.perf_counter()
                    grad_h = self.receive_feedback(ids)
                    wait += time.perf_counter() - t3
                t4 = time.perf_counter()
                grad_x = self.core.backward(grad_h)
                compute += time.perf_counter() - t4
            if grad_x is not None:
                boundary = f"boundary{self.k - 1}"
                if self.unlocked:
                    self.send(self.olive, TargetHeader, boundary, ids, grad_x)
                else:
                    self.send(self.upstream, FeedbackHeader, boundary, ids, grad_x, to="area")
            if epoch == 0 and b == 0:
                warmup = compute
        wall = time.perf_counter() - started
        if self.olive is not None:
            self.olive.send(
                ControlHeader(command="epoch_end", region=self.name, args={"epoch": epoch})
            )
        metrics: dict[str, float] = {
            "epoch": epoch,
            "batches": n_batches,
            "samples": n_batches * self.spec.batch_size,
            "train_seconds": wall,
            "compute_seconds": compute,
            "wait_seconds": wait,
            "busy_fraction": compute / wall if wall > 0 else 0.0,
            "step_seconds": (compute - warmup) / max(n_batches - (epoch == 0), 1),
            "samples_per_s": n_batches * self.spec.batch_size / wall if wall > 0 else 0.0,
        }
        if self.core.last:
            metrics["train_loss"] = loss_sum / max(n_batches, 1)
        if self.unlocked and not self.core.last:
            metrics["predictions"] = predictions
            metrics["missing_predictions"] = n_batches - predictions
        return metrics

    def validate(self, epoch: int) -> dict[str, float]:
        """Forward the validation set through the chain in evaluation mode (no learning)."""
        size = self.spec.batch_size
        n = self.val_y.shape[0]
        correct = 0
        for chunk, start in enumerate(range(0, n, size)):
            self.tick()
            ids = StepId(epoch, chunk, VALIDATION)
            first = self.core.first
            x = self.val_x[start : start + size] if first else self.receive_activity(ids)
            out = self.core.infer(x)
            if self.core.last:
                labels = self.val_y[start : start + size]
                correct += int((out.argmax(1) == labels).sum())
            else:
                self.send(self.downstream, ActivityHeader, f"boundary{self.k}", ids, out)
        return {"val_accuracy": correct / n} if self.core.last else {}

    # -- messages -----------------------------------------------------------------------------------
    def send(
        self,
        endpoint: Endpoint | None,
        cls: type[StepHeader],
        interface: str,
        ids: StepId,
        tensor: torch.Tensor,
        to: str | None = None,
    ) -> None:
        assert endpoint is not None
        if to == "area":
            to = f"area{self.k - 1}"
        endpoint.send(step_header(cls, self.run_id, interface, ids), [tensor], to=to)

    def _wait(self, endpoint: Endpoint, kind: Kind, ids: StepId, timeout: float) -> Message | None:
        """The message of ``kind`` for ``ids`` within ``timeout`` (others are rejected)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            received = endpoint.receive(min(remaining, 0.05))
            if received is None:
                self.tick()
                continue
            sender, message = received
            if message.kind == kind and message.header.ids == ids:
                return message
            if kind == Kind.PREDICTION and message.kind == Kind.PREDICTION:
                continue  # a late prediction for an earlier batch: useless now
            endpoint.reject(f"unexpected {message.kind.name} {getattr(message.header, 'ids', '')}")
        return None

    def receive_activity(self, ids: StepId) -> torch.Tensor:
        assert self.upstream is not None
        message = self._wait(self.upstream, Kind.ACTIVITY, ids, self.spec.lockstep_timeout)
        tensor = None if message is None else self._checked(self.upstream, message)
        if tensor is None:
            raise ChainTimeout(f"no valid activity {tuple(ids)} from area{self.k - 1}")
        return tensor

    def receive_feedback(self, ids: StepId) -> torch.Tensor:
        assert self.downstream is not None
        message = self._wait(self.downstream, Kind.FEEDBACK, ids, self.spec.lockstep_timeout)
        tensor = None if message is None else self._checked(self.downstream, message)
        if tensor is None:
            raise ChainTimeout(f"no valid feedback {tuple(ids)} from area{self.k + 1}")
        return tensor

    def errors_expected(self) -> int:
        """Climbing-fibre errors of this boundary the cerebellum must have applied before it
        answers the next efference: all but the last ``chain_max_lag`` batches (DESIGN §4's
        lockstep mechanism with a window)."""
        lag = self.spec.chain_max_lag
        return 0 if lag < 0 else max(0, self.efferences_sent - lag)

    def prediction(self, ids: StepId, h: torch.Tensor) -> torch.Tensor | None:
        """ĝ_k from the cerebellum for the efference h_k sent, or None (timeout, lesion)."""
        assert self.cerebellum is not None
        message = self._wait(self.cerebellum, Kind.PREDICTION, ids, self.spec.wait_timeout)
        if message is None:
            return None
        tensor = self._checked(self.cerebellum, message)
        return tensor if tensor is not None and tensor.shape == h.shape else None

    def _checked(self, endpoint: Endpoint, message: Message) -> torch.Tensor | None:
        try:
            return expect_shape(message, (None, self.spec.chain_width))
        except ProtocolError as exc:
            endpoint.reject(str(exc))
            return None

    # -- control and saving ------------------------------------------------------------------------
    def on_control(self, message: Message) -> None:
        command = message.header.command
        if command in ("lesion", "revived"):  # a missing cerebellum shows as timeouts
            self.log.info(f"{command}_noticed", target=message.header.args.get("target"))
        else:
            super().on_control(message)

    def checkpoint(self) -> None:
        path = self.run.checkpoint_path(self.name)
        tmp = path.with_suffix(".tmp")
        torch.save({**self.core.state_dict(), "epoch": self.epoch}, tmp)
        os.replace(tmp, path)
