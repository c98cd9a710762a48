"""Smoke runs of experiments/kappa_sweep.py (smoke preset) and of its figure; data checks."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from balance.data.errors import DataError
from experiments import kappa_sweep
from paper_figures import kappa_sweep as figure


def _config(dataset: str, root=None):
    config = kappa_sweep.preset("smoke" if dataset == "mnist" else "manifold_smoke")
    if root is not None:
        config = replace(config, data=replace(config.data, root=str(root)))
    return config


def test_manifold_smoke_sweep_resumes_and_feeds_the_figure(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    config = _config("manifold")
    results = kappa_sweep.main(config, run_dir, progress=False)
    for name in ("config.json", "command.txt", "environment.json", "results.json", "table.md"):
        assert (run_dir / name).is_file(), name
    for arm in config.arms:
        for kappa in config.kappas:
            folder = run_dir / arm / f"kappa{kappa}"
            for name in ("config.json", "model.json", "metrics.jsonl", "checkpoint.pt",
                         "results.json"):
                assert (folder / name).is_file(), (arm, kappa, name)
    saved = json.loads((run_dir / "results.json").read_text())
    assert set(saved["runs"]) == set(config.arms) == {"residual_affine", "none"}
    for per in saved["runs"].values():
        for kappa, run in per.items():
            assert 0 <= run["active"] <= int(kappa)
            assert len(run["latent_variances"]) == int(kappa)
            assert run["rec"] > 0 and run["gamma"] > 0
            assert run["n_iwae"] == config.data.n_test
            # Dai & Wipf's stochastic balance: E_x[s_k^2] per dimension, a variance in (0, inf)
            assert len(run["posterior_variance_per_dim"]) == int(kappa)
            assert all(v > 0 for v in run["posterior_variance_per_dim"])
    assert "active_near_r" in saved["checks"] and "noskip_nearly_all_off" in saved["checks"]
    assert results["runs"] == saved["runs"]

    # A second call skips the finished kappas: no training at all.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished kappa was trained again")

    monkeypatch.setattr(kappa_sweep, "train", no_training)
    again = kappa_sweep.main(config, run_dir, progress=False)
    assert again["runs"] == saved["runs"]

    written = figure.make(run_dir, tmp_path / "fig")
    assert sorted(p.name for p in written) == [
        "kappa_sweep.pdf", "kappa_sweep.png", "kappa_sweep_balance.pdf", "kappa_sweep_balance.png",
        "kappa_sweep_table.md", "kappa_sweep_table.tex"]
    assert all(p.stat().st_size > 500 for p in written)


def test_killed_kappa_resumes_from_its_checkpoint(tmp_path):
    # Finish one kappa, then delete its results.json: the rerun must resume from the final
    # checkpoint (no new epochs) and reproduce the same numbers.
    run_dir = tmp_path / "run"
    config = replace(_config("manifold"), kappas=(2,), arms=("residual_affine",))
    first = kappa_sweep.main(config, run_dir, progress=False)["runs"]["residual_affine"]["2"]
    folder = run_dir / "residual_affine" / "kappa2"
    (folder / "results.json").unlink()
    second = kappa_sweep.main(config, run_dir, progress=False)["runs"]["residual_affine"]["2"]
    for key in ("rec", "nll", "active", "gamma"):
        assert second[key] == first[key], key
    assert len(second["epochs"]) == config.train.epochs


def test_mnist_smoke_sweep(tmp_path, shared_data_root):
    config = _config("mnist", shared_data_root)
    results = kappa_sweep.main(config, tmp_path / "run", progress=False)
    assert set(results["runs"]) == {"residual_affine", "none"}
    rows = kappa_sweep.table_rows(results)
    assert len(rows) == 2 * len(config.kappas)
    # The paper's column is present for MNIST (its kappas differ from the smoke ones).
    assert any(row[7] == "0 (all off)" for row in rows)


def test_cli_arms_kappas_and_overrides():
    import argparse

    from balance.experiment import OverrideError, _parser, resolve

    def resolved(*argv):
        return resolve(kappa_sweep, _parser(kappa_sweep).parse_args(list(argv)))

    config = resolved("--preset", "smoke", "--arms", "none", "--kappas", "3", "5",
                      "--set", "train.epochs=7", "--set", "model.width=12")
    assert config.arms == ("none",) and config.kappas == (3, 5)
    assert config.train.epochs == 7 and config.model.width == 12
    config = resolved("--preset", "manifold_quick", "--engine", "ray", "--address",
                      "10.0.0.1:6379", "--gpus-per-run", "0.25")
    assert config.data.dataset == "manifold" and config.engine.name == "ray"
    assert config.engine.address == "10.0.0.1:6379" and config.engine.gpus_per_run == 0.25
    assert resolved("--precision", "bf16").train.precision == "bf16"
    assert resolved().arms == kappa_sweep.ARMS  # quick: every arm
    with pytest.raises(OverrideError, match="unknown arms"):
        resolved("--arms", "skip")
    with pytest.raises(ValueError, match="unknown preset"):
        kappa_sweep.preset("huge")
    assert isinstance(_parser(kappa_sweep), argparse.ArgumentParser)


def test_full_preset_is_the_papers_grid_on_all_of_mnist():
    config = kappa_sweep.preset("full")
    assert config.kappas == (50, 100, 200, 400, 784)
    assert config.data.train_limit is None and config.data.test_limit is None
    assert config.eval.iwae_limit is None  # NLL on all 10,000 test images
    assert config.arms == ("residual", "none")
    assert config.model.encoder_depth == 5 and config.model.decoder_blocks == 3  # 6 + 3 x 2
    assert not config.train.compile  # a CPU preset: compile does not pay there
    paper = kappa_sweep.preset("paper")  # a GPU preset: the launch-bound step is compiled
    assert paper.train.compile and paper.train.tf32 and paper.eval.iwae_k == 5000


def test_bad_data_gets_clear_errors():
    from balance.data.splits import check_images

    good = torch.rand(4, 1, 28, 28)
    assert check_images(good, (1, 28, 28), "x") is good
    bad = good.clone()
    bad[2, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite values, first at index 2"):
        check_images(bad, (1, 28, 28), "MNIST train")
    with pytest.raises(ValueError, match=r"expected samples of shape \(1, 28, 28\)"):
        check_images(torch.rand(4, 28, 28), (1, 28, 28), "MNIST train")
    with pytest.raises(ValueError, match="float tensor"):
        check_images(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), (1, 28, 28), "x")


def test_missing_mnist_files_get_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BALANCE_OFFLINE", "1")  # never try the network in this test
    with pytest.raises(DataError, match="mnist"):
        kappa_sweep.main(_config("mnist", tmp_path / "empty"), tmp_path / "run", progress=False)


def test_figure_explains_missing_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="experiments/kappa_sweep.py"):
        figure.make(tmp_path, tmp_path / "fig")
