"""Test-wide set-up: one thread, the same seeds for every test, real data from BALANCE_DATA.

In CI (BALANCE_REQUIRE_DATA=1) a missing data folder fails the tests that need it; elsewhere
those tests are skipped with a message saying how to point them at the data.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

from balance.threads import limit_threads

# Ray clusters the tests start (and their drivers) stay on the loopback interface: Ray's own
# switch for single-machine clusters, read when ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Theorem checks optimise inside each example: wall-clock deadlines would only add flakiness.
settings.register_profile(
    "balance", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile("balance")


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Every test runs with one torch thread and one BLAS/OpenMP thread (``BALANCE_TEST_THREADS``
    to change it): the tensors in tests are small, and thread pools that spin-wait for each
    other make them several times slower on a small or shared machine."""
    with limit_threads(int(os.environ.get("BALANCE_TEST_THREADS", "1"))):
        yield


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """The real data folder (with mnist/ and celeba/), from BALANCE_DATA."""
    root = os.environ.get("BALANCE_DATA")
    if root and Path(root).is_dir():
        return Path(root)
    message = (
        "real data not found: set BALANCE_DATA to a folder holding mnist/ and celeba/ "
        f"(got BALANCE_DATA={root!r})"
    )
    if os.environ.get("BALANCE_REQUIRE_DATA") == "1":
        pytest.fail(message)
    pytest.skip(message)
