"""Top-k |Pearson r| pair selection for the forward-DNI analysis (ccdni/analysis/forward_model.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ccdni.analysis.forward_model import abs_pearson, pair_values, top_pairs


def _reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n_a = a.shape[1]
    return np.abs(np.corrcoef(a, b, rowvar=False)[:n_a, n_a:])  # (A, B)


def test_matches_numpy_corrcoef_and_finds_planted_pairs() -> None:
    rng = np.random.default_rng(0)
    samples, n_a, n_b = 500, 12, 9
    a = rng.normal(size=(samples, n_a))
    b = rng.normal(size=(samples, n_b))
    # plant known correlations of decreasing strength (some negative: |r| counts them)
    planted = [(3, 7, 5.0), (0, 2, -3.0), (8, 1, 1.5)]
    for i, j, gain in planted:
        b[:, j] = gain * a[:, i] + rng.normal(size=samples)
    r = abs_pearson(a, b)
    assert r.shape == (n_a, n_b)
    np.testing.assert_allclose(r, _reference(a, b), atol=1e-10)
    pairs = top_pairs(r, 3)
    assert [tuple(p) for p in pairs] == [(i, j) for i, j, _ in planted]
    flat_order = np.sort(_reference(a, b).ravel())[::-1][:3]
    np.testing.assert_allclose(pair_values(r, pairs), flat_order, atol=1e-10)


def test_identical_units_have_unit_correlation_and_constant_units_zero() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 4))
    b = np.concatenate([a[:, [2]] * -2.0 + 1.0, np.ones((50, 1))], axis=1)  # (50, 2)
    r = abs_pearson(a, b)
    assert r[2, 0] == pytest.approx(1.0)
    assert np.all(r[:, 1] == 0.0)  # a constant unit is never "correlated"
    assert tuple(top_pairs(r, 1)[0]) == (2, 0)
    np.testing.assert_allclose(np.diag(abs_pearson(a, a)), 1.0)


def test_accepts_torch_and_rejects_bad_shapes() -> None:
    torch = pytest.importorskip("torch")
    x = torch.randn(30, 5)
    np.testing.assert_allclose(
        abs_pearson(x, x.numpy()), _reference(x.numpy(), x.numpy()), atol=1e-6
    )
    with pytest.raises(ValueError):
        abs_pearson(np.zeros((10, 3)), np.zeros((9, 3)))
    with pytest.raises(ValueError):
        abs_pearson(np.zeros(10), np.zeros((10, 3)))
