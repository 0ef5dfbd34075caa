"""The task interface shared by every experiment, and the task registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from areas.cortex import CorticalArea
    from ccdni.base.spec import RunSpec


@dataclass(frozen=True)
class Batch:
    """One batch of sequences.

    ``inputs`` is ``(B, N, I)``. For regression ``targets`` is ``(B, N, O)`` float; for
    classification it is ``(B, N)`` long (the label repeated at every step).
    ``loss_steps`` is ``(N,)`` bool: which steps carry a task loss.
    ``labels`` is ``(B,)`` long: the class of each example (digit, cue), for figures.
    ``score_mask`` is ``(B, N)`` bool or None: when examples differ in which steps are scored
    (captions of different lengths, padded), the steps scored for each example; ``loss_steps``
    is then its ``any`` over the batch. None: every example is scored at ``loss_steps``.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    loss_steps: torch.Tensor
    labels: torch.Tensor
    score_mask: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.inputs.shape[1])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.inputs.to(device),
            self.targets.to(device),
            self.loss_steps.to(device),
            self.labels.to(device),
            None if self.score_mask is None else self.score_mask.to(device),
        )


@dataclass(frozen=True)
class Headline:
    """The one number that stands for a run of a task: an area's validation metric (the key
    of its per-epoch record) and which way is better. Reports, sweeps and figures use it."""

    metric: str  # e.g. "val_mse"
    label: str  # e.g. "validation MSE", for axes and tables
    lower_is_better: bool = True


CHAIN_HEADLINE = Headline("val_accuracy", "validation accuracy", lower_is_better=False)


class Task(ABC):
    """A sequence task: inputs, targets and which steps are scored.

    The sequence loss is the mean of the per-step losses over the scored steps,
    ``L = (1/|S|) Σ_{t∈S} ℓ_t``, so the truncation losses ``L_k`` (the same sum restricted to
    a truncation) add up exactly to ``L``.
    """

    name: str
    n_steps: int
    input_size: int
    output_size: int
    loss_kind: str  # "mse" or "xent"
    headline: ClassVar[Headline]  # the metric that stands for a run of this task

    @abstractmethod
    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        """The training batches of one epoch, drawn with ``generator``."""

    @abstractmethod
    def validation_batches(self) -> Iterator[Batch]:
        """The fixed validation batches (identical on every call)."""

    def n_train_batches(self) -> int:
        """Number of training batches per epoch."""
        return 1

    def build_area(self, spec: RunSpec) -> CorticalArea | None:
        """The task's own cortical network (a ``CorticalArea`` subclass: same state [h; c], same
        ``forward(inputs (B, t, I), state (B, 2H)) → outputs, hiddens, state``), or None for
        the plain LSTM area."""
        return None

    def evaluation_weight(self, batch: Batch) -> int:
        """What a batch's metrics weigh in the validation average: its examples by default."""
        return batch.size

    def element_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-example, per-step losses for outputs ``(B, t, O)``; returns ``(B, t)``."""
        if self.loss_kind == "mse":
            # squared distance summed over output dims: a static model at the origin scores
            # 100 on a circle of radius 10, as in the paper
            return ((outputs - targets) ** 2).sum(dim=2)  # (B, t)
        b, t, o = outputs.shape
        losses = F.cross_entropy(
            outputs.reshape(b * t, o), targets.reshape(b * t), reduction="none"
        )
        return losses.reshape(b, t)  # (B, t)

    def step_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-step task losses ``ℓ_t`` for outputs ``(B, t, O)``, mean over the batch: ``(t,)``."""
        return self.element_losses(outputs, targets).mean(dim=0)  # (t,)

    def truncation_loss(
        self, outputs: torch.Tensor, batch: Batch, start: int, stop: int
    ) -> torch.Tensor | None:
        """``L_k`` for steps ``[start, stop)``: scored per-step losses summed, over ``|S|``.

        None when no step of the truncation is scored: there is no task loss, hence no task
        gradient. (A zero-valued loss would be a *zero* gradient, which Adam still steps on.)
        With a per-example ``score_mask`` the loss is the truncation's scored losses summed over
        the batch's scored (example, step) pairs: the mean per scored step (per word).
        """
        if batch.score_mask is not None:
            scored = batch.score_mask[:, start:stop]  # (B, t)
            if not bool(scored.any()):
                return None
            losses = self.element_losses(outputs, batch.targets[:, start:stop])  # (B, t)
            return losses[scored].sum() / batch.score_mask.sum()
        mask = batch.loss_steps[start:stop]
        n_scored = int(batch.loss_steps.sum())
        if not bool(mask.any()):
            return None
        losses = self.step_losses(outputs[:, mask], batch.targets[:, start:stop][:, mask])
        return losses.sum() / n_scored

    def evaluate(self, outputs: torch.Tensor, batch: Batch) -> dict[str, float]:
        """Task metrics of outputs ``(B, N, O)`` on a batch (no grad)."""
        loss = self.truncation_loss(outputs, batch, 0, batch.n_steps)
        metrics = {"loss": float(loss) if loss is not None else 0.0}
        if self.loss_kind == "mse":
            scored = outputs[:, batch.loss_steps]
            sq = ((scored - batch.targets[:, batch.loss_steps]) ** 2).sum(dim=-1)  # (B, |S|)
            metrics["mse"] = float(sq.mean())
        else:
            predicted = outputs[:, -1].argmax(dim=-1)
            metrics["error_pct"] = 100.0 * float((predicted != batch.targets[:, -1]).float().mean())
        return metrics


def task_class(name: str) -> type[Task]:
    """The class of the task named ``name`` (no data are loaded)."""
    if name == "target-reaching":
        from ccdni.tasks.target_reaching import TargetReaching

        return TargetReaching
    if name == "captions":
        from ccdni.tasks.captions.task import CaptionTask

        return CaptionTask
    from ccdni.tasks.seqmnist import TASK_CLASSES

    if name not in TASK_CLASSES:
        raise ValueError(f"unknown task {name!r}")
    return TASK_CLASSES[name]


def headline(spec: RunSpec) -> Headline:
    """The headline metric of ``spec``'s runs: its task's, or a chain's validation accuracy."""
    if spec.topology == "chain":
        return CHAIN_HEADLINE
    return task_class(spec.task).headline


def build_task(spec: RunSpec) -> Task:
    """The task named by ``spec.task``, built from the spec's task fields."""
    if spec.task == "target-reaching":
        from ccdni.tasks.target_reaching import TargetReaching

        return TargetReaching.from_spec(spec)
    if spec.task == "captions":
        from ccdni.tasks.captions.task import build_caption_task

        return build_caption_task(spec)
    from ccdni.tasks.seqmnist import build_seqmnist_task

    return build_seqmnist_task(spec)
