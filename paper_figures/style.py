"""The shared publication style of every table and figure in ``paper_figures``.

Figures: :func:`apply` sets matplotlib's rcParams (TrueType fonts embedded in PDF and PS, so the
text stays text; sizes that read at one column width; the Okabe-Ito colour cycle) and selects
the Agg backend, which needs no display; :func:`save_figure` writes the same figure as PNG
(200 dpi) and PDF. Label every axis with its quantity and unit, e.g. ``"NLL (nats per image)"``.

Tables: :func:`write_table` writes one table twice, as Markdown (``.md``, for the README) and as
LaTeX (``.tex``, booktabs rules, special characters escaped, for the paper), with the numbers
formatted once by :func:`format_number` so that both agree; ``None`` reads "n/a".

Colours: :data:`OKABE_ITO` (Okabe & Ito 2008, "Color Universal Design"), distinguishable with
the common colour-vision deficiencies and in greyscale by lightness; :data:`PALETTE` is its
order for series (black last). Pair colour with a line style or marker when a figure may be
printed in black and white.

Importing this module does not import matplotlib; :func:`apply` and :func:`save_figure` do.
"""

from __future__ import annotations

import csv
import math
import numbers
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "NA",
    "OKABE_ITO",
    "PALETTE",
    "RC_PARAMS",
    "apply",
    "context",
    "format_number",
    "latex_escape",
    "latex_table",
    "latex_text",
    "markdown_table",
    "parse_markdown_tables",
    "read_csv_table",
    "save_figure",
    "write_table",
]

NA = "n/a"

# Okabe-Ito palette (hex from Okabe & Ito 2008, as used by Wong 2011, Nature Methods 8:441).
OKABE_ITO = {
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "black": "#000000",
}
# Series order: strong, well-separated hues first; yellow (weak on white) late, black last.
PALETTE = (
    OKABE_ITO["blue"],
    OKABE_ITO["vermillion"],
    OKABE_ITO["bluish_green"],
    OKABE_ITO["reddish_purple"],
    OKABE_ITO["orange"],
    OKABE_ITO["sky_blue"],
    OKABE_ITO["yellow"],
    OKABE_ITO["black"],
)
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

FIGURE_DPI = 200  # PNG resolution; PDF is vector
RC_PARAMS: dict[str, Any] = {
    # Type 42 (TrueType) instead of Type 3 fonts: text in PDF/PS stays selectable, searchable
    # and editable, and journals' checks for Type 3 fonts pass; SVG keeps text as text.
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "image.cmap": "viridis",  # perceptually uniform and colour-blind safe
    "savefig.dpi": FIGURE_DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
}


def _cycler():
    from cycler import cycler  # ships with matplotlib

    return cycler(color=list(PALETTE))


def apply(backend: str | None = "Agg") -> None:
    """Set the house rcParams globally (and the Agg backend unless ``backend`` is None).

    Figures made afterwards, through ``pyplot`` or ``matplotlib.figure.Figure``, use them.
    """
    import matplotlib

    if backend is not None:
        matplotlib.use(backend, force=True)
    matplotlib.rcParams.update(RC_PARAMS)
    matplotlib.rcParams["axes.prop_cycle"] = _cycler()


def context():
    """The house rcParams for a ``with`` block only: ``with style.context(): ...``."""
    import matplotlib

    return matplotlib.rc_context({**RC_PARAMS, "axes.prop_cycle": _cycler()})


def save_figure(fig, out_dir: str | Path, stem: str, *, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = FIGURE_DPI, close: bool = True) -> list[Path]:
    """Write ``fig`` as ``out_dir/stem.png`` (``dpi``) and ``out_dir/stem.pdf``; return the paths.

    The PDF carries no creation date, so regenerating an unchanged figure gives the same file.
    ``close`` releases a figure created through ``pyplot`` (a plain ``Figure`` needs nothing).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        path = out_dir / f"{stem}.{ext}"
        metadata = {"CreationDate": None} if ext == "pdf" else None
        fig.savefig(path, dpi=dpi, metadata=metadata)
        paths.append(path)
    if close and "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return paths


# ------------------------------------------------------------------------------------ tables


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def format_number(value: Any, digits: int = 4) -> str:
    """One cell as text, the same in Markdown and LaTeX.

    ``None`` -> "n/a"; booleans -> "yes"/"no"; integers in full; other reals with ``digits``
    significant digits, in fixed notation for 1e-3 <= |x| < 10**digits, rounded to an integer
    above (so 12345.6 -> "12346", never "1.235e+04"), scientific below ("1.235e-05");
    NaN -> "nan", infinities -> "inf"/"-inf"; strings unchanged.
    """
    if value is None:
        return NA
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
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


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_RE = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIAL))
_SCIENTIFIC = re.compile(r"^(-?)(\d+(?:\.\d+)?)e([+-])0*(\d+)$")
_NUMBER = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$")


def latex_escape(text: str) -> str:
    """Escape the ten characters that are special in LaTeX text mode."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group()], text)


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def latex_text(text: str) -> str:
    """Escape prose for LaTeX, keeping Markdown's inline code (``\texttt``) and bold."""
    parts = []
    for i, chunk in enumerate(_CODE.split(text)):
        if i % 2:
            parts.append(r"\texttt{" + latex_escape(chunk) + "}")
        else:
            parts.append(_BOLD.sub(lambda m: r"\textbf{" + m.group(1) + "}",
                                   latex_escape(chunk)))
    return "".join(parts)


def _latex_cell(text: str) -> str:
    """A formatted cell for LaTeX: numbers typeset as numbers (a true minus sign, x 10^n),
    anything else escaped."""
    m = _SCIENTIFIC.match(text)
    if m:
        sign, mantissa, exp_sign, exponent = m.groups()
        exp = f"{'-' if exp_sign == '-' else ''}{exponent}"
        return f"${'-' if sign else ''}{mantissa} \\times 10^{{{exp}}}$"
    if _NUMBER.match(text) and text.startswith("-"):
        return f"${text}$"
    if text in ("-inf", "inf"):
        return r"$-\infty$" if text.startswith("-") else r"$\infty$"
    return latex_escape(text)


def _cells(rows: Iterable[Sequence[Any]], n_columns: int, digits: int) -> list[list[str]]:
    out = []
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != n_columns:
            raise ValueError(f"row {i} has {len(row)} cells, the table has {n_columns} columns")
        out.append([format_number(v, digits) for v in row])
    return out


def _numeric_columns(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[bool]:
    """A column is numeric (right-aligned) when every cell that is not missing (None, "n/a...",
    "-") is a real number or a string that reads as one."""

    def numeric(v: Any) -> bool | None:
        if v is None or isinstance(v, str) and (v.strip() in ("", "-", "--") or v.startswith(NA)):
            return None  # a missing value says nothing about the column
        if _is_number(v):
            return True
        return isinstance(v, str) and bool(_NUMBER.match(v) or v in ("nan", "inf", "-inf"))

    flags = []
    for j in range(len(columns)):
        kinds = [numeric(row[j]) for row in rows]
        kinds = [k for k in kinds if k is not None]
        flags.append(all(kinds))  # a column of missing values only stands for numbers
    return flags


def _notes_list(notes: str | Sequence[str] | None) -> list[str]:
    if notes is None:
        return []
    if isinstance(notes, str):
        return [notes]
    return [str(n) for n in notes]


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                   caption: str | None = None, notes: str | Sequence[str] | None = None,
                   digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table (numeric columns right-aligned), with an optional bold
    caption above and notes below; ``|`` in cells is escaped."""
    rows = [list(r) for r in rows]
    cells = _cells(rows, len(columns), digits)
    numeric = _numeric_columns(columns, rows)

    def line(items: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", r"\|") for c in items) + " |"

    parts = []
    if caption:
        parts += [f"**{caption}**", ""]
    parts.append(line(columns))
    parts.append("| " + " | ".join("---:" if n else "---" for n in numeric) + " |")
    parts += [line(r) for r in cells]
    for note in _notes_list(notes):
        parts += ["", note]
    return "\n".join(parts) + "\n"


def latex_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                caption: str | None = None, notes: str | Sequence[str] | None = None,
                label: str | None = None, digits: int = 4) -> str:
    """A booktabs ``table`` (``\\toprule``/``\\midrule``/``\\bottomrule``; needs
    ``\\usepackage{booktabs}``) with escaped text, numeric columns right-aligned, the caption
    (and ``\\label``) above and the notes in small type below."""
    rows = [list(r) for r in rows]
    cells = _cells(rows, len(columns), digits)
    align = "".join("r" if n else "l" for n in _numeric_columns(columns, rows))
    out = [
        "% Generated by `python -m paper_figures` from saved results; edits are overwritten.",
        r"\begin{table}[t]",
        r"  \centering",
    ]
    if caption:
        out.append(f"  \\caption{{{latex_text(caption)}}}")
    if label:
        out.append(f"  \\label{{{label}}}")
    out += [
        f"  \\begin{{tabular}}{{{align}}}",
        r"    \toprule",
        "    " + " & ".join(latex_escape(str(c)) for c in columns) + r" \\",
        r"    \midrule",
    ]
    out += ["    " + " & ".join(_latex_cell(c) for c in row) + r" \\" for row in cells]
    out += [r"    \bottomrule", r"  \end{tabular}"]
    notes = _notes_list(notes)
    if notes:
        out.append(r"  \par\smallskip")
        out.append(r"  {\footnotesize " + r" \par ".join(latex_text(n) for n in notes) + "}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def write_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], out_dir: str | Path,
                stem: str, *, caption: str | None = None,
                notes: str | Sequence[str] | None = None, digits: int = 4) -> list[Path]:
    """Write the same table as ``out_dir/stem.md`` and ``out_dir/stem.tex``; return both paths.

    ``rows`` hold raw values (numbers, strings, None, booleans): both files format them with
    :func:`format_number` (``digits`` significant digits, None -> "n/a"). The LaTeX table gets
    ``\\label{tab:<stem>}``.
    """
    columns = [str(c) for c in columns]
    rows = [list(r) for r in rows]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{stem}.md"
    tex = out_dir / f"{stem}.tex"
    md.write_text(markdown_table(columns, rows, caption=caption, notes=notes, digits=digits),
                  encoding="utf-8")
    tex.write_text(latex_table(columns, rows, caption=caption, notes=notes,
                               label=f"tab:{stem}", digits=digits), encoding="utf-8")
    return [md, tex]


# ----------------------------------------------------------------- reading tables back in


def read_csv_table(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """``(columns, rows)`` of a CSV file with a header line; cells stay strings."""
    with open(path, newline="", encoding="utf-8") as f:
        lines = [row for row in csv.reader(f) if row]
    if not lines:
        raise ValueError(f"{path} is empty")
    return lines[0], lines[1:]


def _split_row(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith(r"\|") else inner
    cells = re.split(r"(?<!\\)\|", inner)
    return [c.strip().replace(r"\|", "|") for c in cells]


_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def parse_markdown_tables(text: str) -> tuple[list[tuple[list[str], list[list[str]]]], list[str]]:
    """The pipe tables of a Markdown text and its other (non-empty) lines.

    Returns ``([(columns, rows), ...], other_lines)``; heading markers (``#``) and bold
    markers around a whole line are dropped from the other lines. Used to give a ``.tex`` twin
    to a Markdown table written without :func:`write_table`.
    """
    lines = text.splitlines()
    tables, other = [], []
    i = 0
    while i < len(lines):
        line = lines[i]
        if (line.lstrip().startswith("|") and i + 1 < len(lines)
                and _SEPARATOR.match(lines[i + 1].strip())):
            columns = _split_row(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                row = _split_row(lines[i])
                row = (row + [""] * len(columns))[: len(columns)]
                rows.append(row)
                i += 1
            tables.append((columns, rows))
            continue
        stripped = line.strip().lstrip("#").strip()
        if stripped.startswith("**") and stripped.endswith("**") and len(stripped) > 4:
            stripped = stripped[2:-2]
        if stripped:
            other.append(stripped)
        i += 1
    return tables, other
