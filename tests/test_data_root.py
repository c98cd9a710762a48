"""Data-root and cache-folder resolution, and the import-time promise of balance.data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from balance.data import DataError
from balance.data.root import resolve_cache_dir, resolve_data_root


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("BALANCE_DATA", "BALANCE_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_argument_beats_environment(clean_env, monkeypatch):
    monkeypatch.setenv("BALANCE_DATA", str(clean_env / "env"))
    assert resolve_data_root(clean_env / "arg") == clean_env / "arg"
    assert resolve_data_root(str(clean_env / "arg")) == clean_env / "arg"


def test_environment_beats_user_cache(clean_env, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(clean_env / "xdg"))
    monkeypatch.setenv("BALANCE_DATA", str(clean_env / "env"))
    assert resolve_data_root() == clean_env / "env"


def test_user_cache_honours_xdg(clean_env, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(clean_env / "xdg"))
    assert resolve_data_root() == clean_env / "xdg" / "balance"
    assert resolve_cache_dir() == clean_env / "xdg" / "balance" / "decoded"


def test_user_cache_defaults_to_home(clean_env, monkeypatch):
    assert resolve_data_root() == clean_env / "home" / ".cache" / "balance"
    # The XDG spec says relative values are invalid and must be ignored.
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert resolve_data_root() == clean_env / "home" / ".cache" / "balance"


def test_empty_environment_variable_is_unset(clean_env, monkeypatch):
    monkeypatch.setenv("BALANCE_DATA", "")
    assert resolve_data_root() == clean_env / "home" / ".cache" / "balance"


def test_tilde_is_expanded(clean_env):
    assert resolve_data_root("~/data") == clean_env / "home" / "data"


def test_cache_dir_argument_and_environment(clean_env, monkeypatch):
    monkeypatch.setenv("BALANCE_CACHE", str(clean_env / "c_env"))
    assert resolve_cache_dir() == clean_env / "c_env"
    assert resolve_cache_dir(clean_env / "c_arg") == clean_env / "c_arg"


def test_data_error_is_runtime_error():
    assert issubclass(DataError, RuntimeError)


def test_importing_balance_data_is_cheap():
    # A fresh interpreter: the package must not pull torch or numpy (STYLE.md principle 1).
    code = "import sys, balance.data; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.split() == ["False", "False"]
