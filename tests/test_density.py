"""Gaussian log-densities and KL against torch.distributions (float64) and Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from balance.density import (
    diag_gaussian_log_prob,
    gaussian_log_prob_isotropic,
    kl_standard_normal,
    squared_error,
    standard_normal_log_prob,
)

F64 = torch.float64
# Float64 identities: two exact formulas for the same number differ by rounding only.
TOL = dict(rtol=1e-12, atol=1e-10)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_isotropic_matches_torch_normal_with_gamma_as_variance():
    g = _gen()
    x = torch.randn(5, 1, 4, 3, generator=g, dtype=F64)
    mean = torch.randn(5, 1, 4, 3, generator=g, dtype=F64)
    for gamma in (1e-3, 0.37, 1.0, 12.5):
        log_gamma = torch.tensor(math.log(gamma), dtype=F64)
        ours = gaussian_log_prob_isotropic(x, mean, log_gamma)
        ref = Normal(mean, math.sqrt(gamma)).log_prob(x).flatten(1).sum(1)
        assert ours.shape == (5,)
        torch.testing.assert_close(ours, ref, **TOL)


def test_isotropic_broadcast_log_gamma_matches_per_element_normal():
    g = _gen(1)
    x = torch.randn(4, 6, generator=g, dtype=F64)
    mean = torch.randn(4, 6, generator=g, dtype=F64)
    per_sample = torch.randn(4, 1, generator=g, dtype=F64)
    per_element = torch.randn(4, 6, generator=g, dtype=F64)
    for lg in (per_sample, per_element, float(per_sample[0, 0])):
        ours = gaussian_log_prob_isotropic(x, mean, lg)
        std = torch.exp(0.5 * torch.as_tensor(lg, dtype=F64))
        ref = Normal(mean, std.expand_as(x)).log_prob(x).sum(1)
        torch.testing.assert_close(ours, ref, **TOL)


def test_isotropic_gamma_gradient_vanishes_at_mean_squared_error():
    # d/d log gamma [-||r||^2/(2 gamma) - d/2 log(2 pi gamma)] = ||r||^2/(2 gamma) - d/2, zero
    # at gamma = ||r||^2 / d: the maximum-likelihood VARIANCE (a std would give another root).
    g = _gen(2)
    x = torch.randn(1, 10, generator=g, dtype=F64)
    mean = torch.zeros(1, 10, dtype=F64)
    gamma_star = float((x - mean).square().sum() / 10)
    log_gamma = torch.tensor(math.log(gamma_star), dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(gaussian_log_prob_isotropic(x, mean, log_gamma).sum(), log_gamma)
    assert abs(float(grad)) < 1e-12


def test_diag_gaussian_matches_independent_normal():
    g = _gen(3)
    z = torch.randn(7, 5, generator=g, dtype=F64)
    mu = torch.randn(7, 5, generator=g, dtype=F64)
    logvar = torch.randn(7, 5, generator=g, dtype=F64)
    ref = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z)
    torch.testing.assert_close(diag_gaussian_log_prob(z, mu, logvar), ref, **TOL)


def test_standard_normal_matches_multivariate_normal():
    z = torch.randn(6, 4, generator=_gen(4), dtype=F64)
    ref = MultivariateNormal(torch.zeros(4, dtype=F64), torch.eye(4, dtype=F64)).log_prob(z)
    torch.testing.assert_close(standard_normal_log_prob(z), ref, **TOL)


def test_kl_matches_torch_kl_divergence_and_is_zero_when_inactive():
    g = _gen(5)
    mu = torch.randn(8, 3, generator=g, dtype=F64)
    logvar = torch.randn(8, 3, generator=g, dtype=F64)
    q = Normal(mu, torch.exp(0.5 * logvar))
    p = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl_standard_normal(mu, logvar), kl_divergence(q, p).sum(1), **TOL)
    zero = torch.zeros(2, 3, dtype=F64)
    assert torch.equal(kl_standard_normal(zero, zero), torch.zeros(2, dtype=F64))


def test_kl_matches_monte_carlo_within_standard_errors():
    # KL = E_q[log q(z) - log p(z)], estimated from 200k draws; the difference from the closed
    # form must be within 4 Monte-Carlo standard errors (false-alarm rate ~6e-5).
    g = _gen(6)
    mu = torch.tensor([[0.7, -1.2, 0.0]], dtype=F64)
    logvar = torch.tensor([[-0.5, 0.8, -2.0]], dtype=F64)
    n = 200_000
    z = mu + torch.exp(0.5 * logvar) * torch.randn(n, 3, generator=g, dtype=F64)
    samples = diag_gaussian_log_prob(z, mu.expand(n, 3), logvar.expand(n, 3))
    samples = samples - standard_normal_log_prob(z)
    se = float(samples.std() / math.sqrt(n))
    assert abs(float(samples.mean() - kl_standard_normal(mu, logvar)[0])) < 4 * se


def test_squared_error_sums_over_all_non_batch_dims():
    x = torch.ones(2, 3, 4, dtype=F64)
    mean = torch.zeros(2, 3, 4, dtype=F64)
    mean[1] = 2.0
    assert squared_error(x, mean).tolist() == [12.0, 12.0]


def test_outputs_follow_input_dtype():
    x = torch.randn(3, 4)
    out = gaussian_log_prob_isotropic(x, torch.zeros_like(x), 0.0)
    assert out.dtype == torch.float32
    assert kl_standard_normal(x, x).dtype == torch.float32


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: gaussian_log_prob_isotropic(torch.zeros(3, 4), torch.zeros(3, 5), 0.0),
         "same shape"),
        (lambda: gaussian_log_prob_isotropic(torch.zeros(4), torch.zeros(4), 0.0),
         "batch dimension"),
        (lambda: gaussian_log_prob_isotropic(torch.zeros(3, 4), torch.zeros(3, 4),
                                             torch.zeros(2)), "does not broadcast"),
        (lambda: kl_standard_normal(torch.zeros(3, 4), torch.zeros(3, 2)), "same shape"),
        (lambda: diag_gaussian_log_prob(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(4)),
         "batch dimension"),
        (lambda: standard_normal_log_prob(torch.zeros(5)), "batch dimension"),
    ],
)
def test_bad_shapes_raise_clear_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_non_tensor_input_raises_type_error():
    with pytest.raises(TypeError, match="torch.Tensor"):
        kl_standard_normal([[0.0]], torch.zeros(1, 1))


def test_nan_propagates_rather_than_being_hidden():
    x = torch.zeros(2, 3, dtype=F64)
    x[1, 0] = float("nan")
    out = gaussian_log_prob_isotropic(x, torch.zeros_like(x), 0.0)
    assert torch.isfinite(out[0]) and torch.isnan(out[1])
