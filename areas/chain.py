"""Chains of feed-forward cortical areas on MNIST (spatial DNI), socket-free.

A network 784 → W → … → W → 10 (Linear + BatchNorm1d + ReLU per block, a Linear readout and
the cross-entropy loss at the end) is split over K areas: area 0 holds the block 784 → W,
areas 1..K-1 hold a block W → W, and the last area also holds the readout. Every area draws
the same batch indices from the same seeded generator, so the last area reads the labels
locally and only activities (forward) and feedback (backward) cross area boundaries — or, in
the unlocked modes, the cerebellum's predictions of them stand in (``boundary{k}``: ĝ_k =
C(h_k); ``forward{k}``: ĥ_k = C(x) from the image x every area can read).

:class:`ChainArea` is one area: ``forward(x) -> h`` keeps the graph (the input is made a leaf
that requires grad for non-first areas), ``backward(grad_h)`` (non-last areas) and
``loss_backward(labels)`` (the last) back-propagate, clip, step the area's own Adam and
return ∂L/∂input; ``discard()`` drops the graph without learning (no feedback arrived).
How an area exchanges activities, feedback, efferences and targets is its role's
(:mod:`areas.chain_core`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ccdni.base.optim import clip_and_step, make_adam
from ccdni.base.seeding import derived_seed
from ccdni.base.spec import (
    BACKWARD_UNLOCKED_MODES,
    CHAIN_INPUT_SIZE,
    FORWARD_UNLOCKED_MODES,
    RunSpec,
)
from ccdni.tasks.mnist_data import MnistSplits, load_mnist

INPUT_SIZE = CHAIN_INPUT_SIZE  # 784: a flattened MNIST image
N_CLASSES = 10


def boundary_name(k: int) -> str:
    """The interface between area k and area k+1 (h_k, its feedback ∂L/∂h_k)."""
    return f"boundary{k}"


def forward_name(k: int) -> str:
    """The forward interface of boundary k: the image x → the activity ĥ_k of area k."""
    return f"forward{k}"


def backward_unlocked(spec: RunSpec) -> bool:
    """Area k steps with the cerebellum's ĝ_k instead of waiting for ∂L/∂h_k."""
    return spec.chain_mode in BACKWARD_UNLOCKED_MODES


def forward_unlocked(spec: RunSpec) -> bool:
    """Area k+1 runs on the cerebellum's ĥ_k instead of waiting for h_k."""
    return spec.chain_mode in FORWARD_UNLOCKED_MODES


class ChainBlock(nn.Module):
    """Linear + BatchNorm1d + ReLU, and for the last area a Linear readout to 10 classes."""

    def __init__(self, input_size: int, width: int, readout: bool):
        super().__init__()
        self.linear = nn.Linear(input_size, width)
        self.norm = nn.BatchNorm1d(width)
        self.readout = nn.Linear(width, N_CLASSES) if readout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, in) → h (B, W), or logits (B, 10) for the last area."""
        h = F.relu(self.norm(self.linear(x)))
        return self.readout(h) if self.readout is not None else h


def make_block(spec: RunSpec, k: int) -> ChainBlock:
    """Area k's block, its weights drawn from the seed's stream ``area{k}/weights``."""
    input_size = INPUT_SIZE if k == 0 else spec.chain_width
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(spec.seed, f"area{k}/weights"))
        return ChainBlock(input_size, spec.chain_width, readout=k == spec.chain_areas - 1)


def batch_order(spec: RunSpec, n_train: int) -> Iterator[torch.Tensor]:
    """The batch indices of successive epochs: the same in every area (one seeded stream)."""
    generator = torch.Generator().manual_seed(derived_seed(spec.seed, "chain/data"))
    while True:
        order = torch.randperm(n_train, generator=generator)
        yield from (
            order[i : i + spec.batch_size]
            for i in range(0, n_train - spec.batch_size + 1, spec.batch_size)
        )  # drop the last partial batch: BatchNorm needs equal, >1-sized batches


def batches_per_epoch(spec: RunSpec, n_train: int) -> int:
    return n_train // spec.batch_size


def chain_data(spec: RunSpec) -> MnistSplits:
    """The MNIST split (subset per spec), images flattened lazily by the areas."""
    return load_mnist(spec.resolved_data_dir).subset(spec.train_subset, spec.val_subset)


class ChainArea:
    """One area of the chain: its block, optimiser, and the last forward's graph."""

    def __init__(self, spec: RunSpec, k: int):
        self.spec = spec
        self.k = k
        self.first = k == 0
        self.last = k == spec.chain_areas - 1
        self.device = torch.device(spec.device)
        self.block = self.make_block(spec, k).to(self.device)
        self.optimiser = make_adam(self.block.parameters(), spec.lr, spec)
        self._input: torch.Tensor | None = None
        self._output: torch.Tensor | None = None

    def make_block(self, spec: RunSpec, k: int) -> nn.Module:
        """Area k's block (subclasses with other blocks override this)."""
        return make_block(spec, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, in) → h (B, W) (logits for the last area); keeps the graph for backward."""
        x = x.to(self.device)
        if not self.first:
            x = x.detach().requires_grad_(True)  # a leaf: ∂L/∂x is what goes upstream
        self.block.train()
        self._input = x
        self._output = self.block(x)
        return self._output.detach()

    def _finish(self) -> torch.Tensor | None:
        assert self._input is not None
        grad = self._input.grad  # ∂L/∂x: set by the backward that came first (not area 0)
        grad_input = None if self.first or grad is None else grad.detach().clone()
        clip_and_step(self.block.parameters(), self.optimiser, self.spec.grad_clip)
        self._input = self._output = None
        return grad_input

    def backward(self, grad_h: torch.Tensor) -> torch.Tensor | None:
        """Back-propagate ∂L/∂h (true or synthetic), step; ∂L/∂x (None for area 0)."""
        assert self._output is not None and not self.last, "forward first; not the last area"
        self._output.backward(grad_h.to(self.device))
        return self._finish()

    def discard(self) -> None:
        """Forget the last forward's graph without learning (no feedback for it arrived): the
        optimiser is not touched. With ``step_without_feedback`` (earlier versions' behaviour)
        the area steps on a zero gradient instead."""
        if self.spec.step_without_feedback and self._output is not None:
            self._output.backward(torch.zeros_like(self._output))
            self._finish()
            return
        self._input = self._output = None

    def loss_backward(self, labels: torch.Tensor) -> tuple[float, torch.Tensor | None]:
        """The last area: cross-entropy of the last forward, backward, step; (L, ∂L/∂x)."""
        assert self._output is not None and self.last, "forward first; only the last area"
        loss = F.cross_entropy(self._output, labels.to(self.device))
        loss.backward()
        return float(loss.detach()), self._finish()

    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation-mode forward (running BatchNorm statistics), no learning."""
        self.block.eval()
        out = self.block(x.to(self.device))
        self.block.train()
        return out

    def state_dict(self) -> dict:
        return {"block": self.block.state_dict(), "optimiser": self.optimiser.state_dict()}


def flat_images(images: torch.Tensor) -> torch.Tensor:
    return images.reshape(images.shape[0], -1)
