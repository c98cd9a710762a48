"""Problems a user can fix end with one clear line (and exit status 2 from a script), never a
traceback; and the smaller silent failures are caught."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from balance.runs import CorruptFileError, UsageError, pick_device, read_json
from balance.threads import limit_threads

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _script(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "affine_landscape.py"),
                           *argv], capture_output=True, text=True, env=env or ENV, timeout=120)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_a_device_the_machine_lacks_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="--device auto or --device cpu"):
        pick_device("cuda")
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "kappa_sweep.py"),
                           "--preset", "manifold_smoke", "--device", "cuda", "--run-dir",
                           str(tmp_path / "run"), "--no-progress"], capture_output=True,
                          text=True, env=ENV, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: device 'cuda'")
    assert "Traceback" not in proc.stderr


def test_threads_below_one_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="--threads 1 or more"), limit_threads(0):
        pass
    proc = _script("--preset", "smoke", "--threads", "0", "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "threads must be >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_corrupt_results_file_is_named(tmp_path):
    run_dir = tmp_path / "run"
    assert _script("--preset", "smoke", "--run-dir", str(run_dir)).returncode == 0
    (run_dir / "results.json").write_text('{"rows": [1, 2')
    with pytest.raises(CorruptFileError, match="results.json is not valid JSON"):
        read_json(run_dir / "results.json")
    proc = _script("--preset", "smoke", "--run-dir", str(run_dir))
    assert proc.returncode == 2 and "results.json is not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_full_disk_is_one_line(monkeypatch, capsys, tmp_path):
    from balance.experiment import run_script
    from experiments import affine_landscape

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoint.pt")

    monkeypatch.setattr(affine_landscape, "main", full)
    with pytest.raises(SystemExit) as info:
        run_script(affine_landscape, ["--preset", "smoke", "--run-dir", str(tmp_path / "r")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write /runs/x/checkpoint.pt: No space left on device")


def test_the_paper_preset_without_full_celeba_is_one_line(tmp_path, shared_data_root):
    env = dict(ENV, BALANCE_DATA=str(shared_data_root), BALANCE_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "celeba_fid_ndb.py"),
                           "--preset", "paper", "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "full img_align_celeba" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_balance_fid_names_a_truncated_jpeg(tmp_path, capsys):
    from PIL import Image

    from balance.metrics import fid_cli

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / folder / f"{i}.jpg")
    bad = tmp_path / "a" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:40])
    code = fid_cli.main([str(tmp_path / "a"), str(tmp_path / "b"), "--random-init-seed", "0",
                         "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot read the image {bad}" in err


def test_data_in_0_255_for_a_sigmoid_decoder_is_refused():
    from balance.models.registry import ConvSpec, build
    from balance.objectives import loss

    model = build(ConvSpec(latent_dim=2, base_filters=2), (1, 28, 28))
    x = torch.randint(0, 256, (4, 1, 28, 28)).float()  # a forgotten / 255
    with pytest.raises(ValueError, match=r"data lie in \[0, 255\].*divide uint8 values by 255"):
        loss("ae")(model, x)
    loss("ae")(model, x / 255)  # fine once rescaled


def test_a_diverging_run_on_unscaled_data_says_so():
    from balance.train import NonFiniteLossError, TrainConfig, train

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    x = torch.rand(32, 4) * 255

    def loss_fn(m, batch):
        return (m(batch) - batch).square().mean() * 1e38, {}

    with pytest.raises(NonFiniteLossError, match=r"data lie in \[.*\]: images in \[0, 255\]"):
        train(model, loss_fn, x, TrainConfig(epochs=1, batch_size=8, progress=False))


def test_mmd_of_half_precision_codes_is_finite():
    from balance.metrics.mmd import mmd_to_standard_normal

    z = (torch.randn(200, 8, generator=torch.Generator().manual_seed(0)) * 30).half()
    value = mmd_to_standard_normal(z, generator=torch.Generator().manual_seed(1))
    assert value == value and value > 0.1  # finite, and far from the prior


def test_wall_time_counts_the_epochs_of_earlier_invocations(tmp_path):
    from balance.runs import Stage, append_jsonl

    stage = Stage(tmp_path / "s", {"a": 1})
    append_jsonl(tmp_path / "s" / "metrics.jsonl", {"epoch": 1, "time_s": 100.0})
    again = Stage(tmp_path / "s", {"a": 1})  # the same stage, resumed after an interruption
    assert 100.0 <= again.save({})["wall_time_s"] < 110.0
    assert stage.elapsed() < 10.0
