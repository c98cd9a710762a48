"""Batched, eval-mode, no-grad encoding and decoding of any model of :mod:`balance.models`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from balance.metrics.reconstruction import module_device

__all__ = ["Codec", "batched_map"]


@torch.no_grad()
def batched_map(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int,
                device: torch.device | str) -> Tensor:
    """``cat([fn(x[i:i+b].to(device)).cpu() ...])``: ``fn`` over consecutive batches, the
    outputs gathered on the CPU (so that the whole set need not fit on the device)."""
    if x.shape[0] == 0:
        raise ValueError("batched_map needs at least one sample")
    return torch.cat([fn(x[i : i + batch_size].to(device)).cpu()
                      for i in range(0, x.shape[0], batch_size)])


class Codec:
    """Codes and decodings of a trained model, in batches of ``batch_size`` on its device.

    The model is put in eval mode (batch norm with running statistics, no decoder noise).
    """

    def __init__(self, model: nn.Module, batch_size: int = 500):
        self.model = model.eval()
        self.batch_size = int(batch_size)
        self.device = module_device(model)

    def encode(self, x: Tensor) -> Tensor:
        """Deterministic codes ``mu_z`` (the posterior mean for stochastic encoders), [N, k]."""
        return batched_map(lambda b: self.model.encode(b)[0], x, self.batch_size, self.device)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(mu_z, logvar_z)`` of every image, [N, k] each on the CPU (logvar None for
        deterministic encoders)."""
        with torch.no_grad():  # one image first: is there a log-variance?
            stochastic = self.model.encode(x[:1].to(self.device))[1] is not None
        if not stochastic:
            return self.encode(x), None
        params = batched_map(lambda b: torch.cat(self.model.encode(b), dim=1), x,
                             self.batch_size, self.device)
        mu, logvar = params.chunk(2, dim=1)
        return mu, logvar

    def sample_posterior(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """One ``z ~ q(z | x)`` per image with the noise drawn as one ``[N, k]`` tensor on the
        CPU from ``generator`` (the code itself for deterministic encoders)."""
        mu, logvar = self.posterior(x)
        if logvar is None:
            return mu
        return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)

    def encode_sample(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """One ``z ~ q(z | x)`` per image, ``mu + exp(logvar / 2) * eps`` with eps drawn on the
        CPU from ``generator`` batch by batch (the code itself for deterministic encoders),
        [N, k]. The same law as :meth:`sample_posterior`, another order of the draws."""

        def draw(xb: Tensor) -> Tensor:
            mu, logvar = self.model.encode(xb)
            if logvar is None:
                return mu
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
            return mu + (0.5 * logvar).exp() * eps

        return batched_map(draw, x, self.batch_size, self.device)

    def decode(self, z: Tensor, *, clamp: bool = True) -> Tensor:
        """Decoder means of codes ``z [N, k]``, clamped to the pixel range [0, 1] unless
        ``clamp=False``."""
        out = batched_map(self.model.decode, z, self.batch_size, self.device)
        return out.clamp(0, 1) if clamp else out

    def reconstruct(self, x: Tensor, *, clamp: bool = True) -> Tensor:
        """``decode(encode(x))``."""
        return self.decode(self.encode(x), clamp=clamp)
