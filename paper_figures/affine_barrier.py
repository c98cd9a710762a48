"""Figure: the energy barrier between two global minima of the affine Gaussian VAE
(THEORY.md section 1), drawn only from the saved results of experiments/affine_landscape.py.

(a) Energy above the minimum, L - L* (eq. 1 of ``balance.affine``, nats x 2 per sample, the other
    parameters optimal at each point), along three paths from the canonical minimum A to the
    minimum B in which the leading eigen-direction sits in another latent slot: a latent
    rotation, the straight line, and a string-method path; the dotted line is the closed-form
    rotation barrier log((l1 + gamma)^2 / (4 gamma l1)).
(b) The same paths seen through the squared norms of the two decoder columns that exchange the
    direction: every path must leave the axes, where the energy is minimal.

Usage::

    python paper_figures/affine_barrier.py runs/affine_landscape/quick --out runs/figures
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "affine_barrier"

# Okabe-Ito colour-blind-safe palette; line styles and markers also differ per path.
STYLE = {
    "rotation": {"color": "#0072B2", "linestyle": "-", "marker": "o", "label": "latent rotation"},
    "linear": {"color": "#D55E00", "linestyle": "--", "marker": "s", "label": "straight line"},
    "string": {"color": "#009E73", "linestyle": "-.", "marker": "^", "label": "string method"},
}


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    """Draw the figure from ``results_dir/results.json``; write PNG and PDF into ``out_dir``
    and return their paths."""
    from matplotlib.figure import Figure  # lazy; Figure needs no GUI backend

    results_dir, out_dir = Path(results_dir), Path(out_dir)
    path = results_dir / "results.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run experiments/affine_landscape.py first (its run folder holds "
            "results.json)"
        )
    results = json.loads(path.read_text())
    featured = results.get("featured")
    if not featured or not featured.get("profiles"):
        raise ValueError(f"{path} has no barrier profiles (the featured case has one minimum)")
    case, profiles = featured["case"], featured["profiles"]
    end = featured["barrier_end"]
    src, dst = 0, end["active"][0]

    fig = Figure(figsize=(8.0, 3.4), layout="constrained")
    ax_e, ax_w = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.5, 1.0]})
    for name, prof in profiles.items():
        style = STYLE.get(name, {"color": "#000000", "linestyle": ":", "marker": "x",
                                 "label": name})
        n = len(prof["t"])
        every = max(1, n // 10)
        label = f"{style['label']} (barrier {prof['height']:.3f})"
        kw = {"color": style["color"], "linestyle": style["linestyle"], "marker": style["marker"],
              "markevery": every, "markersize": 4, "linewidth": 1.6}
        ax_e.plot(prof["t"], prof["energy_minus_min"], label=label, **kw)
        norms = prof["column_norms2"]
        ax_w.plot([row[src] for row in norms], [row[dst] for row in norms], **kw)
    formula = featured.get("rotation_barrier_formula")
    if formula is not None:
        ax_e.axhline(formula, color="#555555", linestyle=":", linewidth=1.0,
                     label=r"closed form $\log\frac{(\ell_1+\gamma)^2}{4\gamma\ell_1}$")
    ax_e.axhline(0.0, color="#999999", linewidth=0.8)
    ax_e.set_xlabel("position along the path (0: minimum A, 1: minimum B)")
    ax_e.set_ylabel(r"$L - L^*$ (nats $\times$ 2 per sample)")
    ax_e.set_title(
        f"(a) energy along paths between two minima\n"
        f"d={case['d']}, r={case['r']}, $\\kappa$={case['kappa']}, $\\gamma$={case['gamma']:g}",
        fontsize=10,
    )
    ax_e.legend(fontsize=8, frameon=False)
    ax_w.set_xlabel(f"$\\|w_{{{src + 1}}}\\|^2$ (slot of the direction in A)")
    ax_w.set_ylabel(f"$\\|w_{{{dst + 1}}}\\|^2$ (slot of the direction in B)")
    ax_w.set_title("(b) the paths in decoder-column norms", fontsize=10)
    ax_w.set_aspect("equal", adjustable="datalim")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for ext in ("png", "pdf"):
        target = out_dir / f"{NAME}.{ext}"
        fig.savefig(target, dpi=200)
        written.append(target)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Energy barrier between two affine-VAE minima.")
    parser.add_argument("results_dir", type=Path, nargs="?",
                        default=Path("results") / "affine_landscape",
                        help="run folder holding results.json (default results/affine_landscape)")
    parser.add_argument("--out", type=Path, default=Path("runs") / "figures",
                        help="output folder (default runs/figures)")
    args = parser.parse_args()
    for p in make(args.results_dir, args.out):
        print(p)
