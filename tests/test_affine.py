"""Unit tests of balance.theory.affine: THEORY section 1 identities, shapes, bad-input errors.

Tolerances: 1e-10 (relative) for float64 identities that are exact in exact arithmetic (a few
matrix solves on well-conditioned problems lose at most ~1e-13); Monte-Carlo agreement at 4
standard errors (false-alarm rate ~6e-5 per check).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from balance.theory import affine as A
from balance.theory.affine import barriers, fit

F64 = torch.float64
TOL = 1e-10  # float64 identity


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_params(d: int, k: int, g: torch.Generator) -> A.AffineParams:
    return A.AffineParams(
        W_x=torch.randn(d, k, generator=g, dtype=F64),
        b_x=torch.randn(d, generator=g, dtype=F64),
        W_z=torch.randn(k, d, generator=g, dtype=F64) / math.sqrt(d),
        b_z=torch.randn(k, generator=g, dtype=F64),
        s2=torch.rand(k, generator=g, dtype=F64) + 0.1,
    )


@pytest.fixture
def data() -> torch.Tensor:
    g = _gen(1)
    return A.data_with_spectrum(
        12, [3.0, 1.5, 0.4], d=5, generator=g, mean=torch.randn(5, generator=g, dtype=F64)
    )


# ---------------------------------------------------------------- data and spectra


def test_data_with_spectrum_has_exact_mean_and_spectrum():
    g = _gen(2)
    mean = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=F64)
    X = A.data_with_spectrum(7, [5.0, 2.0, 0.5], d=4, generator=g, mean=mean)
    m, S = A.data_moments(X)
    lam, U = A.spectrum(S)
    assert X.shape == (7, 4) and X.dtype == F64
    torch.testing.assert_close(m, mean, rtol=0, atol=TOL)
    torch.testing.assert_close(lam, torch.tensor([5.0, 2.0, 0.5, 0.0], dtype=F64), rtol=0,
                               atol=TOL)
    torch.testing.assert_close(U.T @ U, torch.eye(4, dtype=F64), rtol=0, atol=TOL)
    # sign convention: largest-magnitude entry of each eigenvector is positive
    idx = U.abs().argmax(dim=0)
    assert (U[idx, torch.arange(4)] > 0).all()


def test_data_with_spectrum_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n must be >="):
        A.data_with_spectrum(2, [1.0, 2.0], generator=_gen())
    with pytest.raises(ValueError, match="d"):
        A.data_with_spectrum(5, [1.0, 2.0, 3.0], d=2, generator=_gen())
    with pytest.raises(ValueError, match=">= 0"):
        A.data_with_spectrum(5, [1.0, -2.0], generator=_gen())


# ---------------------------------------------------------------- energy identities


def test_energy_terms_shapes_and_total(data):
    p = _random_params(5, 3, _gen(3))
    terms = A.energy_terms(p, data, 0.7)
    for t in (terms.reconstruction, terms.log_gamma, terms.variance, terms.mean):
        assert t.shape == (12,) and t.dtype == F64
    assert float(A.energy(p, data, 0.7)) == pytest.approx(float(terms.total().mean()), rel=TOL)


def test_energy_matches_definition_term_by_term(data):
    """Eq. (1) written out directly, with E_q||x - W z - b||^2 by its closed form."""
    p = _random_params(5, 3, _gen(4))
    gamma = 0.3
    mu = data @ p.W_z.T + p.b_z
    res = data - mu @ p.W_x.T - p.b_x
    rec = ((res**2).sum(1) + (p.s2 * (p.W_x**2).sum(0)).sum()) / gamma
    direct = rec + 5 * math.log(gamma) + (p.s2 - p.s2.log()).sum() + (mu**2).sum(1)
    assert float(A.energy(p, data, gamma)) == pytest.approx(float(direct.mean()), rel=TOL)


def test_monte_carlo_energy_agrees_in_expectation(data):
    p = _random_params(5, 3, _gen(5))
    gamma = 0.5
    exact = float(A.energy(p, data, gamma))
    draws = A.energy_mc(p, data, gamma, generator=_gen(6), n_samples=4000, reduce=False)
    assert draws.shape == (4000, 12)
    per_draw = draws.mean(dim=1)  # one estimate of the row-averaged energy per draw
    se = float(per_draw.std() / math.sqrt(per_draw.numel()))
    # Monte Carlo: 4 standard errors
    assert abs(float(per_draw.mean()) - exact) < 4 * se
    assert se > 0
    # reduced version is the mean, and it is differentiable (reparameterized)
    W = p.W_x.clone().requires_grad_(True)
    q = A.AffineParams(W, p.b_x, p.W_z, p.b_z, p.s2)
    value = A.energy_mc(q, data, gamma, generator=_gen(7), n_samples=3)
    (grad,) = torch.autograd.grad(value, W)
    assert value.ndim == 0 and torch.isfinite(grad).all()


def test_mc_estimate_is_seeded(data):
    p = _random_params(5, 3, _gen(8))
    a = A.energy_mc(p, data, 0.5, generator=_gen(9), n_samples=2)
    b = A.energy_mc(p, data, 0.5, generator=_gen(9), n_samples=2)
    assert float(a) == float(b)


def test_optimal_params_give_reduced_energy_and_zero_gradient(data):
    """Eliminating encoder, s2, b_x gives eq. (3), and they are stationary there."""
    g = _gen(10)
    _, S = A.data_moments(data)
    m = data.mean(0)
    for gamma in (0.05, 0.7, 4.0):
        W = torch.randn(5, 4, generator=g, dtype=F64)
        p = A.optimal_params(W, m, gamma)
        full = float(A.energy(p, data, gamma))
        assert full == pytest.approx(float(A.reduced_energy(W, S, gamma)), rel=TOL)
        leaves = [t.clone().requires_grad_(True) for t in (p.b_x, p.W_z, p.b_z, p.s2)]
        value = A.energy(A.AffineParams(W, *leaves), data, gamma)
        grads = torch.autograd.grad(value, leaves)
        for grad in grads:
            assert float(grad.abs().max()) < 1e-9 * max(1.0, 1.0 / gamma)  # float64 identity


def test_optimal_s2_formula_and_limits():
    W = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=F64)
    p = A.optimal_params(W, torch.zeros(3, dtype=F64), 1e-6)
    assert float(p.s2[1]) == 1.0  # zero column: s2 = 1 exactly
    assert float(p.s2[0]) == pytest.approx(1e-6 / (1e-6 + 4.0), rel=TOL)


def test_reduced_energy_batches_and_dominates_ppca_bound(data):
    g = _gen(11)
    _, S = A.data_moments(data)
    W = torch.randn(6, 5, 3, generator=g, dtype=F64)
    red = A.reduced_energy(W, S, 0.4)
    bound = A.ppca_bound(W, S, 0.4)
    assert red.shape == (6,) and bound.shape == (6,)
    for i in range(6):
        assert float(red[i]) == pytest.approx(float(A.reduced_energy(W[i], S, 0.4)), rel=TOL)
    assert (red > bound).all()  # Hadamard, strict for non-orthogonal columns
    # equality for orthogonal columns
    Q, _ = torch.linalg.qr(torch.randn(5, 3, generator=g, dtype=F64))
    W_orth = Q * torch.tensor([2.0, 0.5, 1.0], dtype=F64)
    assert float(A.reduced_energy(W_orth, S, 0.4)) == pytest.approx(
        float(A.ppca_bound(W_orth, S, 0.4)), rel=TOL
    )


def test_numpy_gradient_matches_autograd(data):
    g = _gen(12)
    d, k, gamma = 5, 3, 0.37
    theta = torch.randn(2 * d * k + d + 2 * k, generator=g, dtype=F64)
    value, grad = fit._energy_and_grad_np(theta.numpy(), data.numpy(), gamma, d, k)
    t = theta.clone().requires_grad_(True)
    ref = fit._flat_energy(t, data, torch.tensor(gamma, dtype=F64), d, k)
    (ref_grad,) = torch.autograd.grad(ref, t)
    assert value == pytest.approx(float(ref.detach()), rel=TOL)
    np.testing.assert_allclose(grad, ref_grad.numpy(), rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------- likelihood and ELBO


def test_log_marginal_likelihood_matches_scipy(data):
    g = _gen(13)
    W = torch.randn(5, 3, generator=g, dtype=F64)
    b = torch.randn(5, generator=g, dtype=F64)
    gamma = 0.2
    lp = A.log_marginal_likelihood(data, W, b, gamma)
    cov = (gamma * torch.eye(5, dtype=F64) + W @ W.T).numpy()
    ref = multivariate_normal(mean=b.numpy(), cov=cov).logpdf(data.numpy())
    assert lp.shape == (12,)
    np.testing.assert_allclose(lp.numpy(), ref, rtol=TOL, atol=TOL)


def test_elbo_relation_and_gap_is_kl_to_exact_posterior(data):
    """ELBO = -(L + d log 2 pi - kappa)/2 and log p(x) - ELBO = KL(q || p(z|x)) per row."""
    p = _random_params(5, 3, _gen(14))
    gamma = 0.6
    elbo = A.elbo(p, data, gamma)
    per_row = A.energy_terms(p, data, gamma).total()
    torch.testing.assert_close(elbo, -(per_row + 5 * math.log(2 * math.pi) - 3) / 2,
                               rtol=TOL, atol=TOL)
    lp = A.log_marginal_likelihood(data, p.W_x, p.b_x, gamma)
    mean, cov = A.exact_posterior(data, p.W_x, p.b_x, gamma)
    q = torch.distributions.MultivariateNormal(p.encode(data), torch.diag(p.s2))
    post = torch.distributions.MultivariateNormal(mean, cov)
    kl = torch.distributions.kl_divergence(q, post)
    torch.testing.assert_close(lp - elbo, kl, rtol=1e-9, atol=1e-9)  # float64 identity


def test_exact_posterior_satisfies_bayes_rule(data):
    g = _gen(15)
    W = torch.randn(5, 2, generator=g, dtype=F64)
    b = torch.randn(5, generator=g, dtype=F64)
    gamma = 0.3
    z = torch.randn(12, 2, generator=g, dtype=F64)
    mean, cov = A.exact_posterior(data, W, b, gamma)
    normal = torch.distributions.Normal
    log_lik = normal(z @ W.T + b, math.sqrt(gamma)).log_prob(data).sum(1)
    log_prior = normal(0.0, 1.0).log_prob(z).sum(1)
    log_post = torch.distributions.MultivariateNormal(mean, cov).log_prob(z)
    lp = A.log_marginal_likelihood(data, W, b, gamma)
    torch.testing.assert_close(log_lik + log_prior - log_post, lp, rtol=TOL, atol=TOL)


# ---------------------------------------------------------------- closed form and minima


@pytest.mark.parametrize("kappa", [1, 2, 3, 6])
def test_closed_form_shapes_energy_and_active_set(data, kappa):
    gamma = 0.5  # eigenvalues 3, 1.5, 0.4, 0, 0: two above gamma
    opt = A.closed_form_optimum(data, kappa, gamma)
    p = opt.params
    assert p.W_x.shape == (5, kappa) and p.W_z.shape == (kappa, 5)
    assert p.b_x.shape == (5,) and p.b_z.shape == (kappa,) and p.s2.shape == (kappa,)
    assert opt.n_active == min(kappa, 2)
    assert opt.active == tuple(range(min(kappa, 2)))
    assert set(opt.inactive) == set(range(kappa)) - set(opt.active)
    assert float(A.energy(p, data, gamma)) == pytest.approx(opt.energy, rel=TOL)
    lam = torch.tensor([3.0, 1.5, 0.4, 0.0, 0.0], dtype=F64)
    assert opt.energy == pytest.approx(A.closed_form_energy(lam, kappa, gamma), rel=TOL)
    torch.testing.assert_close(opt.eigenvalues, lam, rtol=0, atol=TOL)


def test_closed_form_energy_formula_by_hand():
    lam = torch.tensor([4.0, 1.0, 0.25], dtype=F64)
    # gamma = 0.5, kappa = 1: a = 1; L* = 1 + (1 + 0.25)/0.5 + log 4 + 2 log 0.5 + 1
    expected = 1 + 2.5 + math.log(4.0) + 2 * math.log(0.5) + 1
    assert A.closed_form_energy(lam, 1, 0.5) == pytest.approx(expected, rel=TOL)


def test_closed_form_from_spectrum_equals_closed_form_from_data():
    lam = torch.tensor([0.5, 3.0, 1.0], dtype=F64)
    opt = A.closed_form_optimum(lam, 2, 0.7)
    X = A.data_with_spectrum(6, [3.0, 1.0, 0.5], generator=_gen(16))
    assert opt.energy == pytest.approx(A.closed_form_optimum(X, 2, 0.7).energy, rel=TOL)
    # spectrum input: U = I (sorted), m = 0
    assert float(opt.params.W_x[1, 0]) == pytest.approx(math.sqrt(3.0 - 0.7), rel=TOL)


@pytest.mark.parametrize(("kappa", "n_active"), [(1, 1), (2, 2), (3, 2), (4, 2), (3, 0)])
def test_count_minima(kappa, n_active):
    expected = math.factorial(kappa) // math.factorial(kappa - n_active)
    assert A.count_minima(kappa, n_active, signs=False) == expected
    assert A.count_minima(kappa, n_active) == expected * 2**n_active


def test_enumerate_minima_are_distinct_and_have_equal_energy(data):
    minima = A.enumerate_minima(data, 3, 0.5)
    assert len(minima) == A.count_minima(3, 2) == 24
    assert len({(m.active, m.signs) for m in minima}) == 24
    for m in minima:
        assert float(A.energy(m.params, data, 0.5)) == pytest.approx(minima[0].energy, rel=TOL)
    assert len(A.enumerate_minima(data, 3, 0.5, signs=False)) == 6
    idx, dist = A.match_minimum(minima[7].params, minima, data)
    assert idx == 7 and dist < TOL


def test_enumerate_minima_rejects_tied_active_eigenvalues():
    with pytest.raises(ValueError, match="distinct"):
        A.enumerate_minima(torch.tensor([2.0, 2.0, 0.1], dtype=F64), 3, 0.5)
    # kappa caps the active count: a tie between the last kept and the next one is ambiguous
    with pytest.raises(ValueError, match="distinct"):
        A.enumerate_minima(torch.tensor([3.0, 2.0, 2.0], dtype=F64), 2, 0.5)
    # a tie among inactive eigenvalues is harmless
    assert len(A.enumerate_minima(torch.tensor([3.0, 0.1, 0.1], dtype=F64), 2, 0.5)) == 4


# ---------------------------------------------------------------- training


def test_train_returns_a_stationary_point_with_the_closed_form_energy(data):
    res = A.train(data, 3, 0.5, generator=_gen(17))
    opt = A.closed_form_optimum(data, 3, 0.5)
    assert isinstance(res, A.TrainResult)
    assert res.energy == pytest.approx(opt.energy, abs=1e-8)  # optimisation tolerance
    assert res.grad_norm < 1e-5
    assert res.params.W_x.shape == (5, 3)
    assert float(A.energy(res.params, data, 0.5)) == pytest.approx(res.energy, rel=TOL)


def test_train_from_init_at_minimum_stays_there(data):
    opt = A.closed_form_optimum(data, 2, 0.5)
    res = A.train(data, 2, 0.5, generator=None, init=opt.params)
    assert A.params_distance(res.params, opt.params, data) < 1e-6


def test_train_restarts_is_seeded(data):
    a = A.train_restarts(data, 2, 0.5, generator=_gen(18), n_restarts=2)
    b = A.train_restarts(data, 2, 0.5, generator=_gen(18), n_restarts=2)
    assert len(a) == 2 and [r.energy for r in a] == [r.energy for r in b]
    with pytest.raises(ValueError, match="n_restarts"):
        A.train_restarts(data, 2, 0.5, generator=_gen(), n_restarts=0)


# ---------------------------------------------------------------- barriers


def test_skew_log_inverts_matrix_exponential():
    g = _gen(19)
    perms = [
        torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]], dtype=F64),
        torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=F64)),
        torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=F64),
    ]
    Q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=F64))
    if torch.linalg.det(Q) < 0:
        Q[:, 0] = -Q[:, 0]
    for R in [*perms, Q]:
        L = barriers._skew_log(R)
        torch.testing.assert_close(L, -L.T, rtol=0, atol=TOL)
        torch.testing.assert_close(torch.linalg.matrix_exp(L), R, rtol=0, atol=1e-9)


def test_barrier_profiles_start_and_end_at_the_minima(data):
    minima = A.enumerate_minima(data, 3, 0.5)
    a = minima[0]
    b = next(m for m in minima if m.active == (2, 1) and m.signs == (1, 1))
    for path in ("rotation", "linear"):
        prof = A.barrier(data, 0.5, a, b, path=path, n_points=11)
        assert prof.t.shape == (11,) and prof.energy.shape == (11,) and prof.W.shape == (11, 5, 3)
        assert float(prof.energy[0]) == pytest.approx(a.energy, rel=TOL)
        assert float(prof.energy[-1]) == pytest.approx(a.energy, rel=TOL)
        torch.testing.assert_close(prof.W[-1], b.params.W_x, rtol=0, atol=1e-9)
        assert prof.height > 0


def test_barrier_rejects_bad_requests(data):
    minima = A.enumerate_minima(data, 2, 0.5)  # kappa = active count: no spare slot
    a = minima[0]
    flipped = next(m for m in minima if m.active == (0, 1) and m.signs == (1, -1))
    with pytest.raises(ValueError, match="reflection"):
        A.barrier(data, 0.5, a, flipped, path="rotation")
    with pytest.raises(ValueError, match="path must be"):
        A.barrier(data, 0.5, a, flipped, path="zigzag")
    with pytest.raises(ValueError, match="n_points"):
        A.barrier(data, 0.5, a, flipped, path="linear", n_points=2)
    not_rotation = torch.randn(5, 2, generator=_gen(20), dtype=F64)
    with pytest.raises(ValueError, match="not a latent rotation"):
        A.barrier(data, 0.5, a, not_rotation, path="rotation")
    with pytest.raises(ValueError, match="start and end"):
        A.barrier(data, 0.5, a, torch.zeros(5, 3, dtype=F64), path="linear")


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_clear_errors(data):
    p = _random_params(5, 3, _gen(21))
    with pytest.raises(ValueError, match="gamma"):
        A.energy(p, data, 0.0)
    with pytest.raises(ValueError, match="gamma"):
        A.energy(p, data, -1.0)
    with pytest.raises(ValueError, match="gamma"):
        A.energy(p, data, float("nan"))
    with pytest.raises(ValueError, match="kappa"):
        A.closed_form_optimum(data, 0, 0.5)
    with pytest.raises(ValueError, match="kappa"):
        A.closed_form_optimum(data, 2.0, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        bad = data.clone()
        bad[0, 0] = float("nan")
        A.closed_form_optimum(bad, 2, 0.5)
    with pytest.raises(ValueError, match="float64"):
        A.energy(p, data.float(), 0.5)
    with pytest.raises(ValueError, match="2 dimension"):
        A.train(data[0], 2, 0.5, generator=None)
    with pytest.raises(ValueError, match="columns"):
        A.energy(p, data[:, :4], 0.5)
    with pytest.raises(ValueError, match="torch.Tensor"):
        A.data_moments(data.numpy())
    with pytest.raises(ValueError, match="W_x must be"):
        A.log_marginal_likelihood(data, torch.zeros(4, 2, dtype=F64), torch.zeros(5, dtype=F64),
                                  0.5)
    with pytest.raises(ValueError, match="n_samples"):
        A.energy_mc(p, data, 0.5, generator=_gen(), n_samples=0)


def test_affine_params_validate_shapes_and_positivity():
    g = _gen(22)
    good = _random_params(4, 2, g)
    with pytest.raises(ValueError, match="W_z must have shape"):
        A.AffineParams(good.W_x, good.b_x, good.W_z.T, good.b_z, good.s2)
    with pytest.raises(ValueError, match="b_x must have shape"):
        A.AffineParams(good.W_x, good.b_x[:3], good.W_z, good.b_z, good.s2)
    with pytest.raises(ValueError, match="s2"):
        A.AffineParams(good.W_x, good.b_x, good.W_z, good.b_z, -good.s2)
    with pytest.raises(ValueError, match="NaN"):
        A.AffineParams(good.W_x * float("inf"), good.b_x, good.W_z, good.b_z, good.s2)
    assert good.d == 4 and good.kappa == 2
