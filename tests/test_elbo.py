"""Negative ELBO terms, the trainer loss and its logged dL/dz norm."""

from __future__ import annotations

import math

import pytest
import torch

from balance.density import gaussian_log_prob_isotropic, kl_standard_normal
from balance.models.mlp import MLPDecoder, MLPDecoderConfig, MLPEncoder, MLPEncoderConfig
from balance.models.output import ModelOutput
from balance.models.vae import GammaConfig, GaussianVAE, affine_gaussian_vae
from balance.objectives.elbo import ELBOTerms, elbo_terms, nats_to_bits_per_dim, vae_loss
from balance.theory import affine

F64 = torch.float64
SHAPE = (1, 3, 4)
TOL = dict(rtol=1e-12, atol=1e-10)  # float64 identities


def _model(gamma: float = 0.3) -> GaussianVAE:
    enc = MLPEncoder(MLPEncoderConfig(SHAPE, 2, width=8, depth=2))
    dec = MLPDecoder(MLPDecoderConfig(SHAPE, 2, width=8, depth=1))
    model = GaussianVAE(enc, dec, GammaConfig(init=gamma)).double()
    model.set_gamma(gamma)
    return model


def test_terms_match_the_density_functions():
    model = _model()
    x = torch.randn(6, *SHAPE, dtype=F64)
    out = model(x, torch.randn(6, 2, dtype=F64))
    terms = elbo_terms(x, out)
    assert isinstance(terms, ELBOTerms) and terms.dim == 12
    for t in (terms.reconstruction, terms.log_normalizer, terms.kl, terms.negative_elbo):
        assert t.shape == (6,)
    # -ELBO = -log N(x; x_hat, gamma I) + KL: the two terms split the Gaussian log-density.
    expected = -gaussian_log_prob_isotropic(x, out.x_hat, out.log_gamma)
    expected = expected + kl_standard_normal(out.mu_z, out.logvar_z)
    torch.testing.assert_close(terms.negative_elbo, expected, **TOL)
    sq = (x - out.x_hat).square().flatten(1).sum(1)
    torch.testing.assert_close(terms.reconstruction, sq / (2 * 0.3), **TOL)
    log_norm = torch.full((6,), 6 * math.log(2 * math.pi * 0.3), dtype=F64)  # d/2 = 6
    torch.testing.assert_close(terms.log_normalizer, log_norm, **TOL)
    torch.testing.assert_close(terms.loss(), terms.negative_elbo.mean(), **TOL)
    torch.testing.assert_close(terms.bits_per_dim, terms.negative_elbo / (12 * math.log(2)), **TOL)


def test_bits_per_dim_conversion():
    assert nats_to_bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0, rel=1e-15)
    with pytest.raises(ValueError, match="dim"):
        nats_to_bits_per_dim(1.0, 0)


def test_monte_carlo_elbo_matches_the_exact_affine_elbo():
    # The affine VAE's ELBO is known in closed form (balance.theory.affine.elbo). Averaged over 4000
    # noise draws per point, elbo_terms must agree within 4 Monte-Carlo standard errors.
    g = torch.Generator().manual_seed(0)
    x = affine.data_with_spectrum(50, [3.0, 1.0, 0.2, 0.05], generator=g)
    d, k, gamma = x.shape[1], 2, 0.1
    params = affine.AffineParams(
        W_x=torch.randn(d, k, generator=g, dtype=F64),
        b_x=torch.randn(d, generator=g, dtype=F64),
        W_z=0.5 * torch.randn(k, d, generator=g, dtype=F64),
        b_z=torch.randn(k, generator=g, dtype=F64),
        s2=torch.tensor([0.3, 0.8], dtype=F64),
    )
    model = affine_gaussian_vae(*params.as_tuple(), gamma)
    reps = 4000
    xr = x.repeat(reps, 1)
    out = model(xr, generator=g)
    neg = elbo_terms(xr, out).negative_elbo.view(reps, -1)
    mean, se = neg.mean(0), neg.std(0) / math.sqrt(reps)
    exact = -affine.elbo(params, x, gamma)
    z_scores = (mean - exact) / se
    assert z_scores.abs().max() < 4.0, z_scores.abs().max()


def test_gamma_gradient_vanishes_at_the_mean_squared_error():
    # d loss / d log gamma = -rec + d/2 per image: zero at gamma = ||x - x_hat||^2 / d, which
    # pins gamma as a variance.
    model = _model()
    x = torch.randn(8, *SHAPE, dtype=F64)
    noise = torch.randn(8, 2, dtype=F64)
    with torch.no_grad():
        sq = elbo_terms(x, model(x, noise)).squared_error.mean()
    model.set_gamma(float(sq) / 12)
    elbo_terms(x, model(x, noise)).loss().backward()
    assert abs(float(model.raw_log_gamma.grad)) < 1e-12


def test_vae_loss_logs_every_term_and_the_per_image_dl_dz_norm():
    model = _model()
    x = torch.randn(5, *SHAPE, dtype=F64)
    torch.manual_seed(1)
    loss, logs = vae_loss(model, (x, torch.zeros(5)))
    assert set(logs) == {
        "reconstruction", "log_normalizer", "latent", "squared_error", "bits_per_dim", "gamma",
        "log_gamma", "grad_z_norm",
    }
    assert callable(logs["grad_z_norm"])
    assert torch.isnan(logs["grad_z_norm"]())  # nothing captured before backward()
    loss.backward()
    got = logs["grad_z_norm"]()
    # Reference: per-image -ELBO_i depends on z_i only, so grad of their sum w.r.t. z has rows
    # d(-ELBO_i)/dz_i. Recompute with the same noise.
    torch.manual_seed(1)
    mu, logvar = model.encode(x)
    noise = torch.randn(mu.shape, dtype=F64)
    z = (mu + torch.exp(0.5 * logvar) * noise).detach().requires_grad_(True)
    out = ModelOutput(mu, logvar, z, model.decode(z), model.log_gamma())
    (g,) = torch.autograd.grad(elbo_terms(x, out).negative_elbo.sum(), z)
    torch.testing.assert_close(got, g.norm(dim=1).mean(), **TOL)
    torch.testing.assert_close(loss, elbo_terms(x, out).loss(), **TOL)
    assert float(logs["gamma"]) == pytest.approx(0.3, rel=1e-12)
    torch.testing.assert_close(
        logs["reconstruction"] + logs["log_normalizer"] + logs["latent"], loss.detach(), **TOL
    )


def test_vae_loss_accepts_a_bare_tensor_batch_and_skips_the_hook_without_grad():
    model = _model()
    x = torch.randn(3, *SHAPE, dtype=F64)
    with torch.no_grad():
        loss, logs = vae_loss(model, x)
    assert torch.isfinite(loss) and "grad_z_norm" not in logs


def test_bad_inputs_raise_clear_errors():
    model = _model()
    x = torch.randn(3, *SHAPE, dtype=F64)
    out = model(x)
    with pytest.raises(ValueError, match="same shape"):
        elbo_terms(torch.randn(3, 1, 4, 3, dtype=F64), out)
    with pytest.raises(ValueError, match="shape"):
        vae_loss(model, torch.randn(3, 12, dtype=F64))
    with pytest.raises(TypeError, match="batch"):
        vae_loss(model, [[1.0]])
