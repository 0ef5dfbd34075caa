"""A chain area's socket-free core: its role, its lag window, and a training batch in two halves.

K areas split one network: feed-forward blocks on MNIST (:class:`areas.chain.ChainArea`) or
stacked LSTM layers on seqMNIST (:class:`areas.chain_lstm.LstmChainArea`). Area k's output
activity h_k feeds area k+1; ∂L/∂h_k comes back. What area k exchanges with its neighbours,
the cerebellum and the olive depends only on ``spec.chain_mode`` and k, and is decided once,
in :class:`ChainRole`:

=================  ==================================  ============================================
mode               area k asks the cerebellum for      area k sends (besides h_k in validation)
=================  ==================================  ============================================
locked             nothing                             ACTIVITY h_k down, FEEDBACK ∂L/∂h_{k-1} up
backward-unlocked  ĝ_k = C(h_k) on ``boundary{k}``     ACTIVITY h_k down, TARGET ∂L/∂h_{k-1} on
                                                       ``boundary{k-1}``
forward-unlocked   ĥ_{k-1} = C(x) on ``forward{k-1}``  TARGET h_k on ``forward{k}``, FEEDBACK
                                                       ∂L/∂ĥ_{k-1} up
fully-unlocked     both                                both TARGETs; nothing between areas
=================  ==================================  ============================================

(area 0 has no upstream, the last area no downstream and asks for no ĝ.) An area that waits for
true feedback is not flow-controlled; in the backward-unlocked modes area k hears nothing from
area k+1 while training, so it is: it begins batch n only once area k+1 has finished batches
≤ n − w (w = ``chain_max_lag``, at least 1; 64 with no lag bound).

**The lag window.** With each efference the area says how many climbing-fibre errors of that
interface the cerebellum must have applied before it answers (``errors_expected``): all but the
last ``chain_max_lag`` efferences it sent (0, "don't wait", with no bound). Under lockstep the
cerebellum applies exactly that many, so every answer is deterministic. A prediction that does
not come in time (``wait``) loosens the bound by one: its error, or one lost elsewhere, may
never come. After a revival the count starts again (the shell tells the cerebellum).

:class:`ChainAreaCore` trains one batch as :meth:`~ChainAreaCore.forward_half` (input h_{k-1},
ĥ_{k-1} or the image; forward; h_k out, as activity, target or efference) then
:meth:`~ChainAreaCore.backward_half` (∂L/∂h_k from the loss, area k+1 or ĝ_k; backward and
step, or drop the batch; ∂L/∂h_{k-1} up as feedback or target), talking only to its
:class:`ChainLinks`. The area process runs both halves back to back over ZeroMQ
(:mod:`areas.chain_process`); the in-process runner runs every area's forward half in order
0..K-1, then every backward half K-1..0, with function calls (:mod:`orchestrator.inprocess`).
Validation always runs the true chain h_0 → h_1 → … in evaluation mode, so accuracies compare
across modes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch

from areas.chain import (
    ChainArea,
    backward_unlocked,
    batch_order,
    batches_per_epoch,
    boundary_name,
    flat_images,
    forward_name,
    forward_unlocked,
)
from areas.chain_lstm import N_STEPS, LstmChainArea
from wire.ids import StepId

if TYPE_CHECKING:
    from ccdni.base.spec import RunSpec
    from ccdni.tasks.mnist_data import MnistSplits

TRAINING, VALIDATION = 0, 1  # the truncation field of a chain's ids: (epoch, batch, 0 or 1)
FLOW_WINDOW = 64  # batches an area may run ahead of the next when chain_max_lag is -1
BLOCKS: dict[str, type[ChainArea]] = {"ff": ChainArea, "lstm": LstmChainArea}


class ChainTimeout(RuntimeError):
    """A chain neighbour (or, under lockstep, the cerebellum) did not answer in time."""


@dataclass(frozen=True)
class ChainRole:
    """What area k of a chain exchanges, and with whom: computed once from the spec."""

    k: int
    first: bool
    last: bool
    forward_unlocked: bool  # the mode's: area k+1 runs on ĥ_k
    synthetic_feedback: str | None  # asks ĝ_k on boundary{k}
    synthetic_activity: str | None  # asks ĥ_{k-1} on forward{k-1}
    activity_target: str | None  # sends h_k to the olive on forward{k}
    feedback_target: str | None  # sends ∂L/∂h_{k-1} to the olive on boundary{k-1}
    waits_for_activity: bool  # training: true h_{k-1} from area k-1
    sends_activity: bool  # training: h_k to area k+1
    waits_for_feedback: bool  # training: true ∂L/∂h_k from area k+1
    sends_feedback: bool  # training: ∂L/∂h_{k-1} to area k-1 (or "withheld")
    flow_controlled: bool  # waits for area k+1's batch_done notices
    acknowledges: bool  # sends batch_done to area k-1
    window: int  # training batches it may be ahead of area k+1 (flow-controlled)
    max_lag: int  # spec.chain_max_lag: the lag window (-1: none)
    uses_cerebellum: bool
    rows_per_example: int  # boundary rows per image: 1, or 28 for LSTM blocks

    @classmethod
    def of(cls, spec: RunSpec, k: int) -> ChainRole:
        first, last = k == 0, k == spec.chain_areas - 1
        backward, forward = backward_unlocked(spec), forward_unlocked(spec)
        lag = spec.chain_max_lag
        return cls(
            k=k,
            first=first,
            last=last,
            forward_unlocked=forward,
            synthetic_feedback=boundary_name(k) if backward and not last else None,
            synthetic_activity=forward_name(k - 1) if forward and not first else None,
            activity_target=forward_name(k) if forward and not last else None,
            feedback_target=boundary_name(k - 1) if backward and not first else None,
            waits_for_activity=not first and not forward,
            sends_activity=not last and not forward,
            waits_for_feedback=not last and not backward,
            sends_feedback=not first and not backward,
            flow_controlled=backward and not last,
            acknowledges=backward and not first,
            window=max(lag, 1) if lag >= 0 else FLOW_WINDOW,
            max_lag=lag,
            uses_cerebellum=spec.uses_cerebellum,
            rows_per_example=N_STEPS if spec.chain_block == "lstm" else 1,
        )

    @property
    def name(self) -> str:
        return f"area{self.k}"

    @property
    def upstream(self) -> str | None:
        return None if self.first else f"area{self.k - 1}"

    @property
    def downstream(self) -> str | None:
        return None if self.last else f"area{self.k + 1}"

    @property
    def asked_interfaces(self) -> tuple[str, ...]:
        """The interfaces it sends efferences on."""
        return tuple(i for i in (self.synthetic_activity, self.synthetic_feedback) if i)

    @property
    def target_interfaces(self) -> tuple[str, ...]:
        """The interfaces it sends the olive targets for."""
        return tuple(i for i in (self.feedback_target, self.activity_target) if i)

    @property
    def needs_images(self) -> bool:
        """The image x: area 0's input, or the efference of ĥ_{k-1} = C(x)."""
        return self.first or self.synthetic_activity is not None

    def rows(self, examples: int) -> int:
        """Rows of a boundary tensor for ``examples`` images (B, or B·28)."""
        return examples * self.rows_per_example


class ChainLinks(Protocol):
    """What a chain area's core talks through: function calls or ZeroMQ."""

    @property
    def cerebellum_alive(self) -> bool: ...

    @property
    def olive_alive(self) -> bool: ...

    def tick(self) -> None:
        """Between batches: heartbeats, control messages (processes); nothing in-process."""

    def begin_batch(self, ids: StepId) -> None:
        """Flow-controlled roles: return once area k+1 is less than ``window`` batches behind."""

    def batch_done(self, ids: StepId) -> None:
        """Acknowledging roles: tell area k-1 that this training batch is finished."""

    def activity_in(self, ids: StepId, rows: int) -> torch.Tensor:
        """h_{k-1} (rows, W) from area k-1 (ChainTimeout if none comes)."""

    def activity_out(self, ids: StepId, activity: torch.Tensor) -> None:
        """h_k (rows, W) to area k+1."""

    def feedback_in(self, ids: StepId, rows: int) -> torch.Tensor | None:
        """∂L/∂h_k (rows, W) from area k+1, or None if it withheld it."""

    def feedback_out(self, ids: StepId, feedback: torch.Tensor | None) -> None:
        """∂L/∂h_{k-1} (rows, W) to area k-1; None: withheld (no gradient this batch)."""

    def request(
        self, interface: str, ids: StepId, efference: torch.Tensor, errors_expected: int
    ) -> bool:
        """Send an efference copy to the cerebellum; True if it left."""

    def prediction(self, interface: str, ids: StepId, rows: int) -> torch.Tensor | None:
        """The cerebellum's answer (rows, W) to the request ``ids``, or None (none in time)."""

    def send_target(self, interface: str, ids: StepId, target: torch.Tensor) -> bool:
        """A TARGET for the olive; True if it left."""

    def end_epoch(self, epoch: int, interfaces: tuple[str, ...]) -> None:
        """Every target of the epoch on ``interfaces`` has been sent."""


@dataclass
class LagWindow:
    """``errors_expected`` per interface: efferences whose errors will come, less the lag and
    one per prediction given up on."""

    lag: int
    sent: dict[str, int] = field(default_factory=dict)
    credit: dict[str, int] = field(default_factory=dict)

    def errors_expected(self, interface: str) -> int:
        if self.lag < 0:
            return 0
        sent = self.sent.get(interface, 0)
        return max(0, sent - self.lag - self.credit.get(interface, 0))

    def sent_one(self, interface: str) -> None:
        self.sent[interface] = self.sent.get(interface, 0) + 1

    def given_up(self, interface: str, olive_alive: bool) -> None:
        """A prediction did not come: its error may never come, nor one lost elsewhere (a
        target a downstream area could not compute); were they counted, every later request
        would wait out its timeout."""
        if olive_alive and self.sent.get(interface, 0) > 0:
            self.sent[interface] -= 1
        self.credit[interface] = self.credit.get(interface, 0) + 1

    def restart(self) -> None:
        self.sent.clear()
        self.credit.clear()


COUNTERS = (
    "trained_batches",
    "predictions",
    "synthetic_inputs",
    "skipped_batches",
    "missing_feedback",
    "targets_sent",
    "targets_withheld",
)


@dataclass
class Batch:
    """One training batch between its two halves."""

    ids: StepId
    indices: torch.Tensor
    rows: int  # boundary rows: B, or B·28
    skipped: bool = False  # no ĥ_{k-1}: nothing ran
    asked: bool = False  # an efference for ĝ_k left
    logits: torch.Tensor | None = None  # the last area's output (B, 10)


class ChainAreaCore:
    """Area k of a chain: its block, role, data order, lag window and epoch counters."""

    def __init__(self, spec: RunSpec, k: int, data: MnistSplits):
        self.spec = spec
        self.role = ChainRole.of(spec, k)
        self.area = BLOCKS[spec.chain_block](spec, k)
        self.window = LagWindow(spec.chain_max_lag)
        self.train_x = flat_images(data.train_images) if self.role.needs_images else None
        self.train_y = data.train_labels
        self.val_x = flat_images(data.val_images) if self.role.first else None
        self.val_y = data.val_labels
        self.n_batches = batches_per_epoch(spec, data.train_images.shape[0])
        self.order = batch_order(spec, data.train_images.shape[0])
        self.epoch = 0
        self.batches_done = 0  # training batches of the current epoch done (for progress)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._batch: Batch | None = None
        self._clock = dict.fromkeys(("compute", "warmup", "loss"), 0.0)
        self._correct = 0
        self._val_correct = 0
        self._started = 0.0
        self._started_at = 0.0

    # -- one epoch ------------------------------------------------------------------------------
    def train_epoch(self, links: ChainLinks, epoch: int) -> dict[str, float]:
        """Every training batch of ``epoch``, both halves back to back (the area process)."""
        self.begin_epoch(epoch)
        for b in range(self.n_batches):
            links.tick()
            self.forward_half(links, b)
            self.backward_half(links)
            self.batches_done = b + 1
        return self.end_epoch(links)

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches_done = 0
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._clock.update(compute=0.0, loss=0.0)
        self._correct = 0
        self._started_at = time.time()  # wall clock: comparable across the chain's processes
        self._started = time.perf_counter()

    def forward_half(self, links: ChainLinks, b: int) -> None:
        """Batch b's input (image, h_{k-1} or ĥ_{k-1}), forward, and h_k on its way."""
        role = self.role
        indices = next(self.order)
        batch = self._batch = Batch(
            StepId(self.epoch, b, TRAINING), indices, role.rows(len(indices))
        )
        if role.flow_controlled:
            links.begin_batch(batch.ids)
        if role.first:
            assert self.train_x is not None
            x = self.train_x[batch.indices]  # (B, 784)
        elif role.synthetic_activity is not None:
            synthetic = self._synthetic_activity(links, batch)  # ĥ_{k-1} (B, W), or None
            if synthetic is None:  # no prediction (lesion, timeout): the batch is skipped
                self.counts["skipped_batches"] += 1
                batch.skipped = True
                return
            self.counts["synthetic_inputs"] += 1
            x = synthetic
        else:
            x = links.activity_in(batch.ids, batch.rows)  # h_{k-1} (rows, W)
        h = self._timed(self.area.forward, x)  # (rows, W), or logits (B, 10) for the last area
        if role.last:
            batch.logits = h
        else:
            if role.activity_target is not None:  # h_k: the forward synthesiser's target
                self._send_target(links, role.activity_target, batch.ids, h)
            if role.synthetic_feedback is not None:  # the efference first
                batch.asked = self._request(links, role.synthetic_feedback, batch.ids, h)
            if role.sends_activity:  # area k+1 waits for the true h_k
                links.activity_out(batch.ids, h)

    def backward_half(self, links: ChainLinks) -> None:
        """∂L/∂h_k (loss, FEEDBACK or ĝ_k), backward and step (or drop the batch), and
        ∂L/∂h_{k-1} upstream (FEEDBACK, withheld, or the olive's TARGET)."""
        role, batch = self.role, self._batch
        assert batch is not None, "forward_half first"
        self._batch = None
        grad_x = None
        if batch.skipped:
            pass
        elif role.last:
            assert batch.logits is not None
            labels = self.train_y[batch.indices]
            self._correct += int((batch.logits.argmax(1).cpu() == labels).sum())
            loss, grad_x = self._timed(self.area.loss_backward, labels)
            self._clock["loss"] += loss
            self.counts["trained_batches"] += 1
        else:
            grad_h = None
            if role.synthetic_feedback is not None:
                if batch.asked:
                    grad_h = self._prediction(links, role.synthetic_feedback, batch.ids, batch.rows)
                self.counts["predictions"] += grad_h is not None
            else:
                grad_h = links.feedback_in(batch.ids, batch.rows)  # None if withheld
                self.counts["missing_feedback"] += grad_h is None
            if grad_h is None:  # nothing came from downstream: no update this batch
                self._timed(self.area.discard)
            else:
                grad_x = self._timed(self.area.backward, grad_h)  # None for area 0
                self.counts["trained_batches"] += 1
        if role.feedback_target is not None and grad_x is not None:
            self._send_target(links, role.feedback_target, batch.ids, grad_x)
        elif role.sends_feedback:
            links.feedback_out(batch.ids, grad_x)
        if role.acknowledges:
            links.batch_done(batch.ids)
        if self.epoch == 0 and batch.ids.batch == 0:
            self._clock["warmup"] = self._clock["compute"]

    def end_epoch(self, links: ChainLinks) -> dict[str, float]:
        """Tell the olive the epoch's targets are sent; the epoch's metrics."""
        wall = time.perf_counter() - self._started
        role, counts, spec = self.role, self.counts, self.spec
        if role.target_interfaces and links.olive_alive:
            links.end_epoch(self.epoch, role.target_interfaces)
        compute = self._clock["compute"]
        n = self.n_batches
        metrics: dict[str, float] = {
            "epoch": self.epoch,
            "batches": n,
            "samples": n * spec.batch_size,
            "train_seconds": wall,
            "train_started_at": self._started_at,
            "train_ended_at": self._started_at + wall,
            "compute_seconds": compute,
            "wait_seconds": max(wall - compute, 0.0),
            "busy_fraction": compute / wall if wall > 0 else 0.0,
            "step_seconds": (compute - self._clock["warmup"] * (self.epoch == 0))
            / max(n - (self.epoch == 0), 1),
            "samples_per_s": n * spec.batch_size / wall if wall > 0 else 0.0,
        }
        ran = n - counts["skipped_batches"]  # batches not skipped for want of ĥ
        if role.last and ran > 0:  # on ĥ in the forward-unlocked modes
            metrics["train_loss"] = self._clock["loss"] / ran
            metrics["train_accuracy"] = self._correct / (ran * spec.batch_size)
        if role.synthetic_feedback is not None:  # without ĝ_k: no update from downstream
            metrics["predictions"] = counts["predictions"]
            metrics["missing_predictions"] = ran - counts["predictions"]
        if role.synthetic_activity is not None:
            metrics["synthetic_inputs"] = counts["synthetic_inputs"]
            metrics["skipped_batches"] = counts["skipped_batches"]
        if role.waits_for_feedback and role.forward_unlocked:
            metrics["missing_feedback"] = counts["missing_feedback"]
        if role.target_interfaces:
            metrics["targets_sent"] = counts["targets_sent"]
            metrics["targets_withheld"] = counts["targets_withheld"]
        if role.uses_cerebellum:
            metrics["trained_batches"] = counts["trained_batches"]
            metrics["cerebellum_alive"] = links.cerebellum_alive
            metrics["olive_alive"] = links.olive_alive
        return metrics

    # -- validation: the true chain ---------------------------------------------------------------
    @property
    def validation_chunks(self) -> int:
        size = self.spec.batch_size
        return (self.val_y.shape[0] + size - 1) // size

    def validate(self, links: ChainLinks, epoch: int) -> dict[str, float]:
        """Forward the validation set through the chain in evaluation mode (no learning)."""
        for chunk in range(self.validation_chunks):
            links.tick()
            self.validate_chunk(links, epoch, chunk)
        return self.validation_metrics()

    def validate_chunk(self, links: ChainLinks, epoch: int, chunk: int) -> None:
        size = self.spec.batch_size
        start = chunk * size
        if chunk == 0:
            self._val_correct = 0
        ids = StepId(epoch, chunk, VALIDATION)
        labels = self.val_y[start : start + size]
        if self.role.first:
            assert self.val_x is not None
            x = self.val_x[start : start + size]
        else:
            x = links.activity_in(ids, self.role.rows(len(labels)))
        out = self.area.infer(x)
        if self.role.last:
            self._val_correct += int((out.argmax(1).cpu() == labels).sum())
        else:
            links.activity_out(ids, out)

    def validation_metrics(self) -> dict[str, float]:
        """The last area's validation accuracy (the other areas report none)."""
        return {"val_accuracy": self._val_correct / self.val_y.shape[0]} if self.role.last else {}

    # -- the cerebellum and the olive ---------------------------------------------------------------
    def restart_counts(self) -> None:
        """After a revival: a new cerebellum has applied no error yet, and the errors in flight
        to a dead olive are lost; the count starts again (the cerebellum's too)."""
        self.window.restart()

    def _request(
        self, links: ChainLinks, interface: str, ids: StepId, efference: torch.Tensor
    ) -> bool:
        """An efference copy for the cerebellum; True if it left (its prediction may come)."""
        if not links.cerebellum_alive:
            return False
        if not links.request(interface, ids, efference, self.window.errors_expected(interface)):
            return False
        if links.olive_alive:  # only then will its climbing-fibre error come
            self.window.sent_one(interface)
        return True

    def _prediction(
        self, links: ChainLinks, interface: str, ids: StepId, rows: int
    ) -> torch.Tensor | None:
        prediction = links.prediction(interface, ids, rows)
        if prediction is None and links.cerebellum_alive:  # given up: loosen the lag bound
            self.window.given_up(interface, links.olive_alive)
        return prediction

    def _synthetic_activity(self, links: ChainLinks, batch: Batch) -> torch.Tensor | None:
        """ĥ_{k-1} = C(x) for this batch's images x (B, 784), or None."""
        interface = self.role.synthetic_activity
        assert interface is not None and self.train_x is not None
        images = self.train_x[batch.indices]
        if not self._request(links, interface, batch.ids, images):
            return None
        return self._prediction(links, interface, batch.ids, len(images))  # (B, W)

    def _send_target(
        self, links: ChainLinks, interface: str, ids: StepId, target: torch.Tensor
    ) -> None:
        """A TARGET for the olive; withheld while the olive or the cerebellum is lesioned (it
        could never be paired)."""
        if not (links.olive_alive and links.cerebellum_alive):
            self.counts["targets_withheld"] += 1
            return
        self.counts["targets_sent"] += links.send_target(interface, ids, target)

    def _timed(self, step, *args):
        started = time.perf_counter()
        result = step(*args)
        self._clock["compute"] += time.perf_counter() - started
        return result

    def state_dict(self) -> dict:
        return self.area.state_dict()
