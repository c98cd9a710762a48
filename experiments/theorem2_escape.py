"""Theorem 2's over-regularized point, over seeds: how soon a deep Gaussian VAE leaves the
all-dimensions-off point, with and without the affine skip z -> x and the residual skips, at
two decoder depths (THEORY.md section 2; ``balance.theory.over_regularized``).

Claim: with the affine skip the all-off point is a strict saddle with O(1) negative curvature,
so training leaves it at once and ends with r active dimensions; through a deep decoder alone
the negative curvature is much weaker, so it leaves later, if at all ("falls back" to the
over-regularized point).

Set-up (fixed before any outcome was seen, as in ``proofs_checks/test_theorem2.py``): n = 256
points on a random 2-plane in R^12 (r = 2), kappa = 4, encoder 2 x 32, decoder of ``plain``
hidden layers or ``residual`` blocks of width 32, every dimension switched off and perturbed by
N(0, 1e-3^2), learned gamma from 1, full-batch Adam (lr 2e-3), active units (Burda, 0.01)
checked every 25 steps. Per seed: the first checked step with an active dimension (None: never
within ``steps``) and the active count at the end.

Usage: ``python experiments/theorem2_escape.py [--preset quick|smoke] [--seeds ...]``.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

if __package__ in (None, ""):  # python experiments/theorem2_escape.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balance import reporting
from balance.engine import EngineConfig, run_cells
from balance.experiment import run_script
from balance.reporting import markdown_table
from balance.runs import (
    RESULTS_FILE,
    Stage,
    prepare_run,
    read_json,
    results_header,
    run_identity,
    write_json,
)
from balance.threads import limit_threads

NAME = "theorem2_escape"
PRESETS = ("quick", "smoke")
SEED_FIELDS = ("seed_offset",)
FLAGS = ("archs",)
SAVES_MODELS = False  # seconds-long fits, kept in memory: no model folders
#: decoder -> (affine skip, residual blocks)
ARCHS = {"plain": (False, False), "plain+skip": (True, False), "residual": (False, True),
         "residual+skip": (True, True)}
#: decoder size -> (plain hidden layers, residual blocks): 5 / 6 and 7 / 8 linear layers
SIZES = {"shallow": (4, 2), "deep": (6, 3)}
D, R, KAPPA, WIDTH, N = 12, 2, 4, 32, 256


@dataclass(frozen=True)
class Config:
    preset: str = "quick"
    seeds: int = 20
    seed_offset: int = 0
    archs: tuple[str, ...] = tuple(ARCHS)
    sizes: tuple[str, ...] = tuple(SIZES)
    steps: int = 1500
    check_every: int = 25
    lr: float = 2e-3
    perturbation: float = 1e-3
    threads: int | None = 1
    engine: EngineConfig = EngineConfig()


def preset(name: str) -> Config:
    if name == "quick":
        return Config(preset=name)
    if name == "smoke":
        return Config(preset=name, seeds=2, archs=("plain", "plain+skip"), sizes=("shallow",),
                      steps=100)
    raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")


def one_seed(arch: str, size: str, seed: int, config: Config) -> tuple[int | None, int]:
    """(first escape step or None, final active count) of one seed."""
    from balance.data.synthetic import affine_subspace
    from balance.models.mlp import MLPDecoder, MLPDecoderConfig, MLPEncoder, MLPEncoderConfig
    from balance.models.vae import GammaConfig, GaussianVAE
    from balance.theory.over_regularized import escape, switch_off

    skip, residual = ARCHS[arch]
    depth = SIZES[size][1] if residual else SIZES[size][0]
    gen = torch.Generator().manual_seed(seed)  # the data, then the perturbation, then noise
    x = affine_subspace(N, D, R, generator=gen).x
    torch.manual_seed(seed)
    model = GaussianVAE(
        MLPEncoder(MLPEncoderConfig((D,), KAPPA, width=WIDTH, depth=2)),
        MLPDecoder(MLPDecoderConfig((D,), KAPPA, width=WIDTH, depth=depth, residual=residual,
                                    affine_skip=skip)),
        GammaConfig(init=1.0)).double()
    model.set_gamma(1.0)
    switch_off(model, range(KAPPA), perturbation=config.perturbation, generator=gen)
    return escape(model, x, config.steps, check_every=config.check_every, lr=config.lr,
                  generator=gen)


def run_cell(run_dir: Path, config: Config, arch: str, size: str) -> dict:
    """Every seed of one (decoder, size) in ``run_dir/<arch>_<size>`` (skipped when done)."""
    stage = Stage(run_dir / f"{arch}_{size}", {"arch": arch, "size": size,
                  **run_identity(config, drop=("archs", "sizes"))}, "cpu")
    if stage.done is None:
        with limit_threads(config.threads):
            seeds = range(config.seed_offset, config.seed_offset + config.seeds)
            runs = [one_seed(arch, size, s, config) for s in seeds]
        stage.save({"arch": arch, "size": size, "seeds": list(seeds),
                    "first": [r[0] for r in runs], "final": [r[1] for r in runs]})
    return stage.done


def main(config: Config, run_dir: Path | None = None, *, progress: bool = False) -> dict:
    run_dir = Path(run_dir or Path("runs") / NAME / config.preset)
    prepare_run(run_dir, run_identity(config, drop=("archs", "sizes")), device="cpu")
    run_cells(run_cell, [(run_dir, config, a, s) for a in config.archs for s in config.sizes],
              config.engine, progress=progress,
              done=lambda cell: (run_dir / f"{cell[2]}_{cell[3]}" / RESULTS_FILE).is_file())
    cells = {}
    for arch in ARCHS:  # every finished cell, from earlier invocations too
        for size in SIZES:
            path = run_dir / f"{arch}_{size}" / RESULTS_FILE
            if path.is_file():
                cells[f"{arch}_{size}"] = read_json(path)
    results = {**results_header(NAME, config), "config": run_identity(config),
               "cells": cells, "checks": direction_checks(cells, config.steps),
               "wall_time_s": float(sum(c["wall_time_s"] for c in cells.values()))}
    write_json(run_dir / RESULTS_FILE, results)
    (run_dir / "table.md").write_text(markdown_table(TABLE_HEADERS, table_rows(results)))
    return results


def _never(first: list, steps: int) -> list[float]:
    return [float(f) if f is not None else float("inf") for f in first] or [float(steps)]


def direction_checks(cells: dict, steps: int) -> dict:
    """What holds across the seeds: with the affine skip every seed escapes and ends with r
    active dimensions; without it the median escape is later (the ratio of medians, infinite
    when most seeds never escape), per decoder size."""
    checks: dict = {}
    for size in SIZES:
        with_skip = [c for k, c in cells.items() if k.endswith(size) and "+skip" in k]
        without = [c for k, c in cells.items() if k.endswith(size) and "+skip" not in k]
        if with_skip:
            checks[f"{size}_skip_always_escapes"] = all(
                f is not None for c in with_skip for f in c["first"])
            checks[f"{size}_skip_ends_with_r"] = all(a == R for c in with_skip for a in c["final"])
            checks[f"{size}_skip_latest_escape"] = max(max(_never(c["first"], steps))
                                                       for c in with_skip)
        if with_skip and without:
            med_skip = max(statistics.median(_never(c["first"], steps)) for c in with_skip)
            med_none = min(statistics.median(_never(c["first"], steps)) for c in without)
            checks[f"{size}_median_escape_ratio_noskip_over_skip"] = med_none / med_skip
    return checks


TABLE_HEADERS = ("decoder", "size", "seeds", "escaped", "median escape step", "latest",
                 f"final active = r ({R})")


def table_rows(results: dict) -> list[list]:
    steps = results["config"]["steps"]
    rows = []
    for c in results["cells"].values():
        first = _never(c["first"], steps)
        escaped = [f for f in first if f != float("inf")]
        median = statistics.median(first)
        rows.append([c["arch"], c["size"], len(first), f"{len(escaped)}/{len(first)}",
                     median if median != float("inf") else f"never (> {steps})",
                     max(escaped) if escaped else None,
                     f"{sum(a == R for a in c['final'])}/{len(first)}"])
    return rows


def report(results: dict) -> str:
    return reporting.report([markdown_table(TABLE_HEADERS, table_rows(results))],
                            results["checks"], results["wall_time_s"])


if __name__ == "__main__":
    run_script(sys.modules[__name__], sys.argv[1:])
