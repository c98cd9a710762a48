"""Synthetic data with known structure: affine subspaces and smooth nonlinear manifolds.

Both generators draw every random number from an explicit ``torch.Generator`` (so the same seed
gives the same data, bit for bit) on the generator's device, in float64 unless told otherwise,
and return a :class:`SyntheticData` carrying the ground truth (intrinsic dimension ``r``, latent
coordinates, noise-free points and the map that made them), so experiments can compare the
number of active latent dimensions with the truth.

Affine subspace (the setting of THEORY.md section 1)::

    x = b + U z + sigma * eps,   U in R^{d x r}, U^T U = I_r,   z ~ N(0, diag(lambda)),
    eps ~ N(0, I_d),   Cov[x] = U diag(lambda) U^T + sigma^2 I_d   (rank r when sigma = 0).

Nonlinear manifold: the graph of a smooth map over an r-plane, rotated into R^d::

    x = b + Q u + P g(u) + sigma * eps,   [Q P] in O(d) random,  Q: d x r,  P: d x (d - r),
    g_j(u) = amplitude * sum_k A_jk sin(omega_k . u + phi_k) / sqrt(K),   omega_k ~ N(0, f^2 I_r).

Because ``Q^T x = Q^T b + u``, the map u -> x is injective with Jacobian ``Q + P J_g(u)`` of rank
exactly r everywhere: the manifold is an embedded r-dimensional submanifold for any amplitude.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "AffineMap",
    "SineGraphMap",
    "SyntheticData",
    "affine_subspace",
    "nonlinear_manifold",
    "random_orthonormal",
]


@dataclass(frozen=True)
class AffineMap:
    """``u -> mean + u @ basis.T``: latent ``[..., r]`` to points ``[..., d]``."""

    mean: torch.Tensor  # [d]
    basis: torch.Tensor  # [d, r], orthonormal columns

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return self.mean + u @ self.basis.T


@dataclass(frozen=True)
class SineGraphMap:
    """``u -> mean + Q u + P g(u)`` with ``g`` a random sum of sines (see the module docstring).

    Shapes: mean [d], tangent Q [d, r], normal P [d, d - r], freqs omega [K, r], phases phi [K],
    weights A [d - r, K]. Latent ``[..., r]`` maps to points ``[..., d]``.
    """

    mean: torch.Tensor
    tangent: torch.Tensor
    normal: torch.Tensor
    freqs: torch.Tensor
    phases: torch.Tensor
    weights: torch.Tensor
    amplitude: float

    def height(self, u: torch.Tensor) -> torch.Tensor:
        """``g(u)``: ``[..., r] -> [..., d - r]``."""
        k = self.freqs.shape[0]
        features = torch.sin(u @ self.freqs.T + self.phases)  # [..., K]
        return self.amplitude * (features @ self.weights.T) / math.sqrt(k)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return self.mean + u @ self.tangent.T + self.height(u) @ self.normal.T


@dataclass(frozen=True)
class SyntheticData:
    """Samples and their ground truth.

    Attributes:
        x: samples ``[n, d]`` (noise included).
        r: intrinsic dimension of the noise-free support.
        latent: latent coordinates ``[n, r]`` that generated each sample.
        clean: noise-free points ``[n, d]`` (``embed(latent)``), exactly on the support.
        mean: offset ``b`` ``[d]``.
        basis: ``[d, r]`` orthonormal; the subspace directions (affine) or the base r-plane
            ``Q`` of the graph chart (manifold).
        noise: standard deviation ``sigma`` of the isotropic Gaussian noise added to ``clean``.
        embed: the map latent ``[..., r]`` -> points ``[..., d]``.
        spectrum: affine only: the latent variances ``lambda`` ``[r]``; the population
            covariance is ``basis diag(spectrum) basis^T + noise^2 I``. ``None`` for manifolds.
        kind: ``"affine"`` or ``"manifold"``.
    """

    x: torch.Tensor
    r: int
    latent: torch.Tensor
    clean: torch.Tensor
    mean: torch.Tensor
    basis: torch.Tensor
    noise: float
    embed: AffineMap | SineGraphMap
    spectrum: torch.Tensor | None = None
    kind: str = "affine"

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def d(self) -> int:
        return self.x.shape[1]

    def covariance(self) -> torch.Tensor:
        """Population covariance ``[d, d]`` of ``x`` (affine data only)."""
        if self.spectrum is None:
            raise ValueError("the population covariance has a closed form only for affine data")
        eye = torch.eye(self.d, dtype=self.x.dtype, device=self.x.device)
        return (self.basis * self.spectrum) @ self.basis.T + self.noise**2 * eye


def _check_sizes(n: int, d: int, r: int) -> None:
    for name, value in (("n", n), ("d", d), ("r", r)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    if not 1 <= r <= d:
        raise ValueError(f"r must satisfy 1 <= r <= d = {d}, got r = {r}")


def _check_nonnegative(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")


def random_orthonormal(
    d: int, k: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A Haar-distributed ``[d, k]`` matrix with orthonormal columns (``k <= d``).

    QR of a Gaussian matrix with the signs of ``diag(R)`` moved into ``Q`` (Mezzadri 2007), so the
    result is uniform on the Stiefel manifold rather than biased by the QR sign convention.
    """
    if not 0 <= k <= d:
        raise ValueError(f"need 0 <= k <= d, got k={k}, d={d}")
    g = torch.randn(d, k, generator=generator, dtype=dtype, device=generator.device)
    q, rr = torch.linalg.qr(g)
    signs = torch.sign(torch.diagonal(rr))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return q * signs


def affine_subspace(
    n: int,
    d: int,
    r: int,
    *,
    generator: torch.Generator,
    scale: float = 1.0,
    spectrum: Sequence[float] | torch.Tensor | None = None,
    noise: float = 0.0,
    offset: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> SyntheticData:
    """Gaussian data on a random r-dimensional affine subspace of R^d.

    ``x = b + U z + noise * eps`` with ``U`` Haar-random ``[d, r]`` orthonormal,
    ``z ~ N(0, diag(spectrum))``, ``b ~ N(0, offset^2 I_d)``, ``eps ~ N(0, I_d)``.

    Args:
        n, d, r: samples, ambient and intrinsic dimension (``1 <= r <= d``, ``n >= 1``).
        generator: source of all randomness; its device is the output device.
        scale: standard deviation along every subspace direction when ``spectrum`` is None
            (``spectrum = scale^2 * ones(r)``).
        spectrum: the r latent variances ``lambda`` (> 0), e.g. distinct values to make the
            principal directions identifiable. Kept in the given order (not sorted).
        noise: isotropic noise standard deviation ``sigma`` (0 gives exactly rank-r data).
        offset: standard deviation of the random mean ``b`` (0 puts the subspace through 0).
        dtype: floating dtype of every returned tensor (float64 by default: theory checks).

    Returns:
        :class:`SyntheticData` with ``x [n, d]``, ``latent z [n, r]``, ``basis U``, ``mean b``,
        ``spectrum lambda``; population covariance ``U diag(lambda) U^T + sigma^2 I``.
    """
    _check_sizes(n, d, r)
    _check_nonnegative("noise", noise)
    _check_nonnegative("offset", offset)
    device = generator.device
    if spectrum is None:
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be finite and > 0, got {scale}")
        lam = torch.full((r,), float(scale) ** 2, dtype=dtype, device=device)
    else:
        lam = torch.as_tensor(spectrum, dtype=dtype).to(device).reshape(-1)
        if lam.numel() != r:
            raise ValueError(f"spectrum must hold r = {r} variances, got {lam.numel()}")
        if not bool(torch.all(torch.isfinite(lam) & (lam > 0))):
            raise ValueError(f"spectrum must be finite and > 0, got {lam.tolist()}")
    basis = random_orthonormal(d, r, generator=generator, dtype=dtype)
    mean = offset * torch.randn(d, generator=generator, dtype=dtype, device=device)
    latent = torch.randn(n, r, generator=generator, dtype=dtype, device=device) * lam.sqrt()
    embed = AffineMap(mean=mean, basis=basis)
    clean = embed(latent)
    x = clean
    if noise > 0:
        x = clean + noise * torch.randn(n, d, generator=generator, dtype=dtype, device=device)
    return SyntheticData(
        x=x,
        r=r,
        latent=latent,
        clean=clean,
        mean=mean,
        basis=basis,
        noise=float(noise),
        embed=embed,
        spectrum=lam,
        kind="affine",
    )


def nonlinear_manifold(
    n: int,
    d: int,
    r: int,
    *,
    generator: torch.Generator,
    n_features: int = 8,
    frequency: float = 1.0,
    amplitude: float = 1.0,
    latent: str = "gaussian",
    scale: float = 1.0,
    noise: float = 0.0,
    offset: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> SyntheticData:
    """Samples from a smooth nonlinear r-dimensional manifold embedded in R^d (``r < d``).

    The manifold is the graph of ``g: R^r -> R^{d-r}``, a random sum of ``n_features`` sines,
    over a random r-plane, rotated by a Haar-random orthogonal matrix (module docstring):
    ``x = b + Q u + P g(u) + noise * eps``. Its intrinsic dimension is exactly ``r``; the
    curvature grows with ``amplitude * frequency^2``.

    Args:
        n, d, r: samples, ambient and intrinsic dimension (``1 <= r < d``).
        generator: source of all randomness; its device is the output device.
        n_features: number K of random sine features in ``g``.
        frequency: standard deviation ``f`` of the random frequencies ``omega_k``.
        amplitude: scale of ``g`` (0 gives an affine subspace).
        latent: ``"gaussian"`` (``u ~ N(0, scale^2 I_r)``) or ``"uniform"``
            (``u ~ U[-scale, scale]^r``).
        scale: spread of the latent coordinates (> 0).
        noise: isotropic noise standard deviation (0: exactly on the manifold).
        offset: standard deviation of the random offset ``b``.
        dtype: floating dtype (float64 by default).

    Returns:
        :class:`SyntheticData` with ``kind="manifold"``, ``basis = Q`` and ``embed`` the
        :class:`SineGraphMap` (differentiable, so tangent spaces are ``jacobian(embed)``).
    """
    _check_sizes(n, d, r)
    if r >= d:
        raise ValueError(f"a nonlinear manifold needs r < d, got r = {r}, d = {d}")
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise ValueError(f"n_features must be an int >= 1, got {n_features!r}")
    for name, value in (("frequency", frequency), ("amplitude", amplitude), ("noise", noise)):
        _check_nonnegative(name, value)
    _check_nonnegative("offset", offset)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    if latent not in ("gaussian", "uniform"):
        raise ValueError(f"latent must be 'gaussian' or 'uniform', got {latent!r}")
    device = generator.device

    rotation = random_orthonormal(d, d, generator=generator, dtype=dtype)
    tangent, normal = rotation[:, :r], rotation[:, r:]
    freqs = frequency * torch.randn(n_features, r, generator=generator, dtype=dtype, device=device)
    phases = 2 * math.pi * torch.rand(n_features, generator=generator, dtype=dtype, device=device)
    weights = torch.randn(d - r, n_features, generator=generator, dtype=dtype, device=device)
    mean = offset * torch.randn(d, generator=generator, dtype=dtype, device=device)
    embed = SineGraphMap(
        mean=mean,
        tangent=tangent,
        normal=normal,
        freqs=freqs,
        phases=phases,
        weights=weights,
        amplitude=float(amplitude),
    )
    if latent == "gaussian":
        u = scale * torch.randn(n, r, generator=generator, dtype=dtype, device=device)
    else:
        u = scale * (2 * torch.rand(n, r, generator=generator, dtype=dtype, device=device) - 1)
    clean = embed(u)
    x = clean
    if noise > 0:
        x = clean + noise * torch.randn(n, d, generator=generator, dtype=dtype, device=device)
    return SyntheticData(
        x=x,
        r=r,
        latent=u,
        clean=clean,
        mean=mean,
        basis=tangent,
        noise=float(noise),
        embed=embed,
        spectrum=None,
        kind="manifold",
    )
