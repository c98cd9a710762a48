"""Deterministic, regularized and variational autoencoders behind one module (THEORY.md section 4).

``Autoencoder(encoder, decoder, AEConfig)`` wraps any encoder that returns either a code
``z [B, k]`` (AE, RAE, WAE, DAE) or ``(mu, logvar)`` (VAE, CV-VAE) and any decoder
``z [B, k] -> x_hat`` (the conv pair of :mod:`balance.models.conv` or an MLP). It returns a
:class:`balance.models.output.ModelOutput` with the distribution parameters and codes; it
never computes a loss
(see :mod:`balance.objectives.autoencoders`).

Variants of Daly et al. (2022) and Ghosh et al. (2020), all set in :class:`AEConfig`:

- ``latent_norm``: ``"bn"`` (``BatchNorm1d`` on the latent layer's output; without affine
  parameters by default, so each code coordinate is standardised over the batch), ``"ln"``
  (``LayerNorm`` over the k coordinates of each code), ``"sn"`` (spectral normalisation of the
  latent layer's weight) or ``"none"``. Applied to z, or to mu for stochastic heads.
- ``decoder_noise_std = s``: in training mode the decoder sees ``z + s * eps``, eps ~ N(0, I); in
  evaluation mode it sees z.
- ``freeze_latent``: the latent layer keeps its initial weights (``requires_grad = False``).
- ``spectral_norm``: ``"decoder"`` (RAE-SN) or ``"all"`` wraps every ``Linear``, ``Conv2d`` and
  ``ConvTranspose2d`` of the decoder (and the encoder) with
  ``torch.nn.utils.parametrizations.spectral_norm``: each weight W, reshaped to a matrix, is
  divided by a power-iteration estimate of its largest singular value.
- stochastic heads (VAE, CV-VAE): ``z = mu + exp(logvar / 2) * eps`` in training mode; in evaluation
  mode ``z = mu`` unless ``sample_in_eval``.

The encoder must expose its latent ``nn.Linear`` as ``encoder.latent_layer`` for ``latent_norm``
``"sn"`` and for ``freeze_latent`` (the conv encoder does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from balance.models.output import ModelOutput

LATENT_NORMS = ("none", "bn", "ln", "sn")
SPECTRAL_NORMS = ("none", "decoder", "all")
_SN_TYPES = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


@dataclass(frozen=True)
class AEConfig:
    """Options of :class:`Autoencoder` (module docstring)."""

    latent_norm: str = "none"
    latent_norm_affine: bool = False
    decoder_noise_std: float = 0.0
    freeze_latent: bool = False
    spectral_norm: str = "none"
    sample_in_eval: bool = False

    def __post_init__(self):
        if self.latent_norm not in LATENT_NORMS:
            raise ValueError(f"latent_norm must be one of {LATENT_NORMS}, got {self.latent_norm!r}")
        if self.spectral_norm not in SPECTRAL_NORMS:
            raise ValueError(
                f"spectral_norm must be one of {SPECTRAL_NORMS}, got {self.spectral_norm!r}"
            )
        if not self.decoder_noise_std >= 0:
            raise ValueError(f"decoder_noise_std must be >= 0, got {self.decoder_noise_std}")


def spectral_normalise(module: nn.Module) -> int:
    """Wrap every Linear / Conv2d / ConvTranspose2d inside ``module`` with spectral_norm.

    Returns how many layers were wrapped; layers already parametrised are left alone.
    ``spectral_norm`` picks dim 1 for transposed convolutions (their output channels).
    """
    count = 0
    for layer in list(module.modules()):
        if isinstance(layer, _SN_TYPES) and not parametrize.is_parametrized(layer, "weight"):
            spectral_norm(layer)
            count += 1
    return count


def has_spectral_norm(module: nn.Module) -> bool:
    """Whether any weight inside ``module`` is spectrally normalised."""
    return any(
        parametrize.is_parametrized(layer, "weight") for layer in module.modules()
        if isinstance(layer, _SN_TYPES)
    )


class Autoencoder(nn.Module):
    """``x -> ModelOutput`` for AE / RAE / WAE / DAE / VAE / CV-VAE (module docstring)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, config: AEConfig | None = None):
        super().__init__()
        config = config or AEConfig()
        self.config = config
        self.encoder = encoder
        self.decoder = decoder
        latent_layer = getattr(encoder, "latent_layer", None)
        needs_layer = config.latent_norm == "sn" or config.freeze_latent
        if needs_layer and not isinstance(latent_layer, nn.Linear):
            raise ValueError(
                "latent_norm='sn' and freeze_latent need an encoder with an nn.Linear "
                "`latent_layer` attribute"
            )
        latent_dim = getattr(encoder, "latent_dim", None)
        if latent_dim is None and isinstance(latent_layer, nn.Linear):
            latent_dim = latent_layer.out_features
        if config.latent_norm in ("bn", "ln") and latent_dim is None:
            raise ValueError(
                "latent_norm 'bn'/'ln' needs encoder.latent_dim or encoder.latent_layer"
            )
        self.latent_dim = latent_dim
        if config.latent_norm == "bn":
            self.latent_norm = nn.BatchNorm1d(latent_dim, affine=config.latent_norm_affine)
        elif config.latent_norm == "ln":
            self.latent_norm = nn.LayerNorm(
                latent_dim, elementwise_affine=config.latent_norm_affine
            )
        else:
            self.latent_norm = nn.Identity()
        if config.spectral_norm in ("decoder", "all"):
            spectral_normalise(decoder)
        if config.spectral_norm == "all":
            spectral_normalise(encoder)
        if config.latent_norm == "sn" and not parametrize.is_parametrized(latent_layer, "weight"):
            spectral_norm(latent_layer)
        if config.freeze_latent:
            latent_layer.requires_grad_(False)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(mu_z, logvar_z)``: the normalised deterministic code [B, k] and the log-variance
        (None for deterministic heads); the contract of :mod:`balance.models.output`."""
        h = self.encoder(x)
        if isinstance(h, tuple):
            mu, logvar = h
        else:
            mu, logvar = h, None
        return self.latent_norm(mu), logvar

    def decode(self, z: Tensor) -> Tensor:
        """``D(z)``, without decoder noise: maps codes or ex-post samples to data space."""
        return self.decoder(z)

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> ModelOutput:
        """Encode, (reparameterise), add decoder noise in training mode, decode.

        ``generator`` draws the encoder and decoder noise (default: torch's global generator).
        """
        mu, logvar = self.encode(x)
        z = mu
        if logvar is not None and (self.training or self.config.sample_in_eval):
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + torch.exp(0.5 * logvar) * eps
        z_dec = z
        if self.training and self.config.decoder_noise_std > 0:
            eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z_dec = z + self.config.decoder_noise_std * eps
        return ModelOutput(mu_z=mu, logvar_z=logvar, z=z, x_hat=self.decoder(z_dec), z_dec=z_dec)
