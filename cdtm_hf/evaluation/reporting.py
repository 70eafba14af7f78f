"""Mean ± standard deviation and the one markdown-table renderer that every table of cdtm_hf goes through.

Used by the metrics (Table IV rows), the efficiency table (Table VII), the model cards, the experiment grids and the
demo, so that a number is formatted the same way wherever it appears.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

MISSING = "–"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of the values that are present.

    Missing values (`None`, NaN) are ignored. With no value both are NaN; with one value the std is NaN.
    """
    kept = [float(v) for v in values if not _is_missing(v)]
    if not kept:
        return math.nan, math.nan
    mean = sum(kept) / len(kept)
    if len(kept) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1))


def format_number(value: Any, digits: int = 2, scale: float = 1.0, suffix: str = "") -> str:
    """`value * scale` with `digits` decimals and a suffix; "–" for a missing value; non-numbers as `str`."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value * scale:.{digits}f}{suffix}"


def format_pct(fraction: Any, digits: int = 2, suffix: str = "") -> str:
    """A fraction in [0, 1] as a percentage number (0.9174 -> "91.74")."""
    return format_number(fraction, digits=digits, scale=100.0, suffix=suffix)


def format_mean_std(mean: float, std: float, digits: int = 2) -> str:
    """"91.74 ± 0.32"; the mean alone where the std is missing (one seed); "–" where nothing is."""
    if _is_missing(mean):
        return MISSING
    return f"{mean:.{digits}f}" if _is_missing(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def escape_cell(value: Any) -> str:
    """A table cell: `|` escaped, line breaks folded, missing values as "–"."""
    if _is_missing(value):
        return MISSING
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """A GitHub markdown table.

    Args:
        headers (`Sequence`): the column names.
        rows (`Iterable[Sequence]`): the rows; each has one cell per header (already formatted, or any value, which
            is shown with `str`; missing values as "–").
        align (`Sequence[str]`, *optional*): per column `"l"`, `"c"` or `"r"`; default left (`---`).

    Raises:
        `ValueError`: a row whose length differs from the header's, naming the row.
    """
    headers = [escape_cell(h) for h in headers]
    marks = {"l": "---", "c": ":-:", "r": "--:", "": "---"}
    if align is not None and len(align) != len(headers):
        raise ValueError(f"align has {len(align)} entries for {len(headers)} columns")
    rule = [marks[a] for a in align] if align is not None else ["---"] * len(headers)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    for i, row in enumerate(rows):
        cells = [escape_cell(c) for c in row]
        if len(cells) != len(headers):
            raise ValueError(f"table row {i} has {len(cells)} cells for {len(headers)} columns: {cells}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["MISSING", "escape_cell", "format_mean_std", "format_number", "format_pct", "markdown_table", "mean_std"]
