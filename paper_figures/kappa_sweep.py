"""Table 1 and its figure: the kappa sweep (E1), drawn only from saved results.

Reads ``results.json`` written by ``experiments/kappa_sweep.py`` (its run folder, or the copy
under ``results/kappa_sweep/``) and writes

- ``kappa_sweep.png`` / ``.pdf``: number of active dimensions, IWAE NLL and test reconstruction
  error against kappa (log axis), with skips (the paper's model) and without, the paper's
  numbers as grey squares (MNIST), the line ``# active = kappa`` (and ``= r`` on the manifold);
- ``kappa_sweep_table.md`` / ``.tex``: the same numbers, ours beside the paper's.

Usage: ``python paper_figures/kappa_sweep.py [RESULTS_DIR] [--out OUT_DIR]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

try:  # as part of the package (python -m paper_figures, tests)
    from paper_figures import style
except ImportError:  # run as a script: paper_figures/ is on sys.path
    import style

NAME = "kappa_sweep"
DEFAULT_RESULTS = Path("results") / NAME
VARIANT_STYLE = {
    "skip": {"color": style.OKABE_ITO["blue"], "marker": "o", "linestyle": "-",
             "label": "with skips (residual + affine)"},
    "noskip": {"color": style.OKABE_ITO["vermillion"], "marker": "^", "linestyle": "--",
               "label": "without skips"},
}
PAPER_STYLE = {"color": "#777777", "marker": "s", "linestyle": ":", "label": "paper (Table 1)"}
PANELS = (
    ("active", "# active dimensions", "(a) active units"),
    ("nll", "NLL (nats per image)", "(b) IWAE negative log-likelihood"),
    ("rec", "rec. error (per image)", "(c) test reconstruction error"),
)
COLUMNS = ("variant", "kappa", "rec. err. (ours)", "rec. err. (paper)", "NLL (ours)",
           "NLL (paper)", "# active (ours)", "# active (paper)", "final gamma")


def load(results_dir: Path) -> dict:
    """The sweep's saved results; a clear error when they are missing or of another kind."""
    path = Path(results_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run experiments/kappa_sweep.py first (its run folder "
            "runs/kappa_sweep/<preset>_<dataset> holds results.json), or copy it to "
            f"{DEFAULT_RESULTS}/"
        )
    results = json.loads(path.read_text())
    if results.get("experiment") != NAME or "runs" not in results:
        raise ValueError(f"{path} is not the results of experiments/kappa_sweep.py")
    return results


def _series(results: dict, variant: str, key: str) -> tuple[list[int], list[float]]:
    runs = results["runs"].get(variant, {})
    kappas = sorted(int(k) for k in runs)
    return kappas, [runs[str(k)][key] for k in kappas]


def table_rows(results: dict) -> list[list]:
    paper = results.get("paper", {}).get("skip", {}) if results["data"]["dataset"] == "mnist" \
        else {}
    rows = []
    for variant in ("skip", "noskip"):
        for kappa_str, run in sorted(results["runs"].get(variant, {}).items(),
                                     key=lambda kv: int(kv[0])):
            ref = paper.get(kappa_str, {}) if variant == "skip" else {}
            paper_active = ref.get("active")
            if variant == "noskip" and paper:
                paper_active = "0 (all off)"
            rows.append([variant, int(kappa_str), run["rec"], ref.get("rec"), run["nll"],
                         ref.get("nll"), run["active"], paper_active, run["gamma"]])
    return rows


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    """Draw the figure and the table from ``results_dir/results.json`` into ``out_dir``;
    return the written paths."""
    from matplotlib.figure import Figure  # lazy: importing this module stays cheap

    results = load(results_dir)
    dataset = results["data"]["dataset"]
    r = results["data"].get("r")
    paper = results.get("paper", {}).get("skip", {}) if dataset == "mnist" else {}
    with style.context():
        fig = Figure(figsize=(9.0, 3.0), layout="constrained")
        axes = fig.subplots(1, 3)
        all_kappas = sorted({int(k) for per in results["runs"].values() for k in per})
        for ax, (key, ylabel, title) in zip(axes, PANELS, strict=True):
            for variant, kw in VARIANT_STYLE.items():
                kappas, values = _series(results, variant, key)
                if kappas:
                    ax.plot(kappas, values, **kw)
            if paper:
                pk = sorted(int(k) for k in paper)
                ax.plot(pk, [paper[str(k)][key] for k in pk], **PAPER_STYLE)
            if key == "active" and all_kappas:
                ax.plot(all_kappas, all_kappas, color="#BBBBBB", linewidth=0.8,
                        label=r"$\kappa$ (all active)")
                if r is not None:
                    ax.axhline(r, color=style.OKABE_ITO["bluish_green"], linewidth=0.8,
                               linestyle="-.", label=f"true r = {r}")
                ax.set_yscale("symlog", linthresh=1.0)
            ax.set_xscale("log")
            ax.set_xlabel(r"latent size $\kappa$")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
        axes[0].legend(loc="upper left")
        fig.suptitle(f"kappa sweep on {dataset} (preset {results['preset']})")
        written = style.save_figure(fig, out_dir, NAME)
    notes = [
        f"Preset {results['preset']}, data {dataset}; NLL: IWAE with k samples (nats per image, "
        "continuous data in [0, 1], so it can be negative); rec. err.: squared error per image "
        "from the posterior mean; # active: Var_x(E_q[z_k]) >= 0.01 (Burda et al.).",
        "A quick run cannot match the paper's numbers, only the direction of each effect.",
    ]
    checks = {k: v for k, v in results.get("checks", {}).items() if k != "thresholds"}
    if checks:
        notes.append("Direction checks: " + ", ".join(
            f"{k}: {'yes' if v else 'no'}" for k, v in checks.items()))
    written += style.write_table(COLUMNS, table_rows(results), out_dir, f"{NAME}_table",
                                 caption="Kappa sweep (Table 1): ours beside the paper's",
                                 notes=notes)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Kappa-sweep figure and table (E1).")
    parser.add_argument("results_dir", type=Path, nargs="?", default=DEFAULT_RESULTS,
                        help=f"folder holding results.json (default {DEFAULT_RESULTS})")
    parser.add_argument("--out", type=Path, default=Path("runs") / "figures",
                        help="output folder (default runs/figures)")
    args = parser.parse_args()
    for p in make(args.results_dir, args.out):
        print(p)
