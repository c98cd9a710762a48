"""Figure: discrete latents, drawn only from the saved results of experiments/discrete_rae.py.

Two panels, one row per model (categorical VAE, discrete RAEs, VQ-VAE), one bar per sampler
(uniform prior, product of categoricals, mixture, autoregressive prior): pixel MMD^2 and KID to
the test images (lower is better, log axes). Writes ``discrete_rae.png`` / ``.pdf`` and
``discrete_rae_table.md`` / ``.tex``.

Usage: ``python paper_figures/discrete_rae.py [RESULTS_DIR] [--out OUT_DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures import style  # noqa: E402
from paper_figures.registry import FIGURE, TABLE, Entry, Source, both, command  # noqa: E402

NAME = "discrete_rae"
ENTRY = Entry(
    NAME, "seed 002: discrete latents, categorical VAE vs discrete RAEs vs VQ-VAE, sampled from "
    "the uniform prior and ex-post densities",
    (Source("discrete_rae", commands=(command("discrete_rae"),),
            run_dir="runs/discrete_rae/{preset}",
            needs=("results.json", "samples.npz"),
            copy=("config.json", "environment.json", "results.json", "table.md",
                  "samples.npz"),
            outputs=both(NAME, f"{NAME}_samples", formats=FIGURE)
            + both(f"{NAME}_table", formats=TABLE)),
     Source("discrete_rae_celeba",
            commands=("python experiments/discrete_rae.py --preset {preset}_celeba",),
            run_dir="runs/discrete_rae/{preset}_celeba", needs=("results.json", "samples.npz"),
            copy=("config.json", "environment.json", "results.json", "table.md",
                  "samples.npz"),
            outputs=both(NAME, f"{NAME}_samples", formats=FIGURE)
            + both(f"{NAME}_table", formats=TABLE), out_subdir="celeba")),
)
#: Images per block of the sample grid.
GRID_IMAGES = 4


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    from experiments.discrete_rae import SAMPLER_LABELS, SAMPLERS, TABLE_HEADERS, table_rows

    results = style.read_results(results_dir, NAME)
    models = list(results["models"].values())
    labels = [m["label"] for m in models]
    with style.context():
        fig, axes = style.figure((9.0, 3.6), ncols=2)
        for ax, (metric, title) in zip(axes, (("mmd_x", "pixel MMD^2 to test images"),
                                              ("kid_x", "pixel KID to test images")),
                                       strict=True):
            groups = {SAMPLER_LABELS[s]: [max(m["columns"][s][metric], 1e-6) for m in models]
                      for s in SAMPLERS}
            style.grouped_bars(ax, labels, groups, log=True)
            ax.set_title(f"{title} (lower is better)")
        axes[1].set_yticklabels([])
        style.legend_below(fig, axes, ncols=4)
        written = style.save_figure(fig, out_dir, NAME)
    written += sample_grid(results, Path(results_dir) / "samples.npz", out_dir)
    written += style.write_table(TABLE_HEADERS, table_rows(results), out_dir, f"{NAME}_table",
                                 caption="Discrete latents: models x samplers")
    return written


def sample_grid(results: dict, path: Path, out_dir: Path) -> list[Path]:
    """One row per model: test images, their reconstructions, then decoded samples of each
    sampler (uniform prior and the ex-post densities)."""
    import numpy as np

    from experiments.discrete_rae import SAMPLER_LABELS, SAMPLERS

    if not path.is_file():
        return []
    with np.load(path) as f:
        arrays = {k: f[k][:GRID_IMAGES] for k in f.files}
    names = list(results["models"])
    blocks = ["test", "rec", *SAMPLERS]
    grid = [[arrays.get(f"{n}/{b}") if b != "test" or i == 0 else None for b in blocks]
            for i, n in enumerate(names)]
    picture, rows, centres = style.mosaic(grid)
    labels = ["test images", "reconstructions", *[SAMPLER_LABELS[s] for s in SAMPLERS]]
    with style.context():
        height = picture.shape[0] / picture.shape[1] * 10.0
        fig, ax = style.figure((10.0, max(2.0, height + 0.8)))
        style.image_panel(ax, picture, rows, [results["models"][n]["label"] for n in names],
                          centres, labels)
        ax.tick_params(axis="x", labelsize=7)
        fig.suptitle(f"Discrete latents: samples per model and sampler "
                     f"({style.dataset_name(results.get('dataset', 'mnist'))}, "
                     f"{style.run_label(results)})")
        return style.save_figure(fig, out_dir, f"{NAME}_samples")


if __name__ == "__main__":
    style.cli(make, __doc__, NAME)
