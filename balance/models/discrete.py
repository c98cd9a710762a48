"""Discrete-latent autoencoders (seed 002: the RAE view carried over to discrete codes): ``m``
latent variables with ``K`` categories each, a code being ``m`` one-hot vectors, flattened to
``[B, m K]`` for the decoder.

- :class:`CategoricalVAE`: q(y|x) = prod_i Cat(softmax(logits_i)); training decodes a
  Gumbel-softmax relaxation (PyTorch's ``gumbel_softmax``) at a temperature annealed as
  ``max(tau_min, tau_0 exp(-rate * step))`` (Jang et al. 2017); evaluation decodes the argmax.
- :class:`DiscreteRAE`: the deterministic counterpart: one-hot argmax codes with a
  straight-through gradient (forward one-hot, backward through the softmax), no sampling
  noise; its objective adds a latent penalty on the logits and a decoder regularizer
  (:mod:`balance.objectives.discrete`); spectral normalisation as ``spectral_norm=True``.
- :class:`VQVAE`: van den Oord et al. (2017): ``m`` vectors of size ``d`` from the encoder,
  each replaced by its nearest of ``K`` codebook vectors, straight-through; the codebook moves
  by its loss term or, with ``ema``, by exponential moving averages of the vectors assigned to
  it (a state update in training mode, like batch norm's statistics).

Every model follows the one contract of :mod:`balance.models.output`: ``encode(x) ->
(code [B, m K] one-hot (VQ-VAE: the quantised vectors [B, m d]), None)``, ``decode(code)``, and
``m(x) -> DiscreteOutput`` (a ``ModelOutput`` with the logits, and for VQ-VAE the encoder's
vectors, the codebook vectors and the code indices). The encoder may return a tensor or a
tuple whose first element is used (e.g. :class:`balance.models.mlp.MLPEncoder`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from balance.models.output import ModelOutput

__all__ = ["CategoricalVAE", "DiscreteOutput", "DiscreteRAE", "TemperatureConfig", "VQVAE"]


@dataclass(frozen=True)
class DiscreteOutput(ModelOutput):
    """:class:`ModelOutput` plus ``logits [B, m, K]`` (categorical models), and for VQ-VAE
    ``z_e`` / ``z_q [B, m, d]`` (encoder and codebook vectors) and ``codes [B, m]``."""

    logits: Tensor | None = None
    z_e: Tensor | None = None
    z_q: Tensor | None = None
    codes: Tensor | None = None


@dataclass(frozen=True)
class TemperatureConfig:
    """Gumbel-softmax temperature ``max(tau_min, tau_0 exp(-rate * step))`` by training
    step (Jang et al. 2017 use tau_0 = 1, tau_min = 0.5)."""

    tau_0: float = 1.0
    tau_min: float = 0.5
    rate: float = 1e-4

    def at(self, step: int) -> float:
        return max(self.tau_min, self.tau_0 * math.exp(-self.rate * step))


def _first(out):
    return out[0] if isinstance(out, tuple) else out


class _Categorical(nn.Module):
    """Shared by the categorical models: logits ``[B, m, K]`` from the encoder."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, m: int, k: int):
        super().__init__()
        if m < 1 or k < 2:
            raise ValueError(f"need m >= 1 variables of k >= 2 categories, got m={m}, k={k}")
        self.encoder, self.decoder, self.m, self.k = encoder, decoder, m, k

    @property
    def latent_dim(self) -> int:
        return self.m * self.k

    def logits(self, x: Tensor) -> Tensor:
        out = _first(self.encoder(x))
        if out.shape[1:] != (self.m * self.k,):
            raise ValueError(f"the encoder gives {tuple(out.shape)}; expected "
                             f"[B, {self.m * self.k}] logits (m={self.m}, k={self.k})")
        return out.view(-1, self.m, self.k)

    def one_hot(self, logits: Tensor) -> Tensor:
        return F.one_hot(logits.argmax(-1), self.k).to(logits.dtype)

    def encode(self, x: Tensor) -> tuple[Tensor, None]:
        """The deterministic code: one-hot argmax per variable, ``[B, m K]``."""
        return self.one_hot(self.logits(x)).flatten(1), None

    def decode(self, code: Tensor) -> Tensor:
        return self.decoder(code)

    def discrete_codes(self, x: Tensor) -> Tensor:
        """One-hot codes ``[B, m K]`` (what ex-post densities are fitted on)."""
        return self.encode(x)[0]

    def decode_codes(self, codes: Tensor) -> Tensor:
        return self.decoder(codes)


class CategoricalVAE(_Categorical):
    """A VAE with ``m`` categorical latents of ``k`` classes and a uniform prior (module
    docstring); ``step`` counts training forward passes for the temperature schedule."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, m: int, k: int,
                 temperature: TemperatureConfig = TemperatureConfig()):
        super().__init__(encoder, decoder, m, k)
        self.temperature = temperature
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def tau(self) -> float:
        return self.temperature.at(int(self.step))

    def forward(self, x: Tensor) -> DiscreteOutput:
        logits = self.logits(x)
        if self.training:
            y = F.gumbel_softmax(logits, tau=self.tau, hard=False, dim=-1)
            self.step += 1
        else:
            y = self.one_hot(logits)
        z = y.flatten(1)
        return DiscreteOutput(mu_z=self.one_hot(logits).flatten(1), logvar_z=None, z=z,
                              x_hat=self.decoder(z), logits=logits)


class DiscreteRAE(_Categorical):
    """The deterministic discrete autoencoder: straight-through one-hot codes (module
    docstring); ``spectral_norm`` wraps the decoder's Linear / conv layers."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, m: int, k: int, *,
                 spectral_norm: bool = False):
        super().__init__(encoder, decoder, m, k)
        if spectral_norm:
            for module in list(decoder.modules()):
                for name, child in list(module.named_children()):
                    if isinstance(child, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                        setattr(module, name, nn.utils.parametrizations.spectral_norm(child))

    def forward(self, x: Tensor) -> DiscreteOutput:
        logits = self.logits(x)
        soft = torch.softmax(logits, -1)
        hard = self.one_hot(logits)
        z = (hard + (soft - soft.detach())).flatten(1)  # forward: one-hot; backward: softmax
        return DiscreteOutput(mu_z=hard.flatten(1), logvar_z=None, z=z, x_hat=self.decoder(z),
                              logits=logits)


class VQVAE(nn.Module):
    """Vector-quantised autoencoder (module docstring): the encoder gives ``[B, m d]``, the
    codebook ``[K, d]``; ``ema`` updates the codebook by moving averages (``decay``, Laplace
    smoothing ``eps``) instead of its loss term."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, m: int, d: int, k: int, *,
                 ema: bool = False, decay: float = 0.99, eps: float = 1e-5):
        super().__init__()
        self.encoder, self.decoder, self.m, self.d, self.k = encoder, decoder, m, d, k
        self.ema, self.decay, self.eps = ema, decay, eps
        init = torch.randn(k, d) / math.sqrt(d)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("cluster_size", torch.zeros(k))
            self.register_buffer("embed_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)

    @property
    def latent_dim(self) -> int:
        return self.m * self.d

    def quantise(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """``(indices [B, m], codebook vectors [B, m, d])`` nearest to ``z_e [B, m, d]``."""
        flat = z_e.reshape(-1, self.d)
        dist = torch.cdist(flat.unsqueeze(0), self.codebook.unsqueeze(0)).squeeze(0)
        idx = dist.argmin(1)
        return idx.view(z_e.shape[:2]), self.codebook[idx].view(z_e.shape)

    def _vectors(self, x: Tensor) -> Tensor:
        out = _first(self.encoder(x))
        if out.shape[1:] != (self.m * self.d,):
            raise ValueError(f"the encoder gives {tuple(out.shape)}; expected "
                             f"[B, {self.m * self.d}] (m={self.m}, d={self.d})")
        return out.view(-1, self.m, self.d)

    def encode(self, x: Tensor) -> tuple[Tensor, None]:
        return self.quantise(self._vectors(x))[1].flatten(1), None

    def decode(self, code: Tensor) -> Tensor:
        return self.decoder(code)

    def discrete_codes(self, x: Tensor) -> Tensor:
        """The codebook indices as one-hot codes ``[B, m K]``."""
        return F.one_hot(self.quantise(self._vectors(x))[0], self.k).flatten(1).float()

    def decode_codes(self, codes: Tensor) -> Tensor:
        """Decode one-hot codes ``[B, m K]``: each variable's codebook vector."""
        z_q = codes.view(-1, self.m, self.k).to(self.codebook.dtype) @ self.codebook
        return self.decoder(z_q.flatten(1))

    @torch.no_grad()
    def _ema_update(self, z_e: Tensor, idx: Tensor) -> None:
        onehot = F.one_hot(idx.flatten(), self.k).to(z_e.dtype)  # [N, K]
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.T @ z_e.reshape(-1, self.d),
                                             alpha=1 - self.decay)
        n = self.cluster_size.sum()
        size = (self.cluster_size + self.eps) / (n + self.k * self.eps) * n
        self.codebook.copy_(self.embed_sum / size.unsqueeze(1))

    def forward(self, x: Tensor) -> DiscreteOutput:
        z_e = self._vectors(x)
        idx, z_q = self.quantise(z_e)
        if self.ema and self.training:
            self._ema_update(z_e.detach(), idx)
        z = (z_e + (z_q - z_e).detach()).flatten(1)  # straight-through
        return DiscreteOutput(mu_z=z_q.detach().flatten(1), logvar_z=None, z=z,
                              x_hat=self.decoder(z), z_e=z_e, z_q=z_q, codes=idx)
