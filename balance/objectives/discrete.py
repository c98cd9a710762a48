"""Objectives of the discrete-latent models (:mod:`balance.models.discrete`), per image, in the
package's one vocabulary of logged terms (``reconstruction``, ``latent``, ``decoder``):

- ``categorical_vae``: reconstruction + ``beta`` KL(q(y|x) || uniform), the KL in closed form
  ``sum_i sum_c q_ic log(K q_ic)`` (:func:`categorical_kl`);
- ``discrete_rae``: reconstruction + ``beta`` ||logits||^2 / 2 (the latent penalty on the
  logits, the discrete analogue of the RAE's ||z||^2 / 2) + ``lam`` times a decoder
  regulariser: ``"l2"`` (squared decoder weights), ``"gp"`` (the decoder's gradient penalty
  at the code) or ``"none"`` (spectral normalisation is the model's ``spectral_norm``);
- ``vqvae``: reconstruction + ||sg[z_e] - z_q||^2 (the codebook term; 0 with EMA updates) +
  ``beta`` ||z_e - sg[z_q]||^2 (the commitment term), van den Oord et al. (2017).

Reconstruction: ``"mse"`` (squared error summed over pixels) or ``"bce"``
(:func:`balance.objectives.autoencoders.reconstruction_cost`). :func:`discrete_loss` gives the
trainer's ``loss_fn(model, batch)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from balance.objectives.autoencoders import (
    DECODER_REGULARIZERS,
    decoder_weight_norm,
    gradient_penalty,
    reconstruction_cost,
)

__all__ = ["DISCRETE_KINDS", "DiscreteObjective", "categorical_kl", "discrete_loss",
           "discrete_terms"]

DISCRETE_KINDS = ("categorical_vae", "discrete_rae", "vqvae")


@dataclass(frozen=True)
class DiscreteObjective:
    """Kind, reconstruction cost, latent weight ``beta`` and decoder regulariser (``decoder``
    with weight ``lam``) of a discrete objective (module docstring)."""

    kind: str
    reconstruction: str = "mse"
    beta: float = 1.0
    decoder: str = "none"
    lam: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in DISCRETE_KINDS:
            raise ValueError(f"unknown discrete objective {self.kind!r}; choose one of "
                             f"{DISCRETE_KINDS}")
        if self.decoder not in DECODER_REGULARIZERS:
            raise ValueError(f"decoder must be one of {DECODER_REGULARIZERS}, got "
                             f"{self.decoder!r}")


def categorical_kl(logits: Tensor) -> Tensor:
    """KL(prod_i Cat(softmax(logits_i)) || uniform over K) per sample [B], nats, for logits
    ``[B, m, K]``."""
    log_q = torch.log_softmax(logits, -1)
    return (log_q.exp() * (log_q + math.log(logits.shape[-1]))).sum((1, 2))


def discrete_terms(x: Tensor, out, objective: DiscreteObjective,
                   decoder: nn.Module | None = None) -> dict[str, Tensor]:
    """Per-sample terms ``reconstruction``, ``latent``, ``decoder`` ([B] each) and the total
    ``loss`` [B] of one batch."""
    rec = reconstruction_cost(x, out.x_hat, objective.reconstruction)
    zero = torch.zeros_like(rec)
    dec = zero
    if objective.kind == "categorical_vae":
        latent = categorical_kl(out.logits)
        total = rec + objective.beta * latent
    elif objective.kind == "discrete_rae":
        latent = 0.5 * out.logits.pow(2).sum((1, 2))
        if objective.decoder == "l2":
            dec = zero + decoder_weight_norm(decoder)
        elif objective.decoder == "gp":
            dec = gradient_penalty(out.x_hat, out.z)
        total = rec + objective.beta * latent + objective.lam * dec
    else:  # vqvae
        commitment = (out.z_e - out.z_q.detach()).pow(2).sum((1, 2))
        codebook = zero if not out.z_q.requires_grad else \
            (out.z_e.detach() - out.z_q).pow(2).sum((1, 2))
        latent, dec = commitment, codebook
        total = rec + codebook + objective.beta * commitment
    return {"reconstruction": rec, "latent": latent, "decoder": dec, "loss": total}


def discrete_loss(kind: str, **weights) -> Callable:
    """The trainer's ``loss_fn(model, batch) -> (loss, logs)`` of a discrete objective."""
    objective = DiscreteObjective(kind, **weights)

    def loss_fn(model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor]]:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        out = model(x)
        terms = discrete_terms(x, out, objective, getattr(model, "decoder", None))
        logs = {k: v.detach().mean() for k, v in terms.items() if k != "loss"}
        return terms["loss"].mean(), logs

    return loss_fn
