"""Figure: the energy barrier between two global minima of the affine Gaussian VAE
(THEORY.md section 1), drawn only from the saved results of experiments/affine_landscape.py.

(a) Energy above the minimum, L - L* (eq. 1 of ``balance.theory.affine``, nats x 2 per sample, the
    parameters optimal at each point), along three paths from the canonical minimum A to the
    minimum B in which the leading eigen-direction sits in another latent slot: a latent
    rotation, the straight line, and a string-method path; the dotted line is the closed-form
    rotation barrier log((l1 + gamma)^2 / (4 gamma l1)).
(b) The same paths seen through the squared norms of the two decoder columns that exchange the
    direction: every path must leave the axes, where the energy is minimal.

Writes ``affine_barrier.png`` / ``.pdf``.

Usage: ``python paper_figures/affine_barrier.py [RESULTS_DIR] [--out OUT_DIR]`` (default
``results/affine_landscape``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures import style  # noqa: E402
from paper_figures.registry import (  # noqa: E402
    FIGURE,
    Entry,
    Source,
    both,
    command,
)

NAME = "affine_barrier"
ENTRY = Entry(
    NAME, "THEORY.md section 1: energy barrier between two minima of the affine VAE",
    (Source("affine_landscape", commands=(command("affine_landscape"),),
            run_dir="runs/affine_landscape/{preset}",
            copy=("config.json", "results.json", "table.csv"),
            outputs=both("affine_barrier", formats=FIGURE)),),
)
EXPERIMENT = "affine_landscape"
PATHS = {"rotation": "latent rotation", "linear": "straight line", "string": "string method"}


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    """Draw the figure from ``results_dir/results.json``; write PNG and PDF into ``out_dir``
    and return their paths."""
    results = style.read_results(results_dir, EXPERIMENT)
    featured = results.get("featured")
    if not featured or not featured.get("profiles"):
        raise ValueError(f"{Path(results_dir) / 'results.json'} has no barrier profiles (the "
                         "featured case has one minimum)")
    case, profiles = featured["case"], featured["profiles"]
    src, dst = 0, featured["barrier_end"]["active"][0]

    with style.context():
        fig, (ax_e, ax_w) = style.figure((7.0, 3.3), ncols=2, width_ratios=[1.5, 1.0])
        for i, (name, prof) in enumerate(profiles.items()):
            kw = {**style.series_style(i), "markevery": max(1, len(prof["t"]) // 10)}
            label = f"{PATHS.get(name, name)} (barrier {prof['height']:.3f})"
            ax_e.plot(prof["t"], prof["energy_minus_min"], label=label, **kw)
            norms = prof["column_norms2"]
            ax_w.plot([row[src] for row in norms], [row[dst] for row in norms], **kw)
        formula = featured.get("rotation_barrier_formula")
        if formula is not None:
            ax_e.axhline(formula, color=style.GREY, linestyle=":", linewidth=1.0,
                         label=r"closed form $\log\frac{(\ell_1+\gamma)^2}{4\gamma\ell_1}$")
        ax_e.axhline(0.0, color="#BBBBBB", linewidth=0.8)
        ax_e.set_xlabel("position along the path (0: minimum A, 1: minimum B)")
        ax_e.set_ylabel(r"$L - L^*$ (nats $\times$ 2 per sample)")
        ax_e.set_title("(a) energy along three paths between two minima")
        ax_w.set_xlabel(f"$\\|w_{{{src + 1}}}\\|^2$ (column holding the direction in A)")
        ax_w.set_ylabel(f"$\\|w_{{{dst + 1}}}\\|^2$ (column holding it in B)")
        ax_w.set_title("(b) the paths in decoder-column norms")
        ax_w.set_aspect("equal", adjustable="datalim")
        fig.suptitle(
            f"Affine VAE: energy barrier between two global minima (d = {case['d']}, "
            f"r = {case['r']}, $\\kappa$ = {case['kappa']}, $\\gamma$ = {case['gamma']:g}; "
            f"{style.run_label(results)})")
        style.legend_below(fig, [ax_e], ncols=2)
        return style.save_figure(fig, out_dir, NAME)


if __name__ == "__main__":
    style.cli(make, __doc__, NAME, Path("results") / EXPERIMENT)
