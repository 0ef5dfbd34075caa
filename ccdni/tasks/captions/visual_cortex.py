"""The "visual cortex": a small CNN trained on the scenes, then frozen; its 256-d feature is the
captioning area's input at step 0, as the paper's pretrained CNN feature is.

It learns what is where: for each of the 2×2 cells, which digit it holds or that it is empty
(11 classes), and for an occupied cell whether the digit is large or small. The feature is the
ReLU layer before those two linear read-outs, so it carries identity, position and size — what
the captions talk about — and nothing about the captions themselves.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
import torch
import torch.nn.functional as F
from torch import nn

from ccdni.tasks.captions.scenes import CELLS, Scene

FEATURE_SIZE = 256  # as the paper's CNN feature
EMPTY = 10  # the class of an empty cell
log = structlog.get_logger()


class VisualCortex(nn.Module):
    """Scenes (B, 1, 56, 56) in [0, 1] → features (B, 256), and the per-cell read-outs."""

    def __init__(self, feature_size: int = FEATURE_SIZE):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 16, 28, 28)
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 32, 14, 14)
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 64, 7, 7)
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, feature_size),
            nn.ReLU(),  # (B, 256): the feature
        )
        self.what = nn.Linear(feature_size, len(CELLS) * (EMPTY + 1))  # digit or empty, per cell
        self.size = nn.Linear(feature_size, len(CELLS) * 2)  # small or large, per cell

    def forward(self, scenes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """scenes (B, 1, 56, 56) → feature (B, F), what (B, 4, 11), size (B, 4, 2)."""
        feature = self.encoder(scenes)
        what = self.what(feature).view(-1, len(CELLS), EMPTY + 1)
        size = self.size(feature).view(-1, len(CELLS), 2)
        return feature, what, size


def cell_targets(scenes: Sequence[Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, 4) digit-or-empty classes and (S, 4) sizes (1 large, 0 small, -100 empty)."""
    what = torch.full((len(scenes), len(CELLS)), EMPTY, dtype=torch.long)
    size = torch.full((len(scenes), len(CELLS)), -100, dtype=torch.long)
    for s, scene in enumerate(scenes):
        for p in scene.digits:
            what[s, p.cell] = p.digit
            size[s, p.cell] = int(p.large)
    return what, size


def _as_input(canvases: torch.Tensor) -> torch.Tensor:
    return canvases.float().div(255.0).unsqueeze(1)  # (B, 1, 56, 56) in [0, 1]


@dataclass(frozen=True)
class Training:
    """How the visual cortex was trained and how well it reads held-out scenes."""

    epochs: int
    seconds: float
    val_cell_accuracy: float  # fraction of validation cells whose content (digit or empty) is right
    val_size_accuracy: float  # fraction of occupied validation cells whose size is right


def train_visual_cortex(
    canvases: torch.Tensor,
    scenes: Sequence[Scene],
    val_canvases: torch.Tensor,
    val_scenes: Sequence[Scene],
    seed: int,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 1e-3,
) -> tuple[VisualCortex, Training]:
    """Train on the training scenes (uint8 canvases (S, 56, 56)); returns the frozen network."""
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cortex = VisualCortex()
    optimiser = torch.optim.Adam(cortex.parameters(), lr=lr)
    what, size = cell_targets(scenes)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(len(scenes), generator=generator)
        total = 0.0
        for start in range(0, len(scenes), batch_size):
            index = order[start : start + batch_size]
            _, what_logits, size_logits = cortex(_as_input(canvases[index]))
            loss = F.cross_entropy(what_logits.reshape(-1, EMPTY + 1), what[index].reshape(-1))
            sizes = size[index].reshape(-1)
            if bool((sizes >= 0).any()):
                loss = loss + F.cross_entropy(size_logits.reshape(-1, 2), sizes, ignore_index=-100)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(index)
        log.info("visual_cortex_epoch", epoch=epoch, train_loss=round(total / len(scenes), 4))
    cortex.eval()  # batch-norm statistics frozen too
    for parameter in cortex.parameters():
        parameter.requires_grad_(False)  # frozen from now on
    cell_accuracy, size_accuracy = accuracy(cortex, val_canvases, val_scenes)
    training = Training(epochs, time.perf_counter() - started, cell_accuracy, size_accuracy)
    log.info("visual_cortex_trained", **training.__dict__)
    return cortex, training


@torch.no_grad()
def accuracy(
    cortex: VisualCortex, canvases: torch.Tensor, scenes: Sequence[Scene]
) -> tuple[float, float]:
    """(cell accuracy, size accuracy on occupied cells) of the read-outs on these scenes."""
    if not scenes:
        return float("nan"), float("nan")
    what, size = cell_targets(scenes)
    _, what_logits, size_logits = cortex(_as_input(canvases))
    cells = float((what_logits.argmax(-1) == what).float().mean())
    occupied = size >= 0
    sizes = float((size_logits.argmax(-1) == size)[occupied].float().mean())
    return cells, sizes


@torch.no_grad()
def extract_features(
    cortex: VisualCortex, canvases: torch.Tensor, batch_size: int = 500
) -> torch.Tensor:
    """(S, 256) float32 features of uint8 canvases (S, 56, 56)."""
    cortex.eval()
    chunks = [
        cortex(_as_input(canvases[i : i + batch_size]))[0]
        for i in range(0, len(canvases), batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, FEATURE_SIZE)
