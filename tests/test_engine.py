"""balance.engine: cells in this process (``local``) or as tasks on a real Ray cluster.

The Ray tests start a local cluster of 2 CPUs (``ray start --head``), run experiments through
``--engine ray --address``, kill a worker mid-training, and stop the cluster at the end. They
are skipped only when the ``cluster`` extra (Ray) is not installed; CI installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from balance.engine import EngineConfig, EngineError, run_cells

ROOT = Path(__file__).resolve().parents[1]
# The test cluster serves the loopback interface of this machine alone (conftest.py), so it
# runs without Ray's token authentication, whatever ~/.ray holds (with a token file there,
# `ray start` would otherwise ask drivers for it).
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0",
       "RAY_AUTH_MODE": "disabled", "MPLBACKEND": "Agg"}


def square_with_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("cell 3 failed")
    return x


def test_local_engine_runs_every_cell_here_in_order():
    cells = [(i,) for i in range(5)]
    finished = []
    local = run_cells(square_with_pid, cells, on_done=lambda c, r: finished.append(c))
    assert [r[0] for r in local] == [0, 1, 4, 9, 16]
    assert {r[1] for r in local} == {os.getpid()}
    assert finished == cells


def test_an_error_in_a_local_cell_is_raised_here():
    with pytest.raises(ValueError, match="cell 3 failed"):
        run_cells(fail_on_three, [(i,) for i in range(5)])


def test_engine_config_is_checked():
    with pytest.raises(ValueError, match="unknown engine"):
        EngineConfig("dask")
    with pytest.raises(ValueError, match="gpus_per_run"):
        EngineConfig("ray", gpus_per_run=-1)


def test_ray_missing_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" now fails as if not installed
    with pytest.raises(EngineError, match=r'pip install -e "\.\[cluster\]"'):
        run_cells(square_with_pid, [(1,), (2,)], EngineConfig("ray"))


def test_a_bad_cluster_address_is_named(tmp_path):
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = EngineConfig("ray", address=f"127.0.0.1:{port}")
    with pytest.raises(EngineError, match=f"127.0.0.1:{port}"):
        run_cells(square_with_pid, [(1,), (2,)], engine)
    out = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "theorem3_penalties.py"), "--preset",
         "smoke", "--engine", "ray", "--address", f"127.0.0.1:{port}", "--run-dir",
         str(tmp_path / "run")],
        capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: no Ray cluster answers at --address 127.0.0.1:")
    assert "Traceback" not in out.stderr


# ----------------------------------------------------------------------- a real Ray cluster


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs, started for these tests and stopped after them."""
    pytest.importorskip("ray")
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    assert ray_cli, "the ray command is missing although ray imports"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = subprocess.run(
        [ray_cli, "start", "--head", "--num-cpus", "2", "--num-gpus", "0", "--port", str(port),
         "--node-ip-address", "127.0.0.1", "--include-dashboard", "false",
         "--disable-usage-stats"], capture_output=True, text=True, env=ENV, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, env=ENV, timeout=120)


def _numbers(path: Path) -> dict:
    """A results.json without what legitimately differs between runs: times and the
    environment."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()
                    if "time" not in k and k not in ("environment", "finished_at", "command")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(path.read_text()))


def _sweep(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "kappa_sweep.py"), "--preset",
         "manifold_smoke", "--run-dir", str(run_dir), "--no-progress", *extra],
        capture_output=True, text=True, env=ENV, timeout=600)


@pytest.mark.slow
def test_a_sweep_on_ray_gives_exactly_the_local_results(ray_cluster, tmp_path):
    local = _sweep(tmp_path / "local")
    assert local.returncode == 0, local.stderr
    on_ray = _sweep(tmp_path / "ray", "--engine", "ray", "--address", ray_cluster)
    assert on_ray.returncode == 0, on_ray.stderr
    cells = sorted(p.relative_to(tmp_path / "local")
                   for p in (tmp_path / "local").rglob("kappa*/results.json"))
    assert len(cells) == 4
    for cell in cells:
        assert _numbers(tmp_path / "ray" / cell) == _numbers(tmp_path / "local" / cell), cell
    assert _numbers(tmp_path / "ray" / "results.json")["runs"] == \
        _numbers(tmp_path / "local" / "results.json")["runs"]


@pytest.mark.slow
def test_a_killed_task_is_retried_and_resumes_to_the_same_results(ray_cluster, tmp_path):
    # one long cell: 4,000 points, 40 epochs of 125 steps, a checkpoint every epoch
    long = ["--arms", "none", "--kappas", "2", "--set", "data.n_train=4000",
            "--set", "train.epochs=40"]
    reference = _sweep(tmp_path / "local", *long)
    assert reference.returncode == 0, reference.stderr
    cell = Path("none") / "kappa2"
    driver = subprocess.Popen(
        [sys.executable, str(ROOT / "experiments" / "kappa_sweep.py"), "--preset",
         "manifold_smoke", "--run-dir", str(tmp_path / "ray"), "--no-progress", "--engine",
         "ray", "--address", ray_cluster, *long],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    folder = tmp_path / "ray" / cell
    killed_at = None
    try:
        deadline = time.time() + 300
        while time.time() < deadline and killed_at is None:
            metrics = folder / "metrics.jsonl"
            if (folder / "checkpoint.pt").is_file() and metrics.is_file() and \
                    len(metrics.read_text().splitlines()) >= 3:
                pid = int((folder / ".lock").read_text().split()[1])
                assert pid != driver.pid
                os.kill(pid, signal.SIGKILL)  # the worker that trains the cell
                killed_at = len(metrics.read_text().splitlines())
            time.sleep(0.05)
        assert killed_at is not None, "the cell never reached its third epoch"
        output, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 0, output
    assert killed_at < 40
    assert "resuming" in output and "from epoch" in output, output
    assert _numbers(folder / "results.json") == _numbers(tmp_path / "local" / cell /
                                                         "results.json")
