"""The one output type of every model in :mod:`balance.models`, and the encode contract.

Every model ``m`` (``GaussianVAE``, ``Autoencoder`` for AE / RAE / WAE / CV-VAE / VAE, ``VAEPlus``)
has

- ``m.encode(x) -> (mu_z, logvar_z)``: ``mu_z [B, k]`` the deterministic code (the posterior
  mean for stochastic encoders) and ``logvar_z [B, k]`` the posterior log-variance, or None
  for deterministic encoders;
- ``m.decode(z) -> x_hat``: the decoder mean, shaped like the data;
- ``m(x) -> ModelOutput``: one pass with the distribution parameters, the code and the decoding.

Objectives (:mod:`balance.objectives`) combine the fields; models never compute a loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["ModelOutput"]


@dataclass(frozen=True)
class ModelOutput:
    """What a model computes for a batch ``x [B, ...]``; codes are ``[B, k]``.

    - ``mu_z``: the deterministic code (the posterior mean for stochastic encoders);
    - ``logvar_z``: the posterior log-variance, or None (deterministic encoder);
    - ``z``: the code that was decoded before decoder noise: ``mu_z`` for deterministic
      encoders, the reparameterised sample ``mu_z + exp(logvar_z / 2) * eps`` otherwise;
    - ``x_hat``: the decoder mean ``D(z_dec)``, x's shape;
    - ``log_gamma``: 0-dim log of the decoder variance (Gaussian VAEs), else None;
    - ``z_dec``: the decoder's input, ``z`` plus decoder-input noise where a model adds it
      (defaults to ``z``).
    """

    mu_z: Tensor
    logvar_z: Tensor | None
    z: Tensor
    x_hat: Tensor
    log_gamma: Tensor | None = None
    z_dec: Tensor | None = None

    def __post_init__(self) -> None:
        if self.z_dec is None:
            object.__setattr__(self, "z_dec", self.z)
