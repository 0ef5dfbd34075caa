"""Target reaching (paper §3.1, appendix A.1).

A cue arrives at the first step, zeros (or noise) after; after 10 steps the output must sit on
the cue's target. Non-zero cues map to targets equally spaced on a circle of radius 10; cue 0
means "stay at the origin". Only the final output is scored.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ccdni.tasks.base import Batch, Headline, Task

if TYPE_CHECKING:
    from ccdni.base.spec import RunSpec

N_STEPS = 10  # as in the paper
RADIUS = 10.0  # as in the paper
CUES = ("integer", "integer-x0.1", "2d", "28d-noisy")


def integer_cues(n_targets: int) -> list[int]:
    """The non-zero integer cues for ``n_targets`` targets: ±1..±3 for 6, as in the paper.

    With an odd count the extra cue is positive: 3 targets → {-1, 1, 2}.
    """
    below = n_targets // 2
    above = n_targets - below
    return [*range(-below, 0), *range(1, above + 1)]


def target_points(n_targets: int) -> torch.Tensor:
    """``(n_targets + 1, 2)``: the origin (class 0) then targets on the circle of radius 10."""
    angles = torch.arange(n_targets, dtype=torch.float64) * (2 * math.pi / n_targets)
    circle = RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return torch.cat([torch.zeros(1, 2, dtype=torch.float64), circle]).float()


@dataclass
class TargetReaching(Task):
    """The target-reaching task and its variants (cue kinds and target counts)."""

    n_targets: int = 6
    cue: str = "integer"
    noise_var: float = 0.1
    batch_size: int = 50
    n_validation: int = 70
    seed: int = 0

    name = "target-reaching"
    headline = Headline("val_mse", "validation MSE")
    n_steps = N_STEPS
    output_size = 2
    loss_kind = "mse"

    def __post_init__(self) -> None:
        if self.cue not in CUES:
            raise ValueError(f"unknown cue {self.cue!r}; choose from {', '.join(CUES)}")
        self.targets = target_points(self.n_targets)  # (C, 2), class 0 = origin
        self.n_classes = self.n_targets + 1
        self.input_size = {"integer": 1, "integer-x0.1": 1, "2d": 2, "28d-noisy": 28}[self.cue]
        self.cue_vectors = self._cue_vectors()  # (C, I)
        val_gen = torch.Generator().manual_seed(10_007 + self.seed)
        self._validation = self._make_batch(
            torch.arange(self.n_validation) % self.n_classes, val_gen
        )

    @classmethod
    def from_spec(cls, spec: RunSpec) -> TargetReaching:
        return cls(
            n_targets=spec.n_targets,
            cue=spec.cue,
            noise_var=spec.input_noise_var,
            batch_size=spec.batch_size,
            n_validation=spec.n_validation,
            seed=spec.seed,
        )

    def _cue_vectors(self) -> torch.Tensor:
        if self.cue in ("integer", "integer-x0.1"):
            scale = 0.1 if self.cue == "integer-x0.1" else 1.0  # 0.1 as in the authors' code
            values = [0, *integer_cues(self.n_targets)]
            return scale * torch.tensor(values, dtype=torch.float32).unsqueeze(1)
        if self.cue == "2d":
            return 0.1 * self.targets  # the target itself ×0.1, as in the paper
        # 28-D binary code per class (the paper does not give the code: a fixed random pattern
        # per target, drawn from a fixed seed; the origin's cue is all zeros)
        gen = torch.Generator().manual_seed(28)
        codes = (torch.rand(self.n_classes, 28, generator=gen) < 0.5).float()
        codes[0] = 0.0
        return codes

    def _make_batch(self, classes: torch.Tensor, generator: torch.Generator) -> Batch:
        b = classes.shape[0]
        inputs = torch.zeros(b, self.n_steps, self.input_size)  # (B, N, I)
        inputs[:, 0] = self.cue_vectors[classes]
        if self.cue == "28d-noisy":
            noise = torch.randn(b, self.n_steps, self.input_size, generator=generator)
            inputs = inputs + math.sqrt(self.noise_var) * noise
        targets = self.targets[classes].unsqueeze(1).expand(b, self.n_steps, 2).clone()
        loss_steps = torch.zeros(self.n_steps, dtype=torch.bool)
        loss_steps[-1] = True  # only the final output is scored
        return Batch(inputs, targets, loss_steps, classes)

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        """One batch of random examples per epoch, as in the paper."""
        classes = torch.randint(self.n_classes, (self.batch_size,), generator=generator)
        yield self._make_batch(classes, generator)

    def validation_batches(self) -> Iterator[Batch]:
        yield self._validation

    def trajectory_batch(self) -> Batch:
        """One example per class (cue), for the reach-trajectory figure (paper Fig. 2a)."""
        gen = torch.Generator().manual_seed(20_011 + self.seed)
        return self._make_batch(torch.arange(self.n_classes), gen)
