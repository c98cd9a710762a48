"""E5: deterministic autoencoders without extra regularization (Daly et al. 2022, Tables 2-3;
EXPERIMENTS.md E5, THEORY.md section 4).

Plain autoencoders (DAE: reconstruction loss only, BCE) with the conv family of
``balance.models.conv`` over a grid of base filters x depth multiplier x latent size, plus the
variants of one baseline DAE: batch / layer / spectral normalisation of the latent layer,
Gaussian noise (std 0.1, 0.5, 1) at the decoder input, and a latent layer frozen at its
initialisation; and a VAE (BCE + beta KL) with the baseline architecture. Every model is sampled
three ways, by decoding draws from an ex-post density fitted on its training codes
(``balance.density_estimation``): N(0, I), a full-covariance Gaussian (MVG) and a 10-component
GMM.

Claims (EXPERIMENTS.md E5): DAEs match or beat the VAE once sampled from an MVG or a GMM; latent
batch normalisation fixes N(0, I) sampling; freezing the latent layer barely matters.

Metrics per sampler: FID where the Inception weights exist (else "n/a (no Inception weights)"),
NDB/K and the pixel-space MMD^2 to test images (lower is better for both); per model the test
reconstruction error (squared error per image) and MMD^2(q(z), N(0, I)).

The VAE's KL weight: Daly et al. write "BCE + 0.01 KL" without the BCE's reduction; with a
per-pixel mean it is beta = 0.01 D on our per-image sum (7.84 for MNIST, 30.7 for CIFAR-10), with a
per-image sum beta = 0.01. Both presets use the standard ELBO, beta = 1 (``--vae-beta`` changes it).

Usage::

    python experiments/dae_sweep.py --preset quick     # MNIST subset, CPU, ~10-15 min
    python experiments/dae_sweep.py --preset paper     # CIFAR-10, the paper's set-up (GPU)
    python experiments/dae_sweep.py --set sweep.vae_beta=0.01
    python -m paper_figures.rae_table runs/dae_sweep/quick out/

Run folder (default ``runs/dae_sweep/<preset>``): one sub-folder per model (training run,
results.json, samples.npz), and results.json, table.md, samples.npz for the sweep.
Re-running the same command resumes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # python experiments/dae_sweep.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balance import reporting
from balance.density_estimation import FlowConfig
from balance.evaluation.columns import ColumnsConfig
from balance.evaluation.table import (
    SAMPLER_HEADERS,
    TableConfig,
    TableRow,
    fid_note,
    run_rows,
    sampler_rows,
    sampler_wins,
)
from balance.experiment import run_script
from balance.models.registry import ConvSpec
from balance.reporting import markdown_table, shorten_na
from balance.runs import RESULTS_FILE, write_json
from balance.train import TrainConfig

NAME = "dae_sweep"
PRESETS = ("quick", "paper", "smoke")
DATA_ROOT_FIELD = "data_root"
SAMPLERS = ("normal", "mvg", "gmm")
#: Every ex-post sampler: the paper's three, then a Dirichlet-process GMM and a flow.
EXPOST = (*SAMPLERS, "dpgmm", "flow")
COLUMN_LABELS = {"normal": "N(0,I)", "mvg": "MVG", "gmm": "GMM", "dpgmm": "DP-GMM",
                 "flow": "flow (RealNVP)"}

#: Daly et al. (2022), CIFAR-10 FIDs quoted in EXPERIMENTS.md E5 (128 latents, 128 filters; best
#: DAE: 96 latents, depths [3, 3, 2, 1]). Only these numbers are recorded.
PAPER = {
    "dataset": "cifar10",
    "dae": {"mvg": 82.49, "gmm": 73.78},
    "vae": {"mvg": 101.9, "gmm": 94.21},
    "best_dae": {"mvg": 77.10, "gmm": 67.32},
}


@dataclass(frozen=True)
class SweepConfig:
    """The grid (filters x depths x latents, all combinations) and the baseline whose variants
    (latent norm, decoder noise, frozen latent) and VAE twin are trained."""

    filters: tuple[int, ...] = (8, 16)
    depths: tuple[Any, ...] = (1, 2)
    latents: tuple[int, ...] = (16,)
    extra: tuple[tuple[int, Any, int], ...] = ()
    baseline: tuple[int, Any, int] = (16, 1, 16)
    latent_norms: tuple[str, ...] = ("bn", "ln", "sn")
    decoder_noise: tuple[float, ...] = (0.1, 0.5, 1.0)
    frozen: bool = True
    vae_beta: float = 1.0


def _depth_tag(depth) -> str:
    """``1`` -> "1", ``(3, 3, 2, 1)`` -> "3-3-2-1"."""
    return str(depth).strip("()").replace(", ", "-")


def sweep_models(s: SweepConfig) -> tuple[TableRow, ...]:
    """Rows of the grid, the baseline's variants and the VAE (BCE reconstruction)."""
    def dae(f, d, k, **kw) -> TableRow:
        tag = kw.pop("tag", "")
        name = f"dae_f{f}_d{_depth_tag(d)}_k{k}{tag}"
        return TableRow(name=name, kind=kw.pop("kind", "ae"), reconstruction="bce",
                            base_filters=f, depth=d, latent_dim=k, **kw)

    grid = [(f, d, k) for f in s.filters for d in s.depths for k in s.latents]
    grid += [g for g in s.extra if g not in grid]
    models = [dae(*g, label=f"DAE f{g[0]} d{_depth_tag(g[1])} k{g[2]}") for g in grid]
    f, d, k = s.baseline
    if s.baseline not in grid:
        models.insert(0, dae(f, d, k, label=f"DAE f{f} d{_depth_tag(d)} k{k}"))
    for norm in s.latent_norms:
        models.append(dae(f, d, k, tag=f"_{norm}", latent_norm=norm,
                          label=f"DAE + latent {norm.upper()}"))
    for std in s.decoder_noise:
        models.append(dae(f, d, k, tag=f"_noise{std:g}", decoder_noise_std=std,
                          label=f"DAE + decoder noise {std:g}"))
    if s.frozen:
        models.append(dae(f, d, k, tag="_frozen", freeze_latent=True,
                          label="DAE, frozen latent layer"))
    models.append(TableRow(name="vae", kind="vae", head="gaussian", reconstruction="bce",
                               beta=s.vae_beta, base_filters=f, depth=d, latent_dim=k,
                               label=f"VAE (beta {s.vae_beta:g})"))
    return tuple(models)


@dataclass(frozen=True)
class Config(TableConfig):
    """A table whose rows are always made from ``sweep`` (:func:`sweep_models`), so that
    ``--set sweep.vae_beta=0.01`` changes the VAE row."""

    sweep: SweepConfig = SweepConfig()

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", sweep_models(self.sweep))


def preset(name: str) -> Config:
    """``quick`` (MNIST subset, CPU), ``paper`` (CIFAR-10, Daly et al.'s set-up, GPU) or
    ``smoke`` (seconds; the tests)."""
    samplers_eval = dict(samplers=EXPOST, flow=FlowConfig(epochs=50))
    if name == "quick":
        # ~10 minutes on 2 shared CPU cores: 8,000 MNIST images, 4 epochs (lr 1e-3, then 1e-4
        # in the last: the paper's step schedule compressed), small widths.
        sweep = SweepConfig(filters=(8, 16), depths=(1, 2), latents=(16,),
                            extra=((16, 1, 8), (16, 1, 32)), baseline=(16, 1, 16))
        return Config(
            preset=name, train_limit=8_000, test_limit=2_000,
            net=ConvSpec(latent_dim=16, base_filters=16),
            train=TrainConfig(epochs=4, batch_size=100, lr=1e-3, lr_milestones=(3,),
                              lr_decay=0.1, progress=False),
            sweep=sweep,
            eval=ColumnsConfig(n_samples=1000, ndb_bins=20, **samplers_eval),
            device="cpu", threads=1,
        )
    if name == "paper":
        # CIFAR-10, Adam, 100 epochs, batch 128, lr 1e-3/1e-4/1e-5 at epochs 33/66, BCE.
        sweep = SweepConfig(filters=(32, 64, 128), depths=(1, 2, 3), latents=(32, 64, 128),
                            extra=((128, (3, 3, 2, 1), 96),), baseline=(128, 1, 128))
        return Config(
            preset=name, dataset="cifar10",
            net=ConvSpec(latent_dim=128, base_filters=128),
            train=TrainConfig(epochs=100, batch_size=128, lr=1e-3, lr_milestones=(33, 66),
                              lr_decay=0.1),
            sweep=sweep,
            eval=ColumnsConfig(n_samples=10_000, ndb_bins=100, **samplers_eval),
            device="auto",
        )
    if name == "smoke":
        sweep = SweepConfig(filters=(2,), depths=(1,), latents=(4,), baseline=(2, 1, 4),
                            latent_norms=("bn",), decoder_noise=(0.5,))
        return Config(
            preset=name, train_limit=64, test_limit=64,
            net=ConvSpec(latent_dim=4, base_filters=2),
            train=TrainConfig(epochs=1, batch_size=32, lr=1e-3, progress=False),
            sweep=sweep,
            eval=ColumnsConfig(n_samples=32, ndb_bins=4, gmm_components=2,
                               samplers=EXPOST, kid_subset_size=16, prd_runs=2,
                               flow=FlowConfig(epochs=1, transforms=1, hidden=(8,))),
            device="cpu", threads=1,
        )
    raise ValueError(f"unknown preset {name!r}; choose quick, paper or smoke")


# --------------------------------------------------------------------------------- the table


def directions(models: dict[str, dict], baseline: str, bins: int) -> dict[str, Any]:
    """Daly et al.'s claims on the FID-free metrics (lower is better):

    - ``dae_le_vae[mvg|gmm]``: the baseline DAE (same architecture as the VAE) matches or beats
      the VAE under MVG / GMM sampling; ``best_dae_le_vae``: the best DAE of the sweep does;
    - ``bn_rescues_normal``: latent BN at least halves the baseline DAE's N(0, I) score
      (``normal_bn_over_baseline`` gives the ratio); ``bn_normal_within_25pct_of_mvg``, a
      stricter reading: the BN DAE's N(0, I) score within 25% of its own MVG score;
    - ``frozen_close``: the frozen-latent DAE's GMM score is within 25% of the baseline's (for
      NDB/K, which moves in steps of 1/K, within 25% plus one bin);
    - ``sampler_wins``: per metric, how many DAEs score best with each ex-post sampler.
    """
    out: dict[str, Any] = {}
    base = models.get(baseline)
    vae = models.get("vae")
    daes = {n: m for n, m in models.items() if n.startswith("dae_")}
    for metric in ("mmd_x", "ndb_over_k"):
        def score(m, sampler, metric=metric):
            return m["columns"][sampler][metric]

        if base and vae:
            for s in ("mvg", "gmm"):
                out[f"dae_le_vae[{s},{metric}]"] = bool(score(base, s) <= score(vae, s))
                best = min(daes, key=lambda n, s=s: score(daes[n], s))
                out[f"best_dae_le_vae[{s},{metric}]"] = bool(
                    score(daes[best], s) <= score(vae, s))
                out[f"best_dae[{s},{metric}]"] = best
        bn = models.get(f"{baseline}_bn")
        if base and bn:
            ratio = score(bn, "normal") / max(score(base, "normal"), 1e-12)
            out[f"normal_bn_over_baseline[{metric}]"] = ratio
            out[f"bn_rescues_normal[{metric}]"] = bool(ratio <= 0.5)
            out[f"bn_normal_within_25pct_of_mvg[{metric}]"] = bool(
                score(bn, "normal") <= 1.25 * score(bn, "mvg") + 1e-12)
        frozen = models.get(f"{baseline}_frozen")
        if base and frozen:
            step = 1.0 / bins if metric == "ndb_over_k" else 0.0
            tolerance = 0.25 * abs(score(base, "gmm")) + step
            out[f"frozen_close[{metric}]"] = bool(
                abs(score(frozen, "gmm") - score(base, "gmm")) <= tolerance + 1e-12)
    out["sampler_wins"] = sampler_wins(models, EXPOST, list(daes))
    return out


def table_headers() -> tuple[str, ...]:
    cols = []
    for metric in ("FID", "NDB/K", "MMD_x"):
        cols += [f"{metric} {COLUMN_LABELS[s]}" for s in SAMPLERS]
    return ("model", "params", "rec. err.", "MMD(q,N)", *cols)


def table_rows(results: dict) -> list[list]:
    rows = []
    ref = results.get("reference")
    if ref:
        rows.append(["held-out test images", None, None, None, shorten_na(ref["fid"]), None,
                     None, ref["ndb_over_k"], None, None, ref["mmd_x"], None, None])
    for r in results["models"].values():
        c = r["columns"]
        rows.append([
            r["label"], r["n_params"], r["rec_error"], r["mmd_q_prior"],
            *[shorten_na(c[s]["fid"]) for s in SAMPLERS],
            *[c[s]["ndb_over_k"] for s in SAMPLERS],
            *[c[s]["mmd_x"] for s in SAMPLERS],
        ])
    return rows


PAPER_HEADERS = ("paper (CIFAR-10 FID)", "MVG", "GMM")


def paper_rows() -> list[list]:
    return [["DAE (128 latents, 128 filters)", PAPER["dae"]["mvg"], PAPER["dae"]["gmm"]],
            ["VAE", PAPER["vae"]["mvg"], PAPER["vae"]["gmm"]],
            ["best DAE (96 latents, depths 3-3-2-1)", PAPER["best_dae"]["mvg"],
             PAPER["best_dae"]["gmm"]]]


def baseline_name(config: Config) -> str:
    f, d, k = config.sweep.baseline
    return f"dae_f{f}_d{_depth_tag(d)}_k{k}"



def main(config: Config, run_dir: Path | None = None, *, progress: bool = False) -> dict:
    """Run (or resume) every model of the sweep; write and return the combined results."""
    run_dir = Path(run_dir or Path("runs") / NAME / config.preset)
    results = run_rows(NAME, config, run_dir, progress)
    baseline = baseline_name(config)
    results.update(
        baseline=baseline, samplers=list(SAMPLERS), paper=PAPER,
        paper_source="Daly et al. (2022), Tables 2-3 (CIFAR-10 FID), as quoted in "
                     "EXPERIMENTS.md E5",
        directions=directions(results["models"], baseline, config.eval.ndb_bins),
    )
    write_json(run_dir / RESULTS_FILE, results)
    (run_dir / "table.md").write_text("\n\n".join(_tables(results)))
    return results


def _tables(results: dict) -> list[str]:
    return [fid_note(results) + markdown_table(table_headers(), table_rows(results)),
            markdown_table(PAPER_HEADERS, paper_rows()),
            "Ex-post samplers (pixel space; MMD, KID, NDB/K lower is better, the others "
            "higher):\n\n" + markdown_table(SAMPLER_HEADERS,
                                              sampler_rows(results, EXPOST, COLUMN_LABELS))]


def report(results: dict) -> str:
    return reporting.report(_tables(results), results["directions"], results["wall_time_s"])



if __name__ == "__main__":
    run_script(sys.modules[__name__], sys.argv[1:])
