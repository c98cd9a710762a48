"""Active units, reconstruction error, IWAE NLL (checked against the exact affine likelihood)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from balance.metrics.active_units import active_units, posterior_means
from balance.metrics.iwae import iwae_log_weights, iwae_nll
from balance.metrics.reconstruction import reconstruction_error
from balance.models.mlp import MLPDecoder, MLPDecoderConfig, MLPEncoder, MLPEncoderConfig
from balance.models.vae import GaussianVAE, affine_gaussian_vae
from balance.theory import affine

F64 = torch.float64


# ----------------------------------------------------------------------------- active units


def test_active_units_counts_variance_of_posterior_means_with_n_minus_1():
    g = torch.Generator().manual_seed(0)
    n = 50
    mu = torch.randn(n, 4, generator=g, dtype=F64)
    mu = (mu - mu.mean(0)) / mu.std(0)  # unit unbiased variance exactly
    scale = torch.tensor([1.0, 0.2, 0.125, 0.05], dtype=F64)  # variances 1, .04, .015625, .0025
    mu = mu * scale
    count, var = active_units(mu)
    np.testing.assert_allclose(var.numpy(), np.var(mu.numpy(), axis=0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(var.numpy(), scale.square().numpy(), rtol=1e-12)
    # Burda's definition, variance >= 0.01 with the N - 1 denominator: exactly three here (no
    # variance within rounding of the threshold). With the 1/N denominator the third variance
    # would be 0.015625 * 49/50 = 0.0153, still above: so also check a threshold that tells
    # the two apart, 0.0155 (N - 1: 0.015625 counts; 1/N: 0.0153 would not).
    assert count == 3
    assert active_units(mu, 0.0155)[0] == 3
    assert active_units(mu, 0.03)[0] == 2
    assert active_units(mu, threshold=0.02)[0] == 2
    assert active_units(mu, threshold=0.001)[0] == 4


def test_active_units_ignores_constant_dimensions_and_validates_input():
    mu = torch.zeros(10, 3)
    mu[:, 0] = torch.arange(10.0)
    assert active_units(mu)[0] == 1
    mu[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite values in 1 of 10 samples"):
        active_units(mu)
    with pytest.raises(ValueError, match=r"\[N, kappa\]"):
        active_units(torch.zeros(4, 2, 2))
    with pytest.raises(ValueError, match="at least 2"):
        active_units(torch.zeros(1, 3))


def _mlp_vae(shape=(1, 3, 3), k=4) -> GaussianVAE:
    enc = MLPEncoder(MLPEncoderConfig(shape, k, width=8, depth=2))
    dec = MLPDecoder(MLPDecoderConfig(shape, k, width=8, depth=1))
    return GaussianVAE(enc, dec).double()


def test_posterior_means_and_reconstruction_error_are_batch_invariant():
    model = _mlp_vae()
    x = torch.randn(23, 1, 3, 3, dtype=F64)
    mu_full, _ = model.encode(x)
    torch.testing.assert_close(posterior_means(model, x, batch_size=5), mu_full.detach(),
                               rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(posterior_means(model.encoder, x, batch_size=7), mu_full.detach(),
                               rtol=1e-14, atol=1e-14)
    rec = reconstruction_error(model, x, batch_size=4)
    expected = (x - model.decode(mu_full)).square().flatten(1).sum(1).detach()
    torch.testing.assert_close(rec, expected, rtol=1e-14, atol=1e-14)
    bad = x.clone()
    bad[5, 0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="first at index 5"):
        reconstruction_error(model, bad)
    with pytest.raises(ValueError, match="shape"):
        reconstruction_error(model, torch.randn(4, 1, 4, 3, dtype=F64))


# ----------------------------------------------------------------------------- IWAE


def _affine_problem(kappa: int = 3, gamma: float = 0.05):
    """Data of rank 2 in d = 6 plus small noise, and the closed-form optimum of the affine VAE."""
    g = torch.Generator().manual_seed(0)
    x = affine.data_with_spectrum(40, [2.0, 0.7, 0.02, 0.01], generator=g, d=6)
    x = x + torch.tensor([0.5, -1.0, 0.0, 2.0, 1.0, -0.3], dtype=F64)
    opt = affine.closed_form_optimum(x, kappa, gamma)
    exact = affine.log_marginal_likelihood(x, opt.params.W_x, opt.params.b_x, gamma)
    return x, opt.params, gamma, exact


def test_exact_likelihood_reference_matches_multivariate_normal():
    # The affine module's reference likelihood against an independent dense computation.
    x, p, gamma, exact = _affine_problem()
    cov = gamma * torch.eye(6, dtype=F64) + p.W_x @ p.W_x.T
    dense = torch.distributions.MultivariateNormal(p.b_x, cov).log_prob(x)
    torch.testing.assert_close(exact, dense, rtol=1e-12, atol=1e-10)


def test_iwae_is_exact_at_the_affine_optimum_where_q_is_the_true_posterior():
    # At the optimum with orthogonal columns q(z|x) = p(z|x), so every importance weight equals
    # p(x): the estimate is exact for every k and every draw (float64 identity).
    x, p, gamma, exact = _affine_problem()
    model = affine_gaussian_vae(*p.as_tuple(), gamma)
    for k in (1, 7):
        nll = iwae_nll(model, x, k, generator=torch.Generator().manual_seed(k), batch_size=16)
        assert nll.shape == (40,) and nll.dtype == F64
        torch.testing.assert_close(nll, -exact, rtol=1e-10, atol=1e-9)
    log_w = iwae_log_weights(model, x, 5, generator=torch.Generator().manual_seed(0))
    assert log_w.shape == (5, 40)
    torch.testing.assert_close(log_w, exact.expand(5, 40), rtol=1e-10, atol=1e-9)


def _perturbed_encoder(p):
    """A worse encoder: shifted means and wrong variances (so q != p(z|x))."""
    return affine.AffineParams(
        W_x=p.W_x, b_x=p.b_x, W_z=0.8 * p.W_z, b_z=p.b_z + 0.3,
        s2=torch.full_like(p.s2, 0.3),
    )


def test_iwae_bound_tightens_with_k_towards_the_exact_likelihood():
    x, p, gamma, exact = _affine_problem()
    q = _perturbed_encoder(p)
    model = affine_gaussian_vae(*q.as_tuple(), gamma)
    elbo = affine.elbo(q, x, gamma)
    # ELBO <= log p(x) for every point, strictly here (q is not the posterior).
    assert (elbo < exact - 1e-3).all()
    gap_elbo = float((exact - elbo).mean())
    ks = (1, 10, 100, 2000)
    gaps = []
    for k in ks:
        nll = iwae_nll(model, x, k, generator=torch.Generator().manual_seed(k), batch_size=40)
        gaps.append(float((nll + exact).mean()))  # E[log p - L_k] >= 0, decreasing in k
    # k = 1 is the ELBO: its Monte-Carlo mean over 40 points matches the exact ELBO. The
    # standard error of that mean is estimated from the per-point deviations (4 s.e.).
    dev = -iwae_nll(model, x, 1, generator=torch.Generator().manual_seed(99)) - elbo
    assert abs(float(dev.mean())) < 4 * float(dev.std()) / math.sqrt(40)
    assert gaps[0] == pytest.approx(gap_elbo, rel=0.5)
    # Monotone tightening (gaps here differ by far more than their Monte-Carlo noise).
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[-1] > -0.01  # still a bound (up to Monte-Carlo noise)
    assert gaps[-1] < 0.05 * gaps[0], gaps


def test_iwae_validates_input_and_is_reproducible():
    x, p, gamma, _ = _affine_problem()
    model = affine_gaussian_vae(*_perturbed_encoder(p).as_tuple(), gamma)
    a = iwae_nll(model, x, 20, generator=torch.Generator().manual_seed(3))
    b = iwae_nll(model, x, 20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        iwae_nll(model, bad, 5)
    with pytest.raises(ValueError, match="k must be >= 1"):
        iwae_nll(model, x, 0)


def test_iwae_log_weights_do_not_depend_on_the_sample_chunking(monkeypatch):
    import balance.metrics.iwae as iwae_module

    model = _mlp_vae()
    x = torch.randn(6, 1, 3, 3, dtype=F64)
    noise = torch.randn(12, 6, 4, dtype=F64)
    full = iwae_log_weights(model, x, 12, noise=noise)
    monkeypatch.setattr(iwae_module, "_CHUNK_ELEMENTS", 6 * 9 * 5)  # 5 samples per chunk
    chunked = iwae_log_weights(model, x, 12, noise=noise)
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-12)
    # Reference: one weight by hand from the densities.
    mu, logvar = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * noise[4]
    ref = torch.distributions.Normal(model.decode(z), model.log_gamma().mul(0.5).exp())
    ref = ref.log_prob(x).flatten(1).sum(1)
    ref = ref + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    ref = ref - torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(1)
    torch.testing.assert_close(full[4], ref.detach(), rtol=1e-12, atol=1e-10)
    with pytest.raises(ValueError, match="noise must be"):
        iwae_log_weights(model, x, 12, noise=noise[:3])
