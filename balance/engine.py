"""Running the independent cells of an experiment (a kappa x arm, a model of a table, a seed).

``run_cells(fn, cells, engine)`` calls ``fn(*cell)`` for every cell and returns the results in
the order of ``cells``. Engines (:class:`EngineConfig`):

- ``local`` (the default): in this process, one cell after another; no extra dependency.
- ``ray``: each cell is a Ray task (``pip install -e ".[cluster]"``), on the cluster at
  ``address`` or, when none is given, on a Ray instance started here for the call (``num_cpus``
  CPUs, default all) and stopped afterwards. Each task asks for ``cpus_per_run`` CPUs and
  ``gpus_per_run`` GPUs (fractions let several small runs share one GPU).

Cells must be independent and write their own run folders (on a cluster, a shared
filesystem): a task whose worker dies (preempted, killed, out of memory) is retried up to
``max_retries`` times by Ray, and the retry resumes from the cell's last checkpoint, so the
final results equal a local run's. Stages that depend on each other (AE -> feature VAE ->
second stage; learned gamma -> fixed gamma) belong to one cell, which runs them in order.
``fn`` must be importable by its module name (a module-level function of ``balance`` or of an
experiment module): Ray workers import it, with the folder holding its top-level package put
on their ``PYTHONPATH``.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ENGINES", "EngineConfig", "EngineError", "run_cells"]

ENGINES = ("local", "ray")


class EngineError(RuntimeError):
    """An engine cannot be used as asked (Ray not installed, no cluster at the address); the
    message says what to do."""


@dataclass(frozen=True)
class EngineConfig:
    """Where cells run (see the module docstring). Runtime only: a run started on one engine
    resumes on another with the same results (``balance.runs.RUNTIME_FIELDS``)."""

    name: str = "local"
    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    num_cpus: int | None = None
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ValueError(f"unknown engine {self.name!r}; choose one of {ENGINES}")
        if not self.cpus_per_run > 0 or self.gpus_per_run < 0:
            raise ValueError("cpus_per_run must be > 0 and gpus_per_run >= 0, got "
                             f"{self.cpus_per_run} and {self.gpus_per_run}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")


def run_cells(fn: Callable[..., Any], cells: Sequence[tuple],
              engine: EngineConfig = EngineConfig(), *,
              done: Callable[[tuple], bool] | None = None,
              on_done: Callable[[tuple, Any], None] | None = None,
              progress: bool = False) -> list[Any]:
    """``[fn(*cell) for cell in cells]`` on ``engine``. Cells for which ``done(cell)`` is true
    are still called (they return their saved results at once) but run here, not as tasks.
    ``on_done(cell, result)`` as each finishes. An error in a cell is raised here once the
    cells already running have stopped."""
    cells = list(cells)
    pending = [i for i, c in enumerate(cells) if done is None or not done(c)]
    if engine.name == "local" or not pending:
        from tqdm.auto import tqdm

        out = []
        for cell in tqdm(cells, desc="cells", unit="cell", disable=not progress or len(cells) < 2):
            result = fn(*cell)
            if on_done is not None:
                on_done(cell, result)
            out.append(result)
        return out
    return _run_on_ray(fn, cells, pending, engine, on_done, progress)


def _import_root(fn: Callable) -> str:
    """The folder from which ``fn``'s module imports (the parent of its top-level package)."""
    module = sys.modules[fn.__module__]
    if fn.__module__ == "__main__" or not getattr(module, "__file__", None):
        raise EngineError(
            f"{fn.__qualname__} lives in __main__: Ray workers cannot import it. Run the "
            "experiment through balance.experiment.run_script (it re-imports the script as "
            "experiments.<name>), or define the function in an importable module")
    depth = fn.__module__.count(".")
    return str(Path(module.__file__).resolve().parents[depth])


def _check_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming the address, when no Ray head answers at ``host:port``."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as err:
        raise EngineError(
            f"no Ray cluster answers at --address {address} ({err}): start one there with "
            "`ray start --head --port PORT`, give the head's host:port, or leave --address out "
            "to start Ray on this machine") from None


def _release_folder_locks(fn: Callable, *cell: Any) -> Any:
    """``fn(*cell)`` in a Ray worker, releasing the run-folder locks it took when it ends (a
    worker process outlives its task and would otherwise hold them)."""
    from balance.runs import release_run_dirs

    try:
        return fn(*cell)
    finally:
        release_run_dirs()


def _run_on_ray(fn: Callable, cells: list[tuple], pending: list[int], engine: EngineConfig,
                on_done: Callable | None, progress: bool) -> list[Any]:
    import os

    if engine.address is None:
        # A Ray instance started here serves this machine only: keep it on the loopback
        # interface (Ray's switch for single-machine clusters; read when ray is imported).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise EngineError("--engine ray needs Ray: pip install -e \".[cluster]\"") from None

    root = _import_root(fn)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    runtime_env = {"env_vars": {"PYTHONPATH": path}}
    started = False
    if not ray.is_initialized():
        if engine.address is not None:
            _check_address(engine.address)
            try:
                ray.init(address=engine.address, runtime_env=runtime_env, log_to_driver=True)
            except ConnectionError as err:
                raise EngineError(
                    f"cannot join the Ray cluster at --address {engine.address} ({err}). A "
                    "cluster started with `ray start` may require its token: set "
                    "RAY_AUTH_MODE=token and give the token (~/.ray/auth_token or "
                    "RAY_AUTH_TOKEN)") from None
        else:
            ray.init(num_cpus=engine.num_cpus, include_dashboard=False,
                     runtime_env=runtime_env, log_to_driver=True)
        started = True
    try:
        task = ray.remote(num_cpus=engine.cpus_per_run, num_gpus=engine.gpus_per_run,
                          max_retries=engine.max_retries)(_release_folder_locks)
        refs = {task.remote(fn, *cells[i]): i for i in pending}
        results: dict[int, Any] = {}
        from tqdm.auto import tqdm

        bar = tqdm(total=len(refs), desc="cells (ray)", unit="cell", disable=not progress)
        waiting = list(refs)
        try:
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1)
                i = refs[ready[0]]
                results[i] = ray.get(ready[0])  # raises the cell's error here
                bar.update(1)
                if on_done is not None:
                    on_done(cells[i], results[i])
        except BaseException:
            for ref in waiting:
                ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()
        for i, cell in enumerate(cells):  # finished earlier: read back here
            if i not in results:
                results[i] = fn(*cell)
                if on_done is not None:
                    on_done(cell, results[i])
        return [results[i] for i in range(len(cells))]
    finally:
        if started:
            ray.shutdown()
