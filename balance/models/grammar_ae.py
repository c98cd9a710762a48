"""Autoencoders of production sequences (Kusner et al. 2017, the Grammar VAE; Ghosh et al. 2020,
the GrammarRAE): a string is the one-hot sequence of its leftmost derivation's productions,
``x [B, steps, P + 1]`` (:class:`balance.grammar.Grammar`).

- :class:`SequenceEncoder`: three 1-d convolutions over the steps (channels = production
  classes), a dense layer, then the code ``z [B, k]`` (deterministic) or ``(mu, logvar)``
  (Gaussian); the Grammar VAE's encoder, with its widths as settings.
- :class:`SequenceDecoder`: a dense layer from z, repeated at every step (beside the step's
  one-hot position, which spares the GRU learning to count) as the input of a multi-layer GRU
  whose initial state is another dense layer of z, and a dense layer to the production logits
  ``[B, steps, P + 1]``. Kusner et al. feed z only as the repeated input; on 2,048 training
  expressions that decoder reconstructed 0.8% of them exactly after 60 epochs (Adam, 1e-3),
  the one with the initial state from z 8.5% after 40 (Adam, 2e-3): the quick preset's CPU
  budget needs the faster one. The
  logits are unmasked: the grammar's mask is applied by the objective (training) and by
  :meth:`balance.grammar.Grammar.decode` (decoding), so a model never needs the grammar.
- :class:`GrammarAutoencoder`: the pair under the package's model contract
  (:mod:`balance.models.output`): ``encode(x) -> (mu, logvar or None)``, ``decode(z) -> logits``,
  ``m(x) -> ModelOutput`` (``x_hat`` the logits; ``z`` the reparameterised sample for the
  Gaussian head). ``spectral_norm=True`` normalises the decoder's dense layers (the GRU's
  recurrent weights are left alone: PyTorch keeps an RNN's weights flattened for its fused
  kernels, which a parametrization would bypass).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from balance.models.output import ModelOutput

__all__ = ["GrammarAutoencoder", "SequenceAEConfig", "SequenceDecoder", "SequenceEncoder"]


@dataclass(frozen=True)
class SequenceAEConfig:
    """Shapes and widths: ``steps`` x ``classes`` one-hot inputs, ``latent_dim`` codes; the
    encoder's ``conv_channels`` / ``conv_kernels`` and ``dense`` width; the decoder's GRU
    (``gru_hidden``, ``gru_layers``); ``gaussian``: a (mu, logvar) head (VAE) or a
    deterministic code (AE / RAE); ``spectral_norm`` on the decoder's dense layers."""

    steps: int
    classes: int
    latent_dim: int = 16
    conv_channels: tuple[int, ...] = (9, 9, 10)
    conv_kernels: tuple[int, ...] = (2, 3, 4)
    dense: int = 128
    gru_hidden: int = 128
    gru_layers: int = 2
    gaussian: bool = False
    spectral_norm: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "conv_channels", tuple(int(c) for c in self.conv_channels))
        object.__setattr__(self, "conv_kernels", tuple(int(k) for k in self.conv_kernels))
        if len(self.conv_channels) != len(self.conv_kernels):
            raise ValueError("conv_channels and conv_kernels need one entry per convolution")
        if self.steps - sum(k - 1 for k in self.conv_kernels) < 1:
            raise ValueError(f"{self.steps} steps are too few for kernels {self.conv_kernels}")
        if min(self.steps, self.classes, self.latent_dim, self.dense, self.gru_hidden,
               self.gru_layers) < 1:
            raise ValueError("steps, classes, latent_dim and the widths must be positive")


class SequenceEncoder(nn.Module):
    """``x [B, steps, classes] -> z [B, k]`` or ``(mu, logvar)``: 1-d convolutions (ReLU,
    no padding), flatten, a dense ReLU layer, linear heads."""

    def __init__(self, config: SequenceAEConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in, length = config.classes, config.steps
        for c_out, k in zip(config.conv_channels, config.conv_kernels, strict=True):
            layers += [nn.Conv1d(c_in, c_out, k), nn.ReLU()]
            c_in, length = c_out, length - k + 1
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in * length, config.dense),
                                  nn.ReLU())
        self.latent_layer = nn.Linear(config.dense, config.latent_dim)
        self.logvar_layer = nn.Linear(config.dense, config.latent_dim) if config.gaussian \
            else None

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        c = self.config
        if x.dim() != 3 or x.shape[1:] != (c.steps, c.classes):
            raise ValueError(f"expected one-hot sequences [B, {c.steps}, {c.classes}], got "
                             f"{tuple(x.shape)}")
        h = self.body(x.transpose(1, 2))
        mu = self.latent_layer(h)
        if self.logvar_layer is None:
            return mu
        return mu, self.logvar_layer(h)


class SequenceDecoder(nn.Module):
    """``z [B, k] -> logits [B, steps, classes]``: a dense ReLU layer, its output (with the
    step's position) fed to a GRU at every step, the GRU's initial state a dense tanh layer of
    z, a dense layer to the logits."""

    def __init__(self, config: SequenceAEConfig):
        super().__init__()
        self.config = config
        sn = nn.utils.parametrizations.spectral_norm if config.spectral_norm else (lambda m: m)
        self.input_layer = sn(nn.Linear(config.latent_dim, config.gru_hidden))
        self.state_layer = sn(nn.Linear(config.latent_dim, config.gru_hidden * config.gru_layers))
        # the step's one-hot position beside the code: the GRU need not count the steps
        self.register_buffer("positions", torch.eye(config.steps), persistent=False)
        self.gru = nn.GRU(config.gru_hidden + config.steps, config.gru_hidden,
                          config.gru_layers, batch_first=True)
        self.output_layer = sn(nn.Linear(config.gru_hidden, config.classes))

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"expected z [B, {self.config.latent_dim}], got {tuple(z.shape)}")
        h = torch.relu(self.input_layer(z)).unsqueeze(1).expand(-1, self.config.steps, -1)
        pos = self.positions.to(h.dtype).unsqueeze(0).expand(z.shape[0], -1, -1)
        c = self.config
        h0 = torch.tanh(self.state_layer(z)).view(-1, c.gru_layers, c.gru_hidden)
        out, _ = self.gru(torch.cat([h, pos], -1), h0.transpose(0, 1).contiguous())
        return self.output_layer(out)


class GrammarAutoencoder(nn.Module):
    """Encoder and decoder of production sequences (module docstring); a VAE when the config
    has a Gaussian head, else an AE / RAE."""

    def __init__(self, config: SequenceAEConfig):
        super().__init__()
        self.config = config
        self.encoder = SequenceEncoder(config)
        self.decoder = SequenceDecoder(config)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        out = self.encoder(x)
        return (out[0], out[1]) if self.config.gaussian else (out, None)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor) -> ModelOutput:
        mu, logvar = self.encode(x)
        z = mu
        if logvar is not None and self.training:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return ModelOutput(mu_z=mu, logvar_z=logvar, z=z, x_hat=self.decode(z))
