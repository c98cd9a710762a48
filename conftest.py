"""Test-wide set-up: every test starts from the same seeds; real data comes from BALANCE_DATA.

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

# Theorem checks optimise inside each example: wall-clock deadlines would only add flakiness.
settings.register_profile(
    "balance", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile("balance")


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
