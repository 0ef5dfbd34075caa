"""Forward-DNI correlation maths (paper Fig. 7, appendix B).

Socket-free helpers for comparing two populations recorded on the same samples, e.g. cerebellar
units (granule/Purkinje hidden layer or nuclei output) against the second hidden layer h₂ of the
feed-forward network:

- :func:`abs_pearson` — the (A, B) matrix of |Pearson r| between every unit of ``a`` and every
  unit of ``b``, taken over the samples.
- :func:`top_pairs` — the k (i, j) pairs with the largest |r|, best first.
- :func:`pair_values` — |r| of given pairs in another |r| matrix (to follow pairs over training).

Units whose activity does not vary over the samples (e.g. silent ReLUs) have an undefined
Pearson r; here it is set to 0 so they are never chosen as "most correlated". Everything is
float64 numpy; torch tensors are accepted (moved to the CPU first).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# a unit counts as constant when its standard deviation is below this (absolute) value
CONSTANT_STD = 1e-12


def _samples(activity: Any) -> np.ndarray:
    """(S, Z) array-like (numpy or torch) → float64 (S, Z)."""
    if hasattr(activity, "detach"):  # a torch tensor
        activity = activity.detach().cpu().double().numpy()
    values = np.asarray(activity, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"activity must have shape (samples, units), got {values.shape}")
    return values


def abs_pearson(a: Any, b: Any) -> np.ndarray:
    """|Pearson r| between every unit of ``a`` (S, A) and of ``b`` (S, B) → (A, B).

    Pairs involving a constant unit get 0.
    """
    x, y = _samples(a), _samples(b)  # (S, A), (S, B)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"a and b need the same samples: {x.shape[0]} vs {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError("need at least two samples")
    x = x - x.mean(axis=0)  # (S, A)
    y = y - y.mean(axis=0)  # (S, B)
    sx = np.sqrt((x * x).sum(axis=0))  # (A,)
    sy = np.sqrt((y * y).sum(axis=0))  # (B,)
    ok_x, ok_y = sx > CONSTANT_STD, sy > CONSTANT_STD
    x[:, ok_x] /= sx[ok_x]
    y[:, ok_y] /= sy[ok_y]
    r = np.abs(x.T @ y)  # (A, B)
    r[~ok_x, :] = 0.0
    r[:, ~ok_y] = 0.0
    return np.clip(r, 0.0, 1.0)


def top_pairs(r_abs: np.ndarray, k: int) -> np.ndarray:
    """The k (i, j) index pairs of an (A, B) |r| matrix with the largest values → (k, 2)."""
    flat = np.asarray(r_abs).ravel()  # (A·B,)
    k = min(k, flat.size)
    order = np.argsort(-flat, kind="stable")[:k]  # (k,)
    return np.stack(np.unravel_index(order, np.shape(r_abs)), axis=1)  # (k, 2)


def pair_values(r_abs: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """|r| of the (k, 2) ``pairs`` in an (A, B) |r| matrix → (k,)."""
    return np.asarray(r_abs)[pairs[:, 0], pairs[:, 1]]
