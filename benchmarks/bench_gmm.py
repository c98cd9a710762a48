"""GMM fit: ``balance.density_estimation.GaussianMixture`` against scikit-learn's
``GaussianMixture`` called directly with the same settings, on the same codes.

The package's estimator is a thin wrapper (input checks, float64 conversion, a BLAS thread cap,
Cholesky factors for sampling) around scikit-learn's EM, so the ratio should be close to 1: it
measures the wrapper's overhead. Both sides fit 10 full-covariance components (``max_iter``
2000, ``tol`` 1e-3, ``reg_covar`` 1e-6, one initialisation, ``random_state`` 0) to the same codes
(10,000 x 16, float32 as an encoder gives them; scikit-learn gets them already as a float64
array) under the same BLAS thread limit, interleaved (ABAB ...); medians are compared. Both must
reach the same fit (same EM iteration count and means).

Codes: a mixture of 10 overlapping Gaussians with random means and covariances in 16
dimensions, the shape of an RAE's MNIST latent codes (EXPERIMENTS.md E4: GMM with 10 components
fitted ex post). Printed beside the ratio: the time of the wrapper's own extra step, the 10
Cholesky factors of the fitted covariances (``torch.linalg.cholesky_ex`` at torch's thread
count), so that an overhead far from 1 can be located.

    python -m benchmarks.bench_gmm [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

N_COMPONENTS = 10
SETTINGS = dict(covariance_type="full", max_iter=2000, tol=1e-3, reg_covar=1e-6, n_init=1,
                random_state=0)


def make_codes(n: int, dim: int = 16, clusters: int = N_COMPONENTS, seed: int = 0) -> np.ndarray:
    """``[n, dim]`` float32 draws from a random mixture of ``clusters`` Gaussians."""
    rng = np.random.default_rng(seed)
    # Overlapping clusters: EM then runs about a dozen iterations, as on real latent codes
    # (well-separated ones converge in 2-3 and would time little but the set-up).
    means = 0.5 * rng.standard_normal((clusters, dim))
    mixing = rng.standard_normal((clusters, dim, dim)) / np.sqrt(dim)
    labels = rng.integers(clusters, size=n)
    eps = rng.standard_normal((n, dim))
    codes = means[labels] + np.einsum("nij,nj->ni", mixing[labels], eps)
    return codes.astype(np.float32)


def machine(blas_threads: int | None) -> str:
    from sklearn import __version__ as sklearn_version

    from balance.runs import device_name

    blas = "default" if blas_threads is None else str(blas_threads)
    return (f"{device_name('cpu')}, {os.cpu_count()} CPUs, BLAS threads {blas}, "
            f"torch {torch.__version__}, scikit-learn {sklearn_version}, "
            f"python {platform.python_version()}")


def main(quick: bool = False, repeats: int | None = None, n: int | None = None) -> list[str]:
    """Time both fits; print details, return the summary line."""
    from sklearn.mixture import GaussianMixture as SkGMM
    from threadpoolctl import threadpool_limits

    from balance.density_estimation import GaussianMixture

    n = n or (2000 if quick else 10_000)
    repeats = repeats or (2 if quick else 3)
    codes32 = make_codes(n)
    codes = torch.from_numpy(codes32)  # what the package receives: a float32 tensor of codes
    data = codes32.astype(np.float64)  # what a direct scikit-learn call receives
    threads = GaussianMixture().threads  # the wrapper's BLAS thread cap; the same for both

    def ours():
        return GaussianMixture(N_COMPONENTS, max_iter=SETTINGS["max_iter"], tol=SETTINGS["tol"],
                               reg_covar=SETTINGS["reg_covar"], n_init=SETTINGS["n_init"],
                               seed=SETTINGS["random_state"], threads=threads).fit(codes)

    def direct():
        with threadpool_limits(limits=threads):
            return SkGMM(N_COMPONENTS, **SETTINGS).fit(data)

    ours()  # warm-up: imports, first-call costs
    ours_t, ref_t = [], []
    fitted = reference = None
    for _ in range(repeats):
        start = time.perf_counter()
        fitted = ours()
        ours_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference = direct()
        ref_t.append(time.perf_counter() - start)
    ours_med, ref_med = statistics.median(ours_t), statistics.median(ref_t)
    same_iters = fitted.model.n_iter_ == reference.n_iter_
    means_diff = float(np.abs(fitted.means.numpy() - reference.means_).max())

    covariances = fitted.covariances.clone()
    start = time.perf_counter()
    for cov in covariances:
        torch.linalg.cholesky_ex(cov)
    chol_s = time.perf_counter() - start

    print(f"codes {n} x {codes.shape[1]}, {N_COMPONENTS} full-covariance components, "
          f"{repeats} interleaved repeats, BLAS threads {threads}")
    print(f"  balance GaussianMixture.fit:  {ours_med:7.3f} s  {[round(t, 3) for t in ours_t]}")
    print(f"  sklearn GaussianMixture.fit:  {ref_med:7.3f} s  {[round(t, 3) for t in ref_t]}")
    print(f"  of which the wrapper's {N_COMPONENTS} Cholesky factors (torch, "
          f"{torch.get_num_threads()} threads): about {chol_s:.3f} s")
    print(f"  EM iterations {fitted.model.n_iter_} vs {reference.n_iter_}; "
          f"max |means difference| {means_diff:.1e}")
    agreement = (f"same fit ({reference.n_iter_} EM iterations, means agree to {means_diff:.0e})"
                 if same_iters and means_diff < 1e-6 else
                 f"FITS DIFFER (iterations {fitted.model.n_iter_} vs {reference.n_iter_}, "
                 f"means {means_diff:.1e})")
    return [
        f"gmm ({N_COMPONENTS} full-cov components, {n} x {codes.shape[1]} codes): balance "
        f"{ours_med:.3f} s, sklearn direct {ref_med:.3f} s, balance/sklearn = "
        f"{ours_med / ref_med:.2f}x (wrapper overhead; its Cholesky step ~{chol_s:.3f} s at "
        f"{torch.get_num_threads()} torch threads); {agreement}; on {machine(threads)}"
    ]


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 codes, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--n", type=int, default=None, help="number of codes")
    args = parser.parse_args()
    for line in main(quick=args.quick, repeats=args.repeats, n=args.n):
        print(line)


if __name__ == "__main__":
    _cli()
