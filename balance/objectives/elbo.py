"""Negative ELBO of the Gaussian VAE with decoder variance gamma, term by term.

For one image x with d elements (gamma a variance, ``p(x | z) = N(mu_x(z), gamma I)``):

    -ELBO(x) = ||x - mu_x(z)||^2 / (2 gamma)        reconstruction   (one-sample estimate)
             + (d / 2) log(2 pi gamma)               log_normalizer
             + KL(q(z | x) || N(0, I))              kl               (closed form)

in nats per image; twice this is the energy L of THEORY.md section 1 plus ``d log 2 pi``.
Bits per dimension: ``nats / (d ln 2)`` (the data are continuous and unquantised, so this is a
density and may be negative).

:func:`vae_loss` has the trainer's ``loss_fn(model, batch) -> (loss, logs)`` format.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from balance.density import LOG_2PI, kl_standard_normal, squared_error
from balance.models.output import ModelOutput

__all__ = ["ELBOTerms", "elbo_terms", "nats_to_bits_per_dim", "vae_loss"]


def nats_to_bits_per_dim(nats: Tensor | float, dim: int) -> Tensor | float:
    """Convert nats per image to bits per dimension: ``nats / (dim ln 2)``."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return nats / (dim * math.log(2.0))


@dataclass(frozen=True)
class ELBOTerms:
    """Per-sample ``[B]`` terms of the negative ELBO (nats per image); ``dim`` = d.

    reconstruction: ``||x - x_hat||^2 / (2 gamma)``; log_normalizer: ``d/2 log(2 pi gamma)``;
    kl: ``KL(q(z|x) || p(z))``; squared_error: ``||x - x_hat||^2`` (no gamma).
    """

    reconstruction: Tensor
    log_normalizer: Tensor
    kl: Tensor
    squared_error: Tensor
    dim: int

    @property
    def negative_elbo(self) -> Tensor:
        """``-ELBO`` per sample, ``[B]``, nats per image."""
        return self.reconstruction + self.log_normalizer + self.kl

    @property
    def bits_per_dim(self) -> Tensor:
        """``-ELBO`` per sample in bits per dimension, ``[B]``."""
        return nats_to_bits_per_dim(self.negative_elbo, self.dim)

    def loss(self) -> Tensor:
        """Mean negative ELBO over the batch (scalar, nats per image)."""
        return self.negative_elbo.mean()


def elbo_terms(x: Tensor, out: ModelOutput) -> ELBOTerms:
    """Per-sample negative-ELBO terms for data ``x [B, ...]`` and a forward pass ``out``.

    The reconstruction term uses the sample ``out.z`` already decoded into ``out.x_hat`` (one
    Monte-Carlo sample of ``E_q``); the KL is exact.
    """
    if x.shape != out.x_hat.shape:
        raise ValueError(
            f"x and the decoder output must have the same shape, got {tuple(x.shape)} and "
            f"{tuple(out.x_hat.shape)}"
        )
    if out.mu_z.shape[0] != x.shape[0]:
        raise ValueError(
            f"batch sizes differ: x has {x.shape[0]}, mu_z has {out.mu_z.shape[0]}"
        )
    d = x[0].numel()
    log_gamma = out.log_gamma
    if log_gamma.dim() != 0:
        raise ValueError(f"log_gamma must be a scalar, got shape {tuple(log_gamma.shape)}")
    sq = squared_error(x, out.x_hat)
    reconstruction = 0.5 * sq * torch.exp(-log_gamma)
    log_normalizer = (0.5 * d * (LOG_2PI + log_gamma)).expand_as(reconstruction)
    return ELBOTerms(
        reconstruction=reconstruction,
        log_normalizer=log_normalizer,
        kl=kl_standard_normal(out.mu_z, out.logvar_z),
        squared_error=sq,
        dim=d,
    )


def _first_tensor(batch) -> Tensor:
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("empty batch")
        batch = batch[0]
    if not isinstance(batch, Tensor):
        raise TypeError(f"batch must be a Tensor or a tuple starting with one, got {type(batch)}")
    return batch


def vae_loss(model, batch) -> tuple[Tensor, dict[str, Tensor | Callable[[], Tensor]]]:
    """Trainer loss: mean negative ELBO (nats per image) and every term, detached.

    ``batch``: the images ``[B, ...]`` or a tuple whose first element they are (labels ignored).
    ``logs``: batch means of ``reconstruction``, ``log_normalizer``, ``latent`` (the KL),
    ``squared_error``
    (all per image), ``bits_per_dim``, ``gamma`` and ``log_gamma``; and ``grad_z_norm``, a
    callable for the trainer to evaluate after ``backward()``: the batch mean of the per-image
    ``||d(-ELBO_i) / dz_i||`` (from the gradient of the batch-mean loss captured by a hook on
    ``z``, times B). It returns NaN if no gradient reached ``z``.
    """
    x = _first_tensor(batch)
    out = model(x)
    terms = elbo_terms(x, out)
    loss = terms.loss()
    log_gamma = out.log_gamma.detach()
    logs: dict[str, Tensor | Callable[[], Tensor]] = {
        "reconstruction": terms.reconstruction.detach().mean(),
        "log_normalizer": terms.log_normalizer.detach().mean(),
        "latent": terms.kl.detach().mean(),
        "squared_error": terms.squared_error.detach().mean(),
        "bits_per_dim": terms.bits_per_dim.detach().mean(),
        "gamma": log_gamma.exp(),
        "log_gamma": log_gamma,
    }
    if out.z.requires_grad:
        captured: dict[str, Tensor] = {}
        batch_size = x.shape[0]

        def _capture(grad: Tensor) -> None:
            captured["grad"] = grad.detach()

        out.z.register_hook(_capture)

        def grad_z_norm() -> Tensor:
            grad = captured.get("grad")
            if grad is None:
                return torch.tensor(float("nan"))
            return (grad * batch_size).flatten(start_dim=1).norm(dim=1).mean()

        logs["grad_z_norm"] = grad_z_norm
    return loss, logs
