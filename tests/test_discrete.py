"""Discrete-latent models and objectives: Gumbel-softmax relaxations approach one-hot codes as
the temperature falls and the KL matches its closed form; the straight-through estimator
passes gradients; VQ-VAE quantises to its codebook, which moves by its loss or by EMA."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from balance.models.discrete import VQVAE, CategoricalVAE, DiscreteRAE, TemperatureConfig
from balance.objectives.discrete import categorical_kl, discrete_loss
from balance.train import TrainConfig, train

M, K, D = 3, 4, 6


def _pair(out_dim: int, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    return nn.Linear(D, out_dim), nn.Linear(out_dim, D)


def test_gumbel_softmax_codes_approach_one_hot_as_the_temperature_falls():
    encoder, decoder = _pair(M * K)
    x = torch.randn(2000, D, generator=torch.Generator().manual_seed(1))
    sharpness = []
    for tau in (5.0, 1.0, 0.1, 0.01):
        model = CategoricalVAE(encoder, decoder, M, K, TemperatureConfig(tau, tau, 0.0)).train()
        torch.manual_seed(2)
        y = model(x).z.detach().view(-1, M, K)
        assert torch.allclose(y.sum(-1), torch.ones(len(x), M), atol=1e-5)  # on the simplex
        sharpness.append(float(y.max(-1).values.mean()))
    assert sharpness == sorted(sharpness)  # sharper at every lower temperature
    assert sharpness[0] < 0.5 and sharpness[-1] > 0.99
    model.eval()  # evaluation decodes the argmax: exactly one-hot
    code = model(x).z.detach().view(-1, M, K)
    assert set(code.unique().tolist()) == {0.0, 1.0} and torch.equal(code.sum(-1),
                                                                    torch.ones(len(x), M))


def test_the_temperature_anneals_with_training_steps():
    schedule = TemperatureConfig(tau_0=1.0, tau_min=0.5, rate=0.1)
    model = CategoricalVAE(*_pair(M * K), M, K, schedule).train()
    x = torch.randn(8, D)
    taus = []
    for _ in range(10):
        taus.append(model.tau)
        model(x)
    assert taus[0] == 1.0 and taus[1] == pytest.approx(math.exp(-0.1))
    assert taus == sorted(taus, reverse=True) and model.tau == pytest.approx(0.5)


def test_categorical_kl_matches_its_closed_form():
    logits = torch.randn(5, M, K, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q = torch.distributions.Categorical(logits=logits)
    uniform = torch.distributions.Categorical(probs=torch.full((5, M, K), 1.0 / K,
                                                               dtype=torch.float64))
    expected = torch.distributions.kl_divergence(q, uniform).sum(1)
    torch.testing.assert_close(categorical_kl(logits), expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(categorical_kl(torch.zeros(2, M, K)), torch.zeros(2), atol=1e-7)


def test_the_straight_through_estimator_passes_gradients_to_the_encoder():
    encoder, decoder = _pair(M * K)
    model = DiscreteRAE(encoder, decoder, M, K)
    x = torch.randn(16, D, generator=torch.Generator().manual_seed(3))
    out = model(x)
    assert set(out.z.detach().unique().tolist()) == {0.0, 1.0}  # forward: exactly one-hot
    ((out.x_hat - x) ** 2).sum().backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0
    # the hard one-hot alone carries no gradient: the straight-through term is what does
    encoder.weight.grad = None
    hard = model.one_hot(model.logits(x)).flatten(1)
    assert not hard.requires_grad


def test_vq_vae_quantises_to_its_codebook_and_learns_it():
    encoder, decoder = _pair(M * 2)
    model = VQVAE(encoder, decoder, M, 2, 5)
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(4))
    out = model(x)
    rows = model.codebook[out.codes]  # every quantised vector is a codebook row
    torch.testing.assert_close(out.z_q, rows)
    torch.testing.assert_close(out.z.view(-1, M, 2), out.z_q)  # forward value: z_q
    loss = discrete_loss("vqvae", beta=0.25)(model, x)[0]
    loss.backward()
    assert model.codebook.grad.abs().sum() > 0  # the codebook term moves the codebook
    assert encoder.weight.grad.abs().sum() > 0  # straight-through + commitment reach the encoder


def test_vq_vae_ema_moves_used_codes_towards_their_vectors():
    encoder, decoder = _pair(M * 2)
    model = VQVAE(encoder, decoder, M, 2, 5, ema=True, decay=0.5).train()
    x = torch.randn(256, D, generator=torch.Generator().manual_seed(5))
    before = model.codebook.clone()
    with torch.no_grad():
        z_e = model._vectors(x)
        idx, _ = model.quantise(z_e)
        used = idx.flatten().unique()
        means = torch.stack([z_e.reshape(-1, 2)[idx.flatten() == c].mean(0) for c in used])
        model(x)  # one EMA update from these assignments
    gap_before = (before[used] - means).norm(dim=1)
    gap_after = (model.codebook[used] - means).norm(dim=1)
    assert (gap_after < gap_before).all()  # each used code moved towards its vectors' mean
    assert not any(p is model.codebook for p in model.parameters())  # a buffer, no gradient
    model.eval()
    frozen = model.codebook.clone()
    with torch.no_grad():
        model(x)
    assert torch.equal(model.codebook, frozen)  # evaluation leaves the codebook alone


@pytest.mark.parametrize("kind,make", [
    ("categorical_vae", lambda: CategoricalVAE(*_pair(M * K), M, K)),
    ("discrete_rae", lambda: DiscreteRAE(*_pair(M * K), M, K)),
    ("vqvae", lambda: VQVAE(*_pair(M * 2), M, 2, 8)),
])
def test_each_model_trains_through_the_package_loop(kind, make):
    x = torch.randn(256, D, generator=torch.Generator().manual_seed(6))
    weights = {"beta": 0.25} if kind == "vqvae" else {"beta": 0.01}
    if kind == "discrete_rae":
        weights.update(decoder="l2", lam=1e-3)
    history = train(make(), discrete_loss(kind, **weights), x,
                    TrainConfig(epochs=15, batch_size=64, lr=1e-2, progress=False))
    assert history[-1]["reconstruction"] < 0.8 * history[0]["reconstruction"]
    assert {"reconstruction", "latent", "decoder"} <= set(history[-1])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown discrete objective"):
        discrete_loss("gumbel")
    with pytest.raises(ValueError, match="decoder must be"):
        discrete_loss("discrete_rae", decoder="sn")
    with pytest.raises(ValueError, match="m >= 1"):
        DiscreteRAE(*_pair(4), 1, 1)
    with pytest.raises(ValueError, match="expected"):
        DiscreteRAE(*_pair(5), M, K)(torch.randn(2, D))


# ------------------------------------------------------------- ex-post densities on discrete codes


def _mixture_codes(n: int, seed: int) -> torch.Tensor:
    """Codes of 5 variables x 4 classes from 2 well-separated product distributions."""
    from balance.discrete_density import indices_to_codes

    g = torch.Generator().manual_seed(seed)
    probs = torch.tensor([[[0.85, 0.05, 0.05, 0.05]] * 5, [[0.05, 0.05, 0.05, 0.85]] * 5])
    comp = torch.multinomial(torch.tensor([0.3, 0.7]), n, replacement=True, generator=g)
    idx = torch.multinomial(probs[comp].reshape(-1, 4), 1, generator=g).view(n, 5)
    return indices_to_codes(idx, 4)


def test_discrete_densities_sample_their_fitted_marginals():
    from itertools import product as every

    from balance.discrete_density import (
        AutoregressivePrior,
        CategoricalMixture,
        ProductOfCategoricals,
        indices_to_codes,
    )

    codes = _mixture_codes(4000, 0)
    grid = indices_to_codes(torch.tensor(list(every(range(4), repeat=5))), 4)  # all 4^5 codes
    for est in (ProductOfCategoricals(5, 4), CategoricalMixture(5, 4, components=2),
                AutoregressivePrior(5, 4, hidden=(64,), epochs=50, lr=1e-2)):
        est.fit(codes)
        # the fitted law's own marginals, by enumeration: sum_y q(y) [y_i = c]
        q = est.log_prob(grid).exp().double()
        fitted = (q[:, None] * grid.double()).sum(0).view(5, 4)
        samples = est.sample(20000, generator=torch.Generator().manual_seed(1))
        assert samples.shape == (20000, 20)
        sampled = samples.view(-1, 5, 4).double().mean(0)
        se = (fitted * (1 - fitted) / 20000).sqrt()  # Monte-Carlo error of a frequency
        assert ((sampled - fitted).abs() <= 5 * se + 1e-9).all(), type(est).__name__
        a = est.sample(5, generator=torch.Generator().manual_seed(2))
        assert torch.equal(a, est.sample(5, generator=torch.Generator().manual_seed(2)))


def test_the_mixture_and_the_autoregressive_prior_capture_dependence_the_product_cannot():
    from balance.discrete_density import (
        AutoregressivePrior,
        CategoricalMixture,
        ProductOfCategoricals,
    )

    train, held_out = _mixture_codes(4000, 0), _mixture_codes(2000, 1)
    product = ProductOfCategoricals(5, 4).fit(train)
    mixture = CategoricalMixture(5, 4, components=2).fit(train)
    made = AutoregressivePrior(5, 4, hidden=(64,), epochs=50, lr=1e-2).fit(train)
    for est in (mixture, made):
        gain = est.log_prob(held_out) - product.log_prob(held_out)  # nats per code
        assert float(gain.mean()) > 10 * float(gain.std() / math.sqrt(len(gain)))
    assert sorted(mixture.weights.tolist()) == pytest.approx([0.3, 0.7], abs=0.03)
    # every one is normalised: the probabilities of all 4^5 codes sum to 1
    from itertools import product as every

    from balance.discrete_density import indices_to_codes

    grid = indices_to_codes(torch.tensor(list(every(range(4), repeat=5))), 4)
    for est in (product, mixture, made):
        assert float(est.log_prob(grid).exp().sum()) == pytest.approx(1.0, abs=1e-6)


def test_discrete_densities_refuse_codes_that_are_not_one_hot():
    from balance.discrete_density import ProductOfCategoricals

    with pytest.raises(ValueError, match="one-hot"):
        ProductOfCategoricals(2, 3).fit(torch.rand(4, 6))
    with pytest.raises(ValueError, match=r"\[N, 6\]"):
        ProductOfCategoricals(2, 3).fit(torch.zeros(4, 5))
