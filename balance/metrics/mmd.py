"""MMD between the aggregate posterior q(z) and the prior N(0, I), as an evaluation metric.

The E2 table of the balanced-regularization paper reports this number beside the
reconstruction error: how far the encoded training set is from the prior that samples are drawn
from. The estimator and the kernels live in :mod:`balance.kernels`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from balance.kernels import Kernel, imq_kernel, mmd_unbiased


def mmd_to_standard_normal(
    z: Tensor,
    *,
    generator: torch.Generator,
    n_prior: int | None = None,
    kernel: Kernel = imq_kernel,
    block_size: int = 2048,
) -> float:
    """Unbiased MMD^2 between samples ``z [n, k]`` of q(z) and ``n_prior`` draws from N(0, I_k).

    ``MMD_u^2(q, N(0, I))`` of :func:`balance.kernels.mmd_unbiased` with ``kernel`` (default: the
    multi-scale IMQ kernel of WAE, ``C_s = 2 k s``). The prior draws come from ``generator``
    (``n_prior`` defaults to n), in z's dtype (float32 at least: half-precision codes are
    upcast), moved to z's device. Unitless; an unbiased
    estimate, so it can be slightly negative when q(z) = N(0, I). No gradient is kept.
    """
    if z.dim() != 2:
        raise ValueError(f"z must be [n, k], got shape {tuple(z.shape)}")
    n, k = z.shape
    n_prior = n if n_prior is None else int(n_prior)
    if not z.is_floating_point():
        raise ValueError(f"z must be floating point, got {z.dtype}")
    if not torch.isfinite(z).all():
        raise ValueError("z contains non-finite values")
    if torch.finfo(z.dtype).bits < 32:  # half precision overflows the kernel sums: upcast
        z = z.float()
    prior = torch.randn(n_prior, k, generator=generator, dtype=z.dtype, device=generator.device)
    with torch.no_grad():
        value = mmd_unbiased(z.detach(), prior.to(z.device), kernel, block_size=block_size)
    return float(value)
