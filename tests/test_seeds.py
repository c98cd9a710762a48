"""balance.seeds: mean ± standard error over seeds, and the spread test of direction checks."""

from __future__ import annotations

import json
import math

import pytest

from balance.reporting import format_number
from balance.runs import to_jsonable
from balance.seeds import MeanSE, aggregate, exceeds_spread, revive


def test_mean_and_standard_error_of_three_values():
    m = MeanSE.of([1.0, 2.0, 6.0])
    assert float(m) == 3.0 and m.n == 3
    assert m.se == pytest.approx(math.sqrt(7.0 / 3.0), rel=1e-15)  # std(ddof=1)=sqrt(7), /sqrt(3)
    assert MeanSE.of([4.0]).se == 0.0
    assert format_number(m) == "3 ± 1.5"


def test_aggregate_merges_numbers_lists_flags_and_keeps_constants():
    runs = [{"nll": -10.0, "active": 3, "vars": [1.0, 0.0], "ok": True, "arm": "none",
             "paper": 4.98},
            {"nll": -12.0, "active": 5, "vars": [3.0, 0.0], "ok": False, "arm": "none",
             "paper": 4.98}]
    agg = aggregate(runs)
    assert float(agg["nll"]) == -11.0 and agg["nll"].se == pytest.approx(1.0)
    assert float(agg["active"]) == 4.0
    assert float(agg["vars"][0]) == 2.0 and agg["vars"][1] == 0.0  # no spread: kept as is
    assert agg["ok"] == "1/2" and agg["arm"] == "none" and agg["paper"] == 4.98
    back = revive(json.loads(json.dumps(to_jsonable(agg))))
    assert isinstance(back["nll"], MeanSE) and back["nll"].se == agg["nll"].se


def test_exceeds_spread_uses_two_combined_standard_errors():
    a, b = MeanSE(0.0, 1.0, 3), MeanSE(3.0, 1.0, 3)
    assert exceeds_spread(a, b) is True  # 3 > 2 sqrt(2) = 2.83
    assert exceeds_spread(a, MeanSE(2.5, 1.0, 3)) is False
    assert exceeds_spread(1.0, 2.0) is None  # one seed: nothing to compare with
    with pytest.raises(ValueError):
        aggregate([])
