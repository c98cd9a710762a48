"""Smoke runs of the CelebA experiments (E2 gamma_fixed_vs_learned, E3 celeba_fid_ndb) at tiny
sizes on the real CelebA sample, resumption, and the figure scripts on their output."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from pathlib import Path

import pytest
import torch

from balance.data.errors import DataError
from balance.experiment import cli
from balance.pipelines.vae_plus import MODELS
from balance.reporting import NA_FID
from balance.runs import prepare_run, run_identity

e2 = importlib.import_module("experiments.gamma_fixed_vs_learned")
e3 = importlib.import_module("experiments.celeba_fid_ndb")
fig2 = importlib.import_module("paper_figures.gamma_fixed_vs_learned")
fig3 = importlib.import_module("paper_figures.celeba_fid_ndb")


@pytest.fixture
def data_root(shared_data_root, tmp_path, monkeypatch):
    # Decoded-image caches go to tmp_path, not to the user's cache folder.
    monkeypatch.setenv("BALANCE_CACHE", str(tmp_path / "cache"))
    return str(shared_data_root)


def _with_root(config, root):
    return dataclasses.replace(config, data=dataclasses.replace(config.data, root=root))


def _check_figures(paths: list[Path]) -> None:
    suffixes = {p.suffix for p in paths}
    assert {".png", ".pdf", ".md", ".csv"} <= suffixes
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0, p


def test_gamma_fixed_vs_learned_smoke_resume_and_figure(data_root, tmp_path):
    config = _with_root(e2.preset("smoke"), data_root)
    run_dir = tmp_path / "e2"
    results = e2.main(config, run_dir, progress=False)
    assert set(results["resolutions"]) == {"64", "128"}
    for r, per in results["resolutions"].items():
        learned, fixed = per["learned"], per["fixed"]
        assert learned["gamma_learnable"] and not fixed["gamma_learnable"]
        # Run 2's gamma is run 1's saved final gamma (a float32 parameter, so to 1e-6) ...
        assert fixed["gamma_init"] == learned["gamma_final"]
        # ... and stays there: a fixed gamma is a buffer, not a trained parameter.
        for epoch in fixed["epochs"]:
            assert epoch["gamma"] == pytest.approx(learned["gamma_final"], rel=1e-6)
        res = next(x for x in config.resolutions if str(x.resolution) == r)
        steps = res.train.epochs * math.ceil(res.train_limit / res.train.batch_size)
        for run in (learned, fixed):
            trace = run["grad_z_norm"]
            assert trace["steps"] == steps  # one ||dL/dz|| per optimiser step
            assert all(v > 0 and math.isfinite(v) for v in trace["trace_value"])
            assert math.isfinite(run["rec"]) and run["rec"] > 0
            assert math.isfinite(run["mmd"])
            assert 0 <= run["active_units"] <= res.model.latent_dim
    saved = json.loads((run_dir / "results.json").read_text())
    fixed64 = results["resolutions"]["64"]["fixed"]
    assert saved["resolutions"]["64"]["fixed"]["rec"] == fixed64["rec"]
    assert saved["device_name"] and saved["wall_time_s"] > 0

    # Resume: every run is finished, so nothing is trained again and the results are the same.
    metrics = run_dir / "celeba64" / "fixed" / "metrics.jsonl"
    before = metrics.stat().st_mtime_ns
    again = e2.main(config, run_dir, progress=False)
    assert metrics.stat().st_mtime_ns == before
    assert again["resolutions"]["128"]["learned"] == results["resolutions"]["128"]["learned"]

    _check_figures(fig2.make(run_dir, tmp_path / "fig2"))


def test_celeba_fid_ndb_smoke_and_figure(data_root, tmp_path):
    from balance.metrics.fid import inception_weights_available
    from balance.runs import load_checkpoint

    config = _with_root(e3.preset("smoke"), data_root)
    run_dir = tmp_path / "e3"
    results = e3.main(config, run_dir, progress=False)
    assert list(results["models"]) == list(MODELS)
    for m in results["models"].values():
        assert math.isfinite(m["rec_error"]) and m["rec_error"] >= 0
        for k in results["ndb_ks"]:
            assert 0 <= m["ndb"][str(k)]["ndb_over_k"] <= 1
        if not inception_weights_available():
            assert m["recon_fid"] == m["gen_fid"] == NA_FID
    for kind in ("wae_mmd", "vae", "vae_plus"):
        assert math.isfinite(results["models"][kind]["latent_mmd"])
    assert math.isfinite(results["models"]["vae_plus"]["second_stage_latent_mmd"])

    # The AE stays frozen while the feature models train: its weights and batch-norm running
    # statistics inside the VAE+ checkpoint are exactly those of the AE checkpoint.
    ae = load_checkpoint(run_dir / "ae" / "checkpoint.pt", "cpu")["model"]
    vae_plus = load_checkpoint(run_dir / "vae_plus" / "checkpoint.pt", "cpu")["model"]
    for name, value in ae.items():
        part, rest = name.split(".", 1)
        prefix = "encoder.0.module." if part == "encoder" else "decoder.1.module."
        assert torch.equal(vae_plus[prefix + rest], value), name

    # Resume: every stage is finished, so nothing is trained or evaluated again.
    checkpoint = run_dir / "vae" / "checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns
    again = e3.main(config, run_dir, progress=False)
    assert checkpoint.stat().st_mtime_ns == before
    assert again["models"] == results["models"]

    grid = run_dir / "sample_grid.png"
    assert grid.is_file() and grid.stat().st_size < 200_000
    _check_figures(fig3.make(run_dir, tmp_path / "fig3"))


@pytest.mark.parametrize("module", [e2, e3])
def test_paper_preset_refuses_the_sample(module, data_root, tmp_path):
    # The paper presets need full CelebA; the 6,000-image sample is refused before any decoding.
    config = _with_root(module.preset("paper"), data_root)
    with pytest.raises(DataError, match="full img_align_celeba"):
        module.main(config, tmp_path / "paper", progress=False)


@pytest.mark.parametrize("module", [e2, e3])
def test_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(module, ["--help"])
    assert exit_info.value.code == 0
    assert "--preset" in capsys.readouterr().out


def test_resuming_elsewhere_is_the_same_run(tmp_path):
    # Every experiment hands prepare_run its config without the run environment (device,
    # progress, threads, engine; balance.runs.run_identity), so a resume on another device, with
    # other thread counts, on another engine or without progress bars is not refused as a
    # different run.
    from balance.engine import EngineConfig
    from balance.runs import ConfigMismatchError
    from experiments import affine_landscape, dae_sweep, kappa_sweep, rae_table

    elsewhere = {"device": "cuda", "threads": 7}
    for config in (e2.preset("quick"), e3.preset("quick"), rae_table.preset("quick"),
                   dae_sweep.preset("paper")):
        moved = dataclasses.replace(config, **elsewhere)
        if hasattr(config, "train"):
            moved = dataclasses.replace(moved, train=dataclasses.replace(
                config.train, device="cuda", progress=not config.train.progress))
        assert run_identity(moved) == run_identity(config)
    sweep = kappa_sweep.preset("quick")
    moved = dataclasses.replace(sweep, engine=EngineConfig("ray", cpus_per_run=2),
                                arms=("none",), **elsewhere,
                                train=dataclasses.replace(sweep.train, progress=False))
    assert kappa_sweep.sweep_identity(moved) == kappa_sweep.sweep_identity(sweep)
    landscape = affine_landscape.preset("quick")
    assert run_identity(dataclasses.replace(landscape, threads=None)) == run_identity(landscape)

    config = e2.preset("smoke")
    prepare_run(tmp_path / "run", run_identity(config), device="cpu")
    prepare_run(tmp_path / "run", run_identity(dataclasses.replace(config, **elsewhere)),
                device="cpu")
    changed = dataclasses.replace(config, eval=dataclasses.replace(config.eval, seed=1))
    with pytest.raises(ConfigMismatchError, match="eval.seed"):
        prepare_run(tmp_path / "run", run_identity(changed), device="cpu")
