"""Bayesian optimisation in a latent space (the Grammar VAE's experiment, Kusner et al. 2017,
section 4.3): a Gaussian process (scikit-learn's, ARD Matern 5/2 kernel plus white noise,
normalised targets) fitted to the scores of encoded points, expected improvement for a
minimisation, and batches of the candidates with the highest expected improvement.

Candidates are drawn by a ``propose(n, rng)`` callable (e.g. an ex-post density of the codes);
each batch takes the top ``batch`` candidates by expected improvement under one fitted process
(no fantasised observations within a batch: simpler than Kusner et al.'s batch rule and what
scikit-learn offers). :func:`random_search` spends the same evaluations on proposals alone: the
baseline the optimisation has to beat.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

__all__ = ["BOConfig", "expected_improvement", "minimise", "random_search", "summary"]


@dataclass(frozen=True)
class BOConfig:
    """``iterations`` batches of ``batch`` evaluations, each chosen among ``candidates``
    proposals; ``initial`` encoded points with known scores to start from; ``top``: the size
    of the "mean of the best" summary (Kusner et al. report the top 50)."""

    iterations: int = 10
    batch: int = 10
    candidates: int = 2000
    initial: int = 500
    top: int = 50


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """E[max(best - f, 0)] for f ~ N(mean, std^2) (minimisation); 0 where std is 0."""
    from scipy.stats import norm

    std = np.maximum(std, 1e-12)
    gap = best - mean
    u = gap / std
    return gap * norm.cdf(u) + std * norm.pdf(u)


def _gp(dim: int):
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * Matern(np.ones(dim), (1e-2, 1e3), nu=2.5)
              + WhiteKernel(1e-2, (1e-6, 1e1)))
    return GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=0)


def minimise(score: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, y0: np.ndarray,
             propose: Callable[[int, np.random.Generator], np.ndarray], config: BOConfig,
             seed: int = 0) -> dict:
    """Batched Bayesian optimisation from ``(x0 [n, k], y0 [n])``; ``score(points [b, k]) ->
    [b]``. Returns the evaluated ``points`` and ``scores`` in order (the initial data not
    included)."""
    rng = np.random.default_rng(seed)
    xs, ys = np.asarray(x0, float), np.asarray(y0, float)
    points, scores = [], []
    for _ in range(config.iterations):
        with warnings.catch_warnings():  # a length scale at its bound is a fit, not an error
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp = _gp(xs.shape[1]).fit(xs, ys)
        candidates = propose(config.candidates, rng)
        mean, std = gp.predict(candidates, return_std=True)
        chosen = candidates[np.argsort(-expected_improvement(mean, std, ys.min()))[
            : config.batch]]
        values = np.asarray(score(chosen), float)
        points.append(chosen)
        scores.append(values)
        xs, ys = np.vstack([xs, chosen]), np.concatenate([ys, values])
    return {"points": np.vstack(points), "scores": np.concatenate(scores)}


def random_search(score: Callable[[np.ndarray], np.ndarray],
                  propose: Callable[[int, np.random.Generator], np.ndarray], config: BOConfig,
                  seed: int = 0) -> dict:
    """The same number of evaluations as :func:`minimise`, on proposals alone."""
    rng = np.random.default_rng(seed)
    points = propose(config.iterations * config.batch, rng)
    return {"points": points, "scores": np.asarray(score(points), float)}


def summary(scores: np.ndarray, top: int) -> dict:
    """Best score, mean of the ``top`` best and the best-so-far curve of one run."""
    scores = np.asarray(scores, float)
    return {"best": float(scores.min()), f"top{top}_mean": float(np.sort(scores)[:top].mean()),
            "best_so_far": np.minimum.accumulate(scores).tolist()}
