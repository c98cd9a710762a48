"""TrainConfig(precision="bf16"): the model's forward under bfloat16 autocast, the loss terms,
gamma and the parameters in float32 (run on the CPU here; meant for conv models on a GPU)."""

from __future__ import annotations

import pytest
import torch

from balance.models.registry import ConvSpec, build
from balance.models.vae import GammaConfig
from balance.objectives import loss
from balance.train import TrainConfig, train


def _vae() -> torch.nn.Module:
    spec = ConvSpec(latent_dim=4, base_filters=4, head="gaussian", gamma=GammaConfig(init=1.0))
    return build(spec, (1, 28, 28), seed=0)


def test_bf16_runs_the_forward_in_bfloat16_and_keeps_the_loss_in_float32():
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    elbo = loss("elbo")
    seen = {}

    def spy(model, batch):
        value, logs = elbo(model, batch)
        seen["loss"] = value.dtype
        seen["terms"] = {k: v.dtype for k, v in logs.items() if isinstance(v, torch.Tensor)}
        return value, logs

    dtypes = []
    model = _vae()
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    config = TrainConfig(epochs=1, batch_size=32, device="cpu", progress=False, precision="bf16")
    history = train(model, spy, x, config)
    assert dtypes and set(dtypes) == {torch.bfloat16}  # autocast was on in the forward
    assert seen["loss"] == torch.float32
    assert set(seen["terms"].values()) == {torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(v)) for k, v in history[0].items()
               if isinstance(v, float))

    reference = _vae()  # the same start in float32: close, but not the same numbers
    train(reference, elbo, x, TrainConfig(epochs=1, batch_size=32, device="cpu",
                                          progress=False))
    assert history[0]["loss"] == pytest.approx(
        train(_vae(), elbo, x, TrainConfig(epochs=1, batch_size=32, device="cpu",
                                           progress=False))[0]["loss"], rel=0.05)
    differs = any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                        reference.state_dict().values(),
                                                        strict=True))
    assert differs


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
