"""One way to turn table rows into text, shared by XLSX, CSV, DOCX, HTML, HWP(X) and Markdown tables.

A data row becomes one line ``헤더1: 값1, 헤더2: 값2``: every line carries its own
column names, so a chunk cut anywhere in a long table still says what each value
means, and a question such as "AP-500 가격" matches the line that holds both.
Empty cells are skipped so sparse sheets do not turn into runs of ``열: ,``.

Every row is charged to the parse's budget here (rows and cells visited, empty
ones included, and the text made), which is what stops a sheet of a million
empty rows: :func:`iter_row_lines` pulls rows one at a time from a lazy source
such as openpyxl's read-only worksheet.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, time
from decimal import Decimal

from hanrag.ingest.parsers.base import Section
from hanrag.ingest.parsers.budget import active_budget

# A table section holds at most this many rows; a chunker keeps table sections
# whole where it can, so this bounds the size of the text it has to keep together.
MAX_ROWS_PER_SECTION = 50

_WHITESPACE = re.compile(r"\s+")


def format_cell(value: object) -> str:
    """A cell value as people write it: dates ``2024-01-05``, ``3`` not ``3.0``, one line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "예" if value else "아니오"
    if isinstance(value, datetime):
        if value.hour == value.minute == value.second == 0 and value.microsecond == 0:
            return value.strftime("%Y-%m-%d")
        if value.second == 0:
            return value.strftime("%Y-%m-%d %H:%M")
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, time):
        return value.strftime("%H:%M") if value.second == 0 else value.strftime("%H:%M:%S")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, Decimal):
        return _format_float(float(value)) if value.is_finite() else str(value)
    # Cells may hold line breaks; a row must stay one line.
    return _WHITESPACE.sub(" ", str(value)).strip()


def _format_float(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return ""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    # Spreadsheet arithmetic leaves binary noise (0.1 + 0.2); ten decimals is more than any sheet shows.
    return repr(round(value, 10))


def render_row(header: Sequence[str], values: Sequence[str]) -> str:
    """``헤더1: 값1, 헤더2: 값2``; a value whose column has no header name stands alone."""
    parts: list[str] = []
    for index, value in enumerate(values):
        if not value:
            continue
        name = header[index] if index < len(header) else ""
        parts.append(f"{name}: {value}" if name else value)
    return ", ".join(parts)


def iter_row_lines(rows: Iterable[Sequence[object]]) -> Iterator[str]:
    """Rendered data rows of one table; the first row with any value is the header.

    A table that is nothing but its header row yields the header's values as one
    line, so that text is not lost.
    """
    budget = active_budget()
    header: list[str] | None = None
    emitted = False
    for raw in rows:
        if budget is not None:
            budget.add_row(len(raw))
        cells = [format_cell(value) for value in raw]
        if not any(cells):
            continue
        if header is None:
            header = cells
            continue
        line = render_row(header, cells)
        if line:
            emitted = True
            if budget is not None:
                budget.add_text(len(line))
            yield line
    if header is not None and not emitted:
        yield " | ".join(cell for cell in header if cell)


def chunk_lines(lines: Iterable[str], size: int = MAX_ROWS_PER_SECTION) -> Iterator[list[str]]:
    """Consecutive groups of at most ``size`` lines."""
    group: list[str] = []
    for line in lines:
        group.append(line)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group


def table_sections(
    rows: Iterable[Sequence[object]],
    *,
    heading: str | None = None,
    sheet: str | None = None,
    page: int | None = None,
) -> list[Section]:
    """A table as ``kind="table"`` sections of at most :data:`MAX_ROWS_PER_SECTION` rows each."""
    return [
        Section(text="\n".join(group), kind="table", heading=heading, sheet=sheet, page=page)
        for group in chunk_lines(iter_row_lines(rows))
    ]


def rows_from_cells(cells: Iterable[tuple[int, int, int, str]]) -> list[list[str]]:
    """Rows of a table given as ``(row, column, column span, text)`` cells (HWP, HWPX).

    A cell spanning several columns fills each of them, so the values of later
    rows line up with the header cell above them.
    """
    budget = active_budget()
    grid: dict[int, dict[int, str]] = {}
    for row, column, span, text in cells:
        target = grid.setdefault(row, {})
        for offset in range(max(1, min(span, 256))):
            target.setdefault(column + offset, text)
    rows: list[list[str]] = []
    total = 0
    for row in sorted(grid):
        columns = grid[row]
        width = max(columns) + 1
        total += width
        if budget is not None:
            # A cell address far to the right (the file says where each cell is) would make a
            # row millions of cells wide: check before building it.
            budget.room_for_cells(total)
        rows.append([columns.get(column, "") for column in range(width)])
    return rows
