"""Text for result tables: numbers as cells, Markdown and CSV tables, "ours (paper)" cells.

Pure functions from values to strings, shared by the experiment scripts (which print and save
their tables) and ``paper_figures`` (which re-renders them from saved results). Missing values
have three spellings, each with one meaning:

- ``MISSING`` ("–"): no value exists, e.g. a paper number the source does not give;
- ``NA_FID`` ("n/a (no Inception weights)"): an FID that could not be computed because the
  Inception weights file is absent (stored like this in results JSON);
- ``NA`` ("n/a"): the short form of ``NA_FID`` for narrow table cells.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
from collections.abc import Sequence
from typing import Any

MISSING = "–"
NA = "n/a"
NA_FID = "n/a (no Inception weights)"

__all__ = [
    "MISSING", "NA", "NA_FID", "csv_table", "format_fid", "format_number", "is_missing",
    "markdown_table", "paper_cell", "report", "shorten_na",
]


def is_missing(value: Any) -> bool:
    """True for ``None``, an empty string, a dash ("-", "--", "–") or an "n/a..." string."""
    if value is None:
        return True
    if isinstance(value, str):
        text = value.strip()
        return text in ("", "-", "--", MISSING) or text.startswith(NA)
    return False


def shorten_na(value: Any) -> Any:
    """``NA`` for an "n/a (reason)" string (e.g. ``NA_FID``), any other value unchanged: for
    table cells too narrow for the reason (give it once in a note instead)."""
    return NA if isinstance(value, str) and value.startswith(NA) else value


def format_number(value: Any, digits: int = 4, *, missing: str = MISSING) -> str:
    """One table cell as text.

    ``None`` -> ``missing``; booleans -> "yes"/"no"; integers in full; other reals with
    ``digits`` significant digits: fixed notation for 1e-3 <= |x| < 10**digits, rounded to an
    integer above (12345.6 -> "12346", never "1.235e+04"), scientific below ("1.235e-05");
    NaN -> "nan", infinities -> "inf"/"-inf"; strings unchanged; a mean over seeds
    (:class:`balance.seeds.MeanSE`) as "mean ± s.e." (the s.e. to 2 digits).
    """
    if value is None:
        return missing
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    se = getattr(value, "se", None)  # a balance.seeds.MeanSE: "mean ± s.e."
    if se is not None and getattr(value, "n", 1) > 1:
        return f"{format_number(float(value), digits)} ± {format_number(se, 2)}"
    if not isinstance(value, numbers.Real):
        return str(value)
    x = float(value)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0.0:
        return "0"
    size = abs(x)
    if size >= 10**digits:
        return f"{x:.0f}"
    if size >= 1e-3:
        return f"{x:.{digits}g}"
    return f"{x:.{digits - 1}e}"


def format_fid(value: Any, digits: int = 4, *, short: bool = False) -> str:
    """An FID cell: a number as ``format_number``; ``None`` or an "n/a..." string (no Inception
    weights) as ``NA_FID``, or as ``NA`` when ``short``."""
    if value is None or (isinstance(value, str) and value.startswith(NA)):
        return NA if short else NA_FID
    return format_number(value, digits)


def paper_cell(ours: Any, paper: Any, digits: int = 4, *, missing: str = MISSING) -> str:
    """"ours (paper)" in one cell, e.g. ``paper_cell(9.1234, 8.69) == "9.123 (8.69)"``; a missing
    value on either side reads ``missing``."""
    return f"{format_number(ours, digits, missing=missing)} " \
           f"({format_number(paper, digits, missing=missing)})"


def _cells(rows: Sequence[Sequence[Any]], n_columns: int, digits: int,
           missing: str) -> list[list[str]]:
    out = []
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != n_columns:
            raise ValueError(f"row {i} has {len(row)} cells, the table has {n_columns} columns")
        out.append([format_number(v, digits, missing=missing) for v in row])
    return out


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, digits: int = 4,
                   missing: str = MISSING, caption: str | None = None,
                   notes: str | Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (cells through ``format_number``), with an
    optional bold caption above and notes (paragraphs) below; ``|`` in cells is escaped.

    Raises ``ValueError`` when a row's length differs from ``len(columns)``.
    """
    cells = _cells(rows, len(columns), digits, missing)

    def line(items: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", r"\|") for c in items) + " |"

    parts = [f"**{caption}**", ""] if caption else []
    parts.append(line(columns))
    parts.append("| " + " | ".join("---" for _ in columns) + " |")
    parts += [line(r) for r in cells]
    if notes is not None:
        for note in [notes] if isinstance(notes, str) else notes:
            parts += ["", str(note)]
    return "\n".join(parts) + "\n"


def csv_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, digits: int = 6,
              missing: str = "") -> str:
    """CSV text (header line, then one line per row, "\\n" line ends); numbers to ``digits``
    significant digits, missing values as ``missing`` (empty by default, so that spreadsheets
    read the column as numbers)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(_cells(rows, len(columns), digits, missing))
    return buffer.getvalue()


def report(tables: Sequence[str], checks: dict | None = None, wall_time_s: float | None = None,
           lines: Sequence[str] = ()) -> str:
    """What an experiment prints at the end: its tables, each direction check as
    ``name: value`` (a ``thresholds`` entry left out), extra ``lines`` and the wall time."""
    out = [*tables]
    out += [f"{k}: {format_number(v)}" for k, v in (checks or {}).items() if k != "thresholds"]
    out += list(lines)
    if wall_time_s is not None:
        out.append(f"wall time: {float(wall_time_s):.0f} s")
    return "\n".join(out)
