"""Frechet distance at FID size: ``balance.metrics.frechet_distance`` against pytorch-fid's
``calculate_frechet_distance`` (``scipy.linalg.sqrtm`` of S1 S2) on the same statistics.

Statistics: means and covariances of 4096 Gaussian samples in d = 2048 (the pool3 dimension),
two different sets, so that S1 S2 is a dense, non-symmetric, full-rank product. The two
functions run interleaved (ABAB ...) so that a shared machine's slow drifts hit both; the
medians of the wall-clock times are compared. Target: ours <= 3 s, and faster than sqrtm.

    python -m benchmarks.bench_frechet [--quick] [--repeats N] [--dim D]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
import warnings

import numpy as np

TARGET_SECONDS = 3.0


def _statistics(d: int, n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((d, d)) / np.sqrt(d)  # correlated features, like pool3
    x1 = rng.standard_normal((n, d)) @ mixing
    x2 = 1.1 * rng.standard_normal((n, d)) @ mixing + 0.05
    return x1.mean(0), np.cov(x1, rowvar=False), x2.mean(0), np.cov(x2, rowvar=False)


def _pytorch_fid(mu1, s1, mu2, s2) -> float:
    from pytorch_fid.fid_score import calculate_frechet_distance

    # pytorch-fid passes sqrtm(disp=False), deprecated in scipy 1.17 (removed in 1.18), and may
    # print a message; neither is what is being timed.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return float(calculate_frechet_distance(mu1, s1, mu2, s2))


def _rounded(times: list[float]) -> list[float]:
    return [round(t, 3) for t in times]


def _same_blas_threads():
    """Give scipy's BLAS as many threads as torch has, so that both sides get the same cores
    (``python -m benchmarks --threads 1`` sets torch's only)."""
    import torch

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it BLAS keeps its own default
        return contextlib.nullcontext()
    return threadpool_limits(limits=torch.get_num_threads(), user_api="blas")


def main(quick: bool = False, repeats: int | None = None, dim: int | None = None) -> list[str]:
    """Time both implementations; print details, return the summary lines."""
    from balance.metrics.frechet import frechet_distance

    d = dim or (512 if quick else 2048)
    repeats = repeats or (2 if quick else 3)
    mu1, s1, mu2, s2 = _statistics(d, 2 * d, seed=0)
    ours_t, ref_t = [], []
    ours = ref = float("nan")
    with _same_blas_threads():
        for _ in range(repeats):
            start = time.perf_counter()
            ours = frechet_distance(mu1, s1, mu2, s2)
            ours_t.append(time.perf_counter() - start)
            start = time.perf_counter()
            ref = _pytorch_fid(mu1, s1, mu2, s2)
            ref_t.append(time.perf_counter() - start)
    ours_med, ref_med = statistics.median(ours_t), statistics.median(ref_t)
    rel = abs(ours - ref) / abs(ref)
    import torch

    print(f"d = {d}, {repeats} interleaved repeats, {torch.get_num_threads()} threads")
    print(f"  balance frechet_distance (eigh):       {ours_med:7.3f} s  {_rounded(ours_t)}")
    print(f"  pytorch-fid calculate_frechet (sqrtm): {ref_med:7.3f} s  {_rounded(ref_t)}")
    print(f"  values: {ours!r} vs {ref!r} (relative difference {rel:.2e})")
    verdict = "ok" if ours_med <= TARGET_SECONDS else f"over the {TARGET_SECONDS:g} s target"
    lines = [
        f"frechet (d={d}): ours {ours_med:.3f} s, pytorch-fid sqrtm {ref_med:.3f} s, "
        f"sqrtm/ours = {ref_med / ours_med:.2f}x ({verdict}); values agree to {rel:.1e} rel"
    ]
    if not quick:
        # FID of few samples: rank-deficient covariances (12 samples per side), as in the tests
        low = _statistics(d, 12, seed=1)
        with _same_blas_threads():
            ours_low, ref_low = frechet_distance(*low), _pytorch_fid(*low)
        rel_low = abs(ours_low - ref_low) / abs(ref_low)
        print(f"  rank-11 covariances: {ours_low!r} vs {ref_low!r} (relative {rel_low:.2e})")
        lines.append(f"frechet (d={d}, rank 11): values agree to {rel_low:.1e} rel")
    return lines


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="d = 512, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 gives steadier numbers on a shared machine)")
    args = parser.parse_args()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    for line in main(quick=args.quick, repeats=args.repeats, dim=args.dim):
        print(line)


if __name__ == "__main__":
    _cli()
