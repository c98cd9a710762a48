"""Smoke run of experiments/affine_landscape.py (smoke preset) and of its figure."""

from __future__ import annotations

import json

import pytest

from experiments import affine_landscape
from paper_figures import affine_barrier


def test_smoke_preset_runs_and_feeds_the_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    config, run_dir = affine_landscape.preset("smoke"), tmp_path / "run"
    results = affine_landscape.main(config, run_dir)
    for name in ("config.json", "command.txt", "environment.json", "results.json", "table.csv"):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(results["rows"]))
    assert len(saved["rows"]) == len(config.cases)
    # Theorem 1 on the smoke cases: every start reaches L*, barriers are positive
    assert saved["all_starts_reach_closed_form"] and saved["all_barriers_positive"]
    for row in saved["rows"]:
        assert row["n_minima"] == row["n_minima_formula"]
    featured = saved["featured"]
    assert featured["profiles"]["rotation"]["height"] == pytest.approx(
        featured["rotation_barrier_formula"], rel=1e-10  # float64 identity (midpoint sampled)
    )
    # a second call finds the finished run and does not recompute it
    again = affine_landscape.main(config, run_dir)
    assert again["rows"] == saved["rows"]

    written = affine_barrier.make(run_dir, tmp_path / "fig")
    assert sorted(p.suffix for p in written) == [".pdf", ".png"]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in written)


def test_figure_explains_missing_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="affine_landscape.py"):
        affine_barrier.make(tmp_path, tmp_path / "fig")
