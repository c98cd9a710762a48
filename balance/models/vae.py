"""The Gaussian VAE: encoder, decoder and the decoder variance gamma; parameters only.

    q(z | x) = N(mu_z(x), diag(exp(logvar_z(x)))),   p(z) = N(0, I),
    p(x | z) = N(mu_x(z), gamma I)                   (gamma is a VARIANCE, as in THEORY.md).

``GaussianVAE.forward`` returns the distribution parameters and the reparameterised sample
``z = mu_z + exp(logvar_z / 2) * noise`` in a :class:`balance.models.output.ModelOutput`; the
objective
(:mod:`balance.objectives.elbo`) turns them into per-sample terms.

Decoder variance (:class:`GammaConfig`): a scalar parameterised by its log, learnable by
default (``learnable=False`` fixes it at ``init``). An optional floor ``gamma_min``:

- ``floor="smooth"`` (default): ``gamma = gamma_min + exp(raw)``, i.e.
  ``log_gamma = logaddexp(raw, log gamma_min)``: differentiable everywhere, equal to ``exp(raw)``
  far above the floor, never below it;
- ``floor="clamp"``: ``log_gamma = max(raw, log gamma_min)``: exact above the floor; below it
  ``raw`` receives no gradient (it stays where it crossed).

Encoders map ``x -> (mu, logvar)`` and decoders ``z -> x_hat`` with x's shape; any modules with
those signatures work (e.g. :mod:`balance.models.mlp`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from balance.models.output import ModelOutput

__all__ = ["GammaConfig", "GaussianVAE", "affine_gaussian_vae"]

FLOORS = ("smooth", "clamp")


@dataclass(frozen=True)
class GammaConfig:
    """Decoder variance gamma (``Sigma_x = gamma I``): initial value, learnable or fixed, floor,
    and Adam's learning rate for log gamma (``lr``; None: the trainer's). Adam moves log gamma
    by about ``lr`` per step, so a short run needs a larger one for gamma to travel from its
    initial value to its small final value; :func:`balance.train.train` honours it through a
    parameter group (:meth:`GaussianVAE.parameter_lrs`)."""

    init: float = 1.0
    learnable: bool = True
    gamma_min: float | None = None
    floor: str = "smooth"
    lr: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.init) and self.init > 0):
            raise ValueError(f"gamma init must be a positive finite variance, got {self.init}")
        if self.floor not in FLOORS:
            raise ValueError(f"floor must be one of {FLOORS}, got {self.floor!r}")
        if self.gamma_min is not None:
            if not self.gamma_min > 0:
                raise ValueError(f"gamma_min must be positive or None, got {self.gamma_min}")
            if self.init <= self.gamma_min:
                raise ValueError(
                    f"gamma init ({self.init}) must be above the floor gamma_min "
                    f"({self.gamma_min})"
                )
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"gamma lr must be positive or None, got {self.lr}")

    def raw_init(self) -> float:
        """The unconstrained value whose floored log gamma equals ``log(init)``."""
        return self.raw_for(self.init)

    def raw_for(self, gamma: float) -> float:
        """The unconstrained value whose floored log gamma equals ``log(gamma)``."""
        if not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be a positive finite variance, got {gamma}")
        if self.gamma_min is not None:
            if gamma < self.gamma_min or (gamma == self.gamma_min and self.floor == "smooth"):
                raise ValueError(f"gamma={gamma} is not above the floor {self.gamma_min}")
            if self.floor == "smooth":
                return math.log(gamma - self.gamma_min)
        return math.log(gamma)


def _infer_latent_dim(*modules: nn.Module) -> int | None:
    for module in modules:
        config = getattr(module, "config", None)
        latent_dim = getattr(config, "latent_dim", None)
        if latent_dim is not None:
            return int(latent_dim)
    return None


class GaussianVAE(nn.Module):
    """Gaussian VAE with decoder variance ``gamma`` (a scalar variance, see :class:`GammaConfig`).

    ``latent_dim`` is read from ``decoder.config`` / ``encoder.config`` when they have one;
    pass it for other modules (it is needed by :meth:`sample` only). The initial raw log gamma
    is created in the default dtype; after ``.double()`` call :meth:`set_gamma` for a value
    exact to float64.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        gamma: GammaConfig | None = None,
        latent_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.gamma_config = gamma if gamma is not None else GammaConfig()
        inferred = _infer_latent_dim(decoder, encoder)
        if latent_dim is not None and inferred is not None and latent_dim != inferred:
            raise ValueError(f"latent_dim={latent_dim} but the modules say {inferred}")
        self.latent_dim = latent_dim if latent_dim is not None else inferred
        raw = torch.tensor(self.gamma_config.raw_init())
        if self.gamma_config.learnable:
            self.raw_log_gamma = nn.Parameter(raw)
        else:
            self.register_buffer("raw_log_gamma", raw)

    def log_gamma(self) -> Tensor:
        """Log of the decoder variance (0-dim), the floor applied."""
        cfg = self.gamma_config
        raw = self.raw_log_gamma
        if cfg.gamma_min is None:
            return raw
        log_min = math.log(cfg.gamma_min)
        if cfg.floor == "smooth":
            return torch.logaddexp(raw, torch.full_like(raw, log_min))
        return torch.clamp(raw, min=log_min)

    def parameter_lrs(self) -> list[tuple[nn.Parameter, float]]:
        """Parameters with their own learning rate (the trainer's parameter groups): the
        learnable log gamma at ``GammaConfig.lr`` when that is set."""
        raw = self.raw_log_gamma
        if self.gamma_config.lr is None or not isinstance(raw, nn.Parameter):
            return []
        return [(raw, self.gamma_config.lr)]

    @torch.no_grad()
    def set_gamma(self, gamma: float) -> None:
        """Set the decoder variance to ``gamma`` (in the parameters' dtype, floor respected)."""
        self.raw_log_gamma.fill_(self.gamma_config.raw_for(float(gamma)))

    @property
    def gamma(self) -> float:
        """Current decoder variance as a Python float."""
        return float(self.log_gamma().detach().exp())

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu_z, logvar_z)``, each ``[B, kappa]``."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Decoder mean ``mu_x(z)``, shaped like the data."""
        return self.decoder(z)

    def forward(
        self,
        x: Tensor,
        noise: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> ModelOutput:
        """One pass: ``z = mu_z + exp(logvar_z / 2) * noise``, ``noise ~ N(0, I)``.

        ``noise`` (``[B, kappa]``) may be given explicitly; otherwise it is drawn from
        ``generator`` (torch's default generator when None).
        """
        mu, logvar = self.encoder(x)
        if noise is None:
            noise = torch.randn(
                mu.shape, generator=generator, device=mu.device, dtype=mu.dtype
            )
        elif noise.shape != mu.shape:
            raise ValueError(
                f"noise must have the shape of mu_z {tuple(mu.shape)}, got {tuple(noise.shape)}"
            )
        z = mu + torch.exp(0.5 * logvar) * noise
        return ModelOutput(
            mu_z=mu, logvar_z=logvar, z=z, x_hat=self.decoder(z), log_gamma=self.log_gamma()
        )

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, add_noise: bool = False
    ) -> Tensor:
        """``n`` draws: ``z ~ N(0, I)``, then the decoder mean (plus ``N(0, gamma I)`` noise
        when ``add_noise``). Follows the parameters' device and dtype."""
        if self.latent_dim is None:
            raise ValueError("latent_dim unknown: pass latent_dim to GaussianVAE")
        ref = self.raw_log_gamma
        z = torch.randn(
            (n, self.latent_dim), generator=generator, device=ref.device, dtype=ref.dtype
        )
        x = self.decoder(z)
        if add_noise:
            x = x + self.log_gamma().mul(0.5).exp() * torch.randn(
                x.shape, generator=generator, device=x.device, dtype=x.dtype
            )
        return x


@torch.no_grad()
def affine_gaussian_vae(
    W_x: Tensor,
    b_x: Tensor,
    W_z: Tensor,
    b_z: Tensor,
    s2: Tensor,
    gamma: float,
    *,
    learnable_gamma: bool = False,
) -> GaussianVAE:
    """The affine VAE of Theorem 1 as a :class:`GaussianVAE` of MLPs without hidden layers.

    Decoder mean ``W_x z + b_x`` (``W_x [d, kappa]``), encoder mean ``W_z x + b_z``, encoder
    variances ``s2 [kappa]`` independent of x, decoder variance ``gamma``; data ``[n, d]``.
    The parameters are copied (dtype and device of ``W_x``), e.g. from
    ``balance.theory.affine.closed_form_optimum(X, kappa, gamma).params``.
    """
    from balance.models.mlp import MLPDecoder, MLPDecoderConfig, MLPEncoder, MLPEncoderConfig

    d, kappa = W_x.shape
    encoder = MLPEncoder(MLPEncoderConfig(data_shape=(d,), latent_dim=kappa, depth=0))
    decoder = MLPDecoder(
        MLPDecoderConfig(data_shape=(d,), latent_dim=kappa, depth=0, affine_skip=False)
    )
    model = GaussianVAE(
        encoder, decoder, GammaConfig(init=float(gamma), learnable=learnable_gamma)
    ).to(dtype=W_x.dtype, device=W_x.device)
    model.set_gamma(float(gamma))  # exact in float64 (the init was rounded to float32)
    encoder.mu_head.weight.copy_(W_z)
    encoder.mu_head.bias.copy_(b_z)
    encoder.logvar_head.weight.zero_()
    encoder.logvar_head.bias.copy_(torch.log(s2))
    decoder.output.weight.copy_(W_x)
    decoder.output.bias.copy_(b_x)
    return model
