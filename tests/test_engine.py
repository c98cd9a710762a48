"""balance.engine: independent cells in this process or in spawned worker processes."""

from __future__ import annotations

import os

import pytest

from balance.engine import run_cells


def square_with_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("cell 3 failed")
    return x


def test_local_and_process_pool_give_the_same_results_in_cell_order():
    cells = [(i,) for i in range(5)]
    local = run_cells(square_with_pid, cells)
    assert [r[0] for r in local] == [0, 1, 4, 9, 16]
    assert {r[1] for r in local} == {os.getpid()}
    done = []
    pooled = run_cells(square_with_pid, cells, workers=2, on_done=lambda c, r: done.append(c))
    assert [r[0] for r in pooled] == [0, 1, 4, 9, 16]
    assert os.getpid() not in {r[1] for r in pooled}  # ran in the workers
    assert sorted(done) == cells


def test_an_error_in_a_cell_is_raised_here():
    with pytest.raises(ValueError, match="cell 3 failed"):
        run_cells(fail_on_three, [(i,) for i in range(5)], workers=2)
