"""Frechet distance: closed forms, pytorch-fid agreement, rank-deficient covariances.

Speed (<= 3 s at d = 2048) is measured by benchmarks/bench_frechet.py, not here."""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from balance.metrics import frechet_distance
from balance.metrics.frechet import trace_sqrt_product


def pytorch_fid_distance(mu1, s1, mu2, s2) -> float:
    from pytorch_fid.fid_score import calculate_frechet_distance

    # pytorch-fid calls sqrtm(..., disp=False): a DeprecationWarning on scipy 1.17 (removed in
    # 1.18), plus LinAlgWarning / a printed note for singular products. Not ours to fix here.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return float(calculate_frechet_distance(mu1, s1, mu2, s2))


def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(0), np.cov(x, rowvar=False)


def exact_low_rank_distance(x1, mu2, s2) -> float:
    """FD with S1 = B B^T, B = centred(x1)^T / sqrt(n - 1) [d, n]: the nonzero eigenvalues of
    S1 S2 are those of the small symmetric n x n matrix B^T S2 B, so no rank round-off enters."""
    n = len(x1)
    b = (x1 - x1.mean(0)).T / math.sqrt(n - 1)
    m = b.T @ s2 @ b
    lam = np.clip(np.linalg.eigvalsh(0.5 * (m + m.T)), 0, None)
    mu1, s1 = stats(x1)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(lam).sum())


def random_spd(rng, d, scale=1.0):
    a = rng.standard_normal((d, d))
    return scale * (a @ a.T / d + 0.05 * np.eye(d))


def test_one_dimensional_closed_form():
    # W2^2(N(m1, s1^2), N(m2, s2^2)) = (m1 - m2)^2 + (s1 - s2)^2
    got = frechet_distance([1.0], [[4.0]], [-0.5], [[0.25]])
    assert got == pytest.approx(1.5**2 + (2.0 - 0.5) ** 2, rel=1e-14)  # float64 identity


def test_commuting_covariances_closed_form():
    rng = np.random.default_rng(0)
    d = 50
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T)
    assert got == pytest.approx(want, rel=1e-10)  # float64 eigendecompositions of rotated diagonals


def test_two_by_two_non_commuting_closed_form():
    """For 2x2 M with nonnegative eigenvalues, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M))."""
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[0.5, -0.2], [-0.2, 3.0]])
    m = s1 @ s2
    want = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    assert trace_sqrt_product(s1, s2) == pytest.approx(want, rel=1e-13)  # float64 identity


def test_equal_covariances_give_squared_mean_distance():
    rng = np.random.default_rng(1)
    d = 300
    s = random_spd(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    want = float(((mu1 - mu2) ** 2).sum())
    # tr S + tr S - 2 sum sqrt(eig(S^2)) cancels to round-off: ~1e-13 of tr S in float64.
    assert abs(frechet_distance(mu1, s, mu2, s) - want) < 1e-10 * np.trace(s)


def test_identical_statistics_give_zero_full_and_rank_deficient():
    rng = np.random.default_rng(2)
    for n in (1000, 12):  # full rank and rank 11 in d = 200
        mu, s = stats(rng.standard_normal((n, 200)))
        # float64 round-off of the trace cancellation; the rank tolerance removes sqrt(eps) noise
        assert abs(frechet_distance(mu, s, mu, s)) < 1e-10 * np.trace(s)


@pytest.mark.parametrize("d", [8, 64, 256])
def test_matches_pytorch_fid_on_random_spd(d):
    rng = np.random.default_rng(d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d, scale=2.0)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = pytorch_fid_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-6)  # issue 4 tolerance; observed ~1e-12


@pytest.mark.parametrize("d,n", [(64, 10), (256, 12), (256, 40)])
def test_rank_deficient_matches_exact_value_and_pytorch_fid(d, n):
    rng = np.random.default_rng(n)
    x1 = 0.2 * rng.standard_normal((n, d)) + 0.1
    x2 = 0.3 * rng.standard_normal((n, d))
    (mu1, s1), (mu2, s2) = stats(x1), stats(x2)
    ours = frechet_distance(mu1, s1, mu2, s2)
    # exact to float64 round-off (the rank tolerance drops only round-off eigenvalues; 1e-9 leaves
    # room for the O(d eps) trace cancellation); sqrtm is ~1e-7 away on such products.
    assert ours == pytest.approx(exact_low_rank_distance(x1, mu2, s2), rel=1e-9)
    assert ours == pytest.approx(pytorch_fid_distance(mu1, s1, mu2, s2), rel=1e-6)


@given(st.integers(0, 2**31 - 1))
def test_symmetric_nonnegative_and_sqrt_satisfies_triangle_inequality(seed):
    """sqrt(FD) is the 2-Wasserstein metric between Gaussians."""
    rng = np.random.default_rng(seed)
    d = 5
    ps = [(rng.standard_normal(d), random_spd(rng, d, scale=rng.uniform(0.1, 3))) for _ in range(3)]
    dist = {(i, j): frechet_distance(*ps[i], *ps[j]) for i in range(3) for j in range(3)}
    for (i, j), v in dist.items():
        assert v == pytest.approx(dist[j, i], rel=1e-9, abs=1e-12)  # symmetric up to round-off
        assert v > -1e-12
    w = {k: math.sqrt(max(v, 0.0)) for k, v in dist.items()}
    assert w[0, 2] <= w[0, 1] + w[1, 2] + 1e-9


def test_accepts_tensors_and_matches_numpy():
    rng = np.random.default_rng(3)
    s1, s2 = random_spd(rng, 20), random_spd(rng, 20)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    a = frechet_distance(mu1, s1, mu2, s2)
    b = frechet_distance(torch.tensor(mu1, dtype=torch.float32), torch.from_numpy(s1),
                         torch.from_numpy(mu2), torch.from_numpy(s2))
    assert b == pytest.approx(a, rel=1e-6)  # float32 mean rounded once (~1e-7 relative)


def test_clear_errors():
    s = np.eye(3)
    with pytest.raises(ValueError, match="different lengths"):
        frechet_distance(np.zeros(3), s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        frechet_distance(np.zeros(3), s, np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.zeros(3), np.full((3, 3), np.nan), np.zeros(3), s)
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.array([0, np.inf, 0]), s, np.zeros(3), s)
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance(np.zeros(3), np.triu(np.ones((3, 3))), np.zeros(3), s)
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(3), -np.eye(3), np.zeros(3), s)
    with pytest.raises(ValueError, match="1-d"):
        frechet_distance(np.zeros((3, 1)), s, np.zeros(3), s)
