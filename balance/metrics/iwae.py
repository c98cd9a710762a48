"""Importance-weighted negative log-likelihood (Burda et al. 2015) of a Gaussian VAE.

    log p(x) >= L_k(x) = E[ log (1/k) sum_{s=1}^k w_s ],   w_s = p(x | z_s) p(z_s) / q(z_s | x),
    z_s ~ q(z | x) i.i.d.,

with ``p(x | z) = N(mu_x(z), gamma I)`` at the model's current (learned) gamma. ``L_1`` is the
ELBO, ``L_k`` increases with k and tends to ``log p(x)``. The NLL estimate is ``-L_k(x)`` in nats
per image (continuous data: a density, so it may be negative). The k samples are drawn and
decoded in chunks of samples (batched), the log-weights combined with a float64 logsumexp.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from balance.density import (
    diag_gaussian_log_prob,
    gaussian_log_prob_isotropic,
    standard_normal_log_prob,
)
from balance.metrics.reconstruction import check_data, iter_batches, module_device

__all__ = ["iwae_log_weights", "iwae_nll"]

# Decoder elements (samples x images x pixels) per chunk: bounds memory at ~ 4M floats.
_CHUNK_ELEMENTS = 1 << 22


@torch.no_grad()
def iwae_log_weights(
    model: nn.Module,
    x: Tensor,
    k: int,
    *,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """Log importance weights ``log w_s(x_i)``, ``[k, B]``, for one batch ``x [B, ...]``.

    ``model`` has ``encode``, ``decode`` and ``log_gamma()`` (a
    :class:`balance.models.vae.GaussianVAE`); ``x`` must be on the model's device. Noise
    ``eps ~ N(0, I)`` (``z_s = mu + sigma * eps_s``) is drawn chunk by chunk on ``generator``'s
    device (CPU by default) and moved, so results do not depend on where the model runs; or it
    is given as ``noise [k, B, kappa]``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    log_gamma = model.log_gamma()
    b, kappa = mu.shape
    d = x[0].numel()
    if noise is not None and noise.shape != (k, b, kappa):
        raise ValueError(f"noise must be [k, B, kappa] = {(k, b, kappa)}, got {tuple(noise.shape)}")
    chunk = max(1, min(k, _CHUNK_ELEMENTS // max(1, b * d)))
    noise_device = generator.device if generator is not None else torch.device("cpu")
    out = []
    for start in range(0, k, chunk):
        s = min(chunk, k - start)
        if noise is None:
            eps = torch.randn(
                (s, b, kappa), generator=generator, device=noise_device, dtype=mu.dtype
            )
        else:
            eps = noise[start : start + s]
        z = (mu + std * eps.to(mu.device)).reshape(s * b, kappa)
        x_hat = model.decode(z)
        x_rep = x.unsqueeze(0).expand(s, *x.shape).reshape(s * b, *x.shape[1:])
        log_px = gaussian_log_prob_isotropic(x_rep, x_hat, log_gamma)
        log_pz = standard_normal_log_prob(z)
        log_qz = diag_gaussian_log_prob(
            z,
            mu.unsqueeze(0).expand(s, b, kappa).reshape(s * b, kappa),
            logvar.unsqueeze(0).expand(s, b, kappa).reshape(s * b, kappa),
        )
        out.append((log_px + log_pz - log_qz).view(s, b))
    return torch.cat(out)


@torch.no_grad()
def iwae_nll(
    model: nn.Module,
    x: Tensor,
    k: int,
    *,
    generator: torch.Generator | None = None,
    batch_size: int = 100,
) -> Tensor:
    """IWAE estimate of ``-log p(x)`` with ``k`` importance samples, ``[N]`` float64, nats/image.

    Images are processed ``batch_size`` at a time on the model's device; the result is on the
    CPU. Its mean over a test set is the "NLL" of the kappa-sweep table.
    """
    check_data(x)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    device = module_device(model)
    nll = []
    for xb in iter_batches(x, batch_size):
        log_w = iwae_log_weights(model, xb.to(device), k, generator=generator)
        log_mean_w = torch.logsumexp(log_w.to(torch.float64), dim=0) - math.log(k)
        nll.append(-log_mean_w.cpu())
    return torch.cat(nll)
