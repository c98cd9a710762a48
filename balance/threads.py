"""Thread limits for CPU work: one context manager for torch and the BLAS/OpenMP pools."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def limit_threads(threads: int | None) -> Iterator[None]:
    """Cap torch's CPU threads and the BLAS/OpenMP pools (numpy, scipy, scikit-learn) inside the
    block, then restore them; ``None`` leaves everything as it is.

    Small networks and matrices gain nothing from thread pools, and on a machine shared with
    other jobs their spin-waiting makes them several times (up to 100x) slower; experiments
    take ``--threads`` and tests run with one thread for that reason.
    """
    if threads is None:
        yield
        return
    if threads < 1:
        from balance.runs import UsageError

        raise UsageError(f"threads must be >= 1 (or None: no cap), got {threads}; pass "
                         "--threads 1 or more")
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        with threadpool_limits(limits=int(threads)):
            yield
    finally:
        torch.set_num_threads(previous)
