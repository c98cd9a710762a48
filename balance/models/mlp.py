"""Fully connected encoders and decoders for Gaussian VAEs.

``MLPEncoder``: ``x [B, *data_shape] -> (mu_z, logvar_z)``, each ``[B, kappa]``. The input is
flattened, passed through ``depth`` hidden layers of ``width`` units, then two linear output
layers (``mu_head`` and ``logvar_head``, row ``j`` of each producing coordinate ``j``: the
``W^rho_{mu_z}`` and ``W^rho_{sigma_z^2}`` of THEORY.md section 2).

``MLPDecoder``: ``z [B, kappa] -> mu_x [B, *data_shape]`` (the decoder mean), either

- plain: ``depth`` hidden layers of ``width`` units, then a linear output layer, or
- residual: an input layer ``z -> width``, ``depth`` residual blocks
  ``h <- act(h + L2(act(L1(h))))`` (two layers and an identity skip each), a linear output layer,

optionally plus the affine skip of eq. (5), ``mu_x = f(z) + W_x z + b_x``: ``skip`` is a
bias-free ``nn.Linear(kappa, d)`` holding ``W_x``; ``b_x`` is the output bias of ``f`` (a second
bias would be redundant). ``first_layer`` is the ``nn.Linear`` that reads ``z`` (its weight is
``W^1_{mu_x}``: column ``j`` multiplies ``z_j``). With ``depth = 0`` the plain decoder is the
affine decoder ``W z + b`` of Theorem 1, and an encoder with ``depth = 0`` is affine too.

Paper presets (``MLPEncoderConfig.paper``, ``MLPDecoderConfig.paper``): a 6-layer encoder (five
hidden layers and the output layer) and a residual decoder of 3 blocks of two layers, with the
affine skip. The paper does not state the width; 500 units is used here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "MLPDecoder",
    "MLPDecoderConfig",
    "MLPEncoder",
    "MLPEncoderConfig",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
}

PAPER_WIDTH = 500


def _check_common(data_shape, latent_dim: int, width: int, depth: int, activation: str) -> tuple:
    shape = tuple(int(s) for s in data_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"data_shape must be a non-empty tuple of positive ints, got {data_shape}")
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    if depth > 0 and width < 1:
        raise ValueError(f"width must be >= 1 when depth > 0, got {width}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return shape


@dataclass(frozen=True)
class MLPEncoderConfig:
    """MLP encoder ``x -> (mu_z, logvar_z)``.

    ``depth`` hidden layers of ``width`` units (``depth = 0``: affine encoder).
    ``logvar_bound = b`` gives ``logvar = b tanh(a / b)`` (``a`` the linear output); ``None``
    leaves ``logvar`` unbounded (the default: as gamma -> 0 the active dimensions need
    ``sigma^2 -> 0``, THEORY.md section 1).
    """

    data_shape: tuple[int, ...]
    latent_dim: int
    width: int = PAPER_WIDTH
    depth: int = 5
    activation: str = "relu"
    logvar_bound: float | None = None

    def __post_init__(self) -> None:
        shape = _check_common(
            self.data_shape, self.latent_dim, self.width, self.depth, self.activation
        )
        object.__setattr__(self, "data_shape", shape)
        if self.logvar_bound is not None and not self.logvar_bound > 0:
            raise ValueError(f"logvar_bound must be positive or None, got {self.logvar_bound}")

    @classmethod
    def paper(cls, data_shape: tuple[int, ...], latent_dim: int) -> MLPEncoderConfig:
        """The 6-layer feed-forward encoder of the kappa sweep (five hidden layers + output)."""
        return cls(data_shape=data_shape, latent_dim=latent_dim, width=PAPER_WIDTH, depth=5)


@dataclass(frozen=True)
class MLPDecoderConfig:
    """MLP decoder ``z -> mu_x``; see the module docstring for the two architectures.

    ``residual=False``: ``depth`` hidden layers (``depth + 1`` linear layers in all).
    ``residual=True``: input layer, ``depth`` residual blocks of 2 layers, output layer
    (``2 depth + 2`` linear layers). ``affine_skip`` adds ``W_x z`` (eq. 5).
    """

    data_shape: tuple[int, ...]
    latent_dim: int
    width: int = PAPER_WIDTH
    depth: int = 3
    residual: bool = True
    affine_skip: bool = True
    activation: str = "relu"

    def __post_init__(self) -> None:
        shape = _check_common(
            self.data_shape, self.latent_dim, self.width, self.depth, self.activation
        )
        object.__setattr__(self, "data_shape", shape)

    @property
    def n_linear_layers(self) -> int:
        """Number of linear layers of ``f`` (the skip not counted)."""
        return 2 * self.depth + 2 if self.residual else self.depth + 1

    @classmethod
    def paper(
        cls, data_shape: tuple[int, ...], latent_dim: int, affine_skip: bool = True
    ) -> MLPDecoderConfig:
        """The residual decoder of the kappa sweep: 3 blocks of 2 layers, affine skip."""
        return cls(
            data_shape=data_shape,
            latent_dim=latent_dim,
            width=PAPER_WIDTH,
            depth=3,
            residual=True,
            affine_skip=affine_skip,
        )


def _check_input(x: Tensor, data_shape: tuple[int, ...], what: str) -> None:
    if x.dim() < 1 or tuple(x.shape[1:]) != data_shape:
        raise ValueError(
            f"{what} expects input of shape [B, {', '.join(map(str, data_shape))}], "
            f"got {tuple(x.shape)}"
        )


class MLPEncoder(nn.Module):
    """``x [B, *data_shape] -> (mu_z [B, kappa], logvar_z [B, kappa])``."""

    def __init__(self, config: MLPEncoderConfig) -> None:
        super().__init__()
        self.config = config
        act = ACTIVATIONS[config.activation]
        n_in = math.prod(config.data_shape)
        layers: list[nn.Module] = []
        for _ in range(config.depth):
            layers += [nn.Linear(n_in, config.width), act()]
            n_in = config.width
        self.body = nn.Sequential(*layers)
        self.mu_head = nn.Linear(n_in, config.latent_dim)
        self.logvar_head = nn.Linear(n_in, config.latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check_input(x, self.config.data_shape, "MLPEncoder")
        h = self.body(x.flatten(start_dim=1))
        logvar = self.logvar_head(h)
        bound = self.config.logvar_bound
        if bound is not None:
            logvar = bound * torch.tanh(logvar / bound)
        return self.mu_head(h), logvar


class _ResidualBlock(nn.Module):
    """``h -> act(h + L2(act(L1(h))))``."""

    def __init__(self, width: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(width, width), act(), nn.Linear(width, width))
        self.act = act()

    def forward(self, h: Tensor) -> Tensor:
        return self.act(h + self.inner(h))


class MLPDecoder(nn.Module):
    """``z [B, kappa] -> mu_x [B, *data_shape]``: ``f(z)`` (+ ``W_x z`` with the affine skip)."""

    def __init__(self, config: MLPDecoderConfig) -> None:
        super().__init__()
        self.config = config
        act = ACTIVATIONS[config.activation]
        d = math.prod(config.data_shape)
        k = config.latent_dim
        if config.depth == 0:
            self.hidden = nn.Sequential()
            self.output = nn.Linear(k, d)
        elif config.residual:
            blocks = [_ResidualBlock(config.width, act) for _ in range(config.depth)]
            self.hidden = nn.Sequential(nn.Linear(k, config.width), act(), *blocks)
            self.output = nn.Linear(config.width, d)
        else:
            layers: list[nn.Module] = []
            n_in = k
            for _ in range(config.depth):
                layers += [nn.Linear(n_in, config.width), act()]
                n_in = config.width
            self.hidden = nn.Sequential(*layers)
            self.output = nn.Linear(n_in, d)
        self.skip = nn.Linear(k, d, bias=False) if config.affine_skip else None

    @property
    def first_layer(self) -> nn.Linear:
        """The linear layer that reads ``z``; ``weight[:, j]`` multiplies ``z_j``."""
        return self.hidden[0] if len(self.hidden) > 0 else self.output

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"MLPDecoder expects z of shape [B, {self.config.latent_dim}], "
                f"got {tuple(z.shape)}"
            )
        out = self.output(self.hidden(z))
        if self.skip is not None:
            out = out + self.skip(z)
        return out.view(z.shape[0], *self.config.data_shape)
