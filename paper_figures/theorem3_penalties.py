"""Figure: minimisers of the penalised energy L_h of Theorem 3 from random starts, drawn only
from the saved results of experiments/theorem3_penalties.py.

(a) Per penalty h, the fraction of starts that ended with exactly r active rows and a
reconstruction error below 1e-3 (the claim for an unbounded gradient at 0); (b) each start's
reconstruction error (log axis) against its number of active rows. Bounded-gradient penalties
in one colour, unbounded ones in another. Writes ``theorem3_penalties.png`` / ``.pdf`` and
``theorem3_penalties_table.md`` / ``.tex``.

Usage: ``python paper_figures/theorem3_penalties.py [RESULTS_DIR] [--out OUT_DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures import style  # noqa: E402
from paper_figures.registry import FIGURE, TABLE, Entry, Source, both, command  # noqa: E402

NAME = "theorem3_penalties"
ENTRY = Entry(
    NAME, "THEORY.md section 3: minimisers of L_h from random starts, per penalty h",
    (Source(NAME, commands=(command(NAME),), run_dir=f"runs/{NAME}/{{preset}}",
            copy=("config.json", "results.json", "table.md"),
            outputs=both(NAME, formats=FIGURE) + both(f"{NAME}_table", formats=TABLE)),),
)


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    results = style.read_results(results_dir, NAME)
    r = results["r"]
    cells = list(results["cells"].values())
    colour = {True: style.PALETTE[0], False: style.PALETTE[1]}
    with style.context():
        fig, (ax_a, ax_b) = style.figure((7.2, 3.2), ncols=2, width_ratios=[1.3, 1.0])
        names = [c["penalty"] for c in cells]
        share = [sum(f["active"] == r and f["rec"] < 1e-3 for f in c["fits"]) / len(c["fits"])
                 for c in cells]
        ax_a.barh(range(len(cells)), share, color=[colour[c["bounded_gradient"]] for c in cells])
        ax_a.set_yticks(range(len(cells)), names)
        ax_a.invert_yaxis()
        ax_a.set_xlim(0, 1)
        ax_a.set_xlabel(f"starts ending with r = {r} rows, error < 1e-3")
        ax_a.set_title("(a) per penalty")
        for bounded, label in ((True, "h'(0) bounded"), (False, "h'(0) unbounded")):
            xs, ys = [], []
            for c in cells:
                if c["bounded_gradient"] == bounded:
                    xs += [f["active"] + 0.15 * (i % 5 - 2) / 2 for i, f in enumerate(c["fits"])]
                    ys += [max(f["rec"], 1e-8) for f in c["fits"]]
            ax_b.scatter(xs, ys, s=8, color=colour[bounded], label=label, alpha=0.7)
        ax_b.set_yscale("log")
        ax_b.set_xlabel("active rows")
        ax_b.set_ylabel("reconstruction error")
        ax_b.set_title("(b) every start")
        style.legend_below(fig)
        written = style.save_figure(fig, out_dir, NAME)
    from experiments.theorem3_penalties import TABLE_HEADERS, table_rows

    written += style.write_table(TABLE_HEADERS, table_rows(results), out_dir, f"{NAME}_table",
                                 caption="Minimisers of L_h from random starts (Theorem 3)")
    return written


if __name__ == "__main__":
    style.cli(make, __doc__, NAME)
