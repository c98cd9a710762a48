"""E3: CelebA-128 FID and NDB of VAE+ against WAE-MMD, a plain VAE and "Downsample"
(balanced-regularization paper, Tables 3 and 4; EXPERIMENTS.md E3).

Stages (each a sub-folder of the run folder, skipped once its ``results.json`` exists):

1. ``ae``: an unregularized conv autoencoder (``balance.models.conv`` pair in
   ``balance.models.autoencoder.Autoencoder``, squared error) from 128 x 128 images to a
   64-dimensional feature space. Frozen afterwards (weights fixed, batch norm in eval mode).
2. ``vae_plus``: a Gaussian VAE with kappa = 64 on those features, MLP encoder and a residual
   MLP decoder with the affine skip (``balance.models.mlp``), learnable gamma. Its encoder is
   "AE encoder, then MLP encoder" and its decoder "MLP decoder, then AE decoder", so the
   ordinary ELBO (``balance.objectives.elbo``) measures reconstruction in image space.
3. ``vae``: the same with a plain MLP decoder (same number of layers, no residual blocks, no
   skip) and no second stage: samples come from N(0, I).
4. ``wae_mmd``: the VAE+ networks with a deterministic encoder and the WAE-MMD objective
   (``balance.objectives.autoencoders``, squared error + beta MMD^2 to N(0, I)); N(0, I) samples.
5. ``second_stage``: Dai & Wipf's second-stage VAE (``balance.density_estimation``) on the VAE+
   codes z ~ q(z|x) of the training images. VAE+ samples: u ~ N(0, I) -> second stage -> VAE
   decoder -> AE decoder.
6. ``evaluate``: on held-out images, per model: reconstruction error, reconstruction and
   generation FID (pytorch-fid's Inception; "n/a (no Inception weights)" without its weights
   file), NDB/K for K = 100, 200, 300 (bins: k-means on the training images), MMD^2 between the
   latent codes and N(0, I), and a weight-free stand-in for FID: the Frechet distance between
   real and generated images in the frozen AE's feature space ("FD-AE"). "Downsample" is the
   held-out originals against their 64 x 64-downsampled (and back up, bilinear) versions.

Claims to see in the quick preset: VAE+ generation is closer to its reconstruction than the
plain VAE's, and VAE+ has a lower NDB than the VAE and WAE-MMD.

Usage::

    python experiments/celeba_fid_ndb.py --preset quick    # CPU minutes, the 6,000-image sample
    python experiments/celeba_fid_ndb.py --preset paper    # GPU, full CelebA
    python experiments/celeba_fid_ndb.py --set features.width=512
    python paper_figures/celeba_fid_ndb.py runs/celeba_fid_ndb/quick

The models come from the library: ``balance.models.vae_plus`` (the feature models and the
VAE+ sampler), ``balance.density_estimation.SecondStageVAE``; the scores from
``balance.evaluation.images``.

The run folder (default ``runs/celeba_fid_ndb/<preset>``) ends with ``results.json``,
``table3.md``/``.csv``, ``table4.md``/``.csv`` and ``sample_grid.png`` (rows: real images,
Downsample, WAE-MMD, VAE, VAE+ from N(0, I), VAE+).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # python experiments/celeba_fid_ndb.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balance import reporting
from balance.data.splits import CelebAData
from balance.density_estimation import FlowConfig, SecondStageConfig
from balance.experiment import run_script
from balance.models.registry import ConvSpec
from balance.models.vae import GammaConfig
from balance.pipelines.vae_plus import Features, Stages, VAEPlusConfig, VAEPlusEval
from balance.reporting import is_missing, markdown_table
from balance.runs import (
    RESULTS_FILE,
    prepare_run,
    read_json,
    results_header,
    run_identity,
    write_json,
)
from balance.threads import limit_threads
from balance.train import TrainConfig

NAME = "celeba_fid_ndb"
PRESETS = ("quick", "paper", "smoke")
SEED_FIELDS = ("ae_train.seed", "vae_plus_train.seed", "vae_train.seed", "wae_train.seed")
#: EXPERIMENTS.md E3 (the paper's Tables 3 and 4).
PAPER = {
    "downsample": {"recon_fid": 39.2, "gen_fid": 39.2, "ndb_over_k": {"100": 0.05, "200": 0.06,
                                                                     "300": 0.04}},
    "wae_mmd": {"recon_fid": 59.8, "gen_fid": 66.9, "ndb_over_k": {"100": 0.64, "200": 0.62,
                                                                  "300": 0.58}},
    "vae": {"recon_fid": 45.9, "gen_fid": 64.8, "ndb_over_k": {"100": 0.88, "200": 0.85,
                                                              "300": 0.81}},
    "vae_plus": {"recon_fid": 45.6, "gen_fid": 47.5, "ndb_over_k": {"100": 0.29, "200": 0.28,
                                                                   "300": 0.24}},
}


def preset(name: str) -> VAEPlusConfig:
    """``quick`` (CPU minutes on the 6,000-image sample), ``paper`` (GPU, full CelebA) or
    ``smoke`` (a few images, seconds; for the tests)."""
    if name == "paper":
        # Full CelebA; the RAE-style conv AE (5 x 5 kernels, base 64) and Dai & Wipf's second
        # stage (3 x 1024 units, lr 1e-4 halved every 300 epochs). The paper does not give the
        # epochs of each stage; these fit a GPU in a few hours. 10,000 held-out test images
        # against 10,000 samples, as in Dai & Wipf's FID protocol.
        return VAEPlusConfig(
            preset=name,
            data=CelebAData(eval_splits=("test",), eval_limit=10_000,
                                   min_train_images=150_000),
            ae=ConvSpec(latent_dim=64, base_filters=64, kernel_size=5),
            ae_train=TrainConfig(epochs=30, batch_size=64, lr=5e-4, lr_milestones=(20,),
                                 lr_decay=0.2),
            features=Features(width=512, encoder_depth=3, decoder_blocks=3),
            vae_plus_train=TrainConfig(epochs=20, batch_size=64, lr=1e-4),
            vae_train=TrainConfig(epochs=20, batch_size=64, lr=1e-4),
            wae_train=TrainConfig(epochs=20, batch_size=64, lr=1e-4),
            wae_beta=8000.0,
            second_stage=SecondStageConfig(width=1024, depth=3, epochs=100, batch_size=64,
                                           lr=1e-4, lr_milestones=(40, 80), device="auto"),
            flow=FlowConfig(epochs=100, device="auto"),
            # NDB bins on 64 x 64 thumbnails of 20,000 training images (k-means on all 162,770
            # would take most of an hour per K on the host's CPU).
            eval=VAEPlusEval(n_samples=10_000, ndb_resolution=64, ndb_train_limit=20_000),
            device="auto",
        )
    if name == "quick":
        # 2 shared CPU cores: a narrow AE (base 8, 4 x 4 kernels) for a few epochs on the 4,560
        # training images of the sample, the feature models for a few epochs each (gamma's log
        # learned faster, so that it gets small within them), 1,440 held-out images (valid +
        # test) and as many samples; NDB on 32 x 32 thumbnails (k-means on 128 x 128 x 3 vectors
        # would dominate the run time).
        return VAEPlusConfig(
            preset=name,
            data=CelebAData(eval_splits=("valid", "test")),
            ae=ConvSpec(latent_dim=64, base_filters=8, kernel_size=4),
            ae_train=TrainConfig(epochs=3, batch_size=32, lr=1e-3),
            features=Features(width=256, encoder_depth=3, decoder_blocks=3,
                              gamma=GammaConfig(lr=2e-2)),
            vae_plus_train=TrainConfig(epochs=2, batch_size=32, lr=1e-3),
            vae_train=TrainConfig(epochs=2, batch_size=32, lr=1e-3),
            wae_train=TrainConfig(epochs=2, batch_size=32, lr=1e-3),
            wae_beta=8000.0,
            second_stage=SecondStageConfig(width=256, depth=2, epochs=60, batch_size=64,
                                           lr=1e-3, lr_milestones=(40,), device="cpu"),
            flow=FlowConfig(epochs=100),
            eval=VAEPlusEval(ndb_resolution=32, grid_columns=6, grid_tile=48),
            device="cpu",
            threads=1,
        )
    if name == "smoke":
        tiny = TrainConfig(epochs=1, batch_size=8, lr=1e-3)
        return VAEPlusConfig(
            preset=name,
            data=CelebAData(train_limit=24, eval_splits=("test",), eval_limit=12),
            ae=ConvSpec(latent_dim=8, base_filters=4, kernel_size=4), ae_train=tiny,
            features=Features(latent_dim=8, width=16, encoder_depth=1, decoder_blocks=1),
            vae_plus_train=tiny, vae_train=tiny, wae_train=tiny,
            second_stage=SecondStageConfig(width=16, depth=1, epochs=2, batch_size=8,
                                           lr=1e-3, lr_milestones=(), device="cpu"),
            samplers=("flow", "dpgmm"), flow=FlowConfig(epochs=1, transforms=1, hidden=(8,)),
            eval=VAEPlusEval(ndb_ks=(2, 3), ndb_resolution=8, batch_size=8, grid_columns=4,
                            grid_tile=16),
            device="cpu",
            threads=1,
        )
    raise ValueError(f"unknown preset {name!r}; choose quick, paper or smoke")


# ------------------------------------------------------------------------------------ tables


TABLE3_HEADERS = (
    "model", "recon FID (ours)", "recon FID (paper)", "gen FID (ours)", "gen FID (paper)",
    "rec. error", "FD-AE recon", "FD-AE gen", "FD-AE gap", "latent MMD^2", "KID_ae",
    "precision_ae", "recall_ae",
)


def table3_rows(results: dict) -> list[list]:
    """Table 3, ours beside the paper's; the ``_ae`` columns are in the frozen AE's feature
    space (no pretrained network needed)."""
    rows = []
    for kind, m in results["models"].items():
        paper = results["paper"].get(kind, {})
        rows.append([m["label"], m["recon_fid"], paper.get("recon_fid"), m["gen_fid"],
                     paper.get("gen_fid"), m["rec_error"], m["fd_ae_recon"], m["fd_ae_gen"],
                     m["fd_ae_gap"], m.get("latent_mmd"), m.get("kid_ae"),
                     m.get("precision_ae"), m.get("recall_ae")])
    return rows


def table4_headers(ks: list[int]) -> list[str]:
    out = ["model"]
    for k in ks:
        out += [f"NDB/K K={k} (ours)", f"K={k} (paper)"]
    return out


def table4_rows(results: dict) -> list[list]:
    rows = []
    for kind, m in results["models"].items():
        paper = results["paper"].get(kind, {}).get("ndb_over_k", {})
        row = [m["label"]]
        for k in results["ndb_ks"]:
            row += [m["ndb"][str(k)]["ndb_over_k"], paper.get(str(k))]
        rows.append(row)
    return rows


def directions(models: dict, ks: list[int]) -> dict:
    """The claims of the quick preset, as numbers and yes/no."""
    vp, v, w = models["vae_plus"], models["vae"], models["wae_mmd"]
    out = {
        "fd_ae_gap_vae_plus": vp["fd_ae_gap"],
        "fd_ae_gap_vae": v["fd_ae_gap"],
        "vae_plus_generation_closer_to_reconstruction_than_vae":
            bool(vp["fd_ae_gap"] < v["fd_ae_gap"]),
    }
    if not is_missing(vp["gen_fid"]) and not is_missing(v["gen_fid"]):
        out["fid_gap_vae_plus"] = vp["gen_fid"] - vp["recon_fid"]
        out["fid_gap_vae"] = v["gen_fid"] - v["recon_fid"]
        out["vae_plus_fid_gap_smaller_than_vae"] = bool(out["fid_gap_vae_plus"]
                                                        < out["fid_gap_vae"])
    for k in ks:
        key = str(k)
        out[f"vae_plus_lower_ndb_than_vae_and_wae_k{k}"] = bool(
            vp["ndb"][key]["ndb"] < v["ndb"][key]["ndb"]
            and vp["ndb"][key]["ndb"] < w["ndb"][key]["ndb"]
        )
    # which sampler of the VAE+ codes does best (second stage, flow, DP-GMM, N(0, I))
    samplers = [k for k in ("vae_plus", "vae_plus_flow", "vae_plus_dpgmm", "vae_plus_prior")
                if k in models]
    for metric, lower in (("fd_ae_gen", True), ("kid_ae", True), ("precision_ae", False),
                          ("recall_ae", False)):
        pick = min if lower else max
        out[f"best_vae_plus_sampler[{metric}]"] = pick(samplers,
                                                       key=lambda k: models[k][metric])
    return out


# -------------------------------------------------------------------------------------- main



def main(config: VAEPlusConfig, run_dir: Path | None = None, *, progress: bool = True) -> dict:
    """Run (or resume) every stage; returns the combined results (also in results.json)."""
    run_dir = Path(run_dir or Path("runs") / NAME / config.preset)
    with limit_threads(config.threads):
        prepare_run(run_dir, run_identity(config), device=config.device)
        stages = Stages(config, run_dir, progress)
        stage_results = {"ae": stages.ae(), **stages.feature_models()}
        if not (run_dir / "second_stage" / RESULTS_FILE).is_file():
            stages.second_stage()
        stage_results["second_stage"] = read_json(run_dir / "second_stage" / RESULTS_FILE)
        evaluation = stages.evaluate()
        stage_results["evaluate"] = {k: v for k, v in evaluation.items() if k != "models"}
        results = {
            **results_header(NAME, config),
            "config": run_identity(config),
            "models": evaluation["models"],
            "ndb_ks": evaluation["ndb_ks"],
            "fid_available": evaluation["fid_available"],
            "n_eval": evaluation["n_eval"],
            "n_train": evaluation["n_train"],
            "directions": directions(evaluation["models"], evaluation["ndb_ks"]),
            "stages": stage_results,
            "paper": PAPER,
            "wall_time_s": float(sum(s.get("wall_time_s", 0.0) for s in stage_results.values())),
        }
        write_json(run_dir / RESULTS_FILE, results)
        (run_dir / "table3.md").write_text(markdown_table(TABLE3_HEADERS, table3_rows(results)))
        (run_dir / "table4.md").write_text(markdown_table(table4_headers(results["ndb_ks"]),
                                                          table4_rows(results)))
        return results


def report(results: dict) -> str:
    lines = [
        "Table 3 (FD-AE: Frechet distance in the frozen AE's feature space, needs no weights)",
        markdown_table(TABLE3_HEADERS, table3_rows(results)),
        "Table 4 (NDB/K)",
        markdown_table(table4_headers(results["ndb_ks"]), table4_rows(results)),
    ]
    return reporting.report(lines, results["directions"], results["wall_time_s"])


def apply_arguments(config: VAEPlusConfig, args) -> VAEPlusConfig:
    """``--device`` moves the second stage too."""
    if args.device is None:
        return config
    return replace(config, second_stage=replace(config.second_stage, device=args.device))



if __name__ == "__main__":
    run_script(sys.modules[__name__], sys.argv[1:])
