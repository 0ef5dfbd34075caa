"""Identifiers that pair predictions with targets (socket-free, shared by every core)."""

from __future__ import annotations

from typing import NamedTuple


class StepId(NamedTuple):
    """Which truncation boundary a state, prediction, target or error belongs to.

    ``truncation`` is the index k of the truncation whose last state s_b was sent; the
    target for that prediction is computed in truncation k+1.
    """

    epoch: int
    batch: int
    truncation: int
