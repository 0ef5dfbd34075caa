"""Correlation measures of a population's activity (paper Fig. 2e,f, S6, S7).

Both measures take an activity array of shape ``(..., Z)``: every leading index is one sample
(an example, an example at one step, ...), the last axis the Z units. The leading axes are
flattened, so ``(B, N, H)`` hidden activity is treated as B·N samples of H units.

- :func:`mean_abs_correlation` — r: the mean absolute Pearson correlation over all unit pairs
  i < j, correlations taken over the samples (r_h for hidden activity, r_ĝ for synthetic
  feedback).
- :func:`population_correlation` — r_pop (Cayco-Gajic, Clopath & Silver 2017):
  ``r_pop = Z/(Z−1) · (max_i √λ_i / Σ_i √λ_i − 1/Z)`` with λ_i the eigenvalues of the Z×Z
  covariance matrix of the units' activity. It is 0 when the variance is spread evenly over
  every direction (independent units of equal variance) and 1 when a single direction holds
  it all (identical units, or any perfectly correlated population).

Units whose activity does not vary over the samples are left out of both measures: their
Pearson correlation is undefined and they add nothing to the covariance. With fewer than two
varying units both measures are NaN. Everything is computed in float64 with numpy; torch
tensors are accepted (moved to the CPU first).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# A unit counts as constant when its standard deviation is below this fraction of the largest
# unit's (float32 activity carries about 7 significant digits).
RELATIVE_TOLERANCE = 1e-6


def as_samples(activity: Any) -> np.ndarray:
    """``(..., Z)`` array-like (numpy or torch) → float64 ``(S, Z)`` with S = Π leading dims."""
    if hasattr(activity, "detach"):  # a torch tensor: no torch import needed here
        activity = activity.detach().cpu().double().numpy()
    values = np.asarray(activity, dtype=np.float64)
    if values.ndim < 2:
        raise ValueError(f"activity must have shape (..., Z) with Z units, got {values.shape}")
    return values.reshape(-1, values.shape[-1])  # (S, Z)


def varying_units(samples: np.ndarray) -> np.ndarray:
    """``(S, Z)`` → ``(S, Z')``: the units whose activity varies over the samples."""
    std = samples.std(axis=0)  # (Z,)
    if samples.shape[0] < 2 or not np.all(np.isfinite(std)):
        return samples[:, :0]
    keep = std > RELATIVE_TOLERANCE * max(float(std.max()), np.finfo(np.float64).tiny)
    return samples[:, keep]


def correlation_matrix(activity: Any) -> np.ndarray:
    """Pearson correlations ``(Z', Z')`` between the varying units of ``(..., Z)`` activity."""
    samples = varying_units(as_samples(activity))  # (S, Z')
    centred = samples - samples.mean(axis=0)
    scaled = centred / np.sqrt((centred**2).sum(axis=0))  # unit-norm columns
    return np.clip(scaled.T @ scaled, -1.0, 1.0)  # (Z', Z')


def mean_abs_correlation(activity: Any) -> float:
    """r: mean |Pearson r| over the pairs i < j of varying units; NaN with fewer than two."""
    corr = correlation_matrix(activity)  # (Z', Z')
    z = corr.shape[0]
    if z < 2:
        return float("nan")
    upper = np.triu_indices(z, k=1)
    return float(np.abs(corr[upper]).mean())


def population_correlation(activity: Any) -> float:
    """r_pop = Z/(Z−1)·(max √λ / Σ √λ − 1/Z) over the covariance eigenvalues of the varying units."""
    samples = varying_units(as_samples(activity))  # (S, Z')
    z = samples.shape[1]
    if z < 2:
        return float("nan")
    covariance = np.cov(samples, rowvar=False)  # (Z', Z')
    eigenvalues = np.clip(np.linalg.eigvalsh(covariance), 0.0, None)  # (Z',), ≥ 0
    roots = np.sqrt(eigenvalues)
    total = roots.sum()
    if not total > 0:
        return float("nan")
    return float(z / (z - 1) * (roots.max() / total - 1.0 / z))


def correlation_summary(activity: Any, prefix: str) -> dict[str, float]:
    """``{prefix: r, "r_pop_" + suffix: r_pop}`` for metrics, e.g. prefix ``r_h`` → r_h, r_pop_h.

    Non-finite values (fewer than two varying units) are left out, so that a metrics record
    only ever holds numbers.
    """
    suffix = prefix.removeprefix("r_")
    values = {
        prefix: mean_abs_correlation(activity),
        f"r_pop_{suffix}": population_correlation(activity),
    }
    return {k: v for k, v in values.items() if np.isfinite(v)}
