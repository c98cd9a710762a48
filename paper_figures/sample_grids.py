"""Sample grids of the RAE table (E4) and the DAE sweep (E5), drawn only from the saved
``samples.npz`` (uint8 images ``<model>/<column>`` [n, C, H, W]) and ``results.json`` of
``experiments/rae_table.py`` / ``experiments/dae_sweep.py``.

One PNG per column (test images, REC, N(0, I), GMM, MVG, Interp. midpoints, whichever were
saved): one row per model, labelled; plus ``<experiment>_interpolations.png`` with two full
interpolation paths per model.

Usage::

    python -m paper_figures.sample_grids runs/rae_table/quick --out runs/figures
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

COLUMN_LABELS = {"test": "test images", "rec": "reconstructions", "normal": "N(0,I) samples",
                 "gmm": "GMM samples", "mvg": "MVG samples", "interp": "interpolation midpoints",
                 "interp_path": "interpolations"}
#: Interpolation paths saved per model by the experiments (each of their INTERP_STEPS images).
PATHS = 2


def _sources(results_dir: Path) -> list[Path]:
    results_dir = Path(results_dir)
    if (results_dir / "samples.npz").is_file():
        return [results_dir]
    found = [results_dir / n for n in ("rae_table", "dae_sweep")
             if (results_dir / n / "samples.npz").is_file()]
    if not found:
        raise FileNotFoundError(f"no samples.npz in {results_dir} (or its rae_table/ and "
                                "dae_sweep/ folders): run the experiment first")
    return found


def tile(images: np.ndarray, pad: int = 1) -> np.ndarray:
    """uint8 [n, C, H, W] -> one row [H, n (W + pad)] (grey) or [H, ..., 3] (colour)."""
    n, c, h, w = images.shape
    row = np.full((h, n * (w + pad), c), 255, dtype=np.uint8)
    for i in range(n):
        row[:, i * (w + pad) : i * (w + pad) + w] = images[i].transpose(1, 2, 0)
    return row[..., 0] if c == 1 else row


def grid_figure(rows: list[np.ndarray], labels: list[str], title: str, path: Path) -> Path:
    from matplotlib.figure import Figure  # lazy; no GUI backend needed

    width = max(r.shape[1] for r in rows)
    height = sum(r.shape[0] for r in rows)
    fig = Figure(figsize=(1.5 + width / 40, 0.6 + height / 40), layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, row, label in zip(axes, rows, labels, strict=True):
        ax.imshow(row, cmap="gray" if row.ndim == 2 else None, vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=150)
    return path


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    """Write one grid per saved column (and the interpolation paths) for each experiment."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in _sources(results_dir):
        results = json.loads((source / "results.json").read_text())
        name = results.get("experiment", source.name)
        labels = {m: r["label"] for m, r in results["models"].items()}
        with np.load(source / "samples.npz") as f:
            arrays = {k: f[k] for k in f.files}
        columns = []
        for key in arrays:
            column = key.split("/", 1)[1]
            if column not in columns:
                columns.append(column)
        for column in columns:
            models = [m for m in labels if f"{m}/{column}" in arrays]
            if column == "test":
                models = models[:1]
            if not models:
                continue
            if column == "interp_path":  # PATHS interpolations of equal length, one per line
                rows = [np.concatenate([tile(p) for p in np.split(arrays[f"{m}/{column}"], PATHS)])
                        for m in models]
            else:
                rows = [tile(arrays[f"{m}/{column}"]) for m in models]
            row_labels = ["test" if column == "test" else labels[m] for m in models]
            title = f"{name} ({results.get('preset')}): {COLUMN_LABELS.get(column, column)}"
            paths.append(grid_figure(rows, row_labels, title,
                                     out_dir / f"{name}_{column}.png"))
    return paths


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results_dir", type=Path)
    p.add_argument("--out", type=Path, default=Path("runs") / "figures")
    args = p.parse_args(argv)
    paths = make(args.results_dir, args.out)
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main()
