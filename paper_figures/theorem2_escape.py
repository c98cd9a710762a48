"""Figure: escape from the over-regularized point of Theorem 2, over seeds, drawn only from
the saved results of experiments/theorem2_escape.py.

One column of points per decoder (plain, plain + affine skip, residual, residual + affine skip)
and size: the first checked step at which a dimension became active, per seed, on a log axis;
seeds that never escaped within the run sit on the "never" line at the top. Writes
``theorem2_escape.png`` / ``.pdf`` and ``theorem2_escape_table.md`` / ``.tex``.

Usage: ``python paper_figures/theorem2_escape.py [RESULTS_DIR] [--out OUT_DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures import style  # noqa: E402
from paper_figures.registry import FIGURE, TABLE, Entry, Source, both, command  # noqa: E402

NAME = "theorem2_escape"
ENTRY = Entry(
    NAME, "THEORY.md section 2: escape from the over-regularized point over seeds, with and "
    "without the affine and residual skips",
    (Source("theorem2_escape", commands=(command("theorem2_escape"),),
            run_dir="runs/theorem2_escape/{preset}", copy=("config.json", "results.json",
                                                           "table.md"),
            outputs=both(NAME, formats=FIGURE) + both(f"{NAME}_table", formats=TABLE)),),
)


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    results = style.read_results(results_dir, NAME)
    steps = results["config"]["steps"]
    cells = list(results["cells"].values())
    never = steps * 1.6
    with style.context():
        fig, ax = style.figure((7.0, 3.2))
        for i, cell in enumerate(cells):
            first = [f if f is not None else never for f in cell["first"]]
            jitter = [i + 0.25 * ((j % 9) - 4) / 4 for j in range(len(first))]
            kw = style.series_style(i)
            ax.scatter(jitter, first, s=14, color=kw["color"], marker=kw["marker"],
                       label=f"{cell['arch']} ({cell['size']})")
        ax.axhline(never, color=style.GREY, linewidth=0.8, linestyle=":")
        ax.text(len(cells) - 0.5, never, "never", va="bottom", ha="right", color=style.GREY)
        ax.set_yscale("log")
        labels = [c["arch"].replace("+skip", "\n+ skip") + "\n" + c["size"] for c in cells]
        ax.set_xticks(range(len(cells)), labels)
        ax.set_ylabel("first step with an active dimension")
        ax.set_title(f"Escape from the all-off point ({len(cells[0]['first'])} seeds, "
                     f"{steps} steps)")
        written = style.save_figure(fig, out_dir, NAME)
    from experiments.theorem2_escape import TABLE_HEADERS, table_rows

    written += style.write_table(TABLE_HEADERS, table_rows(results), out_dir, f"{NAME}_table",
                                 caption="Escape from the over-regularized point (Theorem 2)")
    return written


if __name__ == "__main__":
    style.cli(make, __doc__, NAME)
