"""Chains of stacked LSTM areas on seqMNIST (spatial DNI between layers), socket-free.

A stacked LSTM reads an MNIST image row by row (28 steps of 28 pixels, as in seqMNIST) and
classifies the digit from its last hidden state. Its layers are split over K areas: area 0 holds
the LSTM 28 → W, areas 1..K-1 an LSTM W → W, and the last area also holds the readout
(Linear W → 10, cross-entropy at the last step, as in seqMNIST classification).

**No truncation inside an area.** Every area runs its LSTM over the whole 28-step sequence and
back-propagates through all of it. The boundary between areas is *spatial* (between layers of
the stack), not temporal: area k+1 sees the full hidden sequence h_k(1..28) of area k, and
∂L/∂h_k(t) for every step t is what crosses back.

The boundary speaks in rows, so that the process shell's 2-D messages (N, W) fit unchanged:

- area 0's input is the flattened image ``(B, 784)``, reshaped to ``(B, 28, 28)`` (row i at
  step i);
- a non-first area's input is ``(B·28, W)``, reshaped to ``(B, 28, W)``;
- a non-last area's output is its hidden sequence ``(B, 28, W)`` flattened to ``(B·28, W)``:
  row ``b·28 + t`` is example b at step t (example-major), and ∂L/∂h has the same layout;
- the last area outputs the logits ``(B, 10)``.

:class:`LstmChainArea` is a drop-in replacement for :class:`areas.chain.ChainArea` (same
constructor, attributes and methods).
"""

from __future__ import annotations

import torch
from torch import nn

from areas.chain import N_CLASSES, ChainArea
from ccdni.base.seeding import derived_seed
from ccdni.base.spec import RunSpec
from ccdni.tasks.seqmnist import INPUT_SIZE as ROW_SIZE  # 28 pixels per row, as in the paper
from ccdni.tasks.seqmnist import N_STEPS  # 28 steps, one image row each, as in the paper

IMAGE_SIZE = N_STEPS * ROW_SIZE  # 784: area 0's flattened input


class LstmChainBlock(nn.Module):
    """One layer of the stack: an LSTM over the whole sequence, and for the last area a Linear
    readout of the last step's hidden state to 10 classes."""

    def __init__(self, input_size: int, width: int, readout: bool):
        super().__init__()
        self.lstm = nn.LSTM(input_size, width, batch_first=True)  # U(±1/√W), as in the paper
        self.readout = nn.Linear(width, N_CLASSES) if readout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, I) → hidden sequence (B, T, W), or logits (B, 10) for the last area."""
        hiddens, _ = self.lstm(x)  # (B, T, W); zero initial state, the whole sequence
        if self.readout is None:
            return hiddens
        return self.readout(hiddens[:, -1])  # (B, 10): the class at the last step


def make_lstm_block(spec: RunSpec, k: int) -> LstmChainBlock:
    """Area k's LSTM layer, its weights drawn from the seed's stream ``area{k}/weights``."""
    input_size = ROW_SIZE if k == 0 else spec.chain_width
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(spec.seed, f"area{k}/weights"))
        return LstmChainBlock(input_size, spec.chain_width, readout=k == spec.chain_areas - 1)


def input_shape(spec: RunSpec, k: int) -> str:
    """Area k's boundary input shape, in words: ``(B, 784)`` or ``(B·28, W)``."""
    return f"(B, {IMAGE_SIZE})" if k == 0 else f"(B·{N_STEPS}, {spec.chain_width})"


def rows_to_sequences(x: torch.Tensor, width: int) -> torch.Tensor:
    """(B·T, W) rows, example-major → (B, T, W) (a view when contiguous)."""
    return x.reshape(-1, N_STEPS, width)


def sequences_to_rows(h: torch.Tensor) -> torch.Tensor:
    """(B, T, W) → (B·T, W) rows, example-major: row b·T + t is example b at step t."""
    return h.reshape(-1, h.shape[-1])


class LstmChainArea(ChainArea):
    """One LSTM area of the chain: its layer, optimiser, and the last forward's graph.

    A :class:`areas.chain.ChainArea` whose block is an LSTM layer; inputs and outputs are rows
    (module doc). Clipping, the Adam step, ``discard``, ``loss_backward`` and ``state_dict``
    are the feed-forward area's.
    """

    def make_block(self, spec: RunSpec, k: int) -> nn.Module:
        return make_lstm_block(spec, k)

    def _check_input(self, x: torch.Tensor) -> None:
        width = IMAGE_SIZE if self.first else self.spec.chain_width
        rows_ok = self.first or x.shape[0] % N_STEPS == 0
        if x.dim() != 2 or x.shape[1] != width or x.shape[0] == 0 or not rows_ok:
            what = "flattened images" if self.first else f"{N_STEPS} rows per example, one per step"
            raise ValueError(
                f"area{self.k} expects input of shape {input_shape(self.spec, self.k)} "
                f"({what}), got {tuple(x.shape)}"
            )

    def _sequences(self, x: torch.Tensor) -> torch.Tensor:
        """The boundary input (rows) as the LSTM's sequences (B, 28, I)."""
        if self.first:
            return x.reshape(-1, N_STEPS, ROW_SIZE)  # (B, 28, 28): row i at step i
        return rows_to_sequences(x, self.spec.chain_width)  # (B, 28, W)

    def _boundary(self, out: torch.Tensor) -> torch.Tensor:
        """The block's output at the boundary: (B·28, W) rows, or logits (B, 10)."""
        return out if self.last else sequences_to_rows(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 784) or (B·28, W) → h (B·28, W) (logits (B, 10) for the last area).

        Keeps the graph for :meth:`backward` / :meth:`loss_backward`; for non-first areas the
        input is made a leaf that requires grad (∂L/∂x, (B·28, W), is what goes upstream).
        """
        self._check_input(x)
        x = x.to(self.device)
        if not self.first:
            x = x.detach().requires_grad_(True)  # a leaf: ∂L/∂x is what goes upstream
        self.block.train()
        self._input = x
        self._output = self.block(self._sequences(x))  # (B, 28, W) or (B, 10)
        return self._boundary(self._output).detach()

    def backward(self, grad_h: torch.Tensor) -> torch.Tensor | None:
        """Back-propagate ∂L/∂h (B·28, W) (true or synthetic), step; ∂L/∂x (None for area 0)."""
        assert self._output is not None and not self.last, "forward first; not the last area"
        rows = self._output.shape[0] * N_STEPS
        if tuple(grad_h.shape) != (rows, self.spec.chain_width):
            raise ValueError(
                f"area{self.k} expects ∂L/∂h of shape ({rows}, {self.spec.chain_width}) "
                f"(B·{N_STEPS}, W) like its output, got {tuple(grad_h.shape)}"
            )
        grad = grad_h.to(self.device).reshape(self._output.shape)  # (B, 28, W)
        self._output.backward(grad)
        return self._finish()

    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation-mode forward, no learning: (B·28, W) rows, or logits (B, 10)."""
        self._check_input(x)
        self.block.eval()
        out = self.block(self._sequences(x.to(self.device)))
        self.block.train()
        return self._boundary(out)
