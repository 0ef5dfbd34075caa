"""The inferior olive's maths (socket-free).

The olive pairs each prediction ĝ_a with the target g̃_a that really arrived (by interface and
:class:`~wire.ids.StepId`), computes the cerebellar loss ``L_C = mean_batch ||ĝ_a − g̃_a||²``
and the climbing-fibre error ``e = ∂L_C/∂ĝ_a = 2(ĝ_a − g̃_a)/B`` that teaches the cerebellum.
The maths is the same whatever is predicted: feedback ĝ against the feedback that arrived, or
(forward DNI) activity ĥ_k = C(x) against the activity h_k that area k really produced.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from wire.ids import StepId


def climbing_fibre_error(
    prediction: torch.Tensor, target: torch.Tensor
) -> tuple[float, torch.Tensor]:
    """(L_C, e) for prediction and target of shape (B, N) (N = 2H, or W for a chain)."""
    difference = prediction - target  # (B, N)
    loss = float((difference**2).sum(dim=1).mean())
    return loss, 2.0 * difference / prediction.shape[0]


@dataclass
class ClimbingFibre:
    """An error bound for the cerebellum."""

    interface: str
    ids: StepId
    error: torch.Tensor  # (B, N)
    loss: float


class InferiorOlive:
    """Pairs predictions with targets; unpaired items expire after ``max_pending``."""

    def __init__(self, max_pending: int = 1024):
        self.max_pending = max_pending
        self.predictions: OrderedDict[tuple[str, StepId], torch.Tensor] = OrderedDict()
        self.targets: OrderedDict[tuple[str, StepId], torch.Tensor] = OrderedDict()
        self.expired = 0
        self.loss_sums: dict[int, float] = {}
        self.loss_counts: dict[int, int] = {}
        self.interface_losses: dict[int, dict[str, list[float]]] = {}  # epoch → name → [Σ, n]

    def receive_prediction(
        self, interface: str, ids: StepId, prediction: torch.Tensor
    ) -> ClimbingFibre | None:
        return self._pair(interface, ids, prediction=prediction)

    def receive_target(
        self, interface: str, ids: StepId, target: torch.Tensor
    ) -> ClimbingFibre | None:
        return self._pair(interface, ids, target=target)

    def _pair(
        self,
        interface: str,
        ids: StepId,
        prediction: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
    ) -> ClimbingFibre | None:
        key = (interface, StepId(*ids))
        if prediction is None:
            prediction = self.predictions.pop(key, None)
        if target is None:
            target = self.targets.pop(key, None)
        if prediction is None or target is None:
            store = self.targets if prediction is None else self.predictions
            kept = target if prediction is None else prediction
            assert kept is not None, "a prediction or a target"
            store[key] = kept
            while len(store) > self.max_pending:
                store.popitem(last=False)
                self.expired += 1
            return None
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ"
            )
        loss, error = climbing_fibre_error(prediction, target.to(prediction.device))
        epoch = key[1].epoch
        self.loss_sums[epoch] = self.loss_sums.get(epoch, 0.0) + loss
        self.loss_counts[epoch] = self.loss_counts.get(epoch, 0) + 1
        total = self.interface_losses.setdefault(epoch, {}).setdefault(interface, [0.0, 0])
        total[0] += loss
        total[1] += 1
        return ClimbingFibre(interface, key[1], error, loss)

    def forget_before(self, epoch: int) -> int:
        """Drop unpaired items older than ``epoch`` (stale); returns how many."""
        dropped = 0
        for store in (self.predictions, self.targets):
            for key in [k for k in store if k[1].epoch < epoch]:
                del store[key]
                dropped += 1
        self.expired += dropped
        return dropped

    def epoch_summary(self, epoch: int, per_interface: bool = False) -> dict[str, float] | None:
        """Mean cerebellar loss of an epoch's pairs (and forget them), or None if none.

        ``per_interface`` adds ``cerebellar_loss/NAME`` and ``pairs/NAME`` for each interface
        (a chain's feedback and activity losses have different scales)."""
        count = self.loss_counts.pop(epoch, 0)
        total = self.loss_sums.pop(epoch, 0.0)
        by_interface = self.interface_losses.pop(epoch, {})
        if count == 0:
            return None
        summary: dict[str, float] = {
            "epoch": epoch,
            "cerebellar_loss": total / count,
            "pairs": count,
        }
        if per_interface:
            for name, (loss_sum, n) in sorted(by_interface.items()):
                summary[f"cerebellar_loss/{name}"] = loss_sum / n
                summary[f"pairs/{name}"] = n
        return summary
