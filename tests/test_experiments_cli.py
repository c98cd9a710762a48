"""Experiment scripts end with a clear message and exit status 2 on problems the user can fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_missing_data_gives_a_message_not_a_traceback(tmp_path):
    env = dict(os.environ, BALANCE_DATA=str(tmp_path / "empty"), BALANCE_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "kappa_sweep.py"), "--preset", "smoke",
         "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: MNIST files missing"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(tmp_path / "empty" / "mnist") in proc.stderr
