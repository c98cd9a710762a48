"""Figure: learned gamma (a homotopy from large to small gamma) against gamma fixed at its final
value gamma* and against a floored gamma, over seeds, drawn only from the saved results of
experiments/homotopy.py.

Three panels, each dataset a group of three arms (learned, fixed = gamma*, floor = 10 gamma*),
each seed a point: active dimensions (the dashed marks show r where it is known), MMD^2
between q(z) and N(0, I), and the mean ||dL/dz|| over the first steps (log axes). Writes
``homotopy.png`` / ``.pdf`` and ``homotopy_table.md`` / ``.tex``.

Usage: ``python paper_figures/homotopy.py [RESULTS_DIR] [--out OUT_DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures import style  # noqa: E402
from paper_figures.registry import FIGURE, TABLE, Entry, Source, both, command  # noqa: E402

NAME = "homotopy"
ENTRY = Entry(
    NAME, "THEORY.md section 3: learned gamma vs gamma fixed at gamma* vs a floored gamma, over "
    "seeds, on data of known rank and MNIST",
    (Source("homotopy", commands=(command("homotopy"),), run_dir="runs/homotopy/{preset}",
            copy=("config.json", "results.json", "table.md"),
            outputs=both(NAME, formats=FIGURE) + both(f"{NAME}_table", formats=TABLE)),),
)
ARMS = ("learned", "fixed", "floor")
PANELS = (("active_units", "active dimensions", False),
          ("mmd", "MMD^2 of q(z) to N(0, I)", True),
          ("early_grad", "early ||dL/dz||", True))


def _value(run: dict, key: str) -> float:
    return run["grad_z_norm"]["early_mean"] if key == "early_grad" else run[key]


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    results = style.read_results(results_dir, NAME)
    datasets = list(results["datasets"])
    factor = results["thresholds"]["floor_factor"]
    labels = {"learned": "learned gamma", "fixed": "fixed at gamma*",
              "floor": f"learned, floored at {factor:g} gamma*"}
    with style.context():
        fig, axes = style.figure((9.0, 3.2), ncols=3)
        for ax, (key, label, log) in zip(axes, PANELS, strict=True):
            for d, dataset in enumerate(datasets):
                per = results["datasets"][dataset]
                for a, arm in enumerate(ARMS):
                    values = [_value(seed[arm], key) for seed in per["runs"]]
                    if log:  # MMD^2 estimates can be slightly negative near 0
                        values = [max(v, 1e-5) for v in values]
                    x = d + (a - 1) * 0.25
                    jitter = [x + 0.06 * ((j % 5) - 2) / 2 for j in range(len(values))]
                    kw = style.series_style(a)
                    ax.scatter(jitter, values, s=10, color=kw["color"], marker=kw["marker"],
                               label=labels[arm] if d == 0 else None)
                if key == "active_units" and per["r"] is not None:
                    ax.hlines(per["r"], d - 0.45, d + 0.45, color=style.GREY,
                              linestyles="--", linewidth=0.9)
            ax.set_xticks(range(len(datasets)),
                          [f"{d}\n(r = {results['datasets'][d]['r']})"
                           if results["datasets"][d]["r"] is not None else d for d in datasets])
            if log:
                ax.set_yscale("log")
            ax.set_title(label)
        style.legend_below(fig, axes, ncols=3)
        written = style.save_figure(fig, out_dir, NAME)
    from experiments.homotopy import TABLE_HEADERS, table_rows

    written += style.write_table(TABLE_HEADERS, table_rows(results), out_dir, f"{NAME}_table",
                                 caption="Learned vs fixed vs floored gamma (homotopy view)")
    return written


if __name__ == "__main__":
    style.cli(make, __doc__, NAME)
