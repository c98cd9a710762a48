"""The energy landscape of the affine Gaussian VAE (THEORY.md section 1, Theorem 1).

For each case (data dimension d, rank r, latent dimension kappa, decoder variance gamma), on
rank-r Gaussian data (``balance.data.synthetic.affine_subspace``, no noise):

- the closed-form minimal energy L* (eq. 4 of ``balance.theory.affine``) and its active count;
- N random starts of L-BFGS on the exact energy: best and worst final energy (minus L*), largest
  final gradient norm, and how many distinct enumerated minima they reached;
- the number of distinct global minima kappa!/(kappa-a)! * 2^a (a = active count);
- the energy barrier between two minima: the canonical one and the one with the leading
  direction moved into an empty latent slot (kappa > a), or with slots 0 and 1 exchanged
  (kappa = a >= 2), or with the sign flipped (kappa = a = 1), along a latent rotation, the
  straight line, and a string-method path (the other parameters optimal at each point).

Energies are "nats x 2" per sample (eq. 1). Claim: every start reaches L*, and distinct minima
are separated by strictly positive barriers.

Usage::

    python experiments/affine_landscape.py --preset quick     # seconds on a CPU
    python paper_figures/affine_barrier.py runs/affine_landscape/quick

Run folder (default ``runs/affine_landscape/<preset>``): config.json, command.txt,
environment.json, results.json (table rows and the barrier profiles of the featured case),
table.csv. A finished run is not recomputed.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

if __package__ in (None, ""):  # python experiments/affine_landscape.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balance.data.synthetic import affine_subspace
from balance.experiment import run_script
from balance.runs import RESULTS_FILE, prepare_run, read_json, write_json
from balance.theory import affine
from balance.threads import limit_threads

NAME = "affine_landscape"
SEED_FIELDS = ("seed",)
SAVES_MODELS = False  # seconds-long fits, kept in memory: no model folders


@dataclass(frozen=True)
class Case:
    """One landscape: data dimension d, rank r, latent dimension kappa, decoder variance gamma."""

    d: int
    r: int
    kappa: int
    gamma: float


@dataclass(frozen=True)
class LandscapeConfig:
    """The whole experiment.

    spectrum: variances of the r latent directions of the data (first r used);
    featured: index of the case whose barrier profiles the figure draws;
    threads: CPU threads (``balance.threads.limit_threads``; None: no cap), not part of the
    run's identity.
    """

    preset: str = "quick"
    seed: int = 0
    n: int = 50
    spectrum: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)
    cases: tuple[Case, ...] = ()
    n_starts: int = 20
    featured: int = 0
    barrier_points: int = 41
    string_points: int = 21
    string_iters: int = 3000
    threads: int | None = 1


CONFIGS: dict[str, LandscapeConfig] = {
    "quick": LandscapeConfig(
        preset="quick",
        cases=(
            Case(d=6, r=2, kappa=3, gamma=0.5),
            Case(d=6, r=2, kappa=1, gamma=0.5),
            Case(d=6, r=2, kappa=2, gamma=0.5),
            Case(d=6, r=2, kappa=4, gamma=0.5),
            Case(d=6, r=3, kappa=2, gamma=0.1),
            Case(d=6, r=3, kappa=5, gamma=0.1),
            Case(d=6, r=3, kappa=5, gamma=0.01),
            Case(d=6, r=3, kappa=4, gamma=1.5),
            Case(d=6, r=4, kappa=3, gamma=0.7),
        ),
        n_starts=20,
    ),
    "smoke": LandscapeConfig(
        preset="smoke",
        n=12,
        cases=(Case(d=3, r=2, kappa=3, gamma=0.5), Case(d=3, r=2, kappa=2, gamma=0.5)),
        n_starts=2,
        barrier_points=11,
        string_points=7,
        string_iters=300,
    ),
}


PRESETS = tuple(CONFIGS)


def preset(name: str) -> LandscapeConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    return CONFIGS[name]



def _second_minimum(minima: list[affine.AffineOptimum], kappa: int):
    """The minimum to which the barrier is measured, and the paths that join it (see module
    docstring); None when there is a single minimum."""
    a = minima[0].n_active
    if a == 0:
        return None, ()
    if kappa > a:  # leading direction 0 moves from slot 0 into the first empty slot a
        target, signs = (a, *range(1, a)), (1,) * a
        paths = ("rotation", "linear", "string")
    elif a >= 2:  # exchange slots 0 and 1; one sign flip makes it a rotation (det +1)
        target, signs = (1, 0, *range(2, a)), (1, -1, *(1,) * (a - 2))
        paths = ("rotation", "linear", "string")
    else:  # kappa = a = 1: w -> -w, only through w = 0
        target, signs = (0,), (-1,)
        paths = ("linear",)
    end = next(m for m in minima if m.active == target and m.signs == signs)
    return end, paths


def run_case(case: Case, config: LandscapeConfig, index: int) -> dict:
    """Closed form, random starts, minima count and barriers for one case."""
    g = torch.Generator().manual_seed(config.seed * 1000 + index)
    X = affine_subspace(
        config.n, case.d, case.r, generator=g, spectrum=list(config.spectrum[: case.r])
    ).x
    t0 = time.perf_counter()
    opt = affine.closed_form_optimum(X, case.kappa, case.gamma)
    minima = affine.enumerate_minima(X, case.kappa, case.gamma)
    runs = affine.train_restarts(X, case.kappa, case.gamma, generator=g,
                                 n_restarts=config.n_starts)
    matches = [affine.match_minimum(run.params, minima, X) for run in runs]
    energies = [run.energy for run in runs]
    row = {
        **dataclasses.asdict(case),
        "eigenvalues": [float(v) for v in opt.eigenvalues],
        "n_active": opt.n_active,
        "closed_form_energy": opt.energy,
        "best_energy": min(energies),
        "worst_energy": max(energies),
        "best_gap": min(energies) - opt.energy,
        "worst_gap": max(energies) - opt.energy,
        "max_grad_norm": max(run.grad_norm for run in runs),
        "max_match_distance": max(dist for _, dist in matches),
        "n_minima": len(minima),
        "n_minima_formula": affine.count_minima(case.kappa, opt.n_active),
        "n_minima_found": len({idx for idx, _ in matches}),
        "n_starts": config.n_starts,
        "barriers": {},
    }
    profiles = {}
    end, paths = _second_minimum(minima, case.kappa)
    if end is not None:
        row["barrier_end"] = {"active": list(end.active), "signs": list(end.signs)}
        for path in paths:
            prof = affine.barrier(
                X, case.gamma, minima[0], end, path=path,
                n_points=config.string_points if path == "string" else config.barrier_points,
                string_iters=config.string_iters,
            )
            row["barriers"][path] = prof.height
            profiles[path] = {
                "t": prof.t.tolist(),
                "energy_minus_min": (prof.energy - opt.energy).tolist(),
                "column_norms2": (prof.W**2).sum(dim=1).tolist(),  # [points, kappa]
                "height": prof.height,
            }
        if case.kappa > opt.n_active:
            lam, gam = float(opt.eigenvalues[0]), case.gamma
            row["rotation_barrier_formula"] = math.log((lam + gam) ** 2 / (4 * gam * lam))
    row["seconds"] = time.perf_counter() - t0
    return {"row": row, "profiles": profiles}


def _format_table(rows: list[dict]) -> str:
    head = (f"{'kappa':>5} {'r':>2} {'gamma':>6} {'a':>2} {'L*':>10} {'best-L*':>9} "
            f"{'worst-L*':>9} {'max|g|':>8} {'#min':>5} {'found':>5} {'rot.bar':>8} "
            f"{'lin.bar':>8} {'str.bar':>8}")
    lines = [head, "-" * len(head)]

    def fmt(value: float | None) -> str:
        return f"{value:8.4f}" if value is not None else f"{'-':>8}"

    for r in rows:
        b = r["barriers"]
        lines.append(
            f"{r['kappa']:>5} {r['r']:>2} {r['gamma']:>6g} {r['n_active']:>2} "
            f"{r['closed_form_energy']:>10.5f} {r['best_gap']:>9.1e} {r['worst_gap']:>9.1e} "
            f"{r['max_grad_norm']:>8.1e} {r['n_minima']:>5} {r['n_minima_found']:>5} "
            f"{fmt(b.get('rotation'))} {fmt(b.get('linear'))} {fmt(b.get('string'))}"
        )
    return "\n".join(lines)


def main(config: LandscapeConfig, run_dir: Path | None = None, *,
         progress: bool = False) -> dict:
    """Run every case of ``config`` into ``run_dir`` (default runs/affine_landscape/<preset>)
    and return the results dict (also saved as results.json); a finished run is re-read."""
    run_dir = Path(run_dir or Path("runs") / NAME / config.preset)
    prepare_run(run_dir, config, device="cpu")
    if (run_dir / RESULTS_FILE).is_file():
        return read_json(run_dir / RESULTS_FILE)
    with limit_threads(config.threads):
        return _run(config, run_dir)


def report(results: dict) -> str:
    return (f"{_format_table(results['rows'])}\n"
            f"all starts reach L*: {results['all_starts_reach_closed_form']}; "
            f"all barriers > 0: {results['all_barriers_positive']}")


def _run(config: LandscapeConfig, run_dir: Path) -> dict:
    rows, featured = [], None
    for i, case in enumerate(config.cases):
        out_case = run_case(case, config, i)
        rows.append(out_case["row"])
        if i == config.featured:
            featured = {"case": dataclasses.asdict(case), "profiles": out_case["profiles"],
                        "closed_form_energy": out_case["row"]["closed_form_energy"],
                        "eigenvalues": out_case["row"]["eigenvalues"],
                        "barrier_end": out_case["row"].get("barrier_end"),
                        "rotation_barrier_formula":
                            out_case["row"].get("rotation_barrier_formula")}
    tol = 1e-8
    results = {
        "experiment": NAME,
        "preset": config.preset,
        "energy_units": "nats x 2 per sample (eq. 1 of balance.theory.affine)",
        "rows": rows,
        "featured": featured,
        "all_starts_reach_closed_form": all(
            abs(r["worst_gap"]) <= tol * max(1.0, abs(r["closed_form_energy"])) for r in rows
        ),
        "all_barriers_positive": all(h > 0 for r in rows for h in r["barriers"].values()),
    }
    with open(run_dir / "table.csv", "w", newline="") as f:
        fields = ["kappa", "r", "gamma", "d", "n_active", "closed_form_energy", "best_energy",
                  "worst_energy", "max_grad_norm", "n_minima", "n_minima_found"]
        writer = csv.writer(f)
        writer.writerow([*fields, "barrier_rotation", "barrier_linear", "barrier_string"])
        for r in rows:
            writer.writerow([r[k] for k in fields]
                            + [r["barriers"].get(p, "") for p in ("rotation", "linear", "string")])
    write_json(run_dir / "results.json", results)
    return results



if __name__ == "__main__":
    run_script(sys.modules[__name__], sys.argv[1:])
