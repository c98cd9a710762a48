"""balance.train.train under torchrun: 2 CPU processes (gloo) train like one process with the
global batch, rank 0 alone writes, and a killed 2-process run resumes to the same parameters.

Each test starts a real ``torchrun`` job (``python -m torch.distributed.run --standalone``) on
the loopback interface.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}

SCRIPT = '''
import argparse, os, sys
import torch
from balance.threads import limit_threads
from balance.train import TrainConfig, train

p = argparse.ArgumentParser()
for name in ("batch", "epochs", "samples"):
    p.add_argument("--" + name, type=int)
p.add_argument("--run-dir")
p.add_argument("--out")
a = p.parse_args()


def loss_fn(model, x):  # deterministic: no sampling noise, so shards add up exactly
    loss = (model(x) - x).pow(2).sum(1).mean()
    return loss, {"squared_error": loss.detach()}


with limit_threads(1):
    x = torch.randn(a.samples, 6, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 6))
    config = TrainConfig(epochs=a.epochs, batch_size=a.batch, lr=1e-2, seed=0, device="cpu",
                         progress=False)
    train(model, loss_fn, x, config, run_dir=a.run_dir)
    if os.environ.get("RANK", "0") == "0":
        torch.save(model.state_dict(), a.out)
'''


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "train_mlp.py"
    path.write_text(SCRIPT)
    return path


def _command(script: Path, folder: Path, *, procs: int, batch: int, epochs: int,
             n: int) -> list[str]:
    args = [str(script), "--batch", str(batch), "--epochs", str(epochs), "--samples", str(n),
            "--run-dir", str(folder / "run"), "--out", str(folder / "params.pt")]
    if procs == 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(procs), *args]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_global_batch(script, tmp_path):
    # 99 samples, 8 per rank: 6 global batches of 16 and a last one of 3, split 2 + 1
    _run(_command(script, tmp_path / "ddp", procs=2, batch=8, epochs=1, n=99))
    _run(_command(script, tmp_path / "one", procs=1, batch=16, epochs=1, n=99))
    ddp = torch.load(tmp_path / "ddp" / "params.pt")
    one = torch.load(tmp_path / "one" / "params.pt")
    for name in one:  # float32 round-off: the gradient sums run in another order
        torch.testing.assert_close(ddp[name], one[name], rtol=1e-5, atol=1e-6)
    lines = [json.loads(s) for s in (tmp_path / "ddp" / "run" / "metrics.jsonl")
             .read_text().splitlines()]
    reference = json.loads((tmp_path / "one" / "run" / "metrics.jsonl").read_text())
    assert len(lines) == 1  # rank 0 alone wrote the log
    assert lines[0]["steps"] == reference["steps"] == 7
    assert lines[0]["samples"] == 99
    # the epoch mean over both ranks' samples, not rank 0's alone
    assert lines[0]["loss"] == pytest.approx(reference["loss"], rel=1e-6)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_parameters(script, tmp_path):
    settings = dict(procs=2, batch=8, epochs=12, n=2000)
    _run(_command(script, tmp_path / "whole", **settings))
    folder = tmp_path / "killed"
    job = subprocess.Popen(_command(script, folder, **settings), env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = folder / "run" / "metrics.jsonl"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert job.poll() is None, "the job ended before it could be killed"
        ranks = _descendants(job.pid)
        assert len(ranks) >= 2
        for pid in [job.pid, *ranks]:  # torchrun and both ranks, as a lost node would
            os.kill(pid, signal.SIGKILL)
    finally:
        if job.poll() is None:
            job.kill()
        job.wait()
    deadline = time.time() + 30
    while any(_alive(p) for p in ranks) and time.time() < deadline:
        time.sleep(0.1)
    assert 3 <= len(metrics.read_text().splitlines()) < 12
    resumed = _run(_command(script, folder, **settings))
    assert "resuming" in resumed.stdout + resumed.stderr
    whole = torch.load(tmp_path / "whole" / "params.pt")
    again = torch.load(folder / "params.pt")
    for name in whole:
        assert torch.equal(whole[name], again[name]), name
    assert len(metrics.read_text().splitlines()) == 12
