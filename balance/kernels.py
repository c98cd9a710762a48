"""Positive-definite kernels and the unbiased MMD^2 estimator (base math, pure tensor functions).

Used by the WAE objective (MMD between q(z) and the prior as a penalty) and by the
``metrics.mmd`` evaluation (MMD between samples of the aggregate posterior and N(0, I)).

Kernels map ``x [n, d]`` and ``y [m, d]`` to the Gram matrix ``K [n, m]``; they follow the
inputs' device and dtype and are differentiable in both arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Kernel = Callable[[Tensor, Tensor], Tensor]

#: Scales of the multi-scale IMQ kernel of the WAE code (Tolstikhin et al. 2018) and pythae.
WAE_IMQ_SCALES: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"kernels take 2-d inputs [n, d] and [m, d], got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension d, got {x.shape[1]} and "
                         f"{y.shape[1]}")


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances ``D[i, j] = ||x_i - y_j||^2``, shape [n, m].

    Computed as ``||x_i||^2 + ||y_j||^2 - 2 <x_i, y_j>`` (memory O(n m), not O(n m d)) and
    clamped at 0 against round-off; differentiable (unlike ``torch.cdist``, whose square root
    has an infinite derivative at 0).
    """
    _check_pair(x, y)
    xx = x.pow(2).sum(dim=1, keepdim=True)  # [n, 1]
    yy = y.pow(2).sum(dim=1, keepdim=True).T  # [1, m]
    return (xx + yy - 2.0 * x @ y.T).clamp_min(0.0)


def imq_kernel(
    x: Tensor,
    y: Tensor,
    scales: Sequence[float] = WAE_IMQ_SCALES,
    *,
    bandwidth: float = 1.0,
) -> Tensor:
    """Multi-scale inverse multiquadratic kernel of WAE-MMD, shape [n, m].

    ``k(x, y) = sum_s C_s / (C_s + ||x - y||^2)`` with ``C_s = 2 d bandwidth^2 s``, d the
    dimension of x (Tolstikhin et al. 2018, Sec. 4: ``C = 2 d sigma_z^2`` for a N(0, sigma_z^2 I)
    prior, summed over scales s as in their code and in pythae's ``WAE_MMD``). Each term lies in
    (0, 1], so ``k(x, x) = len(scales)``.
    """
    _check_pair(x, y)
    if len(scales) == 0:
        raise ValueError("imq_kernel needs at least one scale")
    d = x.shape[1]
    dist = squared_distances(x, y)
    out = torch.zeros_like(dist)
    for s in scales:
        c = 2.0 * d * bandwidth**2 * float(s)
        out = out + c / (c + dist)
    return out


def gaussian_kernel(x: Tensor, y: Tensor, bandwidths: float | Sequence[float] = 1.0) -> Tensor:
    """Gaussian (RBF) kernel summed over bandwidths h, shape [n, m].

    ``k(x, y) = sum_h exp(-||x - y||^2 / (2 h^2))``; one float gives the usual single-scale kernel.
    """
    _check_pair(x, y)
    hs = [float(bandwidths)] if isinstance(bandwidths, (int, float)) else list(bandwidths)
    if not hs or any(h <= 0 for h in hs):
        raise ValueError(f"bandwidths must be positive, got {bandwidths!r}")
    dist = squared_distances(x, y)
    out = torch.zeros_like(dist)
    for h in hs:
        out = out + torch.exp(-dist / (2.0 * h * h))
    return out


def _imq_sums_inplace(x: Tensor, y: Tensor, scales: Sequence[float], bandwidth: float,
                      block: int, same: bool) -> Tensor:
    """``sum_{i, j} k(x_i, y_j)`` of :func:`imq_kernel` without gradients, in two reused
    ``[block, m]`` buffers: the squared distances by one fused ``addmm`` with the squared
    norms, then ``C_s / (C_s + D)`` per scale in place. The same value as the plain path to
    float round-off, at a fraction of its memory traffic (no fresh temporaries per scale and
    block: the plain path's allocations dominate its run time at N = 10,000)."""
    d = x.shape[1]
    cs = [2.0 * d * bandwidth**2 * float(s) for s in scales]
    yy = y.pow(2).sum(dim=1)  # [m]
    xx = x.pow(2).sum(dim=1, keepdim=True)  # [n, 1]
    dist = torch.empty(min(block, x.shape[0]), y.shape[0], dtype=x.dtype, device=x.device)
    work = torch.empty_like(dist)
    total = x.new_zeros(())
    for start in range(0, x.shape[0], block):
        rows = min(block, x.shape[0] - start)
        dblk, wblk = dist[:rows], work[:rows]
        torch.addmm(yy.expand(rows, -1), x[start:start + rows], y.T, beta=1.0, alpha=-2.0,
                    out=dblk)
        dblk.add_(xx[start:start + rows]).clamp_min_(0.0)
        for c in cs:
            torch.add(dblk, c, out=wblk).reciprocal_()
            total += c * wblk.sum()
            if same:  # the diagonal of this block: distances 0, so each term is exactly 1
                total -= c * torch.diagonal(wblk, offset=start).sum()
    return total


def _inplace_ok(kernel: Kernel, x: Tensor, y: Tensor) -> bool:
    """Whether :func:`mmd_unbiased` may take the in-place path: the default IMQ kernel, and no
    gradient wanted (evaluation, not the WAE penalty)."""
    wants_grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    return kernel is imq_kernel and not wants_grad


def _kernel_sums(x: Tensor, y: Tensor, kernel: Kernel, block: int, same: bool) -> Tensor:
    """``sum_{i, j} k(x_i, y_j)``, without the diagonal when ``same`` (x is y); row blocks of
    ``block`` keep memory at O(block * m)."""
    total = x.new_zeros(())
    for start in range(0, x.shape[0], block):
        k = kernel(x[start:start + block], y)
        total = total + k.sum()
        if same:
            total = total - torch.diagonal(k, offset=start).sum()
    return total


def mmd_unbiased(
    x: Tensor,
    y: Tensor,
    kernel: Kernel = imq_kernel,
    *,
    block_size: int = 2048,
) -> Tensor:
    """Unbiased estimate of MMD^2(P, Q) from ``x [n, d] ~ P`` and ``y [m, d] ~ Q`` (scalar Tensor).

    Gretton et al. (2012), Lemma 6 (the U-statistic, generalised to n != m)::

        MMD_u^2 = 1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
                  - 2/(n m) sum_{i, j} k(x_i, y_j)

    Its expectation is exactly MMD^2, so it can be negative when P = Q. Differentiable in x and
    y (the WAE penalty back-propagates through it); computed in row blocks of ``block_size``.
    With the default :func:`imq_kernel` and no gradient wanted it runs in place in reused
    buffers (``_imq_sums_inplace``; same value to round-off, benchmarked in
    ``benchmarks/bench_mmd.py``).
    """
    _check_pair(x, y)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples on each side, got {n} and {m}")
    if _inplace_ok(kernel, x, y):
        def sums(a: Tensor, b: Tensor, same: bool) -> Tensor:
            return _imq_sums_inplace(a, b, WAE_IMQ_SCALES, 1.0, block_size, same)
    else:
        def sums(a: Tensor, b: Tensor, same: bool) -> Tensor:
            return _kernel_sums(a, b, kernel, block_size, same)
    kxx = sums(x, x, True) / (n * (n - 1))
    kyy = sums(y, y, True) / (m * (m - 1))
    kxy = sums(x, y, False) / (n * m)
    return kxx + kyy - 2.0 * kxy
