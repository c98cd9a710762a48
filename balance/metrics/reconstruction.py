"""Test reconstruction error of an autoencoder: squared error per image from the posterior mean.

    rec(x) = ||x - mu_x(mu_z(x))||^2        (summed over pixels: squared data units per image)

The table of the kappa sweep (EXPERIMENTS.md E1) reports its mean over the test set.
Also holds the small helpers shared by the VAE metrics (input checks, batching).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from balance.density import squared_error

__all__ = ["check_data", "iter_batches", "module_device", "reconstruction_error"]


def check_data(x: Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is a non-empty batch ``[N, ...]`` of finite values."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch [N, ...], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    bad = ~torch.isfinite(x.flatten(start_dim=1)).all(dim=1)
    n_bad = int(bad.sum())
    if n_bad:
        first = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name} contains NaN or infinite values in {n_bad} of {x.shape[0]} samples "
            f"(first at index {first})"
        )


def module_device(module: nn.Module) -> torch.device:
    """Device of a module's first parameter or buffer (CPU for a module without any)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def iter_batches(x: Tensor, batch_size: int) -> Iterator[Tensor]:
    """Consecutive slices of ``x`` along dim 0, of at most ``batch_size`` samples."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size]


@torch.no_grad()
def reconstruction_error(model: nn.Module, x: Tensor, *, batch_size: int = 1000) -> Tensor:
    """``||x - decode(mu_z(x))||^2`` per image, ``[N]``, on ``x``'s device.

    ``model`` has ``encode(x) -> (mu_z, logvar_z)`` and ``decode(z) -> x_hat``
    (:class:`balance.models.vae.GaussianVAE`); batches run on the model's device.
    """
    check_data(x)
    device = module_device(model)
    errors = []
    for xb in iter_batches(x, batch_size):
        xb = xb.to(device)
        mu, _ = model.encode(xb)
        errors.append(squared_error(xb, model.decode(mu)).to(x.device))
    return torch.cat(errors)
