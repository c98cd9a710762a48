"""Speed benchmarks: ``python -m benchmarks`` runs every ``benchmarks/bench_*.py`` module.

Each module defines ``main(quick: bool = False) -> list[str]``: it runs its measurement, may
print details, and returns one-line summaries (the ratios) that ``python -m benchmarks`` repeats
at the end. Each can also be run alone: ``python -m benchmarks.bench_train_loop [--quick]``.
Benchmarks are not tests: they print numbers and never fail on a slow machine.
"""
