"""Generation metrics from features: KID, improved precision and recall, PRD.

Each function takes two feature sets ``real [N, d]`` and ``fake [M, d]`` (rows are samples) in
one feature space: Inception pool features where pytorch-fid's weights exist, else the pixels
or an autoencoder's codes. The feature space is the caller's to name (the table columns name
it: ``kid_x`` in pixel space, ``kid`` on Inception features); nothing here needs a pretrained
network. Computations run in float64 on the features' device.

- :func:`kid`: Kernel Inception Distance (Binkowski et al. 2018) as torch-fidelity defines
  it: the unbiased MMD^2 with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3`` over
  ``subsets`` random subsets of ``subset_size`` real and fake samples; mean and standard
  deviation over the subsets.
- :func:`precision_recall`: improved precision and recall (Kynkaanniemi et al. 2019): a
  sample is on a set's manifold if it lies within the distance from some point of the set to
  that point's k-th nearest neighbour in the set (k = 3); precision is the fraction of fake
  samples on the real manifold, recall the fraction of real samples on the fake manifold.
- :func:`prd`: precision and recall for distributions (Sajjadi et al. 2018): both sets binned
  by k-means (scikit-learn) on their union; the PRD curve ``alpha(lambda) = sum_i
  min(lambda p_i, q_i)``, ``beta(lambda) = alpha(lambda) / lambda`` over angles in (0, pi/2),
  averaged over ``runs`` clusterings; summarised by the maximum F_8 (recall-weighted) and
  F_1/8 (precision-weighted) on the curve.

scikit-learn finds the k-th nearest neighbours (the balls' radii) and bins the PRD (k-means);
whether a point lies in any ball of the other set (a cdist against per-centre radii) and the
KID kernel are short tensor expressions that no library offers on their own. torchmetrics
and torch-fidelity tie KID to their own Inception feature extractors and subset draws, so
the test compares against torchmetrics' kernel on the same subsets instead of calling it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["kid", "precision_recall", "prd", "prd_curve", "f_beta"]


def _check(real: Tensor, fake: Tensor, min_rows: int = 2) -> tuple[Tensor, Tensor]:
    real, fake = torch.as_tensor(real), torch.as_tensor(fake)
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be [N, d] and [M, d] with the same d, got "
                         f"{tuple(real.shape)} and {tuple(fake.shape)}")
    if min(real.shape[0], fake.shape[0]) < min_rows:
        raise ValueError(f"need at least {min_rows} samples in each set, got "
                         f"{real.shape[0]} and {fake.shape[0]}")
    if not (torch.isfinite(real).all() and torch.isfinite(fake).all()):
        raise ValueError("features contain NaN or infinite values")
    return real.to(torch.float64), fake.to(device=real.device, dtype=torch.float64)


def _poly_mmd2(x: Tensor, y: Tensor, degree: int, gamma: float, coef: float) -> Tensor:
    """Unbiased MMD^2 with the polynomial kernel (gamma x.y + coef)^degree."""
    m = x.shape[0]
    k_xx = (gamma * x @ x.T + coef) ** degree
    k_yy = (gamma * y @ y.T + coef) ** degree
    k_xy = (gamma * x @ y.T + coef) ** degree
    off_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    off_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return off_xx + off_yy - 2 * k_xy.mean()


def kid_subsets(n_real: int, n_fake: int, subsets: int, subset_size: int,
                generator: torch.Generator) -> list[tuple[Tensor, Tensor]]:
    """The (real, fake) row indices of each subset: ``subset_size`` rows of each set drawn
    without replacement, independently per subset."""
    return [(torch.randperm(n_real, generator=generator)[:subset_size],
             torch.randperm(n_fake, generator=generator)[:subset_size])
            for _ in range(subsets)]


def kid(real: Tensor, fake: Tensor, *, subsets: int = 100, subset_size: int = 1000,
        degree: int = 3, gamma: float | None = None, coef: float = 1.0,
        generator: torch.Generator | None = None) -> dict[str, float]:
    """``{"kid", "kid_std", "subset_size", "subsets"}``: mean and standard deviation of the
    unbiased polynomial-kernel MMD^2 over random subsets (torch-fidelity's defaults:
    100 subsets of 1000, degree 3, gamma = 1 / d, coef 1). ``subset_size`` is capped at the
    smaller set's size."""
    real, fake = _check(real, fake)
    size = min(subset_size, real.shape[0], fake.shape[0])
    gamma = 1.0 / real.shape[1] if gamma is None else gamma
    generator = generator or torch.Generator().manual_seed(0)
    values = torch.stack([
        _poly_mmd2(real[i.to(real.device)], fake[j.to(real.device)], degree, gamma, coef)
        for i, j in kid_subsets(real.shape[0], fake.shape[0], subsets, size, generator)])
    return {"kid": float(values.mean()), "kid_std": float(values.std(correction=0)),
            "subset_size": int(size), "subsets": int(subsets)}


def _kth_radius(x: Tensor, k: int) -> Tensor:
    """Distance from each row of x to its k-th nearest other row of x (scikit-learn's
    ``NearestNeighbors``; the nearest "neighbour" of a row is the row itself)."""
    from sklearn.neighbors import NearestNeighbors

    data = x.detach().cpu().numpy()
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(data).kneighbors(data)
    return torch.from_numpy(distances[:, k]).to(x.device)


def _inside(points: Tensor, centres: Tensor, radii: Tensor, batch: int) -> Tensor:
    """Whether each point lies within radius of at least one centre."""
    hits = []
    for start in range(0, points.shape[0], batch):
        d = torch.cdist(points[start:start + batch], centres)
        hits.append((d <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(hits)


def precision_recall(real: Tensor, fake: Tensor, *, k: int = 3,
                     batch: int = 1024) -> dict[str, float]:
    """Improved precision and recall (module docstring): ``{"precision", "recall", "k"}``."""
    real, fake = _check(real, fake, min_rows=k + 1)
    real_r = _kth_radius(real, k)
    fake_r = _kth_radius(fake, k)
    precision = _inside(fake, real, real_r, batch).double().mean()
    recall = _inside(real, fake, fake_r, batch).double().mean()
    return {"precision": float(precision), "recall": float(recall), "k": int(k)}


def prd_curve(ref_hist: np.ndarray, eval_hist: np.ndarray, *,
              angles: int = 1001, epsilon: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) of the PRD curve of two histograms over the same bins (each summing
    to 1): for slopes ``lambda = tan(theta)``, theta in (epsilon, pi/2 - epsilon),
    precision ``alpha = sum_i min(lambda ref_i, eval_i)`` and recall ``alpha / lambda``."""
    ref = np.asarray(ref_hist, dtype=np.float64)
    ev = np.asarray(eval_hist, dtype=np.float64)
    if ref.shape != ev.shape or ref.ndim != 1:
        raise ValueError(f"histograms must be 1-D of one length, got {ref.shape}, {ev.shape}")
    slopes = np.tan(np.linspace(epsilon, math.pi / 2 - epsilon, angles))
    precision = np.minimum(ref[None, :] * slopes[:, None], ev[None, :]).sum(axis=1)
    recall = precision / slopes
    return np.clip(precision, 0, 1), np.clip(recall, 0, 1)


def f_beta(precision: np.ndarray, recall: np.ndarray, beta: float) -> np.ndarray:
    """F_beta of each (precision, recall) pair (0 where both are 0)."""
    p, r = np.asarray(precision), np.asarray(recall)
    denom = beta ** 2 * p + r
    return np.where(denom > 0, (1 + beta ** 2) * p * r / np.where(denom > 0, denom, 1), 0.0)


def prd(real: Tensor, fake: Tensor, *, clusters: int = 20, runs: int = 10, angles: int = 1001,
        seed: int = 0) -> dict:
    """PRD (module docstring): ``{"f8", "f1_8", "precision", "recall", "clusters", "runs"}``
    with the curve averaged over ``runs`` k-means clusterings (``clusters`` bins) of the union
    of equally many real and fake samples; F_8 weighs recall, F_1/8 precision."""
    from sklearn.cluster import MiniBatchKMeans

    real, fake = _check(real, fake)
    n = min(real.shape[0], fake.shape[0])
    r, f = real[:n].cpu().numpy(), fake[:n].cpu().numpy()
    data = np.concatenate([r, f])
    clusters = min(clusters, n)  # tiny sets: at most one bin per sample pair
    curves = []
    for run in range(runs):
        km = MiniBatchKMeans(n_clusters=clusters, n_init=10, random_state=seed + run)
        labels = km.fit(data).labels_
        ref = np.bincount(labels[:n], minlength=clusters) / n
        ev = np.bincount(labels[n:], minlength=clusters) / n
        curves.append(prd_curve(ref, ev, angles=angles))
    precision = np.mean([c[0] for c in curves], axis=0)
    recall = np.mean([c[1] for c in curves], axis=0)
    return {"f8": float(f_beta(precision, recall, 8).max()),
            "f1_8": float(f_beta(precision, recall, 1 / 8).max()),
            "precision": precision.tolist(), "recall": recall.tolist(),
            "clusters": int(clusters), "runs": int(runs)}
