"""How Gaussian a code distribution looks two dimensions at a time (Daly et al. 2022, Figs.
A.1-A.2: scatter plots of random pairs of latent dimensions, DAE against VAE).

:func:`dimension_pairs` draws the pairs from a seed and the latent size only, so two models with
the same latent size are shown and scored on the same pairs. :func:`pair_normality` scores each
pair by the unbiased MMD^2 between the pair's codes, whitened (zero mean, identity covariance),
and N(0, I_2): zero in expectation for Gaussian codes whatever their covariance, so it measures
the shape that an MVG or GMM fit has to capture beyond the covariance (lower is more Gaussian;
the estimate is unbiased and can be slightly negative).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dimension_pairs", "pair_normality", "whiten"]


def dimension_pairs(latent_dim: int, n_pairs: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n_pairs`` distinct pairs (i < j) of latent dimensions, from ``seed`` and ``latent_dim``
    alone (all pairs when there are fewer)."""
    if latent_dim < 2:
        raise ValueError(f"pairs of dimensions need latent_dim >= 2, got {latent_dim}")
    everything = torch.combinations(torch.arange(latent_dim), 2)
    order = torch.randperm(everything.shape[0], generator=torch.Generator().manual_seed(seed))
    chosen = everything[order[:n_pairs]]
    return [(int(i), int(j)) for i, j in chosen]


def whiten(points: Tensor) -> Tensor:
    """Points [n, d] moved to zero mean and identity covariance (float64; ZCA via the
    symmetric inverse square root of the covariance, eigenvalues floored at 1e-12 of the
    largest so that a degenerate pair stays finite)."""
    x = points.double()
    x = x - x.mean(0)
    cov = x.T @ x / max(x.shape[0] - 1, 1)
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp_min(values.max().clamp_min(1e-300) * 1e-12)
    return x @ vectors @ torch.diag(values.rsqrt()) @ vectors.T


def pair_normality(codes: Tensor, pairs: list[tuple[int, int]], *, seed: int = 0) -> list[float]:
    """Per pair of dimensions of ``codes [n, k]``: MMD^2 of the whitened pair to N(0, I_2)
    (:func:`balance.metrics.mmd.mmd_to_standard_normal`, the prior draws from ``seed``)."""
    from balance.metrics.mmd import mmd_to_standard_normal

    if codes.dim() != 2 or codes.shape[0] < 3:
        raise ValueError(f"codes must be [n >= 3, k], got {tuple(codes.shape)}")
    return [mmd_to_standard_normal(whiten(codes[:, [i, j]]),
                                   generator=torch.Generator().manual_seed(seed))
            for i, j in pairs]
