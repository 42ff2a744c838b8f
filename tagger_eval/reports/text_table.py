"""The one plain-text table renderer of the terminal output (leaderboard, comparison, metrics)."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], left_columns: int = 1) -> list[str]:
    """Columns padded to their widest cell, a dashed rule under the header; the first `left_columns` columns are
    left-aligned (names), the others right-aligned (numbers)."""
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if i < left_columns else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(line, widths, strict=True))).rstrip()
             for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def number(value: float | None, template: str = "{:.3f}") -> str:
    """A table cell for a number that may be missing."""
    return "-" if value is None else template.format(value)
