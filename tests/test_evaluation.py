"""balance.evaluation: batched codes and decodings, and the VAE test metrics."""

from __future__ import annotations

import math

import pytest
import torch

from balance.evaluation.codec import Codec, batched_map
from balance.evaluation.vae import VAEMetricsConfig, vae_test_metrics
from balance.models.registry import ConvSpec, MLPVAESpec, build


def _vae():
    return build(MLPVAESpec(latent_dim=3, width=8, encoder_depth=1, decoder_blocks=1), (5,), 0)


def test_batched_map_equals_one_pass():
    model = _vae().eval()
    x = torch.randn(23, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = model.encode(x)[0]
    torch.testing.assert_close(batched_map(lambda b: model.encode(b)[0], x, 4, "cpu"), whole)
    with pytest.raises(ValueError):
        batched_map(lambda b: b, x[:0], 4, "cpu")


def test_posterior_samples_are_the_reparameterised_draws():
    model = _vae()
    x = torch.randn(10, 5, generator=torch.Generator().manual_seed(1))
    codec = Codec(model, batch_size=4)
    mu, logvar = codec.posterior(x)
    z = codec.sample_posterior(x, torch.Generator().manual_seed(7))
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(z, mu + (0.5 * logvar).exp() * eps, rtol=0, atol=0)
    # batch by batch: the same law, the noise drawn per batch of 4
    g = torch.Generator().manual_seed(7)
    per_batch = torch.cat([torch.randn(b, 3, generator=g) for b in (4, 4, 2)])
    torch.testing.assert_close(codec.encode_sample(x, torch.Generator().manual_seed(7)),
                               mu + (0.5 * logvar).exp() * per_batch, rtol=0, atol=0)
    # a deterministic encoder: its code, no log-variance, no noise
    ae = build(ConvSpec(latent_dim=2, base_filters=2), (1, 28, 28), 0)
    images = torch.rand(3, 1, 28, 28)
    codes, none = Codec(ae).posterior(images)
    assert none is None and codes.shape == (3, 2)
    torch.testing.assert_close(Codec(ae).sample_posterior(images, torch.Generator()), codes)


def test_vae_test_metrics_are_consistent():
    model = _vae()
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(2))
    m = vae_test_metrics(model, x, VAEMetricsConfig(iwae_k=8, iwae_batch=10, batch_size=16))
    assert m["n_test"] == 40 and m["n_iwae"] == 40 and 0 <= m["active"] <= 3
    assert len(m["kl_per_dim"]) == len(m["posterior_variance_per_dim"]) == 3
    # the KL per dimension is the closed form averaged over the data
    with torch.no_grad():
        mu, logvar = model.encode(x)
    kl = (0.5 * (mu.square() + logvar.exp() - 1 - logvar)).double().mean(0)
    torch.testing.assert_close(torch.tensor(m["kl_per_dim"], dtype=torch.float64), kl,
                               rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(torch.tensor(m["posterior_variance_per_dim"]),
                               logvar.exp().mean(0).float(), rtol=1e-6, atol=1e-9)
    # IWAE with k samples bounds the NLL from above by at most the one-sample negative ELBO
    # in expectation (Burda et al.); with 40 images allow 3 standard errors of the difference.
    assert m["nll"] <= m["neg_elbo"] + 3 * m["nll_se"]
    assert math.isfinite(m["nll_bits_per_dim"]) and m["gamma"] == pytest.approx(1.0)
