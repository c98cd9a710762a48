"""Number of statistically Different Bins (NDB; Richardson & Weiss 2018, "On GANs and GMMs").

1. Bins: k-means with K clusters on the training samples (flattened images, all dimensions,
   no whitening: the defaults of the authors' ``NDB`` class). The training proportion of bin
   j is the fraction of training samples whose nearest centre is j.
2. Query samples are assigned to their nearest centre (L2).
3. For each bin, a two-tailed two-proportion z-test of ``p_train = p_query`` with the pooled
   proportion ``p = (n1 p1 + n2 p2) / (n1 + n2)``,
   ``z = (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2))``, significant when
   ``2 (1 - Phi(|z|)) < alpha`` (alpha = 0.05).

NDB is the number of significant bins, NDB/K its fraction (~alpha when the query comes from
the training distribution), and JS the Jensen-Shannon divergence between the two bin
histograms (natural log, nats; in [0, ln 2]). The paper's tables use K = 100, 200, 300.

Differences from the authors' code: the k-means is seeded (``KMeans(random_state=seed)``);
there is no random subset of d/6 dimensions for d > 1000 (their unseeded speed-up), so the bins
use every pixel; the training proportions come from the same nearest-centre rule as the query
(identical to the k-means labels at convergence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SUPPORTED_K = (100, 200, 300)


def _flatten(samples: Any, name: str) -> np.ndarray:
    if hasattr(samples, "detach"):  # torch.Tensor
        samples = samples.detach().cpu().numpy()
    x = np.asarray(samples)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be [N, ...] with N >= 1, got shape {x.shape}")
    x = x.reshape(x.shape[0], -1).astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values")
    return x


def two_proportion_z_test(
    count1: np.ndarray, n1: int, count2: np.ndarray, n2: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled two-proportion z statistics and two-tailed p-values, elementwise over bins.

    ``z = (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2))`` with ``p = (count1 + count2) / (n1 + n2)``;
    ``p-value = 2 (1 - Phi(|z|))``. A bin empty on both sides has z = 0, p-value 1.
    """
    from scipy.stats import norm

    c1 = np.asarray(count1, dtype=np.float64)
    c2 = np.asarray(count2, dtype=np.float64)
    p1, p2 = c1 / n1, c2 / n2
    pooled = (c1 + c2) / (n1 + n2)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (p1 - p2) / np.where(se > 0, se, 1.0), 0.0)
    return z, 2.0 * norm.sf(np.abs(z))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence ``(KL(p || m) + KL(q || m)) / 2``, ``m = (p + q) / 2``, in nats."""
    from scipy.special import rel_entr

    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)
    return float(0.5 * (rel_entr(p, m).sum() + rel_entr(q, m).sum()))


@dataclass(frozen=True, eq=False)
class NDBResult:
    """Outcome of one NDB evaluation (arrays are per bin, [K])."""

    ndb: int  #: number of statistically different bins
    ndb_over_k: float  #: ndb / K
    js: float  #: Jensen-Shannon divergence between the bin histograms, nats
    k: int
    significance: float
    different: np.ndarray  #: bool, p-value < significance
    z: np.ndarray  #: z statistic (train minus query proportion)
    p_values: np.ndarray
    train_proportions: np.ndarray
    sample_proportions: np.ndarray
    n_train: int
    n_samples: int


class NDBBins:
    """K-means bins fitted once on training samples, reusable for several query sets.

    >>> bins = NDBBins.fit(train_images, k=100, seed=0)          # doctest: +SKIP
    >>> bins.evaluate(vae_samples).ndb_over_k                     # doctest: +SKIP
    """

    def __init__(self, centers: np.ndarray, train_counts: np.ndarray, significance: float = 0.05):
        self.centers = np.asarray(centers, dtype=np.float32)  # [K, D]
        self.train_counts = np.asarray(train_counts, dtype=np.int64)  # [K]
        if not 0.0 < significance < 1.0:
            raise ValueError(f"significance must lie in (0, 1), got {significance}")
        self.significance = float(significance)

    @property
    def k(self) -> int:
        return self.centers.shape[0]

    @property
    def n_train(self) -> int:
        return int(self.train_counts.sum())

    @property
    def train_proportions(self) -> np.ndarray:
        return self.train_counts / self.n_train

    @classmethod
    def fit(
        cls,
        train: Any,
        k: int,
        *,
        seed: int,
        significance: float = 0.05,
        n_init: int = 1,
        max_iter: int = 100,
    ) -> NDBBins:
        """Fit ``k`` k-means bins (scikit-learn ``KMeans``, k-means++ init, ``random_state=seed``)
        on training samples [N, ...] (flattened; tensors or arrays)."""
        from sklearn.cluster import KMeans

        x = _flatten(train, "train")
        if k < 2 or k > x.shape[0]:
            raise ValueError(f"need 2 <= k <= number of training samples ({x.shape[0]}), got {k}")
        kmeans = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed)
        kmeans.fit(x)
        bins = cls(kmeans.cluster_centers_, np.zeros(k, dtype=np.int64), significance)
        bins.train_counts = np.bincount(bins.assign(x), minlength=k)
        return bins

    def assign(self, samples: Any) -> np.ndarray:
        """Index of the nearest centre (squared L2) for each sample, int64 [N]."""
        from sklearn.metrics import pairwise_distances_argmin

        x = _flatten(samples, "samples")
        if x.shape[1] != self.centers.shape[1]:
            raise ValueError(f"samples have {x.shape[1]} dimensions, the bins "
                             f"{self.centers.shape[1]}")
        return pairwise_distances_argmin(x, self.centers).astype(np.int64)

    def evaluate(self, samples: Any) -> NDBResult:
        """NDB, NDB/K and JS of query samples [M, ...] against the training bins."""
        labels = self.assign(samples)
        n = labels.shape[0]
        counts = np.bincount(labels, minlength=self.k)
        z, p_values = two_proportion_z_test(self.train_counts, self.n_train, counts, n)
        different = p_values < self.significance
        ndb = int(different.sum())
        return NDBResult(
            ndb=ndb,
            ndb_over_k=ndb / self.k,
            js=js_divergence(self.train_counts, counts),
            k=self.k,
            significance=self.significance,
            different=different,
            z=z,
            p_values=p_values,
            train_proportions=self.train_proportions,
            sample_proportions=counts / n,
            n_train=self.n_train,
            n_samples=n,
        )


def ndb(
    train: Any,
    samples: Any,
    k: int,
    *,
    seed: int,
    significance: float = 0.05,
    n_init: int = 1,
    max_iter: int = 100,
) -> NDBResult:
    """NDB of ``samples`` against bins fitted on ``train`` (one-shot :class:`NDBBins` use).

    Fit the bins once with :meth:`NDBBins.fit` to score several sample sets against the same
    training data (the paper's tables compare models on the same bins).
    """
    bins = NDBBins.fit(train, k, seed=seed, significance=significance, n_init=n_init,
                       max_iter=max_iter)
    return bins.evaluate(samples)
