"""MLP encoders/decoders (plain, residual, affine skip) and the Gaussian VAE module."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from balance.models.mlp import MLPDecoder, MLPDecoderConfig, MLPEncoder, MLPEncoderConfig
from balance.models.output import ModelOutput
from balance.models.vae import GammaConfig, GaussianVAE, affine_gaussian_vae

F64 = torch.float64
SHAPE = (1, 4, 5)  # a small "image": d = 20


def _n_linear(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Linear) for m in module.modules())


def _decoder(**kw) -> MLPDecoder:
    cfg = dict(data_shape=SHAPE, latent_dim=3, width=8, depth=2)
    cfg.update(kw)
    return MLPDecoder(MLPDecoderConfig(**cfg)).double()


def test_paper_presets_have_the_stated_depths():
    enc = MLPEncoder(MLPEncoderConfig.paper((1, 28, 28), 50))
    # 6-layer encoder: five hidden layers and the output layer (mu and logvar heads).
    assert _n_linear(enc.body) + 1 == 6
    dec = MLPDecoder(MLPDecoderConfig.paper((1, 28, 28), 50))
    residual_blocks = [m for m in dec.hidden if m.__class__.__name__ == "_ResidualBlock"]
    assert len(residual_blocks) == 3
    assert all(_n_linear(b) == 2 for b in residual_blocks)
    assert dec.skip is not None and dec.skip.weight.shape == (784, 50)
    assert dec.config.n_linear_layers == _n_linear(dec) - 1  # the skip is not part of f
    assert MLPDecoder(MLPDecoderConfig.paper((1, 28, 28), 50, affine_skip=False)).skip is None


def test_shapes_round_trip_through_encoder_and_decoder():
    enc = MLPEncoder(MLPEncoderConfig(SHAPE, 3, width=8, depth=2))
    x = torch.randn(6, *SHAPE)
    mu, logvar = enc(x)
    assert mu.shape == logvar.shape == (6, 3)
    for residual in (False, True):
        dec = MLPDecoder(MLPDecoderConfig(SHAPE, 3, width=8, depth=2, residual=residual))
        assert dec(mu).shape == (6, *SHAPE)


def test_depth_zero_decoder_is_affine():
    dec = _decoder(depth=0, affine_skip=False)
    z = torch.randn(4, 3, dtype=F64)
    expected = z @ dec.output.weight.T + dec.output.bias
    torch.testing.assert_close(dec(z).flatten(1), expected, rtol=1e-14, atol=1e-14)
    assert dec.first_layer is dec.output


@pytest.mark.parametrize("residual", [False, True])
def test_affine_skip_adds_exactly_W_x_z(residual):
    dec = _decoder(residual=residual, affine_skip=True)
    z = torch.randn(5, 3, dtype=F64)
    with_skip = dec(z).flatten(1)
    with torch.no_grad():
        dec.skip.weight.zero_()
    f_only = dec(z).flatten(1)
    w_x = _decoder(residual=residual, affine_skip=True).skip.weight  # any W_x
    with torch.no_grad():
        dec.skip.weight.copy_(w_x)
    torch.testing.assert_close(dec(z).flatten(1) - f_only, z @ w_x.T, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(with_skip, f_only)


def test_residual_blocks_are_identity_skips():
    # With each block's second layer zeroed, act(h + 0) = h for h = relu(...) >= 0, so the
    # residual decoder equals a plain one-hidden-layer decoder with the same outer layers.
    res = _decoder(residual=True, depth=3, affine_skip=False)
    plain = _decoder(residual=False, depth=1, affine_skip=False)
    with torch.no_grad():
        for block in res.hidden[2:]:
            block.inner[2].weight.zero_()
            block.inner[2].bias.zero_()
        plain.hidden[0].load_state_dict(res.hidden[0].state_dict())
        plain.output.load_state_dict(res.output.state_dict())
    z = torch.randn(7, 3, dtype=F64)
    torch.testing.assert_close(res(z), plain(z), rtol=0, atol=0)


@pytest.mark.parametrize("residual", [False, True])
def test_zero_first_layer_column_makes_output_ignore_that_coordinate(residual):
    dec = _decoder(residual=residual, depth=3, affine_skip=False)
    assert dec.first_layer.weight.shape == (8, 3)  # column j multiplies z_j
    with torch.no_grad():
        dec.first_layer.weight[:, 1] = 0.0
    z = torch.randn(4, 3, dtype=F64)
    z2 = z.clone()
    z2[:, 1] = torch.randn(4, dtype=F64) * 10
    assert torch.equal(dec(z), dec(z2))
    z3 = z.clone()
    z3[:, 0] += 1.0
    assert not torch.equal(dec(z), dec(z3))


def test_encoder_heads_give_coordinate_j_and_logvar_bound():
    enc = MLPEncoder(MLPEncoderConfig(SHAPE, 3, width=8, depth=2, logvar_bound=2.0)).double()
    with torch.no_grad():
        enc.mu_head.weight[2] = 0.0
        enc.mu_head.bias[2] = 0.0
        enc.logvar_head.weight.mul_(1e3)
    mu, logvar = enc(torch.randn(10, *SHAPE, dtype=F64))
    assert torch.equal(mu[:, 2], torch.zeros(10, dtype=F64))
    assert logvar.abs().max() <= 2.0 and logvar.abs().max() > 1.9  # tanh saturates to 1.0


def test_bad_inputs_raise_clear_errors():
    enc = MLPEncoder(MLPEncoderConfig(SHAPE, 3, width=8, depth=1))
    with pytest.raises(ValueError, match=r"shape \[B, 1, 4, 5\]"):
        enc(torch.randn(2, 1, 5, 4))
    dec = MLPDecoder(MLPDecoderConfig(SHAPE, 3, width=8, depth=1))
    with pytest.raises(ValueError, match=r"z of shape \[B, 3\]"):
        dec(torch.randn(2, 4))
    with pytest.raises(ValueError, match="activation"):
        MLPEncoderConfig(SHAPE, 3, activation="swishy")
    with pytest.raises(ValueError, match="latent_dim"):
        MLPDecoderConfig(SHAPE, 0)
    with pytest.raises(ValueError, match="data_shape"):
        MLPDecoderConfig((), 3)


def _vae(**gamma) -> GaussianVAE:
    enc = MLPEncoder(MLPEncoderConfig(SHAPE, 3, width=8, depth=1))
    dec = MLPDecoder(MLPDecoderConfig(SHAPE, 3, width=8, depth=1))
    model = GaussianVAE(enc, dec, GammaConfig(**gamma)).double()
    model.set_gamma(model.gamma_config.init)  # the init was rounded to float32 before .double()
    return model


def test_forward_reparameterises_with_explicit_noise():
    model = _vae()
    x = torch.randn(5, *SHAPE, dtype=F64)
    noise = torch.randn(5, 3, dtype=F64)
    out = model(x, noise)
    assert isinstance(out, ModelOutput)
    mu, logvar = model.encode(x)
    torch.testing.assert_close(out.z, mu + torch.exp(0.5 * logvar) * noise, rtol=0, atol=0)
    torch.testing.assert_close(out.x_hat, model.decode(out.z), rtol=0, atol=0)
    assert out.log_gamma.dim() == 0
    with pytest.raises(ValueError, match="noise must have the shape"):
        model(x, torch.randn(5, 2, dtype=F64))


def test_forward_and_sample_are_reproducible_with_a_generator():
    model = _vae()
    x = torch.randn(5, *SHAPE, dtype=F64)
    a = model(x, generator=torch.Generator().manual_seed(3)).z
    b = model(x, generator=torch.Generator().manual_seed(3)).z
    assert torch.equal(a, b)
    s1 = model.sample(4, generator=torch.Generator().manual_seed(1))
    s2 = model.sample(4, generator=torch.Generator().manual_seed(1))
    assert s1.shape == (4, *SHAPE) and s1.dtype == F64 and torch.equal(s1, s2)
    noisy = model.sample(4, generator=torch.Generator().manual_seed(1), add_noise=True)
    assert not torch.equal(noisy, s1)


def test_gamma_learnable_fixed_and_init():
    learn = _vae(init=0.25)
    assert isinstance(learn.raw_log_gamma, nn.Parameter)
    assert math.isclose(learn.gamma, 0.25, rel_tol=1e-12)
    fixed = _vae(init=0.25, learnable=False)
    assert "raw_log_gamma" not in dict(fixed.named_parameters())
    assert "raw_log_gamma" in dict(fixed.named_buffers())


def test_gamma_floor_smooth_and_clamp():
    smooth = _vae(init=1.0, gamma_min=1e-2)
    assert math.isclose(smooth.gamma, 1.0, rel_tol=1e-12)
    with torch.no_grad():
        smooth.raw_log_gamma.fill_(-50.0)
    # gamma = gamma_min + exp(raw): never below the floor, and still differentiable.
    assert math.isclose(smooth.gamma, 1e-2, rel_tol=1e-12)
    smooth.log_gamma().backward()
    assert smooth.raw_log_gamma.grad is not None and smooth.raw_log_gamma.grad > 0
    clamp = _vae(init=1.0, gamma_min=1e-2, floor="clamp")
    with torch.no_grad():
        clamp.raw_log_gamma.fill_(math.log(0.5))
    assert math.isclose(clamp.gamma, 0.5, rel_tol=1e-12)  # exact above the floor
    with torch.no_grad():
        clamp.raw_log_gamma.fill_(-50.0)
    assert math.isclose(clamp.gamma, 1e-2, rel_tol=1e-12)
    clamp.set_gamma(0.3)
    assert math.isclose(clamp.gamma, 0.3, rel_tol=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(init=0.0), "positive"),
        (dict(init=float("nan")), "positive"),
        (dict(init=1.0, gamma_min=2.0), "above the floor"),
        (dict(floor="hard"), "floor"),
    ],
)
def test_bad_gamma_configs_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GammaConfig(**kwargs)


def test_latent_dim_mismatch_raises():
    enc = MLPEncoder(MLPEncoderConfig(SHAPE, 3, width=8, depth=1))
    dec = MLPDecoder(MLPDecoderConfig(SHAPE, 3, width=8, depth=1))
    with pytest.raises(ValueError, match="latent_dim"):
        GaussianVAE(enc, dec, latent_dim=4)


def test_affine_gaussian_vae_holds_the_given_parameters():
    g = torch.Generator().manual_seed(0)
    d, k = 5, 2
    W_x, W_z = torch.randn(d, k, generator=g, dtype=F64), torch.randn(k, d, generator=g, dtype=F64)
    b_x, b_z = torch.randn(d, generator=g, dtype=F64), torch.randn(k, generator=g, dtype=F64)
    s2 = torch.tensor([0.3, 1.0], dtype=F64)
    model = affine_gaussian_vae(W_x, b_x, W_z, b_z, s2, 0.2)
    x = torch.randn(4, d, generator=g, dtype=F64)
    mu, logvar = model.encode(x)
    torch.testing.assert_close(mu, x @ W_z.T + b_z, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(logvar.exp(), s2.expand(4, k), rtol=1e-14, atol=0)
    torch.testing.assert_close(model.decode(mu), mu @ W_x.T + b_x, rtol=1e-14, atol=1e-14)
    assert model.gamma == pytest.approx(0.2, rel=1e-15)
