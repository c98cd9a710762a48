"""Sample grids of the RAE table (E4), drawn only from the saved ``samples.npz`` (uint8 images
``<model>/<column>`` [n, C, H, W]) and ``results.json`` of ``experiments/rae_table.py`` (the DAE
sweep's hundreds of cells keep their samples in their run folders; ``paper_figures/dae_sweep.py``
draws its curves).

For each experiment (PNG and PDF each):

- ``<experiment>_summary``: the compact overview, one row per model (below a row of test
  images): the first few reconstructions of those test images and samples of each sampler;
- ``<experiment>_<column>``: every saved image of one column (REC below the test images they
  reconstruct, N(0, I), GMM, MVG, Interp. midpoints, whichever were saved), one row per model;
- ``<experiment>_interp_path``: the saved interpolation paths, one row per model.

Usage::

    python -m paper_figures.sample_grids runs/rae_table/quick --out runs/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures import style  # noqa: E402
from paper_figures.registry import (  # noqa: E402
    GRIDS,
    RAE,
    RAE_CELEBA,
    RAE_GRID_OUTPUTS,
    Entry,
    Source,
)

NAME = "sample_grids"
ENTRY = Entry(
    NAME, "E4: sample, reconstruction and interpolation grids (a compact summary each)",
    (Source(**RAE, **GRIDS, outputs=RAE_GRID_OUTPUTS),
     Source(**RAE_CELEBA, **GRIDS, outputs=RAE_GRID_OUTPUTS)),
)
EXPERIMENTS = ("rae_table",)
TITLES = {"rae_table": "RAE table (E4)"}
COLUMN_LABELS = {"rec": "reconstructions", "normal": "N(0,I) samples",
                 "gmm": "GMM samples", "mvg": "MVG samples", "interp": "interpolation midpoints",
                 "interp_path": "interpolation paths"}
#: Interpolation paths saved per model by the experiments (each of their INTERP_STEPS images).
PATHS = 2
#: Images per block in the summary figure.
SUMMARY_IMAGES = 4
SUMMARY_BLOCKS = ("rec", "normal", "mvg", "gmm")
TILE_INCHES = 0.26  # printed size of one image (larger where that would shrink its pixels)


def grid_figure(grid: list[list], row_labels: list[str], block_labels: list[str], title: str,
                out_dir: Path, stem: str) -> list[Path]:
    """One labelled image grid (:func:`paper_figures.style.mosaic`) as PNG and PDF, sized so
    that every image prints ``TILE_INCHES`` wide, or wider where the PNG would otherwise drop
    pixels (CelebA's 64 x 64 images: one pixel per PNG pixel at ``style.FIGURE_DPI``)."""
    picture, rows, blocks = style.mosaic(grid)
    tile = next(b for row in grid for b in row if b is not None).shape[-1] + 2
    inches = max(TILE_INCHES / tile, 1.0 / style.FIGURE_DPI)  # per pixel
    label_width = 0.1 + 0.06 * max(len(label) for label in row_labels)
    header = 0.45 + (0.2 if any(block_labels) else 0.0)
    with style.context():
        fig, ax = style.figure((label_width + picture.shape[1] * inches,
                                header + picture.shape[0] * inches))
        style.image_panel(ax, picture, rows, row_labels, blocks, block_labels)
        fig.suptitle(title, fontsize=9)
        return style.save_figure(fig, out_dir, stem)


def _rows(arrays: dict, labels: dict[str, str], column: str,
          split: int = 1) -> tuple[list[list], list[str]]:
    """One row per model that saved ``column``, cut into ``split`` equal blocks; the saved test
    images on top of the reconstructions (which reconstruct them)."""
    import numpy as np

    have = [m for m in labels if f"{m}/{column}" in arrays]
    grid = [np.split(arrays[f"{m}/{column}"], split) for m in have]
    names = [labels[m] for m in have]
    test = next((arrays[f"{m}/test"] for m in labels if f"{m}/test" in arrays), None)
    if column == "rec" and test is not None:
        grid, names = [[test], *grid], ["test images", *names]
    return grid, names


def _summary(arrays: dict, labels: dict[str, str]) -> tuple[list[list], list[str], list[str]]:
    """The first ``SUMMARY_IMAGES`` of each of ``SUMMARY_BLOCKS`` side by side, one row per
    model, the test images above their reconstructions: ``(grid, row labels, headers)``."""
    blocks = [c for c in SUMMARY_BLOCKS if any(f"{m}/{c}" in arrays for m in labels)]
    per_block = {}  # block -> row label -> [images]
    for c in blocks:
        grid, names = _rows(arrays, labels, c)
        per_block[c] = dict(zip(names, grid, strict=True))
    names = list(dict.fromkeys(n for c in blocks for n in per_block[c]))
    grid = [[per_block[c][n][0][:SUMMARY_IMAGES] if n in per_block[c] else None
             for c in blocks] for n in names]
    return grid, names, [COLUMN_LABELS[c] for c in blocks]


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    """Write the summary, one grid per saved column and the interpolation paths for each
    experiment found under ``results_dir``."""
    import numpy as np

    out_dir = Path(out_dir)
    paths = []
    for source in style.find_results(results_dir, EXPERIMENTS, needs="samples.npz"):
        results = style.read_results(source, EXPERIMENTS)
        name = results["experiment"]
        what = f"{TITLES[name]}, {style.dataset_name(results.get('dataset'))} " \
               f"({style.run_label(results)})"
        with np.load(source / "samples.npz") as f:
            arrays = {k: f[k] for k in f.files}
        labels = {m: r["label"] for m, r in results["models"].items()
                  if any(k.startswith(f"{m}/") for k in arrays)}
        grid, row_labels, headers = _summary(arrays, labels)
        paths += grid_figure(grid, row_labels, headers,
                             f"{what}\nreconstructions and samples", out_dir, f"{name}_summary")
        for column in dict.fromkeys(key.split("/", 1)[1] for key in arrays):
            if column == "test":
                continue  # shown above the reconstructions
            split = PATHS if column == "interp_path" else 1
            grid, row_labels = _rows(arrays, labels, column, split)
            headers = [f"path {i + 1}" for i in range(split)] if split > 1 else []
            title = COLUMN_LABELS.get(column, column) + (
                " of the test images (top row)" if column == "rec" else "")
            paths += grid_figure(grid, row_labels, headers, f"{what}\n{title}", out_dir,
                                 f"{name}_{column}")
    return paths


if __name__ == "__main__":
    style.cli(make, __doc__, NAME, Path("results"))
