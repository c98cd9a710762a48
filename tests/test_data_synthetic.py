"""Synthetic data with known structure: rank, spectrum, reproducibility, intrinsic dimension."""

from __future__ import annotations

import math

import pytest
import torch

from balance.data.synthetic import (
    SyntheticData,
    affine_subspace,
    nonlinear_manifold,
    random_orthonormal,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def eigenvalues_desc(x: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the 1/n sample covariance, largest first."""
    xc = x - x.mean(0)
    return torch.linalg.eigvalsh(xc.T @ xc / x.shape[0]).flip(0)


@pytest.mark.parametrize("d,r", [(10, 3), (5, 1), (6, 6), (20, 7)])
def test_affine_covariance_has_rank_r(d, r):
    data = affine_subspace(200, d, r, generator=gen())
    ev = eigenvalues_desc(data.x)
    # float64 round-off: the d - r null eigenvalues are ~1e-16 of the largest.
    assert torch.all(ev[:r] > 1e-3 * ev[0])
    assert torch.all(ev[r:].abs() < 1e-12 * ev[0])
    assert data.x.dtype == torch.float64 and data.x.shape == (200, d)
    assert data.r == r and data.n == 200 and data.d == d


def test_affine_points_lie_on_the_subspace():
    data = affine_subspace(300, 12, 4, generator=gen(), offset=3.0)
    u = data.basis
    assert torch.allclose(u.T @ u, torch.eye(4, dtype=torch.float64), atol=1e-13)
    centred = data.x - data.mean
    residual = centred - centred @ u @ u.T
    assert residual.abs().max() < 1e-12  # float64 identity
    assert torch.allclose(centred @ u, data.latent, atol=1e-12)
    assert torch.equal(data.embed(data.latent), data.clean)
    assert data.mean.abs().max() > 0.5  # offset 3: a genuinely affine (not linear) subspace


def test_affine_spectrum_matches_sample_variances():
    n = 40_000
    spectrum = [4.0, 1.0, 0.25]
    data = affine_subspace(n, 8, 3, generator=gen(1), spectrum=spectrum)
    proj = (data.x - data.mean) @ data.basis  # coordinates along the basis
    cov = proj.T @ proj / n
    lam = torch.tensor(spectrum, dtype=torch.float64)
    # Monte Carlo: a sample variance has variance 2 lambda^2 / n, a sample covariance
    # has s.d. sqrt(l_i l_j / n); 5 standard errors.
    se_diag = lam * math.sqrt(2 / n)
    assert torch.all((cov.diagonal() - lam).abs() < 5 * se_diag)
    se_off = torch.sqrt(torch.outer(lam, lam) / n)
    off = ~torch.eye(3, dtype=torch.bool)
    assert torch.all((cov - torch.diag(lam))[off].abs() < 5 * se_off[off])
    assert torch.equal(data.spectrum, lam)


def test_affine_noise_fills_the_complement_at_the_right_level():
    n, noise = 20_000, 0.1
    data = affine_subspace(n, 10, 3, generator=gen(2), noise=noise)
    ev = eigenvalues_desc(data.x)
    # Wishart edge: noise eigenvalues within noise^2 (1 +- sqrt(d/n))^2, about +-5% here.
    assert torch.all((ev[3:] / noise**2 - 1).abs() < 0.12)
    assert torch.all(ev[:3] > 0.5)
    assert (data.x - data.clean).std().item() == pytest.approx(noise, rel=0.02)  # s.e. 0.2%
    # The closed-form population covariance agrees with the sample one (Monte Carlo, n = 2e4).
    sample = torch.cov(data.x.T, correction=0)
    assert (sample - data.covariance()).abs().max() < 0.06


def test_same_seed_same_data_different_seed_different_data():
    a = affine_subspace(50, 6, 2, generator=gen(7), noise=0.1)
    b = affine_subspace(50, 6, 2, generator=gen(7), noise=0.1)
    c = affine_subspace(50, 6, 2, generator=gen(8), noise=0.1)
    for field in ("x", "latent", "clean", "mean", "basis", "spectrum"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.allclose(a.x, c.x)
    m1 = nonlinear_manifold(50, 6, 2, generator=gen(7), noise=0.05)
    m2 = nonlinear_manifold(50, 6, 2, generator=gen(7), noise=0.05)
    m3 = nonlinear_manifold(50, 6, 2, generator=gen(8), noise=0.05)
    assert torch.equal(m1.x, m2.x) and torch.equal(m1.latent, m2.latent)
    assert not torch.allclose(m1.x, m3.x)


def test_dtype_is_honoured():
    a = affine_subspace(10, 4, 2, generator=gen(), dtype=torch.float32, noise=0.1)
    m = nonlinear_manifold(10, 4, 2, generator=gen(), dtype=torch.float32)
    for t in (a.x, a.basis, a.mean, a.latent, m.x, m.basis, m.latent):
        assert t.dtype == torch.float32


def test_result_is_frozen():
    data = affine_subspace(5, 3, 1, generator=gen())
    assert isinstance(data, SyntheticData)
    with pytest.raises(AttributeError):
        data.r = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n=0, d=3, r=1),
        dict(n=5, d=3, r=4),
        dict(n=5, d=3, r=0),
        dict(n=5, d=0, r=0),
        dict(n=5, d=3, r=1, noise=-0.1),
        dict(n=5, d=3, r=1, noise=float("nan")),
        dict(n=5, d=3, r=2, spectrum=[1.0]),
        dict(n=5, d=3, r=2, spectrum=[1.0, -1.0]),
        dict(n=5, d=3, r=1, scale=0.0),
    ],
)
def test_affine_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        affine_subspace(generator=gen(), **kwargs)


def test_sizes_must_be_integers():
    with pytest.raises(TypeError):
        affine_subspace(5.0, 3, 1, generator=gen())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        nonlinear_manifold(5, 3, True, generator=gen())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n=5, d=3, r=3),  # r = d: no room for a nonlinear graph
        dict(n=5, d=3, r=4),
        dict(n=0, d=3, r=1),
        dict(n=5, d=3, r=1, n_features=0),
        dict(n=5, d=3, r=1, amplitude=-1.0),
        dict(n=5, d=3, r=1, latent="cauchy"),
        dict(n=5, d=3, r=1, scale=-1.0),
    ],
)
def test_manifold_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        nonlinear_manifold(generator=gen(), **kwargs)


def test_manifold_is_a_graph_over_its_base_plane():
    data = nonlinear_manifold(500, 9, 3, generator=gen(3))
    q = data.basis
    # Q^T (x - b) = u exactly: the chart is injective (float64 identity).
    assert torch.allclose((data.clean - data.mean) @ q, data.latent, atol=1e-12)
    assert torch.allclose(data.embed(data.latent), data.clean, atol=0)
    assert data.kind == "manifold" and data.spectrum is None
    with pytest.raises(ValueError):
        data.covariance()


def test_manifold_jacobian_has_full_rank_r():
    data = nonlinear_manifold(10, 8, 3, generator=gen(4), amplitude=2.0, frequency=2.0)
    for u in data.latent:
        jac = torch.autograd.functional.jacobian(data.embed, u)  # [d, r]
        s = torch.linalg.svdvals(jac)
        # J^T J = I + J_g^T J_g, so every singular value is >= 1 (float64 round-off below).
        assert jac.shape == (8, 3)
        assert s.min() >= 1 - 1e-12


def local_pca_residual(x: torch.Tensor, r: int) -> torch.Tensor:
    """Fraction of variance outside the top r principal directions."""
    ev = eigenvalues_desc(x).clamp_min(0)
    return ev[r:].sum() / ev.sum()


def test_manifold_local_pca_finds_r_dimensions_and_global_pca_more():
    r = 2
    data = nonlinear_manifold(4000, 10, r, generator=gen(0))
    x = data.clean
    # Global PCA: a curved manifold is not contained in any r-dimensional affine subspace.
    assert local_pca_residual(x, r) > 0.1
    # Local PCA on the 40 nearest neighbours of 20 points: r directions hold almost everything.
    dist = torch.cdist(x[:20], x)
    residuals = torch.stack(
        [local_pca_residual(x[row.topk(40, largest=False).indices], r) for row in dist]
    )
    assert residuals.median() < 0.02
    # Shrinking neighbourhoods around a point: normal displacement ~ curvature * eps^2 against
    # tangent spread ~ eps, so the residual fraction falls like eps^2 (factor 1e-2 here): the
    # tangent space has exactly r dimensions (an extra one would keep the ratio near 1) and the
    # manifold is genuinely curved (a flat one gives 0). Factor-3 band: Monte Carlo, 200 points.
    u0 = data.latent[0]
    g = gen(5)
    res = []
    for eps in (1e-1, 1e-2):
        u = u0 + eps * torch.randn(200, r, generator=g, dtype=torch.float64)
        res.append(local_pca_residual(data.embed(u), r))
    assert res[0] > 1e-6
    assert 1e-2 / 3 < res[1] / res[0] < 1e-2 * 3


def test_zero_amplitude_manifold_is_flat():
    data = nonlinear_manifold(300, 6, 2, generator=gen(6), amplitude=0.0)
    assert local_pca_residual(data.clean, 2) < 1e-12


def test_uniform_latent_is_bounded_and_noise_is_added():
    data = nonlinear_manifold(2000, 5, 2, generator=gen(), latent="uniform", scale=2.0, noise=0.1)
    assert data.latent.abs().max() <= 2.0
    assert data.latent.abs().max() > 1.9
    assert (data.x - data.clean).std().item() == pytest.approx(0.1, rel=0.03)  # s.e. ~0.7%


def test_random_orthonormal_is_orthonormal_and_seeded():
    q = random_orthonormal(7, 4, generator=gen(9))
    assert torch.allclose(q.T @ q, torch.eye(4, dtype=torch.float64), atol=1e-13)
    assert torch.equal(q, random_orthonormal(7, 4, generator=gen(9)))
    with pytest.raises(ValueError):
        random_orthonormal(3, 4, generator=gen())
