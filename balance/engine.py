"""Running independent cells of an experiment (a kappa x arm, a model of a table, a seed).

``run_cells(fn, cells, workers)`` calls ``fn(*cell)`` for every cell: in this process when
``workers <= 1`` (the default), else in ``workers`` spawned processes (CPU: one per core, each
with its own thread limit). Cells must be independent and write their own run folders, so
that a stopped run resumes cell by cell; ``fn`` must be a module-level function (it is sent
to the workers by reference). Results come back in the order of ``cells``. A worker ends
itself when its parent process dies.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["run_cells"]


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """In a worker: end this process when the parent that started it is gone (killed with
    -9, say), instead of training on and writing into its run folders."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(3)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def run_cells(fn: Callable[..., Any], cells: Sequence[tuple], workers: int = 1,
              on_done: Callable[[tuple, Any], None] | None = None) -> list[Any]:
    """``[fn(*cell) for cell in cells]``, over ``workers`` processes when ``workers > 1``;
    ``on_done(cell, result)`` as each finishes. An error in any cell is raised here once the
    others have stopped."""
    cells = list(cells)
    if workers <= 1 or len(cells) <= 1:
        out = []
        for cell in cells:
            result = fn(*cell)
            if on_done is not None:
                on_done(cell, result)
            out.append(result)
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    results: dict[int, Any] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(fn, *cell): i for i, cell in enumerate(cells)}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            if on_done is not None:
                on_done(cells[i], results[i])
    return [results[i] for i in range(len(cells))]
