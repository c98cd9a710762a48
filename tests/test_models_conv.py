"""Conv encoder/decoder family of Ghosh et al. / Daly et al. (balance.models.conv)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from balance.models.conv import (
    ConvDecoder,
    ConvDecoderConfig,
    ConvEncoder,
    ConvEncoderConfig,
    conv_pair,
    padded_resolution,
    stage_depths,
)


@pytest.mark.parametrize(
    "resolution, channels, kernel",
    [(28, 1, 4), (32, 3, 4), (64, 3, 5), (128, 3, 5), (28, 1, 5), (64, 1, 4)],
)
def test_shapes_for_paper_resolutions(resolution, channels, kernel):
    enc, dec = conv_pair(
        in_channels=channels, resolution=resolution, latent_dim=7, base_filters=4,
        kernel_size=kernel,
    )
    x = torch.rand(2, channels, resolution, resolution)
    z = enc(x)
    assert z.shape == (2, 7)
    x_hat = dec(z)
    assert x_hat.shape == x.shape
    # Sigmoid output: means in the data range [0, 1].
    assert x_hat.min() >= 0 and x_hat.max() <= 1
    # Four stride-2 stages: the encoder works at P / 16 before the latent layer.
    side = padded_resolution(resolution) // 16
    assert enc.features(x).shape == (2, 4 * 8 * side * side)


def test_stages_halve_the_side_and_double_the_filters():
    enc = ConvEncoder(ConvEncoderConfig(in_channels=1, resolution=32, base_filters=32))
    convs = [m for m in enc.body if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    assert all(c.stride == (2, 2) and c.kernel_size == (4, 4) for c in convs)
    sides = []
    h = torch.zeros(1, 1, 32, 32)
    for m in enc.body:
        h = m(h) if not isinstance(m, nn.BatchNorm2d) else h
        if isinstance(m, nn.Conv2d):
            sides.append(h.shape[-1])
    assert sides == [16, 8, 4, 2]


@pytest.mark.parametrize("depth, n_convs", [(1, 4), (2, 8), (3, 12), ((3, 3, 2, 1), 9)])
def test_depth_multiplier_adds_stride_one_convs(depth, n_convs):
    enc, dec = conv_pair(resolution=32, base_filters=2, depth=depth, latent_dim=3)
    enc_convs = [m for m in enc.body if isinstance(m, nn.Conv2d)]
    assert len(enc_convs) == n_convs
    assert sum(c.stride == (2, 2) for c in enc_convs) == 4
    # Decoder: 4 transposed convs, the same extra stride-1 convs, and the output conv.
    dec_t = [m for m in dec.body if isinstance(m, nn.ConvTranspose2d)]
    dec_c = [m for m in dec.body if isinstance(m, nn.Conv2d)]
    assert len(dec_t) == 4 and len(dec_c) == n_convs - 4 + 1
    assert dec(enc(torch.rand(2, 1, 32, 32))).shape == (2, 1, 32, 32)


def test_depth_list_is_stored_as_tuple_and_mirrored():
    cfg = ConvDecoderConfig(resolution=32, base_filters=2, depth=[3, 1, 1, 2])
    assert cfg.depth == (3, 1, 1, 2)
    dec = ConvDecoder(cfg)
    # Stage j of the decoder mirrors encoder stage 3 - j: the first decoder stage has depth 2.
    kinds = [type(m) for m in dec.body if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    t_at = [i for i, k in enumerate(kinds) if k is nn.ConvTranspose2d]
    extra_per_stage = [b - a - 1 for a, b in zip(t_at, t_at[1:] + [len(kinds) - 1], strict=True)]
    assert extra_per_stage == [1, 0, 0, 2]


def test_heads():
    x = torch.rand(5, 1, 28, 28)
    enc = ConvEncoder(ConvEncoderConfig(base_filters=2, latent_dim=3, head="gaussian",
                                        logvar_bound=1.0))
    with torch.no_grad():
        enc.logvar_layer.bias.fill_(100.0)  # far past the bound
    mu, logvar = enc(x)
    assert mu.shape == logvar.shape == (5, 3)
    assert logvar.max() <= 1.0 and logvar.min() > 0.99
    enc = ConvEncoder(ConvEncoderConfig(base_filters=2, latent_dim=3, head="fixed_variance",
                                        fixed_std=0.7))
    mu, logvar = enc(x)
    torch.testing.assert_close(logvar, torch.full_like(mu, 2 * math.log(0.7)))
    assert enc.logvar_layer is None


def test_linear_output_is_unbounded():
    dec = ConvDecoder(ConvDecoderConfig(base_filters=2, latent_dim=3, output="linear"))
    x_hat = dec(10 * torch.randn(8, 3))
    assert x_hat.min() < 0 or x_hat.max() > 1


def test_bad_configs_and_inputs():
    with pytest.raises(ValueError):
        stage_depths((1, 2, 3))
    with pytest.raises(ValueError):
        stage_depths(0)
    with pytest.raises(ValueError):
        ConvEncoderConfig(head="bogus")
    with pytest.raises(ValueError):
        ConvDecoderConfig(output="tanh")
    enc, dec = conv_pair(resolution=32, base_filters=2, latent_dim=3)
    with pytest.raises(ValueError, match="side"):
        enc(torch.rand(1, 1, 28, 28))
    with pytest.raises(ValueError):
        enc(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError):
        dec(torch.rand(1, 4))
