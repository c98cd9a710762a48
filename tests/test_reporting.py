"""Tests for balance.reporting: exact strings for each kind of cell and table."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from balance.reporting import (
    MISSING,
    NA,
    NA_FID,
    csv_table,
    format_fid,
    format_number,
    is_missing,
    markdown_table,
    paper_cell,
    shorten_na,
)


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        (None, 4, MISSING),
        (True, 4, "yes"),
        (False, 4, "no"),
        (784, 4, "784"),
        (np.int64(-3), 4, "-3"),
        (12345.6, 4, "12346"),  # above 10**digits: an integer, never "1.235e+04"
        (9999.4, 4, "9999"),
        (8.6912, 3, "8.69"),
        (-315.04, 4, "-315"),
        (0.0123456, 4, "0.01235"),
        (0.001, 4, "0.001"),
        (1.23456e-5, 4, "1.235e-05"),
        (0.0, 4, "0"),
        (np.float32(2.5), 4, "2.5"),
        (math.nan, 4, "nan"),
        (math.inf, 4, "inf"),
        (-math.inf, 4, "-inf"),
        ("0 (all off)", 4, "0 (all off)"),
    ],
)
def test_format_number(value, digits, expected):
    assert format_number(value, digits) == expected


def test_format_number_missing_spelling():
    assert format_number(None, missing="n/a") == "n/a"
    assert MISSING == "\u2013"  # an en dash, distinct from a minus sign


def test_format_fid():
    assert format_fid(None) == NA_FID
    assert format_fid(None, short=True) == NA
    assert format_fid(NA_FID, short=True) == NA
    assert format_fid(NA_FID) == NA_FID
    assert format_fid(74.0123) == "74.01"
    assert format_fid(74.0123, 3, short=True) == "74"


def test_shorten_na():
    assert shorten_na(NA_FID) == NA
    assert shorten_na("n/a (no data)") == NA
    assert shorten_na(12.5) == 12.5 and shorten_na(None) is None
    assert shorten_na("RAE-SN") == "RAE-SN"


def test_paper_cell():
    assert paper_cell(9.1234, 8.69) == "9.123 (8.69)"
    assert paper_cell(9.1234, None) == f"9.123 ({MISSING})"
    assert paper_cell(None, 40.95, 3) == f"{MISSING} (41)"
    assert paper_cell(22, 22) == "22 (22)"


@pytest.mark.parametrize("value", [None, "", " - ", "--", MISSING, NA, NA_FID])
def test_is_missing_true(value):
    assert is_missing(value)


@pytest.mark.parametrize("value", [0, 0.0, math.nan, "-3", "0 (all off)", "skip"])
def test_is_missing_false(value):
    assert not is_missing(value)


def test_markdown_table_exact():
    text = markdown_table(["model", "FID", "paper"], [["RAE|SN", 75.301, None], ["AE", 3, 1.5]],
                          digits=3, caption="Table 1", notes=["first", "second"])
    assert text == (
        "**Table 1**\n\n"
        "| model | FID | paper |\n"
        "| --- | --- | --- |\n"
        "| RAE\\|SN | 75.3 | \u2013 |\n"
        "| AE | 3 | 1.5 |\n"
        "\nfirst\n\nsecond\n"
    )


def test_markdown_table_plain_and_note_string():
    text = markdown_table(("a",), [[None]], missing="-", notes="only")
    assert text == "| a |\n| --- |\n| - |\n\nonly\n"


def test_tables_reject_ragged_rows():
    with pytest.raises(ValueError, match="row 1 has 1 cells, the table has 2 columns"):
        markdown_table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(ValueError, match="row 0 has 3 cells"):
        csv_table(["a", "b"], [[1, 2, 3]])


def test_csv_table_round_trip():
    text = csv_table(["model", "FID, REC", "paper"], [["VAE", 17.6612345, None], ["AE", 2, True]])
    assert text.endswith("\n") and "\r" not in text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["model", "FID, REC", "paper"], ["VAE", "17.6612", ""], ["AE", "2", "yes"]]
    assert csv_table(["x"], [[None]], missing="-") == "x\n-\n"
