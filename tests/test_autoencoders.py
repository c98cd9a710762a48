"""Autoencoder variants (balance.models.autoencoder) and their objectives
(balance.objectives.autoencoders): every regularizer must act, and must vanish with its weight."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from balance.models.autoencoder import AEConfig, Autoencoder, has_spectral_norm
from balance.models.conv import conv_pair
from balance.objectives.autoencoders import (
    AEObjectiveConfig,
    autoencoder_terms,
    decoder_weight_norm,
    gradient_penalty,
    make_loss_fn,
    reconstruction_cost,
    wae_mmd,
)


def small_ae(config: AEConfig | None = None, head: str = "deterministic", latent: int = 4):
    enc, dec = conv_pair(resolution=16, base_filters=2, latent_dim=latent, head=head)
    return Autoencoder(enc, dec, config or AEConfig())


def batch(n: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16)


def operator_norm(layer: nn.Module) -> float:
    """Largest singular value of the layer's (normalised) weight reshaped as spectral_norm does:
    output channels first (dim 0; dim 1 for transposed convolutions)."""
    w = layer.weight.detach()
    if isinstance(layer, nn.ConvTranspose2d):
        w = w.transpose(0, 1)
    return float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2))


# ----------------------------------------------------------------------------- model variants


def test_spectral_norm_layers_have_unit_norm():
    model = small_ae(AEConfig(spectral_norm="decoder"))
    types = (nn.Linear, nn.ConvTranspose2d, nn.Conv2d)
    layers = [m for m in model.decoder.modules() if isinstance(m, types)]
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert all(any(isinstance(m, t) for m in layers) for t in types)
    assert not has_spectral_norm(model.encoder)
    model.train()
    with torch.no_grad():
        for _ in range(30):  # one power iteration per training-mode forward
            model(batch(2))
    for layer in layers:
        raw = layer.parametrizations.weight.original.detach()
        if isinstance(layer, nn.ConvTranspose2d):
            raw = raw.transpose(0, 1)
        raw_norm = float(torch.linalg.matrix_norm(raw.reshape(raw.shape[0], -1), ord=2))
        # Power iteration converges geometrically; 30 steps on these small matrices reach
        # well below 1e-2 (observed < 1e-4). The raw weights are far from norm 1.
        assert operator_norm(layer) == pytest.approx(1.0, abs=1e-2)
        assert abs(raw_norm - 1.0) > 0.05


def test_spectral_norm_all_also_wraps_encoder():
    model = small_ae(AEConfig(spectral_norm="all"))
    assert has_spectral_norm(model.encoder) and has_spectral_norm(model.decoder)


def test_frozen_latent_layer_does_not_move():
    for frozen in (True, False):
        torch.manual_seed(0)
        model = small_ae(AEConfig(freeze_latent=frozen))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        loss, _ = make_loss_fn(AEObjectiveConfig(kind="ae"))(model, batch())
        loss.backward()
        opt.step()
        after = dict(model.named_parameters())
        latent_moved = not torch.equal(before["encoder.latent_layer.weight"],
                                       after["encoder.latent_layer.weight"])
        assert latent_moved is not frozen
        assert not torch.equal(before["encoder.body.0.weight"], after["encoder.body.0.weight"])
        assert not torch.equal(before["decoder.input_layer.weight"],
                               after["decoder.input_layer.weight"])


def test_decoder_noise_only_in_train_mode():
    std = 0.5
    model = small_ae(AEConfig(decoder_noise_std=std), latent=16)
    x = batch(64)
    model.train()
    out = model(x, generator=torch.Generator().manual_seed(1))
    noise = (out.z_dec - out.z).detach()
    # 1024 N(0, std^2) draws: the sample std has s.e. ~ std / sqrt(2 * 1024) = 0.011.
    assert noise.std().item() == pytest.approx(std, abs=0.05)
    assert noise.mean().abs().item() < 0.1  # s.e. 0.016
    model.eval()
    out = model(x)
    assert torch.equal(out.z_dec, out.z)
    torch.testing.assert_close(out.x_hat, model(x).x_hat, rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["bn", "ln"])
def test_latent_normalisation_statistics(norm):
    model = small_ae(AEConfig(latent_norm=norm), latent=6).train()
    with torch.no_grad():
        # Codes far from standardised without the normaliser (shifted and spread).
        model.encoder.latent_layer.bias.copy_(torch.linspace(-3.0, 5.0, 6))
        mu, _ = model.encode(batch(32))
    dim = 0 if norm == "bn" else 1  # BN: over the batch per coordinate; LN: over coordinates
    torch.testing.assert_close(mu.mean(dim), torch.zeros(mu.shape[1 - dim]), atol=1e-5, rtol=0)
    # Normalisers divide by sqrt(var + 1e-5): biased variance 1 up to that epsilon.
    torch.testing.assert_close(mu.var(dim, unbiased=False), torch.ones(mu.shape[1 - dim]),
                               atol=1e-3, rtol=0)


def test_latent_spectral_norm():
    model = small_ae(AEConfig(latent_norm="sn"))
    with torch.no_grad():
        for _ in range(30):
            model(batch(2))
    assert operator_norm(model.encoder.latent_layer) == pytest.approx(1.0, abs=1e-2)
    assert not has_spectral_norm(model.decoder)


def test_stochastic_heads_sample_in_train_and_use_mean_in_eval():
    model = small_ae(head="gaussian")
    x = batch(4)
    out = model.train()(x)
    assert out.logvar_z is not None and not torch.equal(out.z, out.mu_z)
    out = model.eval()(x)
    assert torch.equal(out.z, out.mu_z)
    cv = small_ae(head="fixed_variance", latent=32).train()
    out = cv(batch(32))
    eps = (out.z - out.mu_z) / 0.7
    assert eps.std().item() == pytest.approx(1.0, abs=0.06)  # 1024 draws, s.e. 0.022


def test_bad_model_configs():
    with pytest.raises(ValueError):
        AEConfig(latent_norm="gn")
    with pytest.raises(ValueError):
        AEConfig(decoder_noise_std=-1)
    enc = nn.Sequential(nn.Flatten(), nn.Linear(256, 4))
    with pytest.raises(ValueError, match="latent_layer"):
        Autoencoder(enc, nn.Linear(4, 256), AEConfig(freeze_latent=True))


# ----------------------------------------------------------------------------- objectives


def test_reconstruction_costs_match_formulas():
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    x_hat = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 0.98 + 0.01
    sq = ((x - x_hat) ** 2).sum((1, 2, 3))
    torch.testing.assert_close(reconstruction_cost(x, x_hat, "mse"), sq)
    bce = -(x * x_hat.log() + (1 - x) * (1 - x_hat).log()).sum((1, 2, 3))
    torch.testing.assert_close(reconstruction_cost(x, x_hat, "bce"), bce)
    gamma = 0.3
    nll = sq / (2 * gamma) + 8 * math.log(2 * math.pi * gamma)
    torch.testing.assert_close(reconstruction_cost(x, x_hat, "gaussian", gamma), nll)


def tiny_decoder() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 6)).double()


def exact_jacobians(decoder: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Per-sample Jacobians [B, D, k] by torch.autograd.functional.jacobian."""
    return torch.stack(
        [torch.autograd.functional.jacobian(decoder, zi, create_graph=True) for zi in z]
    )


def test_gradient_penalty_exact_and_official_match_the_jacobian():
    decoder = tiny_decoder()
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    x_hat = decoder(z)
    jac = exact_jacobians(decoder, z.detach())
    frob = jac.pow(2).sum((1, 2))
    # float64 identities: agreement to rounding error.
    gp = gradient_penalty(x_hat, z, estimator="exact")
    torch.testing.assert_close(gp, frob, rtol=1e-10, atol=1e-12)
    official = (2 * torch.einsum("bdk,bd->bk", jac, x_hat.detach())).pow(2).sum(1)
    torch.testing.assert_close(gradient_penalty(x_hat, z, estimator="official"), official,
                               rtol=1e-10, atol=1e-12)
    # The penalty is differentiable in the decoder's parameters and its gradient is the
    # gradient of the exact Frobenius norm.
    params = [decoder[0].weight, decoder[0].bias, decoder[2].weight]  # J ignores the last bias
    g_est = torch.autograd.grad(gp.sum(), params)
    g_ref = torch.autograd.grad(frob.sum(), params)
    for a, b in zip(g_est, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_gradient_penalty_hutchinson_is_unbiased():
    decoder = tiny_decoder()
    z = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    x_hat = decoder(z)
    jac = exact_jacobians(decoder, z.detach()).detach()
    jjt = jac @ jac.transpose(1, 2)
    frob = jjt.diagonal(dim1=1, dim2=2).sum(1)
    n = 4000
    est = gradient_penalty(x_hat, z, estimator="hutchinson", n_probes=n,
                           generator=torch.Generator().manual_seed(0))
    # Var ||J^T v||^2 = 2 tr((J J^T)^2) for v ~ N(0, I): 5 Monte-Carlo standard errors.
    se = (2 * (jjt @ jjt).diagonal(dim1=1, dim2=2).sum(1) / n).sqrt()
    assert ((est.detach() - frob).abs() < 5 * se).all()
    assert (se < 0.1 * frob).all()  # the check is tight enough to catch a wrong scale


def test_gradient_penalty_on_conv_decoder_eval_mode():
    enc, dec = conv_pair(resolution=16, base_filters=2, latent_dim=3)
    dec = dec.double().eval()
    z = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    # Jacobian columns J e_j by central differences in float64, independent of autograd
    # (forward-mode AD would be the exact alternative, but it loads TorchScript decompositions
    # that warn in this torch version): truncation O(h^2) ~ 1e-10, rounding ~ 1e-16 / h.
    h = 1e-5
    cols = []
    with torch.no_grad():
        for j in range(3):
            step = torch.zeros(2, 3, dtype=torch.float64)
            step[:, j] = h
            diff = dec(z.detach() + step) - dec(z.detach() - step)
            cols.append(diff.flatten(1) / (2 * h))
    jac = torch.stack(cols, dim=2)  # [B, D, k]
    frob = jac.pow(2).flatten(1).sum(1)
    torch.testing.assert_close(gradient_penalty(dec(z), z, estimator="exact"), frob,
                               rtol=1e-7, atol=1e-12)


def grads(model, config, x, seed=0):
    """Parameter gradient of the loss from a fixed state (spectral norm's power iteration and
    BN statistics are buffers that every training-mode forward updates) and fixed noise."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.zero_grad()
    loss_fn = make_loss_fn(config, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    loss, logs = loss_fn(model, (x, torch.zeros(len(x))))
    loss.backward()
    model.load_state_dict(state)
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]), logs


CASES = [
    ("rae", "beta", "deterministic", AEConfig()),
    ("rae_l2", "lam", "deterministic", AEConfig()),
    ("rae_gp", "lam", "deterministic", AEConfig()),
    ("rae_sn", "beta", "deterministic", AEConfig(spectral_norm="decoder")),
    ("cv_vae", "beta", "fixed_variance", AEConfig()),
    ("vae", "beta", "gaussian", AEConfig()),
    ("wae", "beta", "deterministic", AEConfig()),
]


@pytest.mark.parametrize("kind, weight, head, ae_config", CASES)
def test_each_term_responds_to_its_weight(kind, weight, head, ae_config):
    torch.manual_seed(0)
    model = small_ae(ae_config, head=head).double()
    x = batch(6).double()
    base = dict(kind=kind, reconstruction="bce", beta=0.0, lam=0.0)
    # The batch-norm decoder in training mode has no third derivatives: Hutchinson with the
    # same probes in every call (seeded generator) keeps the loss a fixed function of theta.
    estimator = {"gp_estimator": "hutchinson", "gp_probes": 2} if kind == "rae_gp" else {}
    g0, logs0 = grads(model, AEObjectiveConfig(**base, **estimator), x)
    g1, logs1 = grads(model, AEObjectiveConfig(**{**base, weight: 1.0}, **estimator), x)
    g2, _ = grads(model, AEObjectiveConfig(**{**base, weight: 2.0}, **estimator), x)
    # Zero weight: the term is absent, the gradient is the reconstruction's alone.
    g_ae, _ = grads(model, AEObjectiveConfig(kind="ae", reconstruction="bce"), x)
    torch.testing.assert_close(g0, g_ae, rtol=1e-12, atol=1e-12)
    term = "latent" if weight == "beta" else "decoder"
    assert float(logs0[term]) == 0.0 and float(logs1[term]) > 0.0
    # Non-zero weight: the gradient moves, linearly in the weight (float64 rounding).
    assert (g1 - g0).norm() > 1e-6 * g0.norm()
    torch.testing.assert_close(g2 - g0, 2 * (g1 - g0), rtol=1e-7, atol=1e-10)


def test_ae_kind_ignores_weights_and_terms_loss():
    model = small_ae()
    x = batch(4)
    out = model(x)
    terms = autoencoder_terms(x, out, AEObjectiveConfig(kind="ae", beta=5.0, lam=5.0))
    torch.testing.assert_close(terms.loss(), terms.rec.mean())
    terms = autoencoder_terms(x, out, AEObjectiveConfig(kind="rae", beta=0.5))
    torch.testing.assert_close(terms.loss(), (terms.rec + 0.25 * out.z.pow(2).sum(1)).mean())


def test_decoder_weight_norm_counts_weights_not_biases():
    dec = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    expected = dec[0].weight.pow(2).sum() + dec[2].weight.pow(2).sum()
    torch.testing.assert_close(decoder_weight_norm(dec), expected)
    gru = nn.ModuleDict({"rnn": nn.GRU(3, 4, num_layers=2), "norm": nn.LayerNorm(4),
                         "out": nn.Conv1d(4, 2, 3)})
    rnn_weights = [gru["rnn"].weight_ih_l0, gru["rnn"].weight_hh_l0,
                   gru["rnn"].weight_ih_l1, gru["rnn"].weight_hh_l1]
    expected = sum(w.pow(2).sum() for w in (*rnn_weights, gru["out"].weight))
    torch.testing.assert_close(decoder_weight_norm(gru), expected)
    with pytest.raises(ValueError, match="no Linear"):
        decoder_weight_norm(nn.Sequential(nn.ReLU()))


def test_objective_guards():
    with pytest.raises(ValueError):
        AEObjectiveConfig(kind="beta_vae")
    with pytest.raises(ValueError):
        AEObjectiveConfig(beta=-1.0)
    model = small_ae()
    with pytest.raises(ValueError, match="spectral_norm"):
        make_loss_fn(AEObjectiveConfig(kind="rae_sn", beta=1.0))(model, batch(2))
    with pytest.raises(ValueError, match="mu, logvar"):
        make_loss_fn(AEObjectiveConfig(kind="vae", beta=1.0))(model, batch(2))
    with pytest.raises(ValueError, match="require grad"):
        gradient_penalty(torch.zeros(2, 3), torch.zeros(2, 1))


def test_wae_mmd_detects_a_mismatched_code_distribution():
    gen = torch.Generator().manual_seed(0)
    k = 4
    matched = torch.randn(256, k, generator=gen, dtype=torch.float64)
    shifted = matched + 2.0
    m0 = wae_mmd(matched, generator=torch.Generator().manual_seed(1))
    m1 = wae_mmd(shifted, generator=torch.Generator().manual_seed(1))
    # Unbiased MMD^2 of equal distributions is ~0 (s.e. O(1/n)); a shift of 2 per coordinate is
    # far larger.
    assert abs(float(m0)) < 0.05 and float(m1) > 10 * max(abs(float(m0)), 1e-3)
