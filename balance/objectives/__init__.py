"""Objectives: functions of a model's :class:`balance.models.output.ModelOutput`, never part of
a model (STYLE.md, principle 3).

- :mod:`balance.objectives.elbo`: the negative ELBO of the Gaussian VAE with decoder variance
  gamma, term by term;
- :mod:`balance.objectives.autoencoders`: AE, RAE, RAE-L2, RAE-GP, RAE-SN, CV-VAE, VAE (beta)
  and WAE-MMD losses.

One vocabulary of logged terms (batch means, per image), whatever the family:

- ``reconstruction``: the reconstruction term as it enters the loss (ELBO:
  ``||x - x_hat||^2 / (2 gamma)``);
- ``latent``: the latent regulariser before its weight (ELBO: ``KL(q(z|x) || N(0, I))``);
- ``decoder``: the decoder regulariser before its weight (RAE-L2, RAE-GP; 0 otherwise);
- ``squared_error``: ``||x - x_hat||^2`` (ELBO only: the AE family's ``mse`` reconstruction
  is that already);

plus the ELBO's ``log_normalizer``, ``bits_per_dim``, ``gamma``, ``log_gamma`` and
``grad_z_norm``. :func:`loss` names an objective by kind and weights, so that a preset can
name losses instead of writing functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ELBO", "loss", "objective_kinds"]

#: The negative ELBO of :mod:`balance.objectives.elbo` (no weights: gamma is the model's).
ELBO = "elbo"


def objective_kinds() -> tuple[str, ...]:
    """Every kind :func:`loss` accepts."""
    from balance.objectives.autoencoders import KINDS

    return (ELBO, *KINDS)


def loss(kind: str, **weights: Any) -> Callable:
    """The trainer's ``loss_fn(model, batch) -> (loss, logs)`` for objective ``kind``:
    ``"elbo"`` (:func:`balance.objectives.elbo.vae_loss`, takes no weights) or a kind of
    :mod:`balance.objectives.autoencoders` with the fields of its ``AEObjectiveConfig`` as
    keywords (``beta``, ``lam``, ``reconstruction``, ``gp_estimator``...)."""
    if kind == ELBO:
        if weights:
            raise ValueError(f"the ELBO takes no weights, got {sorted(weights)}")
        from balance.objectives.elbo import vae_loss

        return vae_loss
    from balance.objectives.autoencoders import KINDS, AEObjectiveConfig, make_loss_fn

    if kind not in KINDS:
        raise ValueError(f"unknown objective {kind!r}; choose one of {objective_kinds()}")
    return make_loss_fn(AEObjectiveConfig(kind=kind, **weights))
