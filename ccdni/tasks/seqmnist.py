"""The sequential MNIST family (paper §3.2, appendix A.2).

Every task reads an MNIST image row by row: row ``i`` is the input at step ``i``, so inputs are
``(B, 28, 28)`` with ``n_steps = input_size = 28``. The tasks differ in what the output must do:

- ``seqmnist``: classify the digit at the last step (cross-entropy, 10 classes; error %).
- ``c-seqmnist``: output the digit's point on a circle of radius 10 (digit ``d`` at angle
  ``2πd/10``, point ``10·(cos, sin)``); MSE at the last step only. A static output at the origin
  scores MSE 100. (The authors' code puts the points at ``10·(sin, cos)`` of the same angles; the
  losses are the same up to that reflection.)
- ``dd-seqmnist``: draw the digit's template, a 28-point path in [0, 1]²; MSE at every step;
  :meth:`DrawDigitSeqMnist.evaluate` also reports ``mse_x100``, as in the paper.
- ``ld-seqmnist``: draw a straight line from the origin to the c-seqMNIST point: 28 equally
  spaced points, the first the origin and the last the target (``linspace(0, target, 28)``,
  as the paper's appendix A.2.4 says — "an equally spaced line where the start point is the
  origin" — and as the authors' code computes). Loss sparsity γ: exactly the steps
  ``γ, 2γ, 3γ, ...`` (1-based; 0-based ``t % γ == γ - 1``) are scored — with γ=5 steps 5..25
  and *not* the last step 28.

Templates (:data:`TEMPLATE_CORNERS`, the authors' code) are polylines through
corners. A template with ``S`` segments is resampled to 28 points as follows: 27 points are
distributed over the segments, ``⌊27/S⌋`` each and the remainder one each over the first
segments; a segment's points are equally spaced from its start corner (included) towards its
end corner (excluded); finally the last corner is appended, for 27 + 1 = 28 points. This is
exactly what the authors' ``fit_points`` computes (``⌊28/S⌋`` each, ``28 mod S − 1`` extra
over the first segments, or one fewer on the last segment when ``S`` divides 28; end point
appended), which the short description "⌊28/segments⌋ points, remainder over the first
segments, end point appended" abbreviates.

All data stay in memory as tensors (no DataLoader). Training batches are drawn from a fresh
permutation of the training split each epoch (the last incomplete batch is dropped);
validation batches come in a fixed order (the last partial batch is kept).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from ccdni.tasks.base import Batch, Headline, Task
from ccdni.tasks.mnist_data import MnistSplits, load_mnist

if TYPE_CHECKING:
    from ccdni.base.spec import RunSpec

N_STEPS = 28  # one image row per step, as in the paper
INPUT_SIZE = 28  # pixels per row, as in the paper
N_CLASSES = 10
RADIUS = 10.0  # c-/ld-seqMNIST circle radius, as in the paper

# Corners (x, y) of each digit's template polyline, as in the authors' code.
TEMPLATE_CORNERS: dict[int, tuple[tuple[float, float], ...]] = {
    digit: tuple(zip(xs, ys))
    for digit, (xs, ys) in {
        0: ((0, 0, 0, 0.5, 1, 1, 1, 0.5, 0), (1, 0.5, 0, 0, 0, 0.5, 1, 1, 1)),
        1: ((0.25, 0.5, 0.5, 0.5), (0.75, 1, 0.5, 0)),
        2: ((0, 0.5, 1, 0.5, 0, 0.5, 1), (1, 1, 1, 0.5, 0, 0, 0)),
        3: ((0, 0.5, 1, 1, 0.5, 1, 1, 0.5, 0), (1, 1, 1, 0.5, 0.5, 0.5, 0, 0, 0)),
        4: ((0, 0, 0.5, 1, 0.5, 0.5, 0.5, 0.5), (1, 0.5, 0.5, 0.5, 0.5, 1, 0.5, 0)),
        5: ((0, 0.5, 1, 0.5, 0, 0, 0.5, 1, 1, 0.5, 0), (1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0, 0, 0)),
        6: ((0, 0, 0, 0.5, 1, 1, 0.5, 0), (1, 0.5, 0, 0, 0, 0.5, 0.5, 0.5)),
        7: ((0, 0.5, 1, 0.5, 0), (1, 1, 1, 0.5, 0)),
        8: ((0, 0.5, 1, 0.5, 0, 0.5, 1, 0.5, 0), (1, 0.5, 0, 0, 0, 0.5, 1, 1, 1)),
        9: ((0, 0, 0.5, 1, 1, 0.5, 0, 0.5, 1, 1, 1), (1, 0.5, 0.5, 0.5, 1, 1, 1, 1, 1, 0.5, 0)),
    }.items()
}


def segment_point_counts(n_segments: int, n_points: int = N_STEPS) -> list[int]:
    """Points each segment contributes (its start corner included, its end excluded).

    ``n_points − 1`` points go to the segments, ``⌊(n−1)/S⌋`` each, the remainder one each
    over the first segments; the final corner makes up the last point.
    """
    if n_segments < 1 or n_points - 1 < n_segments:
        raise ValueError(f"cannot resample {n_segments} segments to {n_points} points")
    base, extra = divmod(n_points - 1, n_segments)
    return [base + (1 if i < extra else 0) for i in range(n_segments)]


def resample_polyline(corners: torch.Tensor, n_points: int = N_STEPS) -> torch.Tensor:
    """``(n_points, 2)``: the polyline through ``corners`` ``(C, 2)`` resampled (see module doc)."""
    counts = segment_point_counts(corners.shape[0] - 1, n_points)
    pieces = []
    for i, count in enumerate(counts):
        start, end = corners[i], corners[i + 1]
        fractions = torch.arange(count, dtype=corners.dtype) / count  # (count,), in [0, 1)
        pieces.append(start + fractions.unsqueeze(1) * (end - start))  # (count, 2)
    pieces.append(corners[-1:])  # the end point
    return torch.cat(pieces)  # (n_points, 2)


def digit_template(digit: int) -> torch.Tensor:
    """``(28, 2)``: the dd-seqMNIST path of ``digit`` in [0, 1]²."""
    corners = torch.tensor(TEMPLATE_CORNERS[digit], dtype=torch.float64)  # (C, 2)
    return resample_polyline(corners).float()


def circle_points() -> torch.Tensor:
    """``(10, 2)``: digit ``d`` at angle ``2πd/10`` on the circle of radius 10."""
    angles = torch.arange(N_CLASSES, dtype=torch.float64) * (2 * math.pi / N_CLASSES)
    return (RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)).float()


def line_paths() -> torch.Tensor:
    """``(10, 28, 2)``: 28 equally spaced points from the origin (step 1) to the target (step 28)."""
    fractions = torch.linspace(0.0, 1.0, N_STEPS, dtype=torch.float64)  # (28,)
    paths = fractions.view(1, N_STEPS, 1) * circle_points().double().view(N_CLASSES, 1, 2)
    return paths.float()


def sparse_loss_steps(gamma: int, n_steps: int = N_STEPS) -> torch.Tensor:
    """``(n_steps,)`` bool: steps ``γ, 2γ, ...`` (1-based) are scored, the others are not."""
    if not 1 <= gamma <= n_steps:
        raise ValueError(f"gamma={gamma} must lie in [1, {n_steps}]")
    return torch.arange(n_steps) % gamma == gamma - 1


def last_step_only(n_steps: int = N_STEPS) -> torch.Tensor:
    """``(n_steps,)`` bool: only the final output is scored."""
    mask = torch.zeros(n_steps, dtype=torch.bool)
    mask[-1] = True
    return mask


class SeqMnistTask(Task):
    """Shared machinery: MNIST rows as inputs, in-memory batching, per-digit targets."""

    n_steps = N_STEPS
    input_size = INPUT_SIZE

    def __init__(self, data: MnistSplits, batch_size: int = 50) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if data.train_images.shape[0] < batch_size:
            raise ValueError(
                f"{data.train_images.shape[0]} training examples are fewer than "
                f"batch_size={batch_size}"
            )
        self.data = data
        self.batch_size = batch_size
        self.loss_steps = self._loss_steps()  # (N,)

    # --- what differs between the tasks ---------------------------------------------------
    def _loss_steps(self) -> torch.Tensor:
        return last_step_only()

    @abstractmethod
    def targets_for(self, labels: torch.Tensor) -> torch.Tensor:
        """Targets for digits ``labels`` ``(B,)``: ``(B, N, O)`` float or ``(B, N)`` long."""

    # --- batching -------------------------------------------------------------------------
    def make_batch(self, images: torch.Tensor, labels: torch.Tensor) -> Batch:
        """A batch from images ``(B, 28, 28)`` and digits ``(B,)``: row ``i`` at step ``i``."""
        return Batch(images, self.targets_for(labels), self.loss_steps, labels)

    def n_train_batches(self) -> int:
        return int(self.data.train_images.shape[0]) // self.batch_size

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        """Full batches of a fresh permutation of the training split (the rest is dropped)."""
        order = torch.randperm(self.data.train_images.shape[0], generator=generator)
        for i in range(self.n_train_batches()):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]  # (B,)
            yield self.make_batch(self.data.train_images[index], self.data.train_labels[index])

    def examples_batch(self, per_digit: int = 4) -> Batch:
        """The first ``per_digit`` validation examples of every digit, digit by digit.

        Fewer for a digit the (sub)set holds fewer of. For the figures (the drawings).
        """
        labels = self.data.val_labels  # (n,)
        index = torch.cat(
            [(labels == d).nonzero().flatten()[:per_digit] for d in range(N_CLASSES)]
        )  # (≤ 10·per_digit,)
        return self.make_batch(self.data.val_images[index], labels[index])

    def validation_batches(self) -> Iterator[Batch]:
        """The validation split in its fixed order (the last batch may be partial)."""
        n = int(self.data.val_images.shape[0])
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            yield self.make_batch(
                self.data.val_images[start:stop], self.data.val_labels[start:stop]
            )


class SeqMnist(SeqMnistTask):
    """seqMNIST: classify the digit at the last step."""

    name = "seqmnist"
    headline = Headline("val_error_pct", "validation error (%)")
    output_size = N_CLASSES
    loss_kind = "xent"

    def targets_for(self, labels: torch.Tensor) -> torch.Tensor:
        return labels.unsqueeze(1).expand(-1, self.n_steps).contiguous()  # (B, N)


class CircleSeqMnist(SeqMnistTask):
    """c-seqMNIST: reach the digit's point on the circle of radius 10 at the last step."""

    name = "c-seqmnist"
    headline = Headline("val_mse", "validation MSE")
    output_size = 2
    loss_kind = "mse"

    def __init__(self, data: MnistSplits, batch_size: int = 50) -> None:
        super().__init__(data, batch_size)
        points = circle_points()  # (10, 2)
        self.paths = points.unsqueeze(1).expand(-1, self.n_steps, -1).contiguous()  # (10, N, 2)

    def targets_for(self, labels: torch.Tensor) -> torch.Tensor:
        return self.paths[labels]  # (B, N, 2): the point repeated; only the last step scores


class DrawDigitSeqMnist(SeqMnistTask):
    """dd-seqMNIST: draw the digit's template, scored at every step."""

    name = "dd-seqmnist"
    headline = Headline("val_mse_x100", "validation MSE ×100")
    output_size = 2
    loss_kind = "mse"

    def __init__(self, data: MnistSplits, batch_size: int = 50) -> None:
        super().__init__(data, batch_size)
        self.paths = torch.stack([digit_template(d) for d in range(N_CLASSES)])  # (10, N, 2)

    def _loss_steps(self) -> torch.Tensor:
        return torch.ones(self.n_steps, dtype=torch.bool)

    def targets_for(self, labels: torch.Tensor) -> torch.Tensor:
        return self.paths[labels]  # (B, N, 2)

    def evaluate(self, outputs: torch.Tensor, batch: Batch) -> dict[str, float]:
        metrics = super().evaluate(outputs, batch)
        metrics["mse_x100"] = 100.0 * metrics["mse"]  # as in the paper
        return metrics


class LineDrawSeqMnist(SeqMnistTask):
    """ld-seqMNIST: a straight line to the c-seqMNIST point, scored every γ steps."""

    name = "ld-seqmnist"
    headline = Headline("val_mse", "validation MSE")
    output_size = 2
    loss_kind = "mse"

    def __init__(self, data: MnistSplits, batch_size: int = 50, gamma: int = 1) -> None:
        self.gamma = gamma
        super().__init__(data, batch_size)
        self.paths = line_paths()  # (10, N, 2)

    def _loss_steps(self) -> torch.Tensor:
        return sparse_loss_steps(self.gamma)

    def targets_for(self, labels: torch.Tensor) -> torch.Tensor:
        return self.paths[labels]  # (B, N, 2)


TASK_CLASSES: dict[str, type[SeqMnistTask]] = {
    cls.name: cls for cls in (SeqMnist, CircleSeqMnist, DrawDigitSeqMnist, LineDrawSeqMnist)
}


def build_seqmnist_task(spec: RunSpec) -> SeqMnistTask:
    """The seqMNIST-family task named by ``spec.task``, on the spec's data and subsets."""
    if spec.task not in TASK_CLASSES:
        raise ValueError(
            f"unknown seqMNIST task {spec.task!r}; choose from {', '.join(TASK_CLASSES)}"
        )
    data = load_mnist(spec.resolved_data_dir, download=spec.download)
    data = data.subset(spec.train_subset, spec.val_subset)
    if spec.task == "ld-seqmnist":
        return LineDrawSeqMnist(data, spec.batch_size, gamma=spec.gamma)
    return TASK_CLASSES[spec.task](data, spec.batch_size)
