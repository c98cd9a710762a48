"""Every experiment script, discovered (not listed): its smoke preset runs from the command
line, resumes without training again, refuses a changed config, records a resolved config that
``--config`` reads back, and leaves run folders from which ``load_model`` rebuilds the model."""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import re
from pathlib import Path

import pytest
import torch

import experiments
from balance.experiment import OverrideError, apply_overrides, cli, load_config_file, set_field
from balance.runs import CheckpointError, ConfigMismatchError, load_checkpoint, load_model

ROOT = Path(__file__).resolve().parents[1]


def _scripts() -> list:
    found = []
    for info in sorted(pkgutil.iter_modules(experiments.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"experiments.{info.name}")
        if all(hasattr(module, a) for a in ("NAME", "PRESETS", "preset", "main", "report")):
            found.append(module)
    return found


SCRIPTS = _scripts()


def test_every_experiment_is_discovered():
    names = {m.NAME for m in SCRIPTS}
    assert {"kappa_sweep", "rae_table", "dae_sweep", "gamma_fixed_vs_learned",
            "celeba_fid_ndb", "affine_landscape"} <= names


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch, tmp_path):
    threads = torch.get_num_threads()
    monkeypatch.setenv("BALANCE_CACHE", str(tmp_path / "cache"))
    yield
    torch.set_num_threads(threads)


def _mtimes(run_dir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in run_dir.rglob("checkpoint.pt")}


@pytest.mark.parametrize("script", SCRIPTS, ids=[m.NAME for m in SCRIPTS])
def test_smoke_preset_runs_resumes_and_rebuilds_its_models(script, shared_data_root, tmp_path,
                                                           capsys):
    run_dir = tmp_path / "run"
    argv = ["--preset", "smoke", "--run-dir", str(run_dir), "--no-progress"]
    fields = {f.name for f in dataclasses.fields(script.preset("smoke"))}
    if hasattr(script, "DATA_ROOT_FIELD") or "data" in fields:  # scripts that read data files
        argv += ["--data-root", str(shared_data_root)]
    first = cli(script, argv)
    printed = capsys.readouterr().out
    assert printed.strip(), "the script printed no report"
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["experiment"] == script.NAME

    # The resolved config reads back as the same config.
    resolved = run_dir / "resolved_config.json"
    config = load_config_file(script.preset("smoke"), resolved)
    assert json.loads(resolved.read_text()) == json.loads(json.dumps(
        __import__("balance.runs", fromlist=["to_jsonable"]).to_jsonable(config)))

    # Resume from the resolved config: nothing trains again, the results are the same.
    before = _mtimes(run_dir)
    again = cli(script, ["--config", str(resolved), "--run-dir", str(run_dir), "--no-progress"])
    assert _mtimes(run_dir) == before
    assert json.dumps(again, sort_keys=True, default=str) == json.dumps(first, sort_keys=True,
                                                                        default=str)

    # A changed seed is another run: refused with the field named.
    field = getattr(script, "SEED_FIELDS", ("train.seed",))[0]
    with pytest.raises(ConfigMismatchError, match=re.escape(field.split(".")[-1])):
        cli(script, ["--config", str(resolved), "--run-dir", str(run_dir), "--no-progress",
                    "--set", f"{field}=12345"])

    # Every training run folder rebuilds its model: weights equal to the checkpoint's, and
    # the one encode contract of balance.models.output.
    folders = sorted(p.parent for p in run_dir.rglob("model.json"))
    if getattr(script, "SAVES_MODELS", True):
        assert folders, "no training run recorded its model"
    for folder in folders:
        model = load_model(folder)
        state = load_checkpoint(folder / "checkpoint.pt")["model"]
        for name, value in model.state_dict().items():
            assert torch.equal(value, state[name]), (folder, name)
        shape = json.loads((folder / "model.json").read_text())["data_shape"]
        with torch.no_grad():
            mu, logvar = model.encode(torch.rand(3, *shape))
            assert mu.shape[0] == 3 and (logvar is None or logvar.shape == mu.shape)
            assert model.decode(mu).shape == (3, *shape)


def test_seeds_give_mean_and_standard_error(tmp_path, capsys):
    from experiments import kappa_sweep

    run_dir = tmp_path / "seeds"
    results = cli(kappa_sweep, ["--preset", "manifold_smoke", "--run-dir", str(run_dir),
                               "--no-progress", "--seeds", "0", "1", "--arms", "none"])
    assert (run_dir / "seed0" / "none" / "kappa2" / "results.json").is_file()
    assert (run_dir / "seed1" / "none" / "kappa2" / "results.json").is_file()
    assert results["seeds"] == [0, 1]
    one = [json.loads((run_dir / f"seed{s}" / "results.json").read_text()) for s in (0, 1)]
    nll = [r["runs"]["none"]["2"]["nll"] for r in one]
    agg = results["runs"]["none"]["2"]["nll"]
    assert float(agg) == pytest.approx(sum(nll) / 2, rel=1e-12)
    assert agg.se == pytest.approx(abs(nll[0] - nll[1]) / 2, rel=1e-9)  # s.e. of two values
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["runs"]["none"]["2"]["nll"] == {"mean": float(agg), "se": agg.se, "n": 2}
    assert " ± " in capsys.readouterr().out


def test_overrides_and_config_files_are_checked(tmp_path):
    from experiments import kappa_sweep

    config = kappa_sweep.preset("smoke")
    assert apply_overrides(config, ["train.lr=0.01", "kappas=[3, 4]"]).kappas == (3, 4)
    assert set_field(config, "model.gamma.lr", None).model.gamma.lr is None
    with pytest.raises(OverrideError, match=r"unknown config field 'train.epoch'.*epochs"):
        set_field(config, "train.epoch", 3)
    with pytest.raises(OverrideError, match="train.batch_size"):
        apply_overrides(config, ["train.batch_size=many"])
    with pytest.raises(OverrideError, match="FIELD=VALUE"):
        apply_overrides(config, ["train.epochs"])
    toml = tmp_path / "c.toml"
    toml.write_text("kappas = [6]\n[train]\nepochs = 5\n")
    loaded = load_config_file(config, toml)
    assert loaded.kappas == (6,) and loaded.train.epochs == 5
    assert loaded.train.batch_size == config.train.batch_size  # untouched fields kept
    bad = tmp_path / "bad.json"
    bad.write_text('{"trian": {}}')
    with pytest.raises(OverrideError, match="trian"):
        load_config_file(config, bad)


def test_load_model_refuses_foreign_and_corrupt_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text('{"builder": "nope", "spec": {}, "data_shape": [2]}')
    with pytest.raises(CheckpointError, match="does not describe a model"):
        load_model(tmp_path)


def test_the_library_never_imports_experiments_figures_or_tests():
    pattern = re.compile(r"^\s*(from|import)\s+(experiments|paper_figures|tests)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "balance").rglob("*.py")
                 if pattern.search(p.read_text())]
    assert offenders == []


def test_experiments_do_not_sniff_model_types_or_import_each_other():
    names = {m.NAME for m in SCRIPTS}
    for path in (ROOT / "experiments").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"\b(isinstance|hasattr)\(", text), path.name
        for other in names - {path.stem}:
            assert not re.search(rf"^\s*(from|import)\s+.*\b{other}\b", text, re.M), \
                (path.name, other)
