"""Run every benchmark in one process and print their ratio lines.

    python -m benchmarks                      # all bench_*.py modules, full size
    python -m benchmarks --quick              # smaller sizes, for a smoke run
    python -m benchmarks --only train_loop    # one (or, repeated, several) by name
    python -m benchmarks --threads 1          # steadier timings on a shared machine

A module is any ``benchmarks/bench_<name>.py`` with ``main(quick: bool = False)`` returning a list
of summary lines (see ``benchmarks/__init__.py``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import platform
import sys
import time
import traceback
from pathlib import Path

PREFIX = "bench_"


def discover() -> list[str]:
    """Names (without the ``bench_`` prefix) of the benchmark modules, sorted."""
    folder = Path(__file__).resolve().parent
    return sorted(
        info.name[len(PREFIX):]
        for info in pkgutil.iter_modules([str(folder)])
        if info.name.startswith(PREFIX)
    )


def _machine() -> str:
    import torch

    from balance.runs import device_name, pick_device

    device = pick_device("auto")
    return (
        f"{device_name(device)} ({device}), {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"python {platform.python_version()}"
    )


def run(name: str, quick: bool) -> list[str]:
    module = importlib.import_module(f"benchmarks.{PREFIX}{name}")
    main = module.main
    if "quick" in inspect.signature(main).parameters:
        lines = main(quick=quick)
    else:
        lines = main()
    return list(lines or [])


def main(argv: list[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"run only this benchmark (repeatable); one of {available}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch CPU threads (default: torch's choice); 1 gives steadier "
                        "numbers on a machine shared with other jobs")
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    names = available
    if args.only:
        wanted = [n[len(PREFIX):] if n.startswith(PREFIX) else n for n in args.only]
        wanted = [n[:-3] if n.endswith(".py") else n for n in wanted]
        unknown = sorted(set(wanted) - set(available))
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; available: {available}")
        names = [n for n in available if n in wanted]

    print(f"machine: {_machine()}", flush=True)
    summary: list[str] = []
    failed: list[str] = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        try:
            lines = run(name, args.quick)
        except Exception:  # one broken benchmark should not hide the others' numbers
            traceback.print_exc()
            failed.append(name)
            summary.append(f"{name}: FAILED (see the traceback above)")
            continue
        summary.extend(lines)
        print(f"({name}: {time.perf_counter() - started:.1f} s)", flush=True)

    print("\n=== summary ===")
    for line in summary:
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
