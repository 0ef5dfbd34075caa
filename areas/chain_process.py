"""One area of a chain as its own process (spatial DNI; DESIGN §3).

The area's core is ``spec.chain_block``'s: a feed-forward block (:class:`areas.chain.ChainArea`,
boundaries (B, W)) or a stacked-LSTM layer on seqMNIST (:class:`areas.chain_lstm.LstmChainArea`,
boundaries carry the hidden sequence as (B·28, W) rows; only the locked and backward-unlocked
modes: the forward model of an LSTM layer is refused by the spec). The shell is the same.

Area k binds a ROUTER on its own endpoint (its input side: ACTIVITY h_{k-1} arrives from area
k-1, FEEDBACK ∂L/∂h_{k-1} leaves for it) and connects a DEALER (identity ``area{k}``) to area
k+1's ROUTER (ACTIVITY out, FEEDBACK back). In the unlocked modes it also connects a DEALER
(identity ``area{k}``) to the cerebellum (efferences out, predictions back) and, if it sends
targets, one to the olive (targets and ``epoch_end`` out). Ids are (epoch, batch, 0) for
training batches and (epoch, chunk, 1) for the validation pass that follows every epoch.

Modes (``spec.chain_mode``) and the training-time frames of boundary k (area k → area k+1):

- ``locked``: area k sends ACTIVITY h_k, waits for FEEDBACK ∂L/∂h_k of that batch,
  back-propagates it, steps, sends ∂L/∂h_{k-1} upstream and only then takes the next batch —
  true backprop.
- ``backward-unlocked``: area k sends EFFERENCE h_k to the cerebellum (interface
  ``boundary{k}``) and ACTIVITY h_k downstream, back-propagates the PREDICTION ĝ_k, steps and
  moves on. Area k+1 computes ∂L/∂h_k (true for the last area, bootstrapped from ĝ_{k+1}
  otherwise) and sends it to the olive as the TARGET of ``boundary{k}``.
- ``forward-unlocked``: area k+1 sends EFFERENCE x (its own copy of the batch's images) to the
  cerebellum (interface ``forward{k}``) and runs its block on the PREDICTION ĥ_k = C(x)
  instead of waiting for h_k; area k computes the true h_k and sends it to the olive as the
  TARGET of ``forward{k}``. Backward stays locked: area k+1 sends FEEDBACK ∂L/∂ĥ_k upstream
  and area k waits for it.
- ``fully-unlocked``: both — area k+1 runs on ĥ_k and sends ∂L/∂ĥ_k to the olive (TARGET of
  ``boundary{k}``), area k steps with ĝ_k = C(h_k) and sends h_k to the olive (TARGET of
  ``forward{k}``). No tensor crosses between areas while training.

Before the first batch each area says ``hello`` downstream and waits for its upstream
neighbour's (a ROUTER can only answer a DEALER whose connection is up). After each epoch's
validation area k waits for ``validated`` from area k+1 and passes it upstream, so all areas
begin the next epoch together and no training-loop clock holds another area's validation. In the
backward-unlocked modes area k+1 also sends a ``batch_done`` CONTROL upstream after each
training batch and area k begins batch n only once batches ≤ n − w are done (w =
``chain_max_lag``, at least 1; 64 with no lag bound): area k never hears from area k+1
otherwise, and without the cerebellum's lag bound (a lesion) it would run ahead without limit.

Validation always runs the true chain (ACTIVITY h_k through the area links, evaluation mode,
forward only), so accuracies compare across modes. The cerebellum answers an efference of
batch n on an interface only once it has applied that interface's climbing-fibre errors of
batches ≤ n − ``chain_max_lag`` (``errors_expected``); a prediction that does not come within
``wait_timeout`` loosens that bound by one batch (an error that will never come — a target a
downstream area could not compute — must not stall every later batch). After a revival of the
cerebellum or the olive the count starts again (so does the cerebellum's).

Lesions: the area remembers the regions the orchestrator reports dead (``lesion`` /
``revived`` CONTROL notices, ``args["target"]``). While the cerebellum is lesioned an area
does not ask it: without ĝ_k the block is not updated from downstream that batch
(``missing_predictions``), without ĥ_{k-1} the batch is skipped (``skipped_batches``; in
forward-unlocked mode area k-1 is told with a ``feedback_withheld`` CONTROL message instead of
FEEDBACK, ``missing_feedback`` there). While the cerebellum or the olive is lesioned no TARGET
is sent (``targets_withheld``). A scheduled lesion (``spec.ablate``) is requested by area 0 at
the start of its epoch; every area waits at the start of that epoch until it has heard of it.

Every receive is bounded (``lockstep_timeout`` for a chain neighbour, ``wait_timeout`` for the
cerebellum, ended early by a lesion notice), every send non-blocking. Each epoch the area
reports a METRIC with its compute time (forward + backward + step), wall time, busy fraction
and the counters above; the last area adds the training loss and accuracy (on ĥ in the
forward-unlocked modes) and the validation accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import zmq

from areas.chain import (
    ChainArea,
    backward_unlocked,
    batch_order,
    batches_per_epoch,
    boundary_name,
    chain_data,
    flat_images,
    forward_name,
    forward_unlocked,
)
from areas.chain_lstm import N_STEPS, LstmChainArea
from ccdni.base.region import RegionShell
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

VALIDATION = 1  # the truncation field of validation activities
FEEDBACK_WITHHELD = Command.FEEDBACK_WITHHELD  # to area k-1: no ∂L/∂ĥ for this batch
BATCH_DONE = Command.BATCH_DONE  # to area k-1 (backward-unlocked modes): flow control
VALIDATED = Command.VALIDATED  # to area k-1: the chain below has validated the epoch
FLOW_WINDOW = 64  # batches an area may run ahead of the next when chain_max_lag is -1
CORES = {"ff": ChainArea, "lstm": LstmChainArea}  # spec.chain_block → the area's core


class ChainTimeout(RuntimeError):
    """A chain neighbour did not send what this area waits for in time."""


class ChainAreaShell(RegionShell):
    role = "chain-area"

    def serve(self) -> None:
        spec = self.spec
        self.k = int(self.name.removeprefix("area"))
        self.core = CORES[spec.chain_block](spec, self.k)
        first, last = self.core.first, self.core.last
        # what this area asks the cerebellum for, and the targets it computes for the olive
        self.synthetic_feedback = backward_unlocked(spec) and not last  # ĝ_k on boundary{k}
        self.synthetic_input = forward_unlocked(spec) and not first  # ĥ_{k-1} on forward{k-1}
        self.target_interfaces: list[str] = []
        if backward_unlocked(spec) and not first:
            self.target_interfaces.append(boundary_name(self.k - 1))  # ∂L/∂h_{k-1} (or ĥ)
        if forward_unlocked(spec) and not last:
            self.target_interfaces.append(forward_name(self.k))  # h_k
        self.run_id = self.run.path.name
        data = chain_data(spec)
        needs_images = first or self.synthetic_input  # x: the input, or the efference
        self.train_x = flat_images(data.train_images) if needs_images else None
        self.train_y = data.train_labels
        self.val_x = flat_images(data.val_images) if first else None
        self.val_y = data.val_labels
        self.n_train = data.train_images.shape[0]
        self.upstream: Endpoint | None = None  # ROUTER: activity in, feedback out
        self.downstream: Endpoint | None = None  # DEALER: activity out, feedback in
        self.cerebellum: Endpoint | None = None
        self.olive: Endpoint | None = None
        if not first:
            self.upstream = self.bind(zmq.ROUTER, self.endpoints[self.name])
        if not last:
            self.downstream = self.connect(
                zmq.DEALER, self.endpoints[f"area{self.k + 1}"], identity=self.name
            )
        if self.synthetic_feedback or self.synthetic_input:
            self.cerebellum = self.connect(
                zmq.DEALER, self.endpoints["cerebellum"], identity=self.name
            )
        if self.target_interfaces:
            self.olive = self.connect(zmq.DEALER, self.endpoints["olive"], identity=self.name)
        self.lesioned: set[str] = set(self.options.get("lesioned", ()))
        # lag bound per efference interface: efferences whose errors will come, and the
        # batches given up on (each loosens the bound by one; see errors_expected)
        self.efferences_sent: dict[str, int] = {}
        self.lag_credit: dict[str, int] = {}
        self.counts: dict[str, int] = {}  # this epoch's counters (see train_epoch)
        # flow control on the area link (backward-unlocked modes): training batches begun
        # here, and those area k+1 has said it finished
        self.batches_begun = 0
        self.batches_acknowledged = 0
        self.await_start()
        self.greet_neighbours()
        order = batch_order(spec, self.n_train)
        for epoch in range(spec.epochs):
            self.epoch = epoch
            self.scheduled_lesions(epoch)
            metrics = self.train_epoch(epoch, order)
            metrics.update(self.validate(epoch))
            self.validated(epoch)
            self.metric(metrics)
            self.log.info("epoch", **metrics)
        self.checkpoint()
        self.state = RegionState.DONE
        self.report(Command.DONE, epochs=spec.epochs)
        while True:  # keep the sockets open until told to stop (downstream may still read)
            self.tick()
            self.drain_control(0.1)

    @property
    def cerebellum_alive(self) -> bool:
        return "cerebellum" not in self.lesioned

    @property
    def olive_alive(self) -> bool:
        return "olive" not in self.lesioned

    # -- one epoch --------------------------------------------------------------------------------
    def train_epoch(self, epoch: int, order) -> dict[str, float]:
        n_batches = batches_per_epoch(self.spec, self.n_train)
        compute = wait = 0.0
        warmup = 0.0  # compute of epoch 0's first batch (allocations, first-call costs)
        loss_sum = 0.0
        correct = 0
        counts = dict.fromkeys(
            (
                "trained_batches",
                "predictions",
                "synthetic_inputs",
                "skipped_batches",
                "missing_feedback",
                "targets_sent",
                "targets_withheld",
            ),
            0,
        )
        self.counts = counts
        started_at = time.time()  # wall clock: comparable across the chain's processes
        started = time.perf_counter()
        for b in range(n_batches):
            self.tick()
            idx = next(order)
            ids = StepId(epoch, b, 0)
            t0 = time.perf_counter()
            self.await_downstream()
            if self.core.first:
                x = self.train_x[idx]  # (B, 784)
            elif self.synthetic_input:
                x = self.synthetic_activity(ids, self.train_x[idx])  # ĥ_{k-1} (B, W)
                if x is None:  # no prediction (lesion, timeout): the batch is skipped
                    counts["skipped_batches"] += 1
                    self.withhold_feedback(ids)
                    self.acknowledge(ids)
                    wait += time.perf_counter() - t0
                    continue
                counts["synthetic_inputs"] += 1
            else:
                x = self.receive_activity(ids, self.boundary_rows(len(idx)))  # h_{k-1} (B, W)
            t1 = time.perf_counter()
            h = self.core.forward(x)  # (B, W), or logits (B, 10) for the last area
            t2 = time.perf_counter()
            compute += t2 - t1
            wait += t1 - t0
            if self.core.last:
                labels = self.train_y[idx]
                correct += int((h.argmax(1).cpu() == labels).sum())
                loss, grad_x = self.core.loss_backward(labels)
                loss_sum += loss
                compute += time.perf_counter() - t2
                updated = True
            else:
                updated, grad_x, waited, computed = self.learn_from_downstream(ids, h)
                wait += waited
                compute += computed
            counts["trained_batches"] += updated
            if not self.core.first:
                self.send_upstream(ids, grad_x)
                self.acknowledge(ids)
            if epoch == 0 and b == 0:
                warmup = compute
        wall = time.perf_counter() - started
        if self.olive is not None and self.olive_alive:
            interfaces = list(self.target_interfaces)
            self.olive.send(
                control(Command.EPOCH_END, self.name, epoch=epoch, interfaces=interfaces)
            )
        metrics: dict[str, float] = {
            "epoch": epoch,
            "batches": n_batches,
            "samples": n_batches * self.spec.batch_size,
            "train_seconds": wall,
            "train_started_at": started_at,
            "train_ended_at": started_at + wall,
            "compute_seconds": compute,
            "wait_seconds": wait,
            "busy_fraction": compute / wall if wall > 0 else 0.0,
            "step_seconds": (compute - warmup) / max(n_batches - (epoch == 0), 1),
            "samples_per_s": n_batches * self.spec.batch_size / wall if wall > 0 else 0.0,
        }
        ran = n_batches - counts["skipped_batches"]  # batches not skipped for want of ĥ
        if self.core.last and ran > 0:  # on ĥ in the forward-unlocked modes
            metrics["train_loss"] = loss_sum / ran
            metrics["train_accuracy"] = correct / (ran * self.spec.batch_size)
        if self.synthetic_feedback:  # batches run without ĝ_k: no update from downstream
            metrics["predictions"] = counts["predictions"]
            metrics["missing_predictions"] = ran - counts["predictions"]
        if self.synthetic_input:
            metrics["synthetic_inputs"] = counts["synthetic_inputs"]
            metrics["skipped_batches"] = counts["skipped_batches"]
        if forward_unlocked(self.spec) and not backward_unlocked(self.spec) and not self.core.last:
            metrics["missing_feedback"] = counts["missing_feedback"]
        if self.target_interfaces:
            metrics["targets_sent"] = counts["targets_sent"]
            metrics["targets_withheld"] = counts["targets_withheld"]
        if self.spec.uses_cerebellum:
            metrics["trained_batches"] = counts["trained_batches"]
            metrics["cerebellum_alive"] = self.cerebellum_alive
            metrics["olive_alive"] = self.olive_alive
        return metrics

    def learn_from_downstream(
        self, ids: StepId, h: torch.Tensor
    ) -> tuple[bool, torch.Tensor | None, float, float]:
        """A non-last area after its forward: pass h_k on (activity, target, efference), get
        ∂L/∂h_k (FEEDBACK or ĝ_k), back-propagate and step.

        Returns (updated, ∂L/∂x or None, seconds waited, seconds computed)."""
        boundary = boundary_name(self.k)
        if forward_unlocked(self.spec):  # h_k is the forward synthesiser's target
            self.send_target(forward_name(self.k), ids, h)
        asked = False
        if self.synthetic_feedback and self.cerebellum_alive:  # the efference first
            asked = self.ask_cerebellum(boundary, ids, h)
        if not forward_unlocked(self.spec):  # area k+1 waits for the true h_k
            self.send(self.downstream, ActivityHeader, boundary, ids, h)
        t3 = time.perf_counter()
        if self.synthetic_feedback:
            grad_h = self.prediction(boundary, ids, len(h)) if asked else None  # ĝ_k (B, W)
            self.counts["predictions"] += grad_h is not None
        else:
            grad_h = self.receive_feedback(ids, len(h))  # ∂L/∂h_k (B, W), None if withheld
            self.counts["missing_feedback"] += grad_h is None
        waited = time.perf_counter() - t3
        t4 = time.perf_counter()
        if grad_h is None:  # nothing came from downstream: no update this batch
            self.core.discard()
            return False, None, waited, time.perf_counter() - t4
        grad_x = self.core.backward(grad_h)  # ∂L/∂x (B, W), None for area 0
        return True, grad_x, waited, time.perf_counter() - t4

    def send_upstream(self, ids: StepId, grad_x: torch.Tensor | None) -> None:
        """∂L/∂h_{k-1} (or ∂L/∂ĥ_{k-1}): FEEDBACK to area k-1, or the olive's TARGET."""
        boundary = boundary_name(self.k - 1)
        if backward_unlocked(self.spec):
            if grad_x is not None:
                self.send_target(boundary, ids, grad_x)
        elif grad_x is None:
            self.withhold_feedback(ids)
        else:
            self.send(self.upstream, FeedbackHeader, boundary, ids, grad_x, to="area")

    def withhold_feedback(self, ids: StepId) -> None:
        """Backward locked (forward-unlocked mode): tell area k-1 no feedback will come."""
        if backward_unlocked(self.spec) or self.upstream is None:
            return
        header = control(FEEDBACK_WITHHELD, self.name, epoch=ids.epoch, batch=ids.batch)
        self.upstream.send(header, to=f"area{self.k - 1}")

    def validate(self, epoch: int) -> dict[str, float]:
        """Forward the validation set through the chain in evaluation mode (no learning)."""
        size = self.spec.batch_size
        n = self.val_y.shape[0]
        correct = 0
        for chunk, start in enumerate(range(0, n, size)):
            self.tick()
            ids = StepId(epoch, chunk, VALIDATION)
            first = self.core.first
            labels = self.val_y[start : start + size]
            if first:
                x = self.val_x[start : start + size]
            else:
                x = self.receive_activity(ids, self.boundary_rows(len(labels)))
            out = self.core.infer(x)
            if self.core.last:
                correct += int((out.argmax(1).cpu() == labels).sum())
            else:
                self.send(self.downstream, ActivityHeader, boundary_name(self.k), ids, out)
        return {"val_accuracy": correct / n} if self.core.last else {}

    # -- lesions ------------------------------------------------------------------------------------
    def scheduled_lesions(self, epoch: int) -> None:
        """Lesions scheduled for this epoch: area 0 asks the orchestrator to carry them out;
        every area waits until it has heard of them, so each starts the epoch without them."""
        if not self.spec.uses_cerebellum:
            return
        for region, at in self.spec.ablation_schedule:
            if at != epoch or region in self.lesioned:
                continue
            if self.core.first:
                self.report(Command.REQUEST_ABLATION, target=region, epoch=epoch)
            deadline = time.monotonic() + self.spec.lockstep_timeout
            while region not in self.lesioned:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"scheduled lesion of {region} was not carried out")
                self.tick()
                self.drain_control(0.05)

    def on_control(self, message: Message) -> None:
        command = message.header.command
        region = getattr(message.header.args, "target", None)
        if command == Command.LESION:
            self.lesioned.add(region)
            self.log.info("lesion_noticed", target=region, epoch=self.epoch)
        elif command == Command.REVIVED:
            self.lesioned.discard(region)
            # a new cerebellum has applied no error yet; with a new olive the cerebellum
            # restarts its count: so does this area
            self.efferences_sent.clear()
            self.lag_credit.clear()
            self.log.info("revival_noticed", target=region, epoch=self.epoch)
        else:
            super().on_control(message)

    # -- the cerebellum and the olive ------------------------------------------------------------
    def errors_expected(self, interface: str) -> int:
        """Climbing-fibre errors of ``interface`` the cerebellum must have applied before it
        answers the next efference: all but the last ``chain_max_lag`` batches (DESIGN §4's
        lockstep mechanism with a window), less one per prediction given up on.

        Errors can be lost (a target a downstream area could not compute, an olive lesion);
        were they counted, every later request would wait out ``wait_timeout``. So a request
        whose prediction does not come is not counted and forgives one missing error."""
        lag = self.spec.chain_max_lag
        if lag < 0:
            return 0
        sent = self.efferences_sent.get(interface, 0)
        return max(0, sent - lag - self.lag_credit.get(interface, 0))

    def ask_cerebellum(self, interface: str, ids: StepId, efference: torch.Tensor) -> bool:
        """Send an efference copy; True if it left (its prediction may come)."""
        assert self.cerebellum is not None
        header = step_header(
            EfferenceHeader,
            self.run_id,
            interface,
            ids,
            errors_expected=self.errors_expected(interface),
        )
        if not self.cerebellum.send(header, [efference]):
            return False
        if self.olive_alive:  # only then will its climbing-fibre error come
            self.efferences_sent[interface] = self.efferences_sent.get(interface, 0) + 1
        return True

    def prediction(self, interface: str, ids: StepId, batch: int) -> torch.Tensor | None:
        """The cerebellum's answer (B, W) on ``interface`` for ``ids``, or None (timeout,
        lesion, invalid)."""
        assert self.cerebellum is not None
        message = self._wait(
            self.cerebellum,
            Kind.PREDICTION,
            ids,
            self.spec.wait_timeout,
            interface=interface,
            abort=lambda: not self.cerebellum_alive,
        )
        tensor = None if message is None else self._checked(self.cerebellum, message)
        if tensor is not None and len(tensor) != batch:
            self.cerebellum.reject(f"prediction for {len(tensor)} samples, not {batch}")
            tensor = None
        if tensor is None and self.cerebellum_alive:  # given up: loosen the lag bound
            if self.olive_alive and self.efferences_sent.get(interface, 0) > 0:
                self.efferences_sent[interface] -= 1  # its error may never come
            self.lag_credit[interface] = self.lag_credit.get(interface, 0) + 1
        return tensor

    def synthetic_activity(self, ids: StepId, images: torch.Tensor) -> torch.Tensor | None:
        """ĥ_{k-1} = C(x) for this batch's images x (B, 784): the forward synthesiser's
        prediction of area k-1's activity, or None (cerebellum lesioned, timeout)."""
        if not self.cerebellum_alive:
            return None
        interface = forward_name(self.k - 1)
        if not self.ask_cerebellum(interface, ids, images):
            return None
        return self.prediction(interface, ids, len(images))  # (B, W)

    def send_target(self, interface: str, ids: StepId, target: torch.Tensor) -> None:
        """A TARGET for the olive (h_k on forward{k}, ∂L/∂h_k on boundary{k}); withheld
        while the olive or the cerebellum is lesioned (it could never be paired)."""
        if not (self.olive_alive and self.cerebellum_alive):
            self.counts["targets_withheld"] += 1
            return
        assert self.olive is not None
        header = step_header(TargetHeader, self.run_id, interface, ids)
        self.counts["targets_sent"] += self.olive.send(header, [target])

    # -- chain neighbours --------------------------------------------------------------------------
    def flow_window(self) -> int:
        """How many training batches area k may be ahead of area k+1 (backward-unlocked)."""
        lag = self.spec.chain_max_lag
        return max(lag, 1) if lag >= 0 else FLOW_WINDOW

    def await_downstream(self) -> None:
        """Backward-unlocked modes: area k hears nothing from area k+1 while training, and
        without the cerebellum's lag bound (lesioned cerebellum or olive) it would run ahead
        without limit and overflow the link's queues. Count area k+1's ``batch_done``
        notices and begin a batch only while fewer than ``flow_window()`` are outstanding."""
        if not backward_unlocked(self.spec) or self.downstream is None:
            return
        deadline = time.monotonic() + self.spec.lockstep_timeout
        timeout = 0.0
        while True:
            received = self.downstream.receive(timeout)
            if received is not None:
                sender, message = received
                if message.kind == Kind.CONTROL and message.header.command == BATCH_DONE:
                    self.batches_acknowledged += 1
                else:
                    self.downstream.reject(f"unexpected {message.kind.name} from downstream")
                timeout = 0.0
                continue
            if self.batches_begun - self.batches_acknowledged < self.flow_window():
                break
            if time.monotonic() > deadline:
                raise ChainTimeout(f"area{self.k + 1} finished no batch in time")
            self.tick()
            timeout = 0.05
        self.batches_begun += 1

    def validated(self, epoch: int) -> None:
        """The end of an epoch: wait until every area below has validated it (``validated``
        from area k+1), then tell area k-1. Every area thus begins the next epoch's training
        within a few messages of the others, so no area's training loop (its clock) holds a
        wait for another's validation. ``batch_done`` notices still in the queue count."""
        if self.downstream is not None:
            deadline = time.monotonic() + self.spec.lockstep_timeout
            while True:
                received = self.downstream.receive(0.05)
                if received is not None:
                    header = received[1].header
                    command = getattr(header, "command", None)
                    if command == VALIDATED and header.args.epoch == epoch:
                        break
                    if command == BATCH_DONE:
                        self.batches_acknowledged += 1
                    else:
                        self.downstream.reject(f"unexpected {received[1].kind.name} after epoch")
                elif time.monotonic() > deadline:
                    raise ChainTimeout(f"area{self.k + 1} did not finish validating epoch {epoch}")
                self.tick()
        if self.upstream is not None:
            header = control(VALIDATED, self.name, epoch=epoch)
            self.upstream.send(header, to=f"area{self.k - 1}")

    def acknowledge(self, ids: StepId) -> None:
        """Backward-unlocked modes: tell area k-1 this training batch is finished."""
        if not backward_unlocked(self.spec) or self.upstream is None:
            return
        header = control(BATCH_DONE, self.name, epoch=ids.epoch, batch=ids.batch)
        self.upstream.send(header, to=f"area{self.k - 1}")

    def greet_neighbours(self) -> None:
        """Say hello downstream, wait for upstream's hello: a ROUTER can only send to a DEALER
        whose connection is up (ROUTER_MANDATORY), and in the forward-unlocked mode area k+1
        may send its first FEEDBACK before area k has sent anything."""
        if self.downstream is not None:
            self.downstream.send(control(Command.HELLO, self.name))
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
        raise ChainTimeout(f"no hello from area{self.k - 1}")

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
        (also at once when ``abort()`` turns true, e.g. on a lesion notice). While waiting
        for FEEDBACK, a ``feedback_withheld`` notice for ``ids`` is returned as well."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if abort is not None and abort():
                return None
            received = endpoint.receive(min(remaining, 0.05))
            if received is None:
                self.tick()
                continue
            sender, message = received
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
                and header.command == FEEDBACK_WITHHELD
                and (header.args.epoch, header.args.batch) == (ids.epoch, ids.batch)
            ):
                return message
            endpoint.reject(f"unexpected {message.kind.name} {getattr(header, 'ids', '')}")
        return None

    def boundary_rows(self, examples: int) -> int:
        """Rows of a boundary tensor for ``examples`` images: B, or B·28 for LSTM blocks."""
        return examples * (N_STEPS if self.spec.chain_block == "lstm" else 1)

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

    def receive_activity(self, ids: StepId, rows: int) -> torch.Tensor:
        """h_{k-1} (rows, W) from area k-1; ChainTimeout if no valid one comes in time."""
        assert self.upstream is not None
        tensor = self._receive_valid(self.upstream, Kind.ACTIVITY, ids, rows)
        if not isinstance(tensor, torch.Tensor):
            raise ChainTimeout(f"no valid activity {tuple(ids)} from area{self.k - 1}")
        return tensor

    def receive_feedback(self, ids: StepId, rows: int) -> torch.Tensor | None:
        """∂L/∂h_k (rows, W) from area k+1, or None if it withheld it (it had no ĥ_k)."""
        assert self.downstream is not None
        received = self._receive_valid(self.downstream, Kind.FEEDBACK, ids, rows)
        if isinstance(received, Message):
            return None
        if received is None:
            raise ChainTimeout(f"no valid feedback {tuple(ids)} from area{self.k + 1}")
        return received

    def _checked(
        self, endpoint: Endpoint, message: Message, rows: int | None = None
    ) -> torch.Tensor | None:
        """The message's tensor if it is (rows, W) and finite; else rejected (logged), None."""
        try:
            tensor = expect_shape(message, (rows, self.spec.chain_width))
        except ProtocolError as exc:
            endpoint.reject(str(exc))
            return None
        if self.spec.chain_block == "lstm" and tensor.shape[0] % N_STEPS:
            endpoint.reject(f"{tensor.shape[0]} rows is not {N_STEPS} per example")
            return None
        return tensor

    # -- saving ------------------------------------------------------------------------------------
    def checkpoint(self) -> None:
        self.save_checkpoint(self.core.state_dict(), self.epoch)
