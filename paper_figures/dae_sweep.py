"""Figures 1-5, Tables 2-3 and the latent scatter plots (Figs. A.1-A.2) of Daly et al. (2022),
drawn only from the saved results of ``experiments/dae_sweep.py``.

- ``dae_sweep_fig1``: score against the latent size per filter base (colours), DAE dotted and
  VAE solid, MVG (left) and GMM (right) sampling;
- ``dae_sweep_fig2`` / ``dae_sweep_fig5``: depth at the two depth filter bases, with the VAE;
- ``dae_sweep_fig3``: the frozen latent layer and decoder-input noise beside the plain DAE and
  the VAE, one panel per depth (GMM);
- ``dae_sweep_fig4``: latent BN / SN / LN, N(0, I), MVG and GMM sampling;
- ``dae_sweep_scatter``: the same random pairs of latent dimensions of the DAE and the VAE
  at the comparison latent size, per filter base, each titled with its normality statistic;
- ``dae_sweep_table2`` / ``_table3`` (ours), ``dae_sweep_paper_table2`` / ``_table3`` (the
  paper's, cited rows marked) and ``dae_sweep_checks`` (each claim's verdict).

The score is FID where the run had the Inception weights; otherwise FD in the feature
autoencoder's codes, and every axis says which.

Usage: ``python -m paper_figures.dae_sweep [RESULTS_DIR] [--out OUT_DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures import style  # noqa: E402
from paper_figures.registry import FIGURE, TABLE, Entry, Source, both  # noqa: E402

NAME = "dae_sweep"
FIGURES = ("dae_sweep_fig1", "dae_sweep_fig2", "dae_sweep_fig3", "dae_sweep_fig4",
           "dae_sweep_fig5", "dae_sweep_scatter")
TABLES = ("dae_sweep_table2", "dae_sweep_paper_table2", "dae_sweep_table3",
          "dae_sweep_paper_table3", "dae_sweep_checks")
_COPY = ("config.json", "environment.json", "results.json", "table.md", "pairs.npz")
_OUTPUTS = both(*FIGURES, formats=FIGURE) + both(*TABLES, formats=TABLE)
ENTRY = Entry(
    NAME, "E5: Daly et al. (2022) Figs. 1-5, Tables 2-3, latent scatter plots (MNIST and "
    "CelebA quick presets)",
    (Source("dae_sweep", commands=("python experiments/dae_sweep.py --preset {preset}",),
            run_dir="runs/dae_sweep/{preset}", needs=("results.json", "pairs.npz"),
            copy=_COPY, outputs=_OUTPUTS),
     Source("dae_sweep_celeba",
            commands=("python experiments/dae_sweep.py --preset {preset}_celeba",),
            run_dir="runs/dae_sweep/{preset}_celeba", needs=("results.json", "pairs.npz"),
            copy=_COPY, outputs=_OUTPUTS, out_subdir="celeba")),
)
#: The paper's colours for the filter bases, smallest first (black, red, green, blue).
FILTER_COLOURS = ("black", "tab:red", "tab:green", "tab:blue")
SAMPLER_LABELS = {"normal": "N(0, I)", "mvg": "MVG", "gmm": "GMM"}


def score_label(results: dict) -> str:
    return ("FID (lower is better)" if results["score"] == "fid" else
            "FD, feature-AE codes (not FID; lower better)")


def _curve(results: dict, model: str, variant: str, filters: int, depth: str = "1"):
    for c in results["curves"]:
        if (c["model"], c["variant"], c["filters"], c["depth"]) == (model, variant, filters,
                                                                     depth):
            return c
    return None


def _plot(ax, c: dict | None, column: str, **kw) -> None:
    if c is None:
        return
    ys = [np.nan if v is None else float(v) for v in c["scores"][column]]
    ax.plot(c["latents"], ys, marker=kw.pop("marker", "o"), markersize=3, **kw)


def _axes(ax, results: dict, title: str, ylabel: bool) -> None:
    ax.set_title(title)
    ax.set_xlabel("latent units")
    style.log_axis(ax, "x", results["grid"]["latents"])
    if ylabel:
        ax.set_ylabel(score_label(results))


def _title(results: dict, what: str) -> str:
    return f"{what}, {style.dataset_name(results.get('dataset'))} ({style.run_label(results)})"


def fig1(results: dict, out: Path) -> list[Path]:
    filters = results["grid"]["filters"]
    with style.context():
        fig, axes = style.figure((8.0, 3.4), ncols=2, sharey=True)
        for ax, column in zip(axes, ("mvg", "gmm"), strict=True):
            for i, f in enumerate(filters):
                colour = FILTER_COLOURS[i % len(FILTER_COLOURS)]
                _plot(ax, _curve(results, "dae", "", f), column, color=colour, linestyle=":",
                      label=f"DAE, {f} filters")
                _plot(ax, _curve(results, "vae", "", f), column, color=colour, linestyle="-",
                      label=f"VAE, {f} filters")
            _axes(ax, results, f"{SAMPLER_LABELS[column]} sampling", ax is axes[0])
        fig.suptitle(_title(results, "Fig. 1: score vs latent size per filter base"))
        style.legend_below(fig, [axes[0]], ncols=len(filters))
        return style.save_figure(fig, out, "dae_sweep_fig1")


def fig_depth(results: dict, out: Path, filters: int, stem: str, number: int) -> list[Path]:
    depths = ["1"] + [style_depth(d) for f, d in results["grid"]["depths"] if f == filters]
    with style.context():
        fig, axes = style.figure((8.0, 3.4), ncols=2, sharey=True)
        for ax, column in zip(axes, ("mvg", "gmm"), strict=True):
            for i, d in enumerate(depths):
                _plot(ax, _curve(results, "dae", "", filters, d), column,
                      **_series(i), label=f"DAE, depth {d}")
            _plot(ax, _curve(results, "vae", "", filters), column, color="grey",
                  linestyle="-", marker="x", label="VAE, depth 1")
            _axes(ax, results, f"{SAMPLER_LABELS[column]} sampling", ax is axes[0])
        fig.suptitle(_title(results, f"Fig. {number}: depth at {filters} filters"))
        style.legend_below(fig, [axes[0]])
        return style.save_figure(fig, out, stem)


def style_depth(depth) -> str:
    """A saved depth (an int or a list of 4) as the curves name it: 1, "3-3-2-1"."""
    return "-".join(str(d) for d in depth) if isinstance(depth, list) else str(depth)


def _series(i: int) -> dict:
    s = style.series_style(i)
    return {"color": s["color"], "linestyle": s["linestyle"], "marker": s["marker"]}


def fig3(results: dict, out: Path) -> list[Path]:
    grid = results["grid"]
    f = grid["variant_filters"]
    depths = sorted({style_depth(d) for d in (*grid["frozen_depths"], *grid["noise_depths"])})
    with style.context():
        fig, axes = style.figure((max(4.0 * len(depths), 7.0), 3.6), ncols=len(depths),
                                 sharey=True, squeeze=False)
        for ax, d in zip(axes[0], depths, strict=True):
            variants = [("", "DAE")] + [("frozen", "frozen latent layer")] + [
                (f"noise{s:g}", f"decoder noise {s:g}") for s in grid["decoder_noise"]]
            for i, (variant, label) in enumerate(variants):
                _plot(ax, _curve(results, "dae", variant, f, d), "gmm", **_series(i),
                      label=label)
            _plot(ax, _curve(results, "vae", "", f), "gmm", color="grey", linestyle="-",
                  marker="x", label="VAE, depth 1")
            _axes(ax, results, f"depth {d}, GMM sampling", ax is axes[0][0])
        fig.suptitle(_title(results, f"Fig. 3: frozen latent layer and decoder noise, {f} "
                                     "filters"))
        style.legend_below(fig, list(axes[0]), ncols=3)
        return style.save_figure(fig, out, "dae_sweep_fig3")


def fig4(results: dict, out: Path) -> list[Path]:
    grid = results["grid"]
    f = grid["variant_filters"]
    with style.context():
        fig, axes = style.figure((11.0, 3.4), ncols=3)
        for ax, column in zip(axes, ("normal", "mvg", "gmm"), strict=True):
            for i, variant in enumerate(["", *grid["latent_norms"]]):
                _plot(ax, _curve(results, "dae", variant, f), column, **_series(i),
                      label="DAE" if not variant else f"DAE + latent {variant.upper()}")
            _axes(ax, results, f"{SAMPLER_LABELS[column]} sampling", ax is axes[0])
            if column == "normal":  # a plain DAE's N(0, I) score is off the others' scale
                style.log_axis(ax, "y")
        fig.suptitle(_title(results, f"Fig. 4: latent normalisation, {f} filters, depth 1"))
        style.legend_below(fig, [axes[0]])
        return style.save_figure(fig, out, "dae_sweep_fig4")


def scatter(results: dict, pairs_file: Path, out: Path, n_pairs: int = 4) -> list[Path]:
    """Figs. A.1-A.2: per filter base, the DAE's and the VAE's codes on the same pairs of
    dimensions (each panel titled with its whitened-pair MMD^2 to N(0, I_2))."""
    cells = [c for c in results["scatter_cells"] if c in results["models"]]
    with np.load(pairs_file) as f:
        arrays = {k: f[k] for k in f.files}
    cells = [c for c in cells if f"{c}/points" in arrays]
    if not cells:
        return []
    with style.context():
        fig, axes = style.figure((2.0 * n_pairs, 2.0 * len(cells)), nrows=len(cells),
                                 ncols=n_pairs, squeeze=False)
        for row, cell in zip(axes, cells, strict=True):
            points, pairs = arrays[f"{cell}/points"], arrays[f"{cell}/pairs"]
            scores = results["models"][cell].get("pair_mmd") or []
            for j, ax in enumerate(row):
                if j >= len(points):
                    ax.axis("off")
                    continue
                ax.scatter(points[j][:, 0], points[j][:, 1], s=2, alpha=0.5,
                           color="tab:blue" if cell.startswith("dae") else "tab:red")
                mmd = scores[j] if j < len(scores) else None
                ax.set_title(f"z{pairs[j][0]} vs z{pairs[j][1]}, MMD$^2$ "
                             f"{style.format_number(mmd, 2)}", fontsize=7)
                ax.tick_params(labelsize=6)
            row[0].set_ylabel(results["models"][cell]["label"], fontsize=7)
        fig.suptitle(_title(results, "Figs. A.1-A.2: random pairs of latent dimensions "
                                     "(whitened-pair MMD$^2$ to N(0, I): lower is more "
                                     "Gaussian)"), fontsize=8)
        return style.save_figure(fig, out, "dae_sweep_scatter")


def tables(results: dict, out: Path) -> list[Path]:
    space = score_label(results)
    t = results["tables"]
    k0 = results["grid"]["comparison_latent"]
    pd = style.dataset_name(results["paper"]["dataset"])
    paths = style.write_table(t["table2"]["columns"], t["table2"]["rows"], out,
                              "dae_sweep_table2",
                              caption=_title(results, f"Table 2 (ours), latent size {k0}"),
                              notes=[f"Score: {space}; mean over the seeds of each cell."])
    paths += style.write_table(
        t["paper_table2"]["columns"], t["paper_table2"]["rows"], out, "dae_sweep_paper_table2",
        caption=f"Table 2 (paper, {pd} FID at {results['paper']['table2_latent']} latents)",
        notes=[results["paper_source"], "(cited): the paper's citation of other work; "
               "\u2013: not given."])
    paths += style.write_table(t["table3"]["columns"], t["table3"]["rows"], out,
                               "dae_sweep_table3",
                               caption=_title(results, "Table 3 (ours): best latent size by "
                                                       "GMM per filter base"),
                               notes=[f"Score: {space}."])
    paths += style.write_table(t["paper_table3"]["columns"], t["paper_table3"]["rows"], out,
                               "dae_sweep_paper_table3", caption=f"Table 3 (paper, {pd} FID)",
                               notes=[results["paper_source"]])
    rows = [[name, value.get("verdict"), value.get("difference"), value.get("margin")]
            for name, value in results["checks"].items()
            if name not in ("score", "summary")]
    paths += style.write_table(
        ["check", "verdict", "difference (positive: as claimed)", "margin (2 seed s.d.)"],
        rows, out, "dae_sweep_checks", caption=_title(results, "Daly et al.'s claims"),
        notes=[f"Score: {space}. " + "; ".join(
            f"{k}: {v}" for k, v in results["checks"]["summary"].items())])
    return paths


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    results = style.read_results(results_dir, NAME)
    paths = fig1(results, out_dir)
    for number, filters in ((2, 0), (5, 1)):
        bases = sorted({f for f, _ in results["grid"]["depths"]})
        if filters < len(bases):
            paths += fig_depth(results, out_dir, bases[filters], f"dae_sweep_fig{number}",
                               number)
    paths += fig3(results, out_dir) + fig4(results, out_dir)
    paths += scatter(results, results_dir / "pairs.npz", out_dir)
    return paths + tables(results, out_dir)


if __name__ == "__main__":
    style.cli(make, __doc__, NAME, Path("results") / NAME)
