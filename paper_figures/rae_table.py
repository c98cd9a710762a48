"""Tables and summary charts of the RAE table (E4), drawn only from the saved ``results.json``
of ``experiments/rae_table.py`` (the DAE sweep, E5, has its own module,
``paper_figures/dae_sweep.py``).

For the RAE table:

- ``rae_table_fid.md`` / ``.tex``: FID of REC / N(0, I) / GMM / Interp., each cell "ours
  (Ghosh et al.'s Table 1)";
- ``rae_table_metrics.md`` / ``.tex`` / ``.csv``: the FID-free metrics (test reconstruction
  error, MMD^2(q(z), N(0, I)), NDB/K and pixel MMD^2 per column), with held-out test images as
  the floor of each metric, and the direction checks recorded by the experiment;
- ``rae_table.png`` / ``.pdf``: NDB/K and pixel MMD^2 per model and column.

Usage::

    python -m paper_figures.rae_table runs/rae_table/quick --out runs/figures
    python -m paper_figures.rae_table results --out runs/figures   # results/rae_table*
"""

from __future__ import annotations

import sys
from pathlib import Path

from balance.reporting import is_missing, paper_cell, shorten_na

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures import style  # noqa: E402
from paper_figures.registry import (  # noqa: E402
    RAE,
    RAE_CELEBA,
    RAE_TABLE_OUTPUTS,
    Entry,
    Source,
)

NAME = "rae_table"
ENTRY = Entry(
    NAME, "E4: RAE table (Ghosh et al. Table 1; MNIST, CelebA-64)",
    (Source(**RAE, outputs=RAE_TABLE_OUTPUTS),
     Source(**RAE_CELEBA, outputs=RAE_TABLE_OUTPUTS,
            copy=("config.json", "environment.json", "results.json", "table.md"))),
)
EXPERIMENTS = ("rae_table",)
RAE_COLUMNS = ("rec", "normal", "gmm", "interp")
COLUMN_LABELS = {"rec": "REC", "normal": "N(0,I)", "gmm": "GMM", "interp": "Interp.",
                 "mvg": "MVG"}
METRIC_NOTES = ("rec. err.: squared error per test image ([0, 1] pixels, summed); MMD(q,N): "
                "unbiased IMQ MMD^2 of the training codes against N(0, I); NDB/K: fraction of "
                "statistically different bins (lower is better); MMD_x: pixel-space MMD^2 to "
                "test images (lower is better). The row 'held-out test images' scores real "
                "images: each metric's floor at this sample size.")
REFERENCE_LABEL = "held-out test images"


def _title(results: dict, what: str) -> str:
    return f"{what}, {style.dataset_name(results.get('dataset'))} ({style.run_label(results)})"


def _fid_missing(results: dict) -> bool:
    return any(is_missing(c.get("fid")) for m in results["models"].values()
               for c in m["columns"].values())


def _notes(results: dict, *extra: str, directions: bool = True) -> list[str]:
    notes = [f"Preset `{results.get('preset')}` on {results.get('device_name', '?')}"
             + (f", {results['wall_time_s']:.0f} s." if "wall_time_s" in results else ".")]
    if _fid_missing(results):
        notes.append("FID n/a: the run had no Inception weights file (pytorch-fid), so the "
                     "FID-free metrics stand in for it.")
    notes += [e for e in extra if e]
    if directions and results.get("directions"):
        notes.append("Direction checks: " + "; ".join(
            f"{k} = {style.format_number(v)}" for k, v in results["directions"].items()))
    return notes


def _metric_rows(results: dict, columns: tuple[str, ...], metrics: tuple[str, ...],
                 lead: tuple[str, ...]) -> list[list]:
    """Rows of ``lead`` model fields then ``metric`` x ``column`` cells, the held-out reference
    (which has no model fields and one value per metric, in the first column) first."""
    rows = []
    ref = results.get("reference")
    if ref:
        rows.append([REFERENCE_LABEL, *[None] * len(lead),
                     *[ref.get(metric) if i == 0 else None
                       for metric in metrics for i in range(len(columns))]])
    for m in results["models"].values():
        rows.append([m["label"], *[m.get(f) for f in lead],
                     *[style.dig(m, "columns", c, metric) for metric in metrics
                       for c in columns]])
    return rows


def _summary_chart(results: dict, out_dir: Path, stem: str, columns: tuple[str, ...],
                   what: str) -> list[Path]:
    """NDB/K and pixel MMD^2 per model (rows) and column (bars), the held-out test images as a
    dashed line: the experiment at a glance."""
    models = list(results["models"].values())
    labels = [m["label"] for m in models]
    ref = results.get("reference") or {}
    with style.context():
        fig, axes = style.figure((7.0, 1.3 + 0.28 * len(models)), ncols=2, sharey=True)
        for ax, (metric, xlabel) in zip(axes, (
                ("ndb_over_k", "NDB/K (fraction of bins, lower is better)"),
                ("mmd_x", "pixel MMD$^2$ to test images (lower is better)")), strict=True):
            groups = {COLUMN_LABELS[c]: [style.dig(m, "columns", c, metric) for m in models]
                      for c in columns}
            style.grouped_bars(ax, labels, groups, reference=ref.get(metric),
                               reference_label=REFERENCE_LABEL)
            ax.set_xlabel(xlabel)
        axes[1].tick_params(axis="y", labelleft=False)
        fig.suptitle(_title(results, what))
        style.legend_below(fig, [axes[0]], ncols=len(columns) + 1)
        return style.save_figure(fig, out_dir, stem)


# ------------------------------------------------------------------------------- RAE table


def rae_fid_table(results: dict) -> tuple[list[str], list[list]]:
    """FID per model and column, each cell "ours (paper)"."""
    columns = ["model", *[COLUMN_LABELS[c] for c in RAE_COLUMNS]]
    rows = [[m["label"], *[paper_cell(shorten_na(style.dig(m, "columns", c, "fid")),
                                      style.dig(results, "paper", name, c))
                           for c in RAE_COLUMNS]]
            for name, m in results["models"].items()]
    return columns, rows


def rae_metrics_table(results: dict) -> tuple[list[str], list[list]]:
    columns = ["model", "rec. err.", "MMD(q,N)"]
    columns += [f"{metric} {COLUMN_LABELS[c]}" for metric in ("NDB/K", "MMD_x")
                for c in RAE_COLUMNS]
    rows = _metric_rows(results, RAE_COLUMNS, ("ndb_over_k", "mmd_x"),
                        ("rec_error", "mmd_q_prior"))
    return columns, rows


def make_rae(results: dict, out_dir: Path) -> list[Path]:
    source = results.get("paper_source", "the paper")
    paths = style.write_table(
        *rae_fid_table(results), out_dir, "rae_table_fid",
        caption=_title(results, "RAE table: FID, ours (paper)"),
        notes=_notes(results, f"Paper: {source}; \u2013: the paper gives no number.",
                     directions=False))
    paths += style.write_table(*rae_metrics_table(results), out_dir, "rae_table_metrics",
                               caption=_title(results, "RAE table: FID-free metrics"),
                               notes=_notes(results, METRIC_NOTES), csv=True)
    return paths + _summary_chart(results, out_dir, "rae_table", RAE_COLUMNS,
                                  "RAE table (E4): sample quality per model and column")


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    """Write the tables and charts of every results.json found under ``results_dir``."""
    out_dir = Path(out_dir)
    paths: list[Path] = []
    for folder in style.find_results(results_dir, EXPERIMENTS):
        results = style.read_results(folder, EXPERIMENTS)
        paths += make_rae(results, out_dir)
    return paths


if __name__ == "__main__":
    style.cli(make, __doc__, NAME, Path("results"))
