"""Smoke runs of experiments/rae_table.py (tiny settings on real MNIST and the CelebA-64
sample), their resumption, and the tables and grids paper_figures draws from their results
(the DAE sweep: tests/test_dae_sweep.py)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from balance.data.splits import load_images
from balance.evaluation.columns import INTERP_STEPS
from balance.evaluation.table import row_model, table_identity
from balance.models.autoencoder import has_spectral_norm
from balance.models.registry import build
from balance.reporting import NA_FID
from experiments import rae_table as rt
from paper_figures import rae_table as fig_table
from paper_figures import sample_grids


@pytest.fixture(autouse=True)
def _restore_threads():
    """The experiments set torch's thread count (one per process on the shared machine)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def check_columns(model: dict, columns) -> None:
    assert math.isfinite(model["rec_error"]) and model["rec_error"] > 0
    assert math.isfinite(model["mmd_q_prior"])
    for c in columns:
        col = model["columns"][c]
        assert col["fid"] == NA_FID or math.isfinite(col["fid"])
        assert 0.0 <= col["ndb_over_k"] <= 1.0
        assert math.isfinite(col["mmd_x"])


def test_rae_table_smoke_resume_and_figures(shared_data_root, tmp_path):
    config = replace(rt.preset("smoke"), data_root=str(shared_data_root))
    run_dir = tmp_path / "rae"
    results = rt.main(config, run_dir, progress=False)
    assert list(results["models"]) == list(rt.MODEL_ORDER)
    for model in results["models"].values():
        check_columns(model, rt.COLUMNS)
        assert (run_dir / model["model"] / "checkpoint.pt").is_file()
    two_stage = results["models"]["2svae"]
    assert two_stage["gamma"] > 0 and two_stage["stage2_gamma"] > 0
    assert (run_dir / "2svae" / "vae2" / "metrics.jsonl").is_file()
    assert results["paper"]["rae_l2"]["gmm"] == 8.69
    assert 0.0 <= results["reference"]["ndb_over_k"] <= 1.0  # held-out real images
    table = (run_dir / "table.md").read_text()
    assert "RAE-SN" in table and "8.69" in table
    # Resuming re-reads every finished model instead of training it again.
    again = rt.main(config, run_dir, progress=False)
    assert again["models"] == results["models"]

    out = tmp_path / "figures"
    paths = fig_table.make(run_dir, out) + sample_grids.make(run_dir, out)
    names = {p.name for p in paths}
    assert {"rae_table_fid.md", "rae_table_metrics.csv", "rae_table.png",
            "rae_table_gmm.png", "rae_table_interp_path.png"} <= names
    assert all(p.stat().st_size > 0 for p in paths)
    assert "17.66" in (out / "rae_table_fid.md").read_text()


def test_rae_table_celeba_smoke(shared_data_root, tmp_path):
    """The quick_celeba preset shrunk to 16 training images, 4 of the models and one epoch:
    64 x 64 colour images through the kernel-5 nets, the columns, the paper's CelebA values and
    the figures."""
    quick = rt.preset("quick_celeba")
    keep = ("2svae", "rae_gp", "rae_sn", "ae")
    config = replace(
        quick, data_root=str(shared_data_root), train_limit=16, test_limit=16,
        net=replace(quick.net, base_filters=2),
        train=replace(quick.train, epochs=1, batch_size=8),
        rows=tuple(m for m in quick.rows if m.name in keep),
        eval=replace(rt.preset("smoke").eval, n_samples=8, ndb_bins=2),
    )
    run_dir = tmp_path / "celeba"
    results = rt.main(config, run_dir, progress=False)
    assert results["dataset"] == "celeba" and list(results["models"]) == list(keep)
    for model in results["models"].values():
        check_columns(model, rt.COLUMNS)
        assert model["n_train"] == 16
    assert results["paper"]["rae_sn"]["gmm"] == 40.95
    assert results["paper"]["rae_gp"]["gmm"] == 45.63
    assert 0.0 <= results["reference"]["ndb_over_k"] <= 1.0  # test images 8-15, held out
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["eval_splits"] == ["valid", "test"] and saved["net"]["kernel_size"] == 5
    with np.load(run_dir / "samples.npz") as f:
        assert f["rae_sn/gmm"].shape == (8, 3, 64, 64) and f["rae_sn/gmm"].dtype == np.uint8
        assert f["2svae/interp_path"].shape == (2 * INTERP_STEPS, 3, 64, 64)

    out = tmp_path / "figures"
    paths = fig_table.make(run_dir, out) + sample_grids.make(run_dir, out)
    names = {p.name for p in paths}
    assert {"rae_table_fid.md", "rae_table.png", "rae_table_summary.png",
            "rae_table_interp_path.png"} <= names
    fid_table = (out / "rae_table_fid.md").read_text()
    assert "CelebA" in fid_table and "40.95" in fid_table and "45.63" in fid_table


def test_celeba_test_images_pool_valid_and_test(shared_data_root):
    # 790 test images need more than the 780 validation images of the 6,000-image sample.
    train, test = load_images("celeba", str(shared_data_root), 4, 790,
                              eval_splits=("valid", "test"))
    assert train.shape == (4, 3, 64, 64) and test.shape == (790, 3, 64, 64)
    valid_only = load_images("celeba", str(shared_data_root), 4, 790,
                             eval_splits=("valid",))[1]
    assert valid_only.shape[0] < 790
    assert torch.equal(test[: valid_only.shape[0]], valid_only)


def test_presets_and_models():
    quick = rt.preset("quick")
    assert [m.name for m in quick.rows] == list(rt.MODEL_ORDER)
    specs = {m.name: m for m in quick.rows}
    # The reference's embedding weight 5e-4 (mean over 16 latents, per-pixel error on [-1, 1]
    # pixels) is beta = w D / (2 k) on the per-image squared error of 784 pixels.
    assert specs["rae"].beta == pytest.approx(5e-4 * 784 / 32)
    assert specs["rae_sn"].spectral_norm == "decoder"
    model = build(row_model(specs["rae_sn"], quick.net), (1, 28, 28))
    assert has_spectral_norm(model.decoder) and not has_spectral_norm(model.encoder)
    celeba = rt.preset("quick_celeba")
    assert celeba.dataset == "celeba" and celeba.eval_splits == ("valid", "test")
    assert (celeba.net.latent_dim, celeba.net.kernel_size) == (64, 5)
    assert (celeba.device, celeba.threads) == ("cpu", 1)
    # beta = w D / (2 k) with D = 3 * 64 * 64 pixels and k = 64 latents.
    rae = {m.name: m for m in celeba.rows}["rae"]
    assert rae.beta == pytest.approx(5e-4 * 3 * 64 * 64 / 128)
    # eval_splits is part of a CelebA run's identity only (older MNIST run folders resume).
    assert table_identity(celeba)["eval_splits"] == ["valid", "test"]
    assert "eval_splits" not in table_identity(quick)
    for name in ("paper", "paper_cifar10", "paper_celeba"):
        cfg = rt.preset(name)
        assert cfg.net.latent_dim == rt.DATASETS[cfg.dataset][2]
        assert cfg.eval.gmm_components == 10 and cfg.eval.gmm_max_iter == 2000
    # The decoder variance's learning rate is part of the 2sVAE row's model spec.
    assert specs["2svae"].gamma.lr == 2e-2 and specs["2svae"].second_stage
    with pytest.raises(ValueError):
        rt.preset("nope")
