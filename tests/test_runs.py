"""Run folders, seeds, devices, JSON and checkpoint files (balance.runs)."""

from __future__ import annotations

import enum
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from balance import runs
from balance.runs import (
    CheckpointError,
    ConfigMismatchError,
    UsageError,
    config_from_dict,
    config_to_dict,
    is_complete,
    load_checkpoint,
    pick_device,
    prepare_run,
    read_json,
    save_checkpoint,
    seed_everything,
    write_json,
)


class Gamma(enum.Enum):
    LEARNED = "learned"
    FIXED = "fixed"


@dataclass(frozen=True)
class ModelConfig:
    widths: tuple[int, ...] = (512, 512)
    latent: int = 16
    gamma: Gamma = Gamma.LEARNED
    gamma_min: float | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "sweep"
    model: ModelConfig = field(default_factory=ModelConfig)
    kappas: tuple[int, ...] = (50, 100)
    betas: tuple[float, float] = (0.9, 0.999)
    out: Path = Path("runs/x")


def _draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


# ----------------------------------------------------------------------------- seeds, devices


def test_seed_everything_reproduces_every_generator():
    g1 = seed_everything(123)
    first = _draws(), torch.rand(2, generator=g1)
    g2 = seed_everything(123)
    second = _draws(), torch.rand(2, generator=g2)
    assert first[0][:2] == second[0][:2]
    assert torch.equal(first[0][2], second[0][2])
    assert torch.equal(first[1], second[1])
    seed_everything(124)
    assert _draws()[:2] != first[0][:2]


def test_seed_everything_rejects_out_of_range_seeds():
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_pick_device_auto_and_explicit(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="CUDA is not available"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("gpu-please")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("auto") == torch.device("cuda")
    with pytest.raises(UsageError, match="1 CUDA device"):
        pick_device("cuda:2")


# ----------------------------------------------------------------------------- JSON


def test_write_json_handles_dataclasses_tuples_scalars_and_paths(tmp_path):
    obj = {
        "config": ExperimentConfig(),
        "np": np.float32(0.5),
        "np_int": np.int64(7),
        "torch": torch.tensor(2.5),
        "vector": torch.tensor([1.0, 2.0]),
        "path": Path("a/b"),
        "tuple": (1, (2, 3)),
    }
    path = write_json(tmp_path / "out.json", obj)
    back = read_json(path)
    assert back["config"]["model"] == {
        "widths": [512, 512], "latent": 16, "gamma": "learned", "gamma_min": None
    }
    assert back["np"] == 0.5 and back["np_int"] == 7 and back["torch"] == 2.5
    assert back["vector"] == [1.0, 2.0] and back["path"] == "a/b"
    assert back["tuple"] == [1, [2, 3]]
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left


def test_write_json_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    path = write_json(tmp_path / "r.json", {"version": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(runs.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_json(path, {"version": 2})
    assert read_json(path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_write_json_refuses_unknown_objects_before_touching_the_file(tmp_path):
    path = write_json(tmp_path / "r.json", {"ok": True})
    with pytest.raises(TypeError, match="object"):
        write_json(path, {"bad": object()})
    assert read_json(path) == {"ok": True}


def test_read_json_names_a_corrupt_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"nll": 80.1, ')
    with pytest.raises(ValueError, match="results.json is not valid JSON"):
        read_json(path)


def test_read_jsonl_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert runs.read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    path.write_text('{"epoch": 1}\n{"ep\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        runs.read_jsonl(path)


# ----------------------------------------------------------------------------- configs


def test_config_round_trip_through_json_restores_nested_frozen_dataclasses():
    config = ExperimentConfig(
        model=ModelConfig(widths=(64, 32, 16), gamma=Gamma.FIXED, gamma_min=1e-4),
        kappas=(50, 784),
        out=Path("runs/k"),
    )
    as_json = json.loads(json.dumps(config_to_dict(config)))
    back = config_from_dict(ExperimentConfig, as_json)
    assert back == config
    assert isinstance(back.model.widths, tuple) and isinstance(back.model.gamma, Gamma)
    assert isinstance(back.out, Path)


def test_config_from_dict_defaults_missing_and_rejects_unknown_fields():
    assert config_from_dict(ExperimentConfig, {"name": "a"}) == ExperimentConfig(name="a")
    with pytest.raises(ValueError, match="unknown field.*'lr'"):
        config_from_dict(ExperimentConfig, {"lr": 1e-3})
    with pytest.raises((TypeError, ValueError), match="latent"):
        config_from_dict(ExperimentConfig, {"model": {"latent": "sixteen"}})


# ----------------------------------------------------------------------------- run folders


def test_prepare_run_records_config_command_and_environment(tmp_path):
    run_dir = prepare_run(tmp_path / "run", ExperimentConfig(), device="cpu")
    assert read_json(run_dir / "config.json") == config_to_dict(ExperimentConfig())
    assert sys.argv[0] in (run_dir / "command.txt").read_text()
    env = read_json(run_dir / "environment.json")
    assert env["torch"] == torch.__version__
    assert env["device"] == "cpu" and env["device_name"]
    assert {"git", "python", "hostname", "start_time"} <= set(env)
    assert not is_complete(run_dir)
    write_json(run_dir / "results.json", {"nll": 1.0})
    assert is_complete(run_dir)


def test_prepare_run_resume_keeps_original_files_and_refuses_a_changed_config(tmp_path):
    run_dir = prepare_run(tmp_path / "run", ExperimentConfig(), device="cpu")
    before = {name: (run_dir / name).read_text() for name in runs.os.listdir(run_dir)}
    os.utime(run_dir / "environment.json", (0, 0))
    prepare_run(run_dir, ExperimentConfig(), device="cpu")  # resume: same config
    for name, text in before.items():
        assert (run_dir / name).read_text() == text
    assert (run_dir / "environment.json").stat().st_mtime == 0
    assert len(runs.read_jsonl(run_dir / "resumes.jsonl")) == 1

    changed = ExperimentConfig(model=ModelConfig(latent=32))
    with pytest.raises(ConfigMismatchError, match=r"model\.latent: 16 \(saved\) vs 32 \(new\)"):
        prepare_run(run_dir, changed, device="cpu")
    assert read_json(run_dir / "config.json")["model"]["latent"] == 16
    prepare_run(run_dir, changed, device="cpu", overwrite=True)
    assert read_json(run_dir / "config.json")["model"]["latent"] == 32


def test_git_info_is_absent_outside_git_and_reports_commit_and_dirty_inside(tmp_path):
    assert runs.git_info(tmp_path) is None
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("1")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "a.txt"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], cwd=repo, check=True)
    info = runs.git_info(repo)
    assert len(info["commit"]) == 40 and info["dirty"] is False
    (repo / "a.txt").write_text("2")
    assert runs.git_info(repo)["dirty"] is True


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path):
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 2, "history": [{"loss": 1.5}]}
    path = save_checkpoint(tmp_path / "checkpoint.pt", state)
    back = load_checkpoint(path)
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert back["epoch"] == 2 and back["history"] == [{"loss": 1.5}]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_raises_checkpoint_error_with_advice(tmp_path, damage):
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"w": torch.randn(1000)})
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint" * 10)
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "corrupt or truncated" in message and "incompatible version" in message
    assert "Delete it to restart" in message


def test_checkpoint_that_is_not_a_dict_or_missing(tmp_path):
    path = tmp_path / "c.pt"
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="not a dict"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
