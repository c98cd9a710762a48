"""Convolutional encoders and decoders of Ghosh et al. (2020, RAE) and Daly et al. (2022, DAE).

Both papers use the same family: four stride-2 stages that double the number of filters from a
base width (``base_filters * 2**i``, i = 0..3, i.e. 32/64/128/256 for base 32; the RAE paper uses
base 128), each convolution followed by batch normalisation and a ReLU, then a fully connected
latent layer. Daly et al. vary a per-stage *depth multiplier*: a stage of depth m is one stride-2
convolution followed by m - 1 stride-1 convolutions at the same width. The decoder mirrors the
encoder with transposed convolutions.

Kernel sizes: 4 (MNIST, CIFAR-10) or 5 (CelebA). A stride-2 convolution with kernel k uses
padding ``(k - 1) // 2`` (plus ``output_padding = 1`` for odd k in the decoder), so every stage
exactly halves (or doubles) the side. Stride-1 convolutions (the extra depth and the decoder's
output layer) need a symmetric "same" padding, which an even kernel cannot give; they use kernel
``k`` when k is odd and ``k - 1`` when k is even (3 for 4), padding ``k' // 2``.

Resolutions: the four stages need a side divisible by 16. Any other side R (MNIST: 28) is
zero-padded symmetrically to ``P = 16 * ceil(R / 16)`` at the encoder's input (28 -> 32, 2 pixels
each side) and the decoder's output is centre-cropped back to R, so models always map
``[B, C, R, R] -> [B, k] -> [B, C, R, R]``.

Heads (``ConvEncoderConfig.head``):

- ``"deterministic"``: ``E(x) -> z`` ([B, k]); AE, RAE, WAE, DAE.
- ``"gaussian"``: ``E(x) -> (mu, logvar)``, each [B, k]; VAE. ``logvar_bound = b`` gives
  ``logvar = b * tanh(linear / b)`` (the RAE reference bounds log sigma to [-5, 5], i.e. b = 10).
- ``"fixed_variance"``: ``E(x) -> (mu, logvar)`` with ``logvar = 2 log(fixed_std)`` constant;
  the constant-variance VAE (CV-VAE, sigma = 0.7 in the RAE reference).

Layouts (``layout``):

- ``"mirror"`` (Ghosh et al.'s reference code; the default): in every encoder stage the stride-2
  convolution comes first, then its ``depth - 1`` stride-1 repeats; the decoder mirrors all four
  stages.
- ``"daly"`` (Daly et al., section 3): "each conv block's layers are repeated n times, with the
  strided convolution last" (a stage of depth m is m - 1 stride-1 convolutions, then the
  stride-2 one), and "the decoder consists of two layers of 4 times and 2 times the initial
  number of filters": a linear layer to ``4 * base`` channels at side P/4, a stride-2 transposed
  convolution at ``4 * base`` and one at ``2 * base`` (each after its stride-1 repeats, the
  strided one last; the decoder's two layers take the depths of the encoder's last two stages,
  in reverse), then the stride-1 output convolution. The paper gives no more detail than
  that; this is our reading of it.

The latent layer (the ``nn.Linear`` that produces z or mu) is exposed as ``encoder.latent_layer``
so that :class:`balance.models.autoencoder.Autoencoder` can normalise or freeze it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

N_STAGES = 4
HEADS = ("deterministic", "gaussian", "fixed_variance")
LAYOUTS = ("mirror", "daly")
OUTPUTS = ("sigmoid", "linear")


def stage_depths(depth: int | Sequence[int]) -> tuple[int, ...]:
    """Per-stage depth multipliers: an int m gives (m, m, m, m); a sequence needs 4 ints >= 1."""
    if isinstance(depth, int):
        depths = (depth,) * N_STAGES
    else:
        depths = tuple(int(d) for d in depth)
    if len(depths) != N_STAGES or any(d < 1 for d in depths):
        raise ValueError(f"depth must be an int >= 1 or {N_STAGES} ints >= 1, got {depth!r}")
    return depths


def padded_resolution(resolution: int) -> int:
    """Smallest multiple of 16 that is >= resolution (the side the four stages work at)."""
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    return 16 * math.ceil(resolution / 16)


def _depth_field(depth) -> int | tuple[int, ...]:
    """Validated depth as stored in a (hashable, JSON-friendly) frozen config."""
    stage_depths(depth)
    return depth if isinstance(depth, int) else tuple(int(d) for d in depth)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def _same_kernel(kernel_size: int) -> int:
    """Kernel for stride-1 convolutions: odd, so that 'same' padding is symmetric."""
    return kernel_size if kernel_size % 2 == 1 else kernel_size - 1


@dataclass(frozen=True)
class ConvEncoderConfig:
    """Conv encoder: ``[B, in_channels, R, R] -> z [B, latent_dim]`` or ``(mu, logvar)``.

    ``depth`` is an int or a tuple of 4 per-stage multipliers (e.g. (3, 3, 2, 1)).
    """

    in_channels: int = 1
    resolution: int = 28
    latent_dim: int = 16
    base_filters: int = 32
    depth: int | tuple[int, ...] = 1
    kernel_size: int = 4
    head: str = "deterministic"
    logvar_bound: float | None = 10.0
    fixed_std: float = 0.7
    layout: str = "mirror"

    def __post_init__(self):
        object.__setattr__(self, "depth", _depth_field(self.depth))
        padded_resolution(self.resolution)
        _check_layout(self.layout)
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2, got {self.kernel_size}")
        if self.latent_dim < 1 or self.base_filters < 1 or self.in_channels < 1:
            raise ValueError("latent_dim, base_filters and in_channels must be positive")
        if self.head == "fixed_variance" and not self.fixed_std > 0:
            raise ValueError(f"fixed_std must be positive, got {self.fixed_std}")

    @property
    def widths(self) -> tuple[int, ...]:
        """Filters of the four stages: base * (1, 2, 4, 8)."""
        return tuple(self.base_filters * 2**i for i in range(N_STAGES))


@dataclass(frozen=True)
class ConvDecoderConfig:
    """Conv decoder: ``z [B, latent_dim] -> x_hat [B, out_channels, R, R]`` (mirror of the encoder).

    ``output = "sigmoid"`` gives means in [0, 1] (BCE or MSE on [0, 1] data), ``"linear"`` any real.
    """

    out_channels: int = 1
    resolution: int = 28
    latent_dim: int = 16
    base_filters: int = 32
    depth: int | tuple[int, ...] = 1
    kernel_size: int = 4
    output: str = "sigmoid"
    layout: str = "mirror"

    def __post_init__(self):
        object.__setattr__(self, "depth", _depth_field(self.depth))
        padded_resolution(self.resolution)
        _check_layout(self.layout)
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2, got {self.kernel_size}")
        if self.latent_dim < 1 or self.base_filters < 1 or self.out_channels < 1:
            raise ValueError("latent_dim, base_filters and out_channels must be positive")

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.base_filters * 2**i for i in range(N_STAGES))


def _conv_block(c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
    pad = (kernel - 1) // 2 if stride == 2 else kernel // 2
    conv = nn.Conv2d(c_in, c_out, kernel, stride, pad, bias=False)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU()]


def _deconv_block(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    # out = (H - 1) * 2 - 2 * pad + kernel + output_padding = 2H for both parities of kernel.
    pad = (kernel - 1) // 2
    out_pad = kernel % 2
    return [
        nn.ConvTranspose2d(c_in, c_out, kernel, 2, pad, output_padding=out_pad, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


class ConvEncoder(nn.Module):
    """Ghosh/Daly conv encoder (module docstring): 4 stride-2 stages, BN + ReLU, linear head.

    Forward: ``x [B, C, R, R] -> z [B, k]`` (deterministic head) or ``(mu, logvar)`` ([B, k] each).
    """

    def __init__(self, config: ConvEncoderConfig):
        super().__init__()
        self.config = config
        self.latent_dim = config.latent_dim
        self.padded = padded_resolution(config.resolution)
        extra = self.padded - config.resolution
        self.pad = (extra // 2, extra - extra // 2) * 2  # (left, right, top, bottom)
        layers: list[nn.Module] = []
        c_in = config.in_channels
        k_same = _same_kernel(config.kernel_size)
        for width, depth in zip(config.widths, stage_depths(config.depth), strict=True):
            if config.layout == "daly":  # the stride-1 repeats first, the strided one last
                for _ in range(depth - 1):
                    layers += _conv_block(c_in, width, k_same, 1)
                    c_in = width
                layers += _conv_block(c_in, width, config.kernel_size, 2)
            else:
                layers += _conv_block(c_in, width, config.kernel_size, 2)
                for _ in range(depth - 1):
                    layers += _conv_block(width, width, k_same, 1)
            c_in = width
        self.body = nn.Sequential(*layers)
        self.feature_dim = c_in * (self.padded // 16) ** 2
        self.latent_layer = nn.Linear(self.feature_dim, config.latent_dim)
        self.logvar_layer = (
            nn.Linear(self.feature_dim, config.latent_dim) if config.head == "gaussian" else None
        )

    def features(self, x: Tensor) -> Tensor:
        """Flattened features before the latent layer, [B, feature_dim]."""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected input [B, {self.config.in_channels}, R, R], got {tuple(x.shape)}"
            )
        if x.shape[-2:] != (self.config.resolution, self.config.resolution):
            raise ValueError(
                f"expected side {self.config.resolution}, got {tuple(x.shape[-2:])}"
            )
        if any(self.pad):
            x = nn.functional.pad(x, self.pad)
        return self.body(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        h = self.features(x)
        mu = self.latent_layer(h)
        if self.config.head == "deterministic":
            return mu
        if self.config.head == "fixed_variance":
            logvar = torch.full_like(mu, 2.0 * math.log(self.config.fixed_std))
            return mu, logvar
        logvar = self.logvar_layer(h)
        bound = self.config.logvar_bound
        if bound is not None:
            logvar = bound * torch.tanh(logvar / bound)
        return mu, logvar


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: ``z [B, k] -> x_hat [B, C, R, R]``.

    Linear layer to ``widths[-1]`` channels at side P/16, then stages with widths
    ``widths[2], widths[1], widths[0], widths[0]`` (a stride-2 transposed convolution, BN, ReLU,
    plus ``depth - 1`` stride-1 convolutions; stage j mirrors encoder stage 3 - j), then a stride-1
    convolution to ``out_channels`` and the output nonlinearity; centre crop from P to R.
    """

    def __init__(self, config: ConvDecoderConfig):
        super().__init__()
        self.config = config
        self.latent_dim = config.latent_dim
        self.padded = padded_resolution(config.resolution)
        widths = config.widths
        depths = stage_depths(config.depth)
        k_same = _same_kernel(config.kernel_size)
        layers: list[nn.Module] = []
        if config.layout == "daly":  # two upsampling layers of 4 and 2 times the base width
            self.side0 = self.padded // 4
            c_in = 4 * config.base_filters
            outs = (4 * config.base_filters, 2 * config.base_filters)
            stage_depth = (depths[-1], depths[-2])
        else:
            self.side0 = self.padded // 16
            c_in = widths[-1]
            outs = (widths[2], widths[1], widths[0], widths[0])
            stage_depth = tuple(reversed(depths))
        self.input_layer = nn.Linear(config.latent_dim, c_in * self.side0**2)
        for c_out, depth in zip(outs, stage_depth, strict=True):
            if config.layout == "daly":
                for _ in range(depth - 1):
                    layers += _conv_block(c_in, c_in, k_same, 1)
                layers += _deconv_block(c_in, c_out, config.kernel_size)
            else:
                layers += _deconv_block(c_in, c_out, config.kernel_size)
                for _ in range(depth - 1):
                    layers += _conv_block(c_out, c_out, k_same, 1)
            c_in = c_out
        layers.append(nn.Conv2d(c_in, config.out_channels, k_same, 1, k_same // 2))
        self.body = nn.Sequential(*layers)
        extra = self.padded - config.resolution
        self.crop = extra // 2

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z [B, {self.latent_dim}], got {tuple(z.shape)}")
        h = self.input_layer(z).view(z.shape[0], -1, self.side0, self.side0)
        x = self.body(h)
        r = self.config.resolution
        if self.padded != r:
            x = x[..., self.crop : self.crop + r, self.crop : self.crop + r]
        if self.config.output == "sigmoid":
            x = torch.sigmoid(x)
        return x


def conv_pair(
    *,
    in_channels: int = 1,
    resolution: int = 28,
    latent_dim: int = 16,
    base_filters: int = 32,
    depth: int | tuple[int, ...] = 1,
    kernel_size: int = 4,
    head: str = "deterministic",
    output: str = "sigmoid",
    fixed_std: float = 0.7,
    logvar_bound: float | None = 10.0,
    layout: str = "mirror",
) -> tuple[ConvEncoder, ConvDecoder]:
    """Matching encoder and decoder built from one set of arguments."""
    enc = ConvEncoder(
        ConvEncoderConfig(
            in_channels=in_channels,
            resolution=resolution,
            latent_dim=latent_dim,
            base_filters=base_filters,
            depth=depth,
            kernel_size=kernel_size,
            head=head,
            fixed_std=fixed_std,
            logvar_bound=logvar_bound,
            layout=layout,
        )
    )
    dec = ConvDecoder(
        ConvDecoderConfig(
            out_channels=in_channels,
            resolution=resolution,
            latent_dim=latent_dim,
            base_filters=base_filters,
            depth=depth,
            kernel_size=kernel_size,
            output=output,
            layout=layout,
        )
    )
    return enc, dec
