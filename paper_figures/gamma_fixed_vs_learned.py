"""Figure 1 and Table 2 of the balanced-regularization paper from a saved E2 run.

Reads only ``results.json`` written by ``experiments/gamma_fixed_vs_learned.py`` (a run folder or
its copy under ``results/gamma_fixed_vs_learned/``) and writes

- ``figure1_grad_norm.png`` / ``.pdf``: ``||dL/dz||`` per training step for learned and fixed
  gamma (top row, one column per resolution) and the decoder variance gamma per epoch (bottom);
- ``table2.md`` / ``.tex`` / ``.csv``: test reconstruction error, MMD^2(q(z), N(0, I)), active
  units and early/late gradient norms, ours beside the paper's numbers ("–" where it gives none).

Usage: ``python paper_figures/gamma_fixed_vs_learned.py [RESULTS_DIR] [--out OUT_DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures import style  # noqa: E402
from paper_figures.registry import (  # noqa: E402
    FIGURE,
    TABLE_CSV,
    Entry,
    Source,
    both,
    command,
)

NAME = "gamma_fixed_vs_learned"
ENTRY = Entry(
    NAME, "E2, Table 2 and Figure 1: learned vs fixed gamma on CelebA 64/128",
    (Source("gamma_fixed_vs_learned", commands=(command("gamma_fixed_vs_learned"),),
            run_dir="runs/gamma_fixed_vs_learned/{preset}",
            outputs=both("figure1_grad_norm", formats=FIGURE)
            + both("table2", formats=TABLE_CSV)),),
)
VARIANTS = {"learned": "learnable gamma", "fixed": "fixed gamma = gamma*"}
LEGEND = {"learned": r"learnable $\gamma$",
          "fixed": r"fixed $\gamma = \gamma^*$ (the learnable run's final value)"}
HEADERS = (
    "resolution", "gamma", "rec. (ours)", "rec. (paper)", "MMD^2 (ours)", "MMD (paper)",
    "active units", "final gamma", "early ||dL/dz||", "late ||dL/dz||",
)


def table_rows(results: dict) -> list[list]:
    rows = []
    for r, per in results["resolutions"].items():
        for variant, label in VARIANTS.items():
            run = per[variant]
            rows.append([
                f"CelebA-{r}", label, run["rec"], style.dig(results, "paper", r, variant, "rec"),
                run["mmd"], style.dig(results, "paper", r, variant, "mmd"), run["active_units"],
                run["gamma_final"], run["grad_z_norm"]["early_mean"],
                run["grad_z_norm"]["late_mean"],
            ])
    return rows


def _paper_ratio(results: dict, r: str) -> str:
    fixed = style.dig(results, "paper", r, "fixed", "mmd")
    learned = style.dig(results, "paper", r, "learned", "mmd")
    if fixed is None or not learned:
        return style.MISSING
    return f"{fixed / learned:.2f}"


def write_tables(results: dict, out_dir: Path) -> list[Path]:
    """``table2.md`` / ``.tex`` / ``.csv``."""
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
    return style.write_table(HEADERS, table_rows(results), out_dir, "table2",
                             caption="Table 2: learned vs fixed gamma (ours beside the paper)",
                             notes=notes, digits=3, csv=True)


def plot(results: dict, out_dir: Path) -> list[Path]:
    resolutions = list(results["resolutions"])
    with style.context():
        fig, axes = style.figure((3.6 * len(resolutions), 4.6), nrows=2,
                                 ncols=len(resolutions), squeeze=False)
        for col, r in enumerate(resolutions):
            top, bottom = axes[0, col], axes[1, col]
            for i, (variant, label) in enumerate(LEGEND.items()):
                run = results["resolutions"][r][variant]
                kw = style.series_style(i)
                trace = run["grad_z_norm"]
                top.plot(trace["trace_step"], trace["trace_value"], color=kw["color"],
                         linestyle=kw["linestyle"], linewidth=0.9, label=label)
                steps = [e["step"] for e in run["epochs"]]
                bottom.plot(steps, [e["gamma"] for e in run["epochs"]], label=label, **kw)
            top.set_title(f"CelebA-{r}: gradient norm per image and step")
            bottom.set_title(f"CelebA-{r}: decoder variance, epoch mean")
            if col == 0:
                top.set_ylabel(r"$\|\partial L / \partial z\|$ (nats per unit $z$)")
                bottom.set_ylabel(r"$\gamma$ (squared [0, 1] pixel units)")
            for ax in (top, bottom):
                style.log_axis(ax, "y")
                ax.set_xlabel("training step (mini-batches)")
                ax.grid(True, which="major")
        fig.suptitle("Figure 1: learned vs fixed decoder variance $\\gamma$ "
                     f"({style.run_label(results)})")
        style.legend_below(fig, [axes[1, 0]])
        return style.save_figure(fig, out_dir, "figure1_grad_norm")


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    """Draw Figure 1 and write Table 2 from ``results_dir/results.json``; return the files."""
    results = style.read_results(results_dir, NAME)
    return plot(results, Path(out_dir)) + write_tables(results, Path(out_dir))


if __name__ == "__main__":
    style.cli(make, __doc__, NAME)
