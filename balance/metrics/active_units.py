"""Active latent units (Burda et al. 2015), the count of dimensions the encoder uses.

    A_k = Var_x( E_{q(z|x)}[z_k] ) = Var_x( mu_{z,k}(x) ),    unit k active iff A_k >= threshold

with the unbiased (N - 1) variance over the evaluation set and threshold 0.01, as in the
canonical code (jxhe/vae-lagging-encoder ``calc_au``). The statistic is on the posterior
*mean*, not on sampled z. Computed in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from balance.metrics.reconstruction import check_data, iter_batches, module_device

__all__ = ["active_units", "posterior_means"]


def active_units(mu_z: Tensor, threshold: float = 0.01) -> tuple[int, Tensor]:
    """``(count, variances)`` for posterior means ``mu_z [N, kappa]`` (N >= 2).

    ``variances`` (float64 ``[kappa]``) is the unbiased variance of each coordinate over the
    N samples; ``count`` the number with variance ``>= threshold``.
    """
    check_data(mu_z, "mu_z")
    if mu_z.dim() != 2:
        raise ValueError(f"mu_z must be [N, kappa], got shape {tuple(mu_z.shape)}")
    if mu_z.shape[0] < 2:
        raise ValueError("active_units needs at least 2 samples for a variance")
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    variances = mu_z.to(torch.float64).var(dim=0, correction=1)
    return int((variances >= threshold).sum()), variances


@torch.no_grad()
def posterior_means(model: nn.Module, x: Tensor, *, batch_size: int = 1000) -> Tensor:
    """``mu_z(x)`` for every sample, ``[N, kappa]`` on ``x``'s device, computed in batches.

    ``model`` is a VAE with ``encode(x) -> (mu, logvar)`` or an encoder returning
    ``(mu, logvar)`` itself; batches run on the model's device.
    """
    check_data(x)
    encode = getattr(model, "encode", model)
    device = module_device(model)
    means = []
    for xb in iter_batches(x, batch_size):
        mu, _ = encode(xb.to(device))
        means.append(mu.to(x.device))
    return torch.cat(means)
