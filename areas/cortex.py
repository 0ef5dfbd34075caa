"""The cortical area's maths, free of sockets.

One truncation k covering steps (a, b]:

1. the state s_a = [h_a; c_a] is detached from the previous truncation and made a leaf;
2. the area runs forward over the truncation → s_b and the task loss L_k;
3. if a future exists (b < N), the efference copy s_b goes to the cerebellum, which answers
   with the predicted feedback ĝ_b (no synthetic feedback at the sequence end);
4. backward ``L_k + λ·<ĝ_b, s_b>`` and update (after every truncation by default) — only if
   a gradient exists: with no scored step in the truncation and no ĝ_b, nothing is
   back-propagated and the optimiser is not touched (the paper's appendix A: "assuming a
   corresponding (synthetic) loss gradient is available, the model parameters are updated");
5. the gradient that reached the leaf s_a is the bootstrapped target
   ``g̃_a = ∂L_k/∂s_a + λ·(∂s_b/∂s_a)ᵀ ĝ_b`` for the prediction made at the end of
   truncation k−1; it goes to the inferior olive.

:class:`SequencePass` exposes those steps one call at a time so that the in-process runner and
the area process drive exactly the same code; :class:`AreaCore` runs whole epochs through a
:class:`CerebellarLink` (function calls in-process, ZeroMQ in the area process).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from ccdni.base.optim import clip_and_step, make_adam
from ccdni.base.seeding import derived_seed
from ccdni.tasks.base import Batch, Task
from wire.ids import StepId

if TYPE_CHECKING:
    from ccdni.base.spec import RunSpec


def truncation_bounds(n_steps: int, truncation: int) -> list[tuple[int, int]]:
    """Split steps [0, N) into truncations of T steps with the remainder in the last one.

    N = mT + r gives m truncations of T steps then one of r steps, as in the paper.
    """
    bounds = [(a, min(a + truncation, n_steps)) for a in range(0, n_steps, truncation)]
    return bounds


class CorticalArea(nn.Module):
    """One cortical area: an LSTM with a linear readout of its output states.

    The state the cerebellum sees is s = [h; c], shape (B, 2H).
    """

    def __init__(self, input_size: int, hidden: int, output_size: int, bias_factor: float = 1.0):
        super().__init__()
        self.hidden = hidden
        self.lstm = nn.LSTM(input_size, hidden, batch_first=True)  # U(±1/√H), as in the paper
        if bias_factor != 1.0:  # b scales the initial input and recurrent weights (paper §A)
            with torch.no_grad():
                for name in ("weight_ih_l0", "weight_hh_l0"):
                    weight: torch.Tensor = getattr(self.lstm, name)
                    weight.mul_(bias_factor)
        self.readout = nn.Linear(hidden, output_size)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch_size, 2 * self.hidden, device=device)  # (B, 2H)

    def forward(
        self, inputs: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """inputs (B, t, I), state (B, 2H) → outputs (B, t, O), hiddens (B, t, H), state (B, 2H)."""
        h0, c0 = state.split(self.hidden, dim=1)  # (B, H) each
        hiddens, (h, c) = self.lstm(
            inputs, (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous())
        )
        outputs = self.readout(hiddens)  # (B, t, O)
        return outputs, hiddens, torch.cat([h[0], c[0]], dim=1)


@dataclass
class Efference:
    """The efference copy s_b of truncation k, sent to the cerebellum."""

    ids: StepId
    state: torch.Tensor  # (B, 2H), detached


@dataclass
class BootstrappedTarget:
    """g̃_a: the feedback that really arrived at s_a, target of the prediction ``ids``."""

    ids: StepId
    feedback: torch.Tensor  # (B, 2H)


class TruncatedLearner:
    """The area's learning rule: truncated BPTT, optionally bridged by synthetic feedback."""

    def __init__(self, area: CorticalArea, task: Task, spec: RunSpec):
        self.area = area
        self.task = task
        self.synthetic_scale = spec.synthetic_scale  # λ = 0.1, as in the paper
        self.truncation = spec.truncation
        self.update = spec.update
        self.grad_clip = spec.grad_clip
        self.step_without_feedback = spec.step_without_feedback
        self.optimiser = make_adam(area.parameters(), spec.lr, spec)
        self.steps = 0  # optimiser steps taken (each one had a gradient to take)

    def step(self) -> None:
        """Clip the gradient norm, step Adam, clear the gradients.

        Only parameters that received a gradient move: the others have ``grad is None`` and
        Adam leaves them, their moments and their step counts alone.
        """
        clip_and_step(self.area.parameters(), self.optimiser, self.grad_clip)
        self.steps += 1

    def sequence(self, batch: Batch, epoch: int, batch_index: int) -> SequencePass:
        return SequencePass(self, batch, epoch, batch_index)

    @torch.no_grad()
    def run(self, batch: Batch) -> torch.Tensor:
        """Forward a whole batch with no learning: outputs (B, N, O)."""
        state = self.area.initial_state(batch.size, batch.inputs.device)
        outputs, _, _ = self.area(batch.inputs, state)
        return outputs


class SequencePass:
    """One sequence, one truncation at a time: ``forward(k)`` then ``backward(k, ĝ)``."""

    def __init__(self, learner: TruncatedLearner, batch: Batch, epoch: int, batch_index: int):
        self.learner = learner
        self.batch = batch
        self.epoch = epoch
        self.batch_index = batch_index
        self.bounds = truncation_bounds(batch.n_steps, learner.truncation)
        self.loss = 0.0  # Σ_k L_k = L, the sequence's task loss
        self.outputs: list[torch.Tensor] = []
        self._leaf = learner.area.initial_state(batch.size, batch.inputs.device)  # s_0
        self._state: torch.Tensor | None = None
        self._task_loss: torch.Tensor | None = None
        self._unstepped_gradient = False  # a gradient reached the parameters since the last step

    @property
    def n_truncations(self) -> int:
        return len(self.bounds)

    def ids(self, k: int) -> StepId:
        return StepId(self.epoch, self.batch_index, k)

    def forward(self, k: int) -> Efference | None:
        """Run truncation k forward; return the efference s_b, or None at the sequence end."""
        a, b = self.bounds[k]
        if k > 0:
            self._leaf.requires_grad_(True)  # s_a: a leaf so that g̃_a can be read off it
        outputs, _, state = self.learner.area(self.batch.inputs[:, a:b], self._leaf)
        self._state = state  # (B, 2H)
        self._task_loss = self.learner.task.truncation_loss(outputs, self.batch, a, b)
        if self._task_loss is None and self.learner.step_without_feedback:
            # earlier versions' placeholder: a zero-valued loss, i.e. a zero gradient that
            # Adam steps on through its moments (kept as an explicit option, off by default)
            self._task_loss = outputs.sum() * 0.0
        self.outputs.append(outputs.detach())
        if b >= self.batch.n_steps:
            return None  # no future: no synthetic feedback at the sequence end
        return Efference(self.ids(k), state.detach())

    def backward(self, k: int, prediction: torch.Tensor | None) -> BootstrappedTarget | None:
        """Backward ``L_k + λ<ĝ_b, s_b>``, update, and return the target g̃_a.

        The paper's rule (appendix A): the parameters are updated only if a real or synthetic
        gradient is available. A truncation with no scored step (``L_k`` is None) and no
        prediction (LSTM, lesioned cerebellum, sequence end, no answer in time) back-propagates
        nothing and leaves the optimiser untouched. The target g̃_a is then unknown mid-sequence
        (None) and exactly zero at the sequence end; it is None for k = 0 (s_0 is not a
        prediction's).
        """
        assert self._state is not None, "forward(k) first"
        objective = self._task_loss
        if prediction is not None:
            if prediction.shape != self._state.shape:
                raise ValueError(
                    f"prediction shape {tuple(prediction.shape)} != state shape "
                    f"{tuple(self._state.shape)}"
                )
            synthetic = self.learner.synthetic_scale * (prediction * self._state).sum()
            objective = synthetic if objective is None else objective + synthetic
        if objective is not None:
            objective.backward()
            self._unstepped_gradient = True
        if self._task_loss is not None:
            self.loss += float(self._task_loss.detach())
        last = k == self.n_truncations - 1
        target = None
        if k > 0 and self._leaf.grad is not None:
            target = BootstrappedTarget(self.ids(k - 1), self._leaf.grad.detach().clone())
        elif k > 0 and last:
            # the sequence ends with no scored step: the true feedback at s_a is known to be
            # exactly zero (no loss lies ahead), so the prediction for s_a gets a zero target.
            # (A *missing* ĝ_b mid-sequence leaves the feedback unknown: no target then.)
            target = BootstrappedTarget(self.ids(k - 1), torch.zeros_like(self._leaf))
        if self._unstepped_gradient and (self.learner.update == "truncation" or last):
            self.learner.step()
            self._unstepped_gradient = False
        self._leaf = self._state.detach()
        self._state = self._task_loss = None
        return target

    def full_outputs(self) -> torch.Tensor:
        return torch.cat(self.outputs, dim=1)  # (B, N, O)


class CerebellarLink(Protocol):
    """How an area reaches the cerebellum and olive (function calls or ZeroMQ)."""

    def predict(self, efference: Efference) -> torch.Tensor | None:
        """ĝ_b for the efference, or None (no cerebellum, timeout, lesion)."""

    def send_target(self, target: BootstrappedTarget) -> bool:
        """Deliver g̃_a to the olive if its prediction was asked for; True if sent."""


@dataclass
class EpochCounters:
    """What happened on the area's side of the interface during one epoch."""

    predictions: int = 0
    missing: int = 0
    targets: int = 0
    wait_seconds: float = 0.0
    prediction_abs_max: float = 0.0  # max |ĝ| over every prediction used (0 for zero-dni)
    train_loss_sum: float = 0.0
    batches: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class AreaCore:
    """A whole cortical area: network, learner, data stream and per-epoch bookkeeping."""

    def __init__(self, spec: RunSpec, task: Task, interface: str = "area0"):
        self.spec = spec
        self.task = task
        self.interface = interface
        self.device = torch.device(spec.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(spec.seed, f"{interface}/weights"))
            area = task.build_area(spec)  # the task's own network (captions), or the LSTM area
            if area is None:
                area = CorticalArea(
                    task.input_size, spec.hidden, task.output_size, spec.bias_factor
                )
        if getattr(area, "stochastic", False):
            # dropout draws from torch's global generator: seeded from the run, saved with the
            # checkpoint (torch_rng), so processes and the in-process reference draw alike
            torch.manual_seed(derived_seed(spec.seed, f"{interface}/dropout"))
        self.area = area.to(self.device)
        self.learner = TruncatedLearner(self.area, task, spec)
        self.data_generator = torch.Generator().manual_seed(
            derived_seed(spec.seed, f"{interface}/data")
        )
        self.epoch = 0  # next epoch to run
        self.batches_done = 0  # training batches of the current epoch done (for progress)
        self.batches_per_epoch = task.n_train_batches()
        self.recorded_epochs = spec.recorded_epochs  # correlations recorded at these epochs

    def run_epoch(
        self, link: CerebellarLink | None, on_truncation: Callable[[], None] | None = None
    ) -> dict[str, float]:
        """Train one epoch, then validate; returns the epoch's metrics.

        At the spec's ``record_epochs`` the metrics also hold the correlations of
        :meth:`record_correlations`; recording only reads tensors, so the numbers of the run
        are the same with or without it.
        """
        counters = EpochCounters()
        recording = self.epoch in self.recorded_epochs
        feedback: list[torch.Tensor] = []  # ĝ of the epoch's first batch, each (B, 2H)
        started = time.perf_counter()
        steps_before = self.learner.steps
        self.batches_done = 0
        self.area.train()
        for b, batch in enumerate(self.task.train_batches(self.epoch, self.data_generator)):
            batch = batch.to(self.device)
            sequence = self.learner.sequence(batch, self.epoch, b)
            for k in range(sequence.n_truncations):
                efference = sequence.forward(k)
                prediction = None
                if efference is not None and link is not None:
                    t0 = time.perf_counter()
                    prediction = link.predict(efference)
                    counters.wait_seconds += time.perf_counter() - t0
                    counters.predictions += prediction is not None
                    counters.missing += prediction is None
                    if prediction is not None:
                        counters.prediction_abs_max = max(
                            counters.prediction_abs_max, float(prediction.abs().max())
                        )
                    if recording and b == 0 and prediction is not None:
                        feedback.append(prediction.detach())
                target = sequence.backward(k, prediction)
                if target is not None and link is not None:
                    counters.targets += link.send_target(target)
                if on_truncation is not None:
                    on_truncation()
            counters.train_loss_sum += sequence.loss
            counters.batches += 1
            self.batches_done = counters.batches
        train_seconds = time.perf_counter() - started
        metrics = {
            "epoch": self.epoch,
            "train_loss": counters.train_loss_sum / max(counters.batches, 1),
            **{f"val_{k}": v for k, v in self.validate().items()},
            "predictions": counters.predictions,
            "missing_predictions": counters.missing,
            "prediction_abs_max": counters.prediction_abs_max,
            "targets_sent": counters.targets,
            "wait_seconds": counters.wait_seconds,
            "train_seconds": train_seconds,
            "optimiser_steps": self.learner.steps - steps_before,
        }
        if recording:
            metrics.update(self.record_correlations(feedback))
        self.epoch += 1
        return metrics

    @torch.no_grad()
    def hidden_activity(self) -> torch.Tensor:
        """h over the first validation batch, no learning: (B, N, H)."""
        self.area.eval()
        batch = next(iter(self.task.validation_batches())).to(self.device)
        state = self.area.initial_state(batch.size, batch.inputs.device)  # (B, 2H)
        _, hiddens, _ = self.area(batch.inputs, state)  # (B, N, H)
        self.area.train()
        return hiddens

    def record_correlations(self, feedback: list[torch.Tensor]) -> dict[str, float]:
        """r_h, r_pop_h over h (samples × steps of the first validation batch) and r_g, r_pop_g
        over the synthetic feedback ``feedback`` (each (B, 2H), pooled over truncations).

        A measure that is undefined (no feedback: LSTM or lesioned cerebellum; fewer than two
        varying units) is left out of the returned metrics.
        """
        from ccdni.analysis.correlation import correlation_summary

        metrics = correlation_summary(self.hidden_activity(), "r_h")  # over (B·N, H)
        if feedback:
            metrics.update(correlation_summary(torch.cat(feedback), "r_g"))  # over (P·B, 2H)
        return metrics

    def validate(self) -> dict[str, float]:
        """Task metrics over the validation batches, averaged by the task's evaluation weight
        (by example, by scored word for captions)."""
        self.area.eval()
        totals: dict[str, float] = {}
        count = 0
        for batch in self.task.validation_batches():
            batch = batch.to(self.device)
            metrics = self.task.evaluate(self.learner.run(batch), batch)
            weight = self.task.evaluation_weight(batch)  # examples, or words for captions
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value * weight
            count += weight
        self.area.train()
        return {key: value / count for key, value in totals.items()}

    def state_dict(self) -> dict:
        """Everything needed to continue: weights, optimiser, RNG streams, next epoch."""
        return {
            "area": self.area.state_dict(),
            "optimiser": self.learner.optimiser.state_dict(),
            "data_generator": self.data_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.area.load_state_dict(state["area"])
        self.learner.optimiser.load_state_dict(state["optimiser"])
        self.data_generator.set_state(state["data_generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = int(state["epoch"])
