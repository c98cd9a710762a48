"""Figure 1 and Table 2 of the balanced-regularization paper from a saved E2 run.

Reads only ``results.json`` written by ``experiments/gamma_fixed_vs_learned.py`` (a run folder or
its copy under ``results/gamma_fixed_vs_learned/``) and writes

- ``figure1_grad_norm.png`` / ``.pdf``: ``||dL/dz||`` per training step for learned and fixed
  gamma (top row, one column per resolution) and the decoder variance gamma per epoch (bottom);
- ``table2.md`` / ``table2.csv``: test reconstruction error, MMD^2(q(z), N(0, I)), active units and
  early/late gradient norms, ours beside the paper's numbers.

Usage: ``python paper_figures/gamma_fixed_vs_learned.py [RESULTS_DIR] [--out OUT_DIR]``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path

try:  # as part of the package (python -m paper_figures, tests)
    from paper_figures import style
except ImportError:  # run as a script: paper_figures/ is on sys.path
    import style

NAME = "gamma_fixed_vs_learned"
DEFAULT_RESULTS = Path("results") / NAME
DEFAULT_OUT = Path("paper_figures") / "out" / NAME
# Okabe-Ito (colour-blind safe): learned = blue, fixed = vermillion.
COLORS = {"learned": style.OKABE_ITO["blue"], "fixed": style.OKABE_ITO["vermillion"]}
LABELS = {"learned": "learnable gamma", "fixed": "fixed gamma = gamma*"}
HEADERS = (
    "resolution", "gamma", "rec. (ours)", "rec. (paper)", "MMD^2 (ours)", "MMD (paper)",
    "active units", "final gamma", "early ||dL/dz||", "late ||dL/dz||",
)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{digits}g}" if math.isfinite(float(value)) else str(value)


def table_rows(results: dict) -> list[list]:
    rows = []
    for r, per in results["resolutions"].items():
        paper = results.get("paper", {}).get(r, {})
        for variant in ("learned", "fixed"):
            run = per[variant]
            rows.append([
                f"CelebA-{r}", LABELS[variant], run["rec"], paper.get(variant, {}).get("rec"),
                run["mmd"], paper.get(variant, {}).get("mmd"), run["active_units"],
                run["gamma_final"], run["grad_z_norm"]["early_mean"],
                run["grad_z_norm"]["late_mean"],
            ])
    return rows


def write_tables(results: dict, out_dir: Path) -> list[Path]:
    """``table2.md`` / ``.tex`` (``paper_figures.style``) and ``table2.csv``."""
    rows = table_rows(results)
    notes = [
        f"Preset `{results['preset']}` on {results['device_name']}, "
        f"{results['wall_time_s']:.0f} s of training and evaluation.",
        "Rec.: test ||x - mu_x(mu_z(x))||^2 per image ([0, 1] pixels, summed). MMD^2 (ours): "
        "unbiased multi-scale IMQ MMD^2 between one z ~ q(z|x) per test image and N(0, I); the "
        "paper does not state its kernel or scale, so compare the ratio, not the values. "
        "||dL/dz||: per-image gradient norm of the negative ELBO w.r.t. z, mean over the first "
        "(early) and last (late) steps.",
    ]
    for r, per in results["resolutions"].items():
        c = per["comparison"]
        notes.append(
            f"CelebA-{r}: rec. differs by {100 * c['rec_relative_difference']:.1f}%, MMD^2 "
            f"fixed/learned = {c['mmd_ratio_fixed_over_learned']:.2f} (paper: "
            f"{_paper_ratio(results, r)}), early gradient fixed/learned = "
            f"{c['early_grad_ratio_fixed_over_learned']:.3g}."
        )
    paths = style.write_table(HEADERS, rows, out_dir, "table2",
                              caption="Table 2: learned vs fixed gamma (ours beside the paper)",
                              notes=notes, digits=3)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADERS)
    writer.writerows([[_fmt(c, 6) for c in row] for row in rows])
    csv_path = out_dir / "table2.csv"
    csv_path.write_text(buffer.getvalue(), encoding="utf-8")
    return paths + [csv_path]


def _paper_ratio(results: dict, r: str) -> str:
    paper = results.get("paper", {}).get(r)
    if not paper:
        return "-"
    return f"{paper['fixed']['mmd'] / paper['learned']['mmd']:.2f}"


def plot(results: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    resolutions = list(results["resolutions"])
    with style.context():
        fig, axes = plt.subplots(2, len(resolutions), figsize=(3.6 * len(resolutions), 5.2),
                                 squeeze=False, constrained_layout=True)
        for col, r in enumerate(resolutions):
            per = results["resolutions"][r]
            top, bottom = axes[0, col], axes[1, col]
            for variant in ("learned", "fixed"):
                run = per[variant]
                trace = run["grad_z_norm"]
                top.plot(trace["trace_step"], trace["trace_value"], color=COLORS[variant],
                         lw=0.9, ls="-" if variant == "learned" else "--",
                         label=LABELS[variant])
                epochs = run["epochs"]
                bottom.plot([e["step"] for e in epochs], [e["gamma"] for e in epochs],
                            color=COLORS[variant], marker="o" if variant == "learned" else "s",
                            ls="-" if variant == "learned" else "--", label=LABELS[variant])
            top.set_yscale("log")
            top.set_title(f"CelebA-{r}")
            top.set_xlabel("training step (mini-batches)")
            top.set_ylabel("||dL/dz|| per image (nats per unit z)")
            bottom.set_yscale("log")
            bottom.set_xlabel("training step (mini-batches)")
            bottom.set_ylabel("gamma, epoch mean ([0,1] pixel units$^2$)")
            for ax in (top, bottom):
                ax.grid(True, which="major")
                ax.legend()
        fig.suptitle(f"Figure 1: gradient norm, learned vs fixed gamma "
                     f"({results['preset']} preset)")
        return style.save_figure(fig, out_dir, "figure1_grad_norm")


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    """Draw Figure 1 and write Table 2 from ``results_dir/results.json``; return the files."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    results = json.loads((results_dir / "results.json").read_text(encoding="utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    return plot(results, out_dir) + write_tables(results, out_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", nargs="?", type=Path, default=DEFAULT_RESULTS,
                        help=f"folder with results.json (default: {DEFAULT_RESULTS})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT})")
    args = parser.parse_args()
    for path in make(args.results_dir, args.out):
        print(path)
