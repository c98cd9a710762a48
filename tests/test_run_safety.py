"""Run folders under concurrent and interrupted use: one process per folder, workers that
end with their parent, stale temporaries removed, the umask honoured, read-only results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from balance.runs import RunLockedError, lock_run_dir, prepare_run, write_json

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _holder(run_dir: Path) -> subprocess.Popen:
    """A second process that takes the folder's lock and keeps it (at most 60 s)."""
    code = ("import sys, time; from balance.runs import lock_run_dir; "
            "lock_run_dir(sys.argv[1]); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE,
                            text=True, env=ENV)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_on_a_run_folder_is_refused_with_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    proc = _holder(run_dir)
    try:
        with pytest.raises(RunLockedError, match=rf"in use by PID {proc.pid} on host"):
            prepare_run(run_dir, {"a": 1})
        # ... and an experiment's command line ends with one clear line, exit status 2
        cli = subprocess.run(
            [sys.executable, str(ROOT / "experiments" / "affine_landscape.py"), "--preset",
             "smoke", "--run-dir", str(run_dir)], capture_output=True, text=True, env=ENV,
            timeout=120)
        assert cli.returncode == 2 and cli.stderr.startswith("error: run folder")
        assert f"PID {proc.pid}" in cli.stderr and "Traceback" not in cli.stderr
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert lock_run_dir(run_dir) == run_dir  # the system released the killed holder's lock


def test_workers_end_when_their_parent_is_killed(tmp_path):
    pytest.importorskip("ray")
    parent = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from balance.engine import EngineConfig, run_cells
from tests.test_run_safety import _sleeping_cell
run_cells(_sleeping_cell, [({str(tmp_path)!r}, i) for i in range(2)],
          EngineConfig("ray", num_cpus=2))
"""
    proc = subprocess.Popen([sys.executable, "-c", parent], env=ENV)
    pids: list[int] = []
    deadline = time.time() + 60
    while len(pids) < 2 and time.time() < deadline:
        pids = [int(p.read_text()) for p in tmp_path.glob("pid*") if p.read_text()]
        time.sleep(0.2)
    assert len(pids) == 2, "the workers did not start"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    alive = pids
    while alive and time.time() < deadline:
        time.sleep(0.3)
        alive = [p for p in pids if _alive(p)]
    assert alive == [], f"workers {alive} outlived their parent"


def _sleeping_cell(folder: str, i: int) -> int:
    path = Path(folder) / f"pid{i}"
    path.write_text(str(os.getpid()))
    time.sleep(60)
    return i


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.is_file() and "State:\tZ" in status.read_text())


def test_stale_temporaries_are_removed_and_the_umask_is_honoured(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = run_dir / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    prepare_run(run_dir, {"a": 1})
    assert not stale.exists()
    import balance.runs as runs

    for umask, mode in ((0o022, 0o644), (0o007, 0o660)):  # read once at import, set here
        monkeypatch.setattr(runs, "_UMASK", umask)
        path = runs.write_json(tmp_path / "shared" / f"results{umask}.json", {"x": 1})
        assert oct(path.stat().st_mode & 0o777) == oct(mode)


def test_a_finished_run_in_a_read_only_folder_prints_its_report(tmp_path, monkeypatch,
                                                                 capsys):
    import balance.experiment
    from balance.experiment import cli
    from experiments import affine_landscape

    run_dir = tmp_path / "run"
    cli(affine_landscape, ["--preset", "smoke", "--run-dir", str(run_dir)])
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    # A read-only folder (root ignores permission bits, so the check is simulated): the
    # report is printed from the saved results and nothing is written.
    real_access = os.access
    monkeypatch.setattr(balance.experiment.os, "access",
                        lambda p, mode: False if Path(p) == run_dir else real_access(p, mode))
    again = cli(affine_landscape, ["--preset", "smoke", "--run-dir", str(run_dir)])
    assert again["experiment"] == "affine_landscape"
    assert "all starts reach L*" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before
    assert json.loads((run_dir / "results.json").read_text())["rows"]


def test_write_json_in_a_new_folder(tmp_path):
    assert write_json(tmp_path / "a" / "b.json", {"k": 1}).is_file()
