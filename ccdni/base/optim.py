"""The optimiser every region uses, and its one update step."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ccdni.base.spec import RunSpec


def make_adam(params, lr: float, spec: RunSpec) -> torch.optim.Adam:
    """Adam with the authors' betas (0.9, 0.98) and eps 1e-9 by default."""
    return torch.optim.Adam(
        params, lr=lr, betas=(spec.adam_beta1, spec.adam_beta2), eps=spec.adam_eps
    )


def clip_and_step(
    parameters: Iterable[nn.Parameter], optimiser: torch.optim.Optimizer, clip: float
) -> None:
    """Clip the gradient norm of ``parameters`` to ``clip`` (0: no clip), step, clear grads.

    Parameters whose ``grad`` is None are left alone by the clip and by Adam (their moments
    and step counts do not change): only a gradient that exists moves a parameter.
    """
    parameters = list(parameters)
    clip_gradient(parameters, clip)
    step_and_clear(optimiser)


def clip_gradient(parameters: list[nn.Parameter], clip: float) -> None:
    """The first half of :func:`clip_and_step`: the gradient norm clipped to ``clip`` (0: off)."""
    if clip > 0:
        nn.utils.clip_grad_norm_(parameters, clip)


def step_and_clear(optimiser: torch.optim.Optimizer) -> None:
    """The second half of :func:`clip_and_step`: the optimiser's step, then grads set to None."""
    optimiser.step()
    optimiser.zero_grad(set_to_none=True)
