"""Unbiased MMD^2 with the multi-scale IMQ kernel: the in-place evaluation path of
``balance.kernels.mmd_unbiased`` (two reused buffers, one fused ``addmm`` per block, the
scales applied in place) against the plain path (``_kernel_sums``: a fresh Gram matrix and one
temporary per scale and block), on the same samples, in the same run, interleaved (ABAB...);
medians compared. The setting is the tables' pixel MMD: N images of MNIST size (d = 784) in
float64 against N others. Both give the same value to float round-off (checked).

    python -m benchmarks.bench_mmd [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from balance.kernels import _kernel_sums, imq_kernel, mmd_unbiased


def plain(x: torch.Tensor, y: torch.Tensor, block: int = 2048) -> torch.Tensor:
    n, m = x.shape[0], y.shape[0]
    return (_kernel_sums(x, x, imq_kernel, block, True) / (n * (n - 1))
            + _kernel_sums(y, y, imq_kernel, block, True) / (m * (m - 1))
            - 2.0 * _kernel_sums(x, y, imq_kernel, block, False) / (n * m))


def main(quick: bool = False, repeats: int | None = None) -> list[str]:
    n, d = (2000, 784) if quick else (10_000, 784)
    repeats = repeats or 2
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    y = torch.rand(n, d, generator=g, dtype=torch.float64) * 0.98
    times = {"in place": [], "plain": []}
    values = {}
    with torch.no_grad():
        for _ in range(repeats):
            for name, fn in (("in place", lambda: mmd_unbiased(x, y)),
                             ("plain", lambda: plain(x, y))):
                start = time.perf_counter()
                values[name] = float(fn())
                times[name].append(time.perf_counter() - start)
    a, b = statistics.median(times["in place"]), statistics.median(times["plain"])
    rel = abs(values["in place"] - values["plain"]) / abs(values["plain"])
    return [f"mmd: N = {n}, d = {d}, float64, IMQ (7 scales): in place {a:.2f} s, plain "
            f"{b:.2f} s, {b / a:.2f}x faster; values {values['in place']:.6e} vs "
            f"{values['plain']:.6e} (relative difference {rel:.1e}), torch threads "
            f"{torch.get_num_threads()}"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    print("\n".join(main(args.quick, args.repeats)))
