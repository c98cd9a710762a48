"""Tables 3 and 4 of the balanced-regularization paper (CelebA-128 FID and NDB) from a saved E3
run, with a figure of the NDB and of the weight-free Frechet distances, and the sample grids.

Reads only what ``experiments/celeba_fid_ndb.py`` saved (``results.json`` and
``sample_grid.png`` / ``reconstruction_grid.png`` in a run folder or its copy under
``results/celeba_fid_ndb/``) and writes

- ``table3.md`` / ``.csv``: reconstruction and generation FID (ours beside the paper's; "n/a (no
  Inception weights)" when the run had no weights file), reconstruction error, the Frechet
  distance in the frozen AE's feature space (FD-AE) of reconstructions and samples, latent MMD^2;
- ``table4.md`` / ``.csv``: NDB/K for each K, ours beside the paper's;
- ``figure_ndb_fd.png`` / ``.pdf``: NDB/K against K per model (paper's as hollow markers), and
  FD-AE of reconstructions and of samples per model;
- ``figure_samples.png`` / ``.pdf``: the sample (and reconstruction) grids with row labels.

Usage: ``python paper_figures/celeba_fid_ndb.py [RESULTS_DIR] [--out OUT_DIR]``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path

try:  # as part of the package (python -m paper_figures, tests)
    from paper_figures import style
except ImportError:  # run as a script: paper_figures/ is on sys.path
    import style

NAME = "celeba_fid_ndb"
DEFAULT_RESULTS = Path("results") / NAME
DEFAULT_OUT = Path("paper_figures") / "out" / NAME
# Okabe-Ito (colour-blind safe), one colour per model.
COLORS = {
    "real": style.OKABE_ITO["black"],
    "downsample": style.OKABE_ITO["bluish_green"],
    "wae_mmd": style.OKABE_ITO["orange"],
    "vae": style.OKABE_ITO["vermillion"],
    "vae_plus_prior": style.OKABE_ITO["sky_blue"],
    "vae_plus": style.OKABE_ITO["blue"],
}
MARKERS = {"downsample": "s", "wae_mmd": "^", "vae": "v", "vae_plus_prior": "D", "vae_plus": "o"}
TABLE3_HEADERS = (
    "model", "recon FID (ours)", "recon FID (paper)", "gen FID (ours)", "gen FID (paper)",
    "rec. error", "FD-AE recon", "FD-AE gen", "FD-AE gen - recon", "latent MMD^2",
)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{digits}g}" if math.isfinite(float(value)) else str(value)


def _write(rows: list[list], headers, out_dir: Path, stem: str, caption: str,
           notes: list[str]) -> list[Path]:
    """``stem.md`` / ``.tex`` (``paper_figures.style``) and ``stem.csv``."""
    paths = style.write_table(headers, rows, out_dir, stem, caption=caption, notes=notes,
                              digits=3)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([[_fmt(c, 6) for c in row] for row in rows])
    csv_path = out_dir / f"{stem}.csv"
    csv_path.write_text(buffer.getvalue(), encoding="utf-8")
    return paths + [csv_path]


def table3_rows(results: dict) -> list[list]:
    rows = []
    for kind, m in results["models"].items():
        paper = results.get("paper", {}).get(kind, {})
        rows.append([m["label"], m["recon_fid"], paper.get("recon_fid"), m["gen_fid"],
                     paper.get("gen_fid"), m["rec_error"], m["fd_ae_recon"], m["fd_ae_gen"],
                     m["fd_ae_gap"], m.get("latent_mmd")])
    return rows


def table4(results: dict) -> tuple[list[str], list[list]]:
    ks = results["ndb_ks"]
    headers = ["model"]
    for k in ks:
        headers += [f"NDB/K K={k} (ours)", f"K={k} (paper)"]
    rows = []
    for kind, m in results["models"].items():
        paper = results.get("paper", {}).get(kind, {}).get("ndb_over_k", {})
        row = [m["label"]]
        for k in ks:
            row += [m["ndb"][str(k)]["ndb_over_k"], paper.get(str(k))]
        rows.append(row)
    return headers, rows


def write_tables(results: dict, out_dir: Path) -> list[Path]:
    where = (f"Preset `{results['preset']}` on {results['device_name']}: {results['n_train']} "
             f"training images, {results['n_eval']} held-out images, "
             f"{results['wall_time_s']:.0f} s in all stages.")
    directions = [f"{k} = {_fmt(v)}" for k, v in results.get("directions", {}).items()]
    notes3 = [
        where,
        "Rec. error: ||x - x_rec||^2 per held-out image ([0, 1] pixels, summed over 128 x 128 x "
        "3). FD-AE: Frechet distance between Gaussians fitted to the frozen AE's 64-d features "
        "of the held-out images and of the reconstructions / samples (a stand-in for FID that "
        "needs no pretrained network; not comparable with FID values). Latent MMD^2: unbiased "
        "IMQ MMD^2 between the held-out codes (z ~ q(z|x); WAE: z = E(x)) and N(0, I).",
        "Directions: " + "; ".join(directions),
    ]
    plus = results["models"].get("vae_plus", {})
    if "second_stage_latent_mmd" in plus:
        notes3.insert(2, f"VAE+ second stage: MMD^2(q(u), N(0, I)) = "
                         f"{_fmt(plus['second_stage_latent_mmd'])} (first-stage codes: "
                         f"{_fmt(plus.get('latent_mmd'))}); gamma_z = "
                         f"{_fmt(plus.get('second_stage_gamma_z'))}.")
    headers4, rows4 = table4(results)
    notes4 = [where, "NDB/K: fraction of k-means bins (fitted on the training images) whose "
              "share of samples differs from the training share (two-proportion z-test, "
              "two-tailed, 0.05)."]
    return (_write(table3_rows(results), TABLE3_HEADERS, out_dir, "table3",
                   "Table 3: CelebA-128 reconstruction and generation (ours beside the paper)",
                   notes3)
            + _write(rows4, headers4, out_dir, "table4",
                     "Table 4: CelebA-128 NDB/K (ours beside the paper)", notes4))


def plot_metrics(results: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = results["models"]
    ks = results["ndb_ks"]
    with style.context():
        fig, (ax_ndb, ax_fd) = plt.subplots(1, 2, figsize=(8.5, 3.4), constrained_layout=True)
        for kind, m in models.items():
            color, marker = COLORS.get(kind, "#000000"), MARKERS.get(kind, "o")
            ours = [m["ndb"][str(k)]["ndb_over_k"] for k in ks]
            ax_ndb.plot(ks, ours, color=color, marker=marker, label=m["label"])
            paper = results.get("paper", {}).get(kind, {}).get("ndb_over_k", {})
            if all(str(k) in paper for k in ks):
                ax_ndb.plot(ks, [paper[str(k)] for k in ks], color=color, marker=marker,
                            mfc="none", ls=":", lw=1)
        ax_ndb.set_xlabel("number of bins K")
        ax_ndb.set_ylabel("NDB/K (fraction of bins)")
        ax_ndb.set_ylim(-0.02, 1.02)
        ax_ndb.set_xticks(ks)
        ax_ndb.set_title("NDB/K (filled: ours; hollow, dotted: paper)")
        ax_ndb.legend()
        ax_ndb.grid(True)

        names = list(models)
        x = np.arange(len(names))
        rec = [models[n]["fd_ae_recon"] for n in names]
        gen = [models[n]["fd_ae_gen"] for n in names]
        ax_fd.bar(x - 0.2, rec, 0.4, color=style.OKABE_ITO["sky_blue"], label="reconstructions")
        ax_fd.bar(x + 0.2, gen, 0.4, color=style.OKABE_ITO["vermillion"], hatch="//",
                  label="samples")
        ax_fd.set_xticks(x, [models[n]["label"] for n in names], rotation=25, ha="right")
        ax_fd.set_ylabel("FD-AE (squared AE-feature units)")
        ax_fd.set_title("Frechet distance to held-out images, AE features")
        ax_fd.legend()
        ax_fd.grid(True, axis="y")
        fig.suptitle(f"CelebA-128 ({results['preset']} preset)")
        return style.save_figure(fig, out_dir, "figure_ndb_fd")


def plot_grids(results: dict, results_dir: Path, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    panels = []
    for file, rows_key, title in (
        ("sample_grid.png", "grid_rows", "samples (top row: real held-out images)"),
        ("reconstruction_grid.png", "recon_grid_rows", "reconstructions of the top row"),
    ):
        path = results_dir / file
        rows = results.get("stages", {}).get("evaluate", {}).get(rows_key)
        if path.is_file() and rows:
            panels.append((path, rows, title))
    if not panels:
        return []
    labels = {"real": "real", **{k: m["label"] for k, m in results["models"].items()}}
    with style.context():
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.9),
                                 constrained_layout=True, squeeze=False)
        for ax, (path, rows, title) in zip(axes[0], panels, strict=True):
            with Image.open(path) as image:
                array = image.convert("RGB")
                height = array.size[1]
                ax.imshow(array)
            step = height / len(rows)
            ax.set_yticks([step * (i + 0.5) for i in range(len(rows))],
                          [labels.get(r, r) for r in rows])
            ax.set_xticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_title(title)
        return style.save_figure(fig, out_dir, "figure_samples")


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    """Tables 3 and 4 and the figures from ``results_dir``; returns the files written."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    results = json.loads((results_dir / "results.json").read_text(encoding="utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    return (plot_metrics(results, out_dir) + plot_grids(results, results_dir, out_dir)
            + write_tables(results, out_dir))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", nargs="?", type=Path, default=DEFAULT_RESULTS,
                        help=f"folder with results.json (default: {DEFAULT_RESULTS})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT})")
    args = parser.parse_args()
    for path in make(args.results_dir, args.out):
        print(path)
