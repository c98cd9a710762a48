"""balance.models.registry: specs, builders, the four decoder arms, gamma's own lr."""

from __future__ import annotations

import pytest
import torch

from balance.models.registry import ARMS, ConvSpec, MLPVAESpec, build
from balance.models.vae import GammaConfig
from balance.train import TrainConfig, parameter_groups, train


@pytest.mark.parametrize("arm", ARMS)
def test_arms_separate_the_residual_blocks_from_the_affine_skip(arm):
    model = build(MLPVAESpec(latent_dim=4, width=8, encoder_depth=2, decoder_blocks=3, arm=arm),
                  (6,))
    dec = model.decoder.config
    assert dec.residual == arm.startswith("residual")
    assert (model.decoder.skip is not None) == (arm in ("residual_affine", "affine"))
    assert dec.n_linear_layers == 8  # 3 blocks of 2 + input + output, or as many plain layers


def test_build_is_a_function_of_spec_shape_and_seed():
    spec = MLPVAESpec(latent_dim=3, width=8, encoder_depth=1, decoder_blocks=1)
    a, b, c = build(spec, (5,), 1), build(spec, (5,), 1), build(spec, (5,), 2)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(),
                                                         strict=True))
    with pytest.raises(TypeError, match="no builder"):
        build(object(), (5,))
    with pytest.raises(ValueError, match="unknown arm"):
        MLPVAESpec(latent_dim=3, arm="skip")
    with pytest.raises(ValueError, match="gaussian"):
        ConvSpec(gamma=GammaConfig())


def test_gamma_lr_reaches_the_optimizer_as_its_own_group():
    spec = MLPVAESpec(latent_dim=2, width=4, encoder_depth=1, decoder_blocks=1,
                      gamma=GammaConfig(lr=0.1))
    model = build(spec, (3,))
    groups = parameter_groups(model)
    assert len(groups) == 2 and groups[1]["lr"] == 0.1
    assert groups[1]["params"] == [model.raw_log_gamma]
    before = float(model.raw_log_gamma.detach())

    def loss_fn(m, x):  # pushes gamma only: Adam's first step moves it by about its lr
        return (m.raw_log_gamma - 5.0).square(), {}

    train(model, loss_fn, torch.zeros(1, 3), TrainConfig(epochs=1, batch_size=1, lr=1e-4,
                                                         progress=False))
    assert abs(float(model.raw_log_gamma.detach()) - before) == pytest.approx(0.1, rel=1e-3)
    fixed = build(MLPVAESpec(latent_dim=2, width=4, encoder_depth=1, decoder_blocks=1,
                             gamma=GammaConfig(lr=0.1, learnable=False)), (3,))
    assert len(parameter_groups(fixed)) == 1  # a fixed gamma is a buffer: no group
