"""Theorem 3 globally: minimise the penalised energy L_h of eq. (6) from many random starts
and count the active latent rows (THEORY.md section 3; ``balance.theory.penalties``).

    L_h(D, Z) = h(||X - D Z||^2 / (d n)) + (1/d) sum_k h(||Z_k||^2 / n),  ||D_k|| = 1,

on data of rank r (X = A S, d = 8, r = 2, n = 64, kappa = 4 > r), the unit-norm columns of D
as the constraint set that excludes Z -> 0 (D = W / ||W||, column by column). Claim: with a
bounded-gradient h (u, u + u^2, log(1 + u)) the minimisers spread energy over more than r rows
or keep a reconstruction error; with an unbounded gradient at 0 (u^p with p < 1/2, and
log(u + eps), u / (u + eps) as eps -> 0, the latter a continuation to the indicator I[u > 0])
they reach r rows and an error near 0. Active row: ``u_k >= ACTIVE * max_j u_j``.

Per penalty, ``starts`` random starts of Adam (lr 5e-2, ``steps`` steps; codes
and decoder weights N(0, 1)); reported: the median and worst reconstruction error, the
distribution of active rows, the best final energy.

Usage: ``python experiments/theorem3_penalties.py [--preset quick|smoke]``.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

if __package__ in (None, ""):  # python experiments/theorem3_penalties.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balance import reporting
from balance.engine import EngineConfig, run_cells
from balance.experiment import run_script
from balance.reporting import markdown_table
from balance.runs import RESULTS_FILE, Stage, prepare_run, results_header, run_identity, write_json
from balance.theory.penalties import Penalty, regularized_ae_energy, row_energies
from balance.threads import limit_threads

NAME = "theorem3_penalties"
PRESETS = ("quick", "smoke")
SEED_FIELDS = ("seed",)
SAVES_MODELS = False  # seconds-long fits, kept in memory: no model folders
ACTIVE = 1e-3  # a row is active when u_k >= ACTIVE * max_j u_j
D_DIM, R, KAPPA, N = 8, 2, 4, 64
#: name -> penalty; bounded-gradient ones first
PENALTIES = {
    "u": Penalty("linear"), "u+u^2": Penalty("linear_quadratic"), "log(1+u)": Penalty("log1p"),
    "u^0.75": Penalty("power", p=0.75), "u^0.5": Penalty("power", p=0.5),
    "u^0.4": Penalty("power", p=0.4), "u^0.25": Penalty("power", p=0.25),
    "log(u+1e-1)": Penalty("log_eps", eps=1e-1), "log(u+1e-2)": Penalty("log_eps", eps=1e-2),
    "log(u+1e-4)": Penalty("log_eps", eps=1e-4),
    "u/(u+1e-1)": Penalty("smooth_indicator", eps=1e-1),
    "u/(u+1e-2)": Penalty("smooth_indicator", eps=1e-2),
    "u/(u+1e-4)": Penalty("smooth_indicator", eps=1e-4),
}


@dataclass(frozen=True)
class Config:
    preset: str = "quick"
    penalties: tuple[str, ...] = tuple(PENALTIES)
    starts: int = 20
    steps: int = 3000
    lr: float = 5e-2
    seed: int = 0
    threads: int | None = 1
    engine: EngineConfig = EngineConfig()


def preset(name: str) -> Config:
    if name == "quick":
        return Config(preset=name)
    if name == "smoke":
        return Config(preset=name, penalties=("u", "u^0.25"), starts=2, steps=50)
    raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")


def data(seed: int) -> torch.Tensor:
    """X [d, n] = A S of rank r, scaled to ||X||^2 / (d n) = 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(D_DIM, R, generator=g, dtype=torch.float64) @ torch.randn(
        R, N, generator=g, dtype=torch.float64)
    return x / (x.square().sum() / (D_DIM * N)).sqrt()


def fit(x: torch.Tensor, h: Penalty, seed: int, steps: int, lr: float) -> dict:
    """One start: Adam on (W, Z) with D = W / ||W|| per column; u clamped at 1e-30 inside h
    (an infinite-gradient h at exactly 0 would give 0 * inf)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(D_DIM, KAPPA, generator=g, dtype=torch.float64).requires_grad_()
    z = torch.randn(KAPPA, N, generator=g, dtype=torch.float64).requires_grad_()
    opt = torch.optim.Adam([w, z], lr=lr)

    def safe(u: torch.Tensor) -> torch.Tensor:
        return h(u.clamp_min(1e-30))

    for _ in range(steps):
        opt.zero_grad()
        energy = regularized_ae_energy(x, w / w.norm(dim=0), z, h=safe)
        energy.backward()
        opt.step()
    with torch.no_grad():
        decoder = w / w.norm(dim=0)
        u = row_energies(z)
        rec = float((x - decoder @ z).square().sum() / (D_DIM * N))
        return {"rec": rec, "active": int((u >= ACTIVE * u.max()).sum()),
                "energy": float(regularized_ae_energy(x, decoder, z, h=safe)),
                "u": u.tolist()}


def _folder(run_dir: Path, name: str) -> Path:
    return run_dir / name.replace("/", "_over_")


def run_cell(run_dir: Path, config: Config, name: str) -> dict:
    """Every start of one penalty in its folder (skipped when done)."""
    stage = Stage(_folder(run_dir, name),
                  {"penalty": PENALTIES[name], **run_identity(config, drop=("penalties",))},
                  "cpu")
    if stage.done is None:
        with limit_threads(config.threads):
            x = data(config.seed)
            fits = [fit(x, PENALTIES[name], config.seed * 1000 + s, config.steps, config.lr)
                    for s in range(config.starts)]
        stage.save({"penalty": name, "bounded_gradient": PENALTIES[name].bounded_gradient,
                    "fits": fits})
    return stage.done


def main(config: Config, run_dir: Path | None = None, *, progress: bool = False) -> dict:
    run_dir = Path(run_dir or Path("runs") / NAME / config.preset)
    prepare_run(run_dir, run_identity(config, drop=("penalties",)), device="cpu")
    done = run_cells(run_cell, [(run_dir, config, name) for name in config.penalties],
                     config.engine, progress=progress,
                     done=lambda cell: (_folder(run_dir, cell[2]) / RESULTS_FILE).is_file())
    cells = dict(zip(config.penalties, done, strict=True))
    results = {**results_header(NAME, config), "config": run_identity(config), "r": R,
               "kappa": KAPPA, "cells": cells, "checks": direction_checks(cells),
               "wall_time_s": float(sum(c["wall_time_s"] for c in cells.values()))}
    write_json(run_dir / RESULTS_FILE, results)
    (run_dir / "table.md").write_text(markdown_table(TABLE_HEADERS, table_rows(results)))
    return results


def direction_checks(cells: dict) -> dict:
    """Per penalty whether every start ended with exactly r active rows and a reconstruction
    error below 1e-3 (the claim for unbounded gradients), and the count of starts that did."""
    out = {}
    for name, c in cells.items():
        good = sum(f["active"] == R and f["rec"] < 1e-3 for f in c["fits"])
        out[f"{name}: r rows and exact"] = f"{good}/{len(c['fits'])}"
    return out


TABLE_HEADERS = ("h", "h'(0) bounded", "starts", "median rec. err.", "worst rec. err.",
                 "active rows (counts)", "r rows and rec. < 1e-3")


def table_rows(results: dict) -> list[list]:
    rows = []
    for name, c in results["cells"].items():
        fits = c["fits"]
        recs = [f["rec"] for f in fits]
        counts = {}
        for f in fits:
            counts[f["active"]] = counts.get(f["active"], 0) + 1
        good = sum(f["active"] == results["r"] and f["rec"] < 1e-3 for f in fits)
        rows.append([name, c["bounded_gradient"], len(fits), statistics.median(recs), max(recs),
                     ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())),
                     f"{good}/{len(fits)}"])
    return rows


def report(results: dict) -> str:
    return reporting.report([markdown_table(TABLE_HEADERS, table_rows(results))],
                            wall_time_s=results["wall_time_s"])


if __name__ == "__main__":
    run_script(sys.modules[__name__], sys.argv[1:])
