"""Gaussian log-densities and the Gaussian KL divergence, as pure functions on tensors.

Conventions used throughout the package:

- The first dimension is the batch; every function sums over all the other dimensions and
  returns a ``[B]`` tensor in nats (per sample / per image).
- ``gamma`` is the decoder *variance*: ``p(x | z) = N(x; mean, gamma I)`` (THEORY.md uses
  ``Sigma_x = gamma I``), passed as ``log_gamma``.
- ``logvar`` is the log of a diagonal variance, ``log sigma^2``.

The functions follow the dtype and device of their inputs and never draw random numbers.
They check shapes (a mismatch raises ``ValueError``) but not values: NaN propagates, as in
any arithmetic; the metrics and the experiment scripts check the data once at the edge.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "LOG_2PI",
    "diag_gaussian_log_prob",
    "gaussian_log_prob_isotropic",
    "kl_standard_normal",
    "squared_error",
    "standard_normal_log_prob",
]

LOG_2PI = math.log(2.0 * math.pi)


def _check_batched(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(
            f"{name} must have a batch dimension and at least one data dimension, "
            f"got shape {tuple(x.shape)}"
        )


def _check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    _check_batched(name_a, a)
    _check_batched(name_b, b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _sum_non_batch(x: Tensor) -> Tensor:
    return x.flatten(start_dim=1).sum(dim=1)


def squared_error(x: Tensor, mean: Tensor) -> Tensor:
    """Squared error per sample, ``||x - mean||^2`` summed over all non-batch dims.

    Shapes: ``x``, ``mean`` ``[B, ...]`` (equal) -> ``[B]``, in squared data units per image.
    """
    _check_same_shape("x", x, "mean", mean)
    return _sum_non_batch((x - mean).square())


def _as_log_gamma(log_gamma: Tensor | float, x: Tensor) -> Tensor:
    log_gamma = torch.as_tensor(log_gamma, dtype=x.dtype, device=x.device)
    try:
        torch.broadcast_shapes(log_gamma.shape, x.shape)
    except RuntimeError as err:
        raise ValueError(
            f"log_gamma of shape {tuple(log_gamma.shape)} does not broadcast to x of shape "
            f"{tuple(x.shape)}; use a scalar or a tensor broadcastable to x"
        ) from err
    return log_gamma


def gaussian_log_prob_isotropic(x: Tensor, mean: Tensor, log_gamma: Tensor | float) -> Tensor:
    """``log N(x; mean, gamma I)`` per sample, with ``gamma`` a variance.

        log p = -||x - mean||^2 / (2 gamma) - (d / 2) log(2 pi gamma),

    with ``d`` the number of elements of one sample.

    Shapes: ``x``, ``mean`` ``[B, ...]``; ``log_gamma`` a scalar (the usual case) or a tensor
    broadcastable to ``x`` (e.g. per sample ``[B, 1, ...]``, or per element). Returns ``[B]``
    in nats per sample.
    """
    _check_same_shape("x", x, "mean", mean)
    log_gamma = _as_log_gamma(log_gamma, x)
    if log_gamma.dim() == 0:
        # Scalar gamma (the model's case): one exp instead of one per element.
        d = x[0].numel()
        sq = _sum_non_batch((x - mean).square())
        return -0.5 * sq * torch.exp(-log_gamma) - 0.5 * d * (LOG_2PI + log_gamma)
    elementwise = (x - mean).square() * torch.exp(-log_gamma) + log_gamma + LOG_2PI
    return -0.5 * _sum_non_batch(elementwise.expand_as(x))


def diag_gaussian_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """``log N(z; mu, diag(exp(logvar)))`` per sample.

        log q = -1/2 sum_k [ (z_k - mu_k)^2 / sigma_k^2 + log sigma_k^2 + log 2 pi ].

    Shapes: ``z``, ``mu``, ``logvar`` ``[B, ...]`` (equal) -> ``[B]``, nats.
    """
    _check_same_shape("z", z, "mu", mu)
    _check_same_shape("mu", mu, "logvar", logvar)
    return -0.5 * _sum_non_batch((z - mu).square() * torch.exp(-logvar) + logvar + LOG_2PI)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` per sample: ``-1/2 sum_k (z_k^2 + log 2 pi)``. ``[B, ...] -> [B]``."""
    _check_batched("z", z)
    return -0.5 * _sum_non_batch(z.square() + LOG_2PI)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL( N(mu, diag(exp(logvar))) || N(0, I) )`` per sample, in closed form.

        KL = 1/2 sum_k [ mu_k^2 + sigma_k^2 - 1 - log sigma_k^2 ]   (nats).

    Zero exactly where ``mu_k = 0`` and ``logvar_k = 0`` (an inactive latent dimension).
    Shapes: ``mu``, ``logvar`` ``[B, kappa]`` (or ``[B, ...]``) -> ``[B]``.
    """
    _check_same_shape("mu", mu, "logvar", logvar)
    return 0.5 * _sum_non_batch(mu.square() + torch.expm1(logvar) - logvar)
