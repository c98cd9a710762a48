"""Tables 3 and 4 of the balanced-regularization paper (CelebA-128 FID and NDB) from a saved E3
run, with a figure of the NDB and of the weight-free Frechet distances, and the sample grids.

Reads only what ``experiments/celeba_fid_ndb.py`` saved (``results.json`` and
``sample_grid.png`` / ``reconstruction_grid.png`` in a run folder or its copy under
``results/celeba_fid_ndb/``) and writes

- ``table3.md`` / ``.tex`` / ``.csv``: reconstruction and generation FID (ours beside the
  paper's; "n/a" when the run had no Inception weights file), reconstruction error, the Frechet
  distance in the frozen AE's feature space (FD-AE) of reconstructions and samples, latent MMD^2;
- ``table4.md`` / ``.tex`` / ``.csv``: NDB/K for each K, ours beside the paper's;
- ``figure_ndb_fd.png`` / ``.pdf``: NDB/K against K per model (the paper's hollow and dotted),
  and FD-AE of reconstructions and of samples per model;
- ``figure_samples.png`` / ``.pdf``: the sample (and reconstruction) grids with row labels.

"–" marks a number the paper does not give.

Usage: ``python paper_figures/celeba_fid_ndb.py [RESULTS_DIR] [--out OUT_DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from balance.reporting import is_missing, shorten_na

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paper_figures import style  # noqa: E402
from paper_figures.registry import (  # noqa: E402
    FIGURE,
    TABLE_CSV,
    Entry,
    Source,
    both,
    command,
)

NAME = "celeba_fid_ndb"
ENTRY = Entry(
    NAME, "E3, Tables 3 and 4: CelebA-128 FID and NDB (VAE+, VAE, WAE-MMD, Downsample)",
    (Source("celeba_fid_ndb", commands=(command("celeba_fid_ndb"),),
            run_dir="runs/celeba_fid_ndb/{preset}",
            needs=("results.json", "sample_grid.png", "reconstruction_grid.png"),
            copy=("results.json", "sample_grid.png", "reconstruction_grid.png"),
            outputs=both("figure_ndb_fd", "figure_samples", formats=FIGURE)
            + both("table3", "table4", formats=TABLE_CSV)),),
)
# Okabe-Ito (colour-blind safe), one colour and marker per model.
COLORS = {
    "real": style.OKABE_ITO["black"],
    "downsample": style.OKABE_ITO["bluish_green"],
    "wae_mmd": style.OKABE_ITO["orange"],
    "vae": style.OKABE_ITO["vermillion"],
    "vae_plus_prior": style.OKABE_ITO["sky_blue"],
    "vae_plus": style.OKABE_ITO["blue"],
    "vae_plus_flow": style.OKABE_ITO["reddish_purple"],
    "vae_plus_dpgmm": style.OKABE_ITO["yellow"],
}
MARKERS = {"downsample": "s", "wae_mmd": "^", "vae": "v", "vae_plus_prior": "D", "vae_plus": "o",
           "vae_plus_flow": "P", "vae_plus_dpgmm": "X"}
TABLE3_HEADERS = (
    "model", "recon FID (ours)", "recon FID (paper)", "gen FID (ours)", "gen FID (paper)",
    "rec. error", "FD-AE recon", "FD-AE gen", "FD-AE gen - recon", "latent MMD^2",
)


def table3_rows(results: dict) -> list[list]:
    rows = []
    for kind, m in results["models"].items():
        paper = style.dig(results, "paper", kind) or {}
        rows.append([m["label"], shorten_na(m["recon_fid"]),
                     paper.get("recon_fid"), shorten_na(m["gen_fid"]),
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
        row = [m["label"]]
        for k in ks:
            row += [m["ndb"][str(k)]["ndb_over_k"],
                    style.dig(results, "paper", kind, "ndb_over_k", k)]
        rows.append(row)
    return headers, rows


def write_tables(results: dict, out_dir: Path) -> list[Path]:
    where = (f"Preset `{results['preset']}` on {results['device_name']}: {results['n_train']} "
             f"training images, {results['n_eval']} held-out images, "
             f"{results['wall_time_s']:.0f} s in all stages.")
    directions = [f"{k} = {style.format_number(v, 3)}"
                  for k, v in results.get("directions", {}).items()]
    notes3 = [
        where,
        "Rec. error: ||x - x_rec||^2 per held-out image ([0, 1] pixels, summed over 128 x 128 x "
        "3). FD-AE: Frechet distance between Gaussians fitted to the frozen AE's 64-d features "
        "of the held-out images and of the reconstructions / samples (a stand-in for FID that "
        "needs no pretrained network; not comparable with FID values). Latent MMD^2: unbiased "
        "IMQ MMD^2 between the held-out codes (z ~ q(z|x); WAE: z = E(x)) and N(0, I).",
        "Directions: " + "; ".join(directions),
    ]
    if any(is_missing(m[key]) for m in results["models"].values()
           for key in ("recon_fid", "gen_fid")):
        notes3.insert(1, "FID n/a: the run had no Inception weights file (pytorch-fid), so "
                         "only the paper's FID is shown; FD-AE stands in for it.")
    plus = results["models"].get("vae_plus", {})
    if "second_stage_latent_mmd" in plus:
        notes3.insert(-1, "VAE+ second stage: MMD^2(q(u), N(0, I)) = "
                          f"{style.format_number(plus['second_stage_latent_mmd'], 3)} "
                          "(first-stage codes: "
                          f"{style.format_number(plus.get('latent_mmd'), 3)}); gamma_z = "
                          f"{style.format_number(plus.get('second_stage_gamma_z'), 3)}.")
    headers4, rows4 = table4(results)
    notes4 = [where, "NDB/K: fraction of k-means bins (fitted on the training images) whose "
              "share of samples differs from the training share (two-proportion z-test, "
              "two-tailed, 0.05)."]
    return (style.write_table(
                TABLE3_HEADERS, table3_rows(results), out_dir, "table3", digits=3, csv=True,
                caption="Table 3: CelebA-128 reconstruction and generation (ours beside the "
                "paper)", notes=notes3)
            + style.write_table(headers4, rows4, out_dir, "table4", digits=3, csv=True,
                                caption="Table 4: CelebA-128 NDB/K (ours beside the paper)",
                                notes=notes4))


def plot_metrics(results: dict, out_dir: Path) -> list[Path]:
    models = results["models"]
    ks = results["ndb_ks"]
    with style.context():
        fig, (ax_ndb, ax_fd) = style.figure((7.2, 3.2), ncols=2)
        for kind, m in models.items():
            color, marker = COLORS.get(kind, "#000000"), MARKERS.get(kind, "o")
            ax_ndb.plot(ks, [m["ndb"][str(k)]["ndb_over_k"] for k in ks], color=color,
                        marker=marker, label=m["label"])
            paper = [(k, style.dig(results, "paper", kind, "ndb_over_k", k)) for k in ks]
            paper = [(k, v) for k, v in paper if v is not None]
            if paper:
                ax_ndb.plot(*zip(*paper, strict=True), color=color, marker=marker, mfc="none",
                            linestyle=":", linewidth=1)
        ax_ndb.plot([], [], color=style.GREY, marker="o", mfc="none", linestyle=":",
                    linewidth=1, label="hollow, dotted: paper (Table 4)")
        ax_ndb.set_xlabel("number of bins K")
        ax_ndb.set_ylabel("NDB/K (fraction of bins)")
        ax_ndb.set_ylim(-0.02, 1.02)
        ax_ndb.set_xticks(ks)
        ax_ndb.set_title("(a) NDB/K of samples (lower is better)")
        ax_ndb.grid(True)

        names = list(models)
        style.grouped_bars(ax_fd, [models[n]["label"] for n in names],
                           {"FD-AE of reconstructions": [models[n]["fd_ae_recon"] for n in names],
                            "FD-AE of samples": [models[n]["fd_ae_gen"] for n in names]},
                           log=True)
        ax_fd.set_xlabel("FD-AE (squared AE-feature units, log scale)")
        ax_fd.set_title("(b) Frechet distance to held-out images")
        fig.suptitle(f"CelebA-128 generation quality ({style.run_label(results)})")
        style.legend_below(fig, ncols=4)
        return style.save_figure(fig, out_dir, "figure_ndb_fd")


def plot_grids(results: dict, results_dir: Path, out_dir: Path) -> list[Path]:
    import numpy as np
    from PIL import Image

    panels = []
    for file, rows_key, title in (
        ("sample_grid.png", "grid_rows", "samples (top row: real held-out images)"),
        ("reconstruction_grid.png", "recon_grid_rows", "reconstructions of the top row"),
    ):
        path = Path(results_dir) / file
        rows = style.dig(results, "stages", "evaluate", rows_key)
        if path.is_file() and rows:
            panels.append((path, rows, title))
    if not panels:
        return []
    labels = {"real": "real", **{k: m["label"] for k, m in results["models"].items()}}
    with style.context():
        fig, axes = style.figure((3.6 * len(panels), 3.0), ncols=len(panels), squeeze=False)
        for ax, (path, rows, title) in zip(axes[0], panels, strict=True):
            with Image.open(path) as image:
                picture = np.asarray(image.convert("RGB"))
            step = picture.shape[0] / len(rows)
            style.image_panel(ax, picture, [step * (i + 0.5) for i in range(len(rows))],
                              [labels.get(r, r) for r in rows])
            ax.set_title(title)
        fig.suptitle(f"CelebA-128 samples and reconstructions ({style.run_label(results)})")
        return style.save_figure(fig, out_dir, "figure_samples")


def make(results_dir: Path, out_dir: Path) -> list[Path]:
    """Tables 3 and 4 and the figures from ``results_dir``; returns the files written."""
    results = style.read_results(results_dir, NAME)
    out_dir = Path(out_dir)
    return (plot_metrics(results, out_dir) + plot_grids(results, results_dir, out_dir)
            + write_tables(results, out_dir))


if __name__ == "__main__":
    style.cli(make, __doc__, NAME)
