"""Figures of the GrammarRAE experiment (E7), drawn only from the saved results of
``experiments/grammar_rae.py``:

- ``grammar_rae_bo``: Bayesian optimisation in each model's latent space against random search
  (best score so far against evaluations, mean over seeds, the band one standard deviation);
- ``grammar_rae_expressions``: the target 1/3 + x + sin(x * x) and the best expression each
  model's optimisation found, on [-10, 10], and decoded samples of each model's ex-post GMM;
- ``grammar_rae_table``: reconstruction accuracy, sample validity and uniqueness per sampler,
  and the optimisation's scores; ``grammar_rae_checks``: the verdicts.

Usage: ``python -m paper_figures.grammar_rae [RESULTS_DIR] [--out OUT_DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures import style  # noqa: E402
from paper_figures.registry import FIGURE, TABLE, Entry, Source, both, command  # noqa: E402

NAME = "grammar_rae"
ENTRY = Entry(
    NAME, "E7: GrammarRAE vs Grammar VAE on arithmetic expressions: reconstruction, valid and "
    "unique samples, Bayesian optimisation against random search",
    (Source(NAME, commands=(command(NAME),), run_dir="runs/grammar_rae/{preset}",
            copy=("config.json", "environment.json", "results.json", "table.md"),
            outputs=both("grammar_rae_bo", "grammar_rae_expressions", formats=FIGURE)
            + both("grammar_rae_table", "grammar_rae_checks", formats=TABLE)),),
)


def _title(results: dict, what: str) -> str:
    return f"{what} ({style.run_label(results)})"


def bo_figure(results: dict, out: Path) -> list[Path]:
    models = list(results["models"].values())
    with style.context():
        fig, axes = style.figure((2.6 * len(models), 2.8), ncols=len(models), sharey=True,
                                 squeeze=False)
        for ax, m in zip(axes[0], models, strict=True):
            for j, (key, label) in enumerate((("bo", "Bayesian optimisation"),
                                              ("random", "random search (ex-post GMM)"))):
                curves = np.array([r[key]["best_so_far"] for r in m["bo"]])
                mean, sd = curves.mean(0), curves.std(0)
                steps = np.arange(1, curves.shape[1] + 1)
                kw = style.series_style(j)
                ax.plot(steps, mean, color=kw["color"], linestyle=kw["linestyle"], label=label)
                ax.fill_between(steps, mean - sd, mean + sd, color=kw["color"], alpha=0.15)
            ax.set_title(m["label"], fontsize=8)
            ax.set_xlabel("evaluations")
        axes[0][0].set_ylabel("best log(1 + MSE) so far")
        fig.suptitle(_title(results, f"Optimisation in latent space, mean over "
                                     f"{len(models[0]['bo'])} seeds (band: 1 s.d.)"))
        style.legend_below(fig, [axes[0][0]], ncols=2)
        return style.save_figure(fig, out, "grammar_rae_bo")


def expressions_figure(results: dict, out: Path) -> list[Path]:
    from balance.grammar import TARGET_GRID, arithmetic_values, target_function

    models = list(results["models"].values())
    with style.context():
        fig, axes = style.figure((11.0, 4.2), ncols=2, width_ratios=(1.0, 1.3))
        ax = axes[0]
        ax.plot(TARGET_GRID, target_function(TARGET_GRID), color="black", linewidth=2.0,
                label="target 1/3 + x + sin(x*x)")
        for i, m in enumerate(models):
            runs = m["bo"]
            best = min(runs, key=lambda r: r["bo"]["best"])
            expr = best["bo_best_expression"]
            if expr is None:
                continue
            ys = np.clip(arithmetic_values(expr, TARGET_GRID), -30, 30)
            kw = style.series_style(i + 1)
            ax.plot(TARGET_GRID, ys, color=kw["color"], linestyle=kw["linestyle"],
                    linewidth=1.0, label=f"{m['label']}: {expr}")
        ax.set_xlabel("x")
        ax.set_ylim(-15, 15)
        ax.set_title("best expression found per model", fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
        text = axes[1]
        text.axis("off")
        lines = []
        for m in models:
            lines.append(f"{m['label']}  (reconstruction accuracy "
                         f"{m['reconstruction_accuracy']:.3f}, per step {m['step_accuracy']:.2f})")
            lines.append("   GMM samples: " + ",  ".join(m["examples"]["gmm"][:6]))
            lines.append("   N(0,I):      " + ",  ".join(m["examples"]["normal"][:6]))
        text.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace",
                  fontsize=6.5, transform=text.transAxes)
        text.set_title("decoded samples", fontsize=9)
        fig.suptitle(_title(results, "GrammarRAE vs Grammar VAE: decoded expressions"))
        return style.save_figure(fig, out, "grammar_rae_expressions")


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    results = style.read_results(results_dir, NAME)
    out_dir = Path(out_dir)
    paths = bo_figure(results, out_dir) + expressions_figure(results, out_dir)
    t = results["table"]
    paths += style.write_table(t["columns"], t["rows"], out_dir, "grammar_rae_table",
                               caption=_title(results, "GrammarRAE vs Grammar VAE"),
                               notes=["finished w/o budget: decoded without the step budget, "
                                      "the fraction of derivations that finish (with the "
                                      "budget every one does, by construction); score: "
                                      "log(1 + MSE) to 1/3 + x + sin(x*x), lower is better; "
                                      f"top mean: the mean of the best {results['bo_top']}."])
    rows = [[k, v["verdict"], v["difference"], v["margin"]]
            for k, v in results["checks"].items()]
    paths += style.write_table(["check", "verdict", "difference", "margin"], rows, out_dir,
                               "grammar_rae_checks", caption=_title(results, "Checks"))
    return paths


if __name__ == "__main__":
    style.cli(make, __doc__, NAME, Path("results") / NAME)
