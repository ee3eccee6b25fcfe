"""Excel workbooks (.xlsx, .xlsm) via openpyxl in read-only, values-only mode.

Every worksheet becomes table sections: the first non-empty row is the header and
each later row one ``헤더: 값`` line (see :mod:`tabular`), at most
:data:`~hanrag.ingest.parsers.tabular.MAX_ROWS_PER_SECTION` rows per section.
``data_only`` gives the values Excel last calculated rather than formulas,
which is what a reader of the sheet sees.

Limits (see :mod:`hanrag.ingest.parsers.budget`): the archive guard checks the
package before openpyxl opens it, and counts every worksheet's ``row`` elements
(at most ``ingest.max_table_rows``, rows openpyxl would parse and skip included)
and the size of its widest row. openpyxl loads the workbook, styles and shared
strings whole, and keeps what a worksheet has outside its rows, so those are
charged as tree nodes before it starts; the rows themselves are streamed one at
a time, charged as they are read (rows and cells, empty ones included:
:func:`~hanrag.ingest.parsers.tabular.iter_row_lines`), and openpyxl reads the
package through a stream that stops it at the deadline. A declared sheet size
(``<dimension>``) is ignored.
"""

from __future__ import annotations

import re
from typing import Any

from hanrag.errors import ParseError
from hanrag.ingest.parsers.archive_guard import ArchiveReport, package_stream
from hanrag.ingest.parsers.base import ParsedDocument, Section
from hanrag.ingest.parsers.budget import ParseBudget, file_budget
from hanrag.ingest.parsers.containers import check_ooxml_package
from hanrag.ingest.parsers.sections import clean_text
from hanrag.ingest.parsers.tabular import format_cell, table_sections

# Worksheets are streamed row by row (and charged per row), not loaded as trees.
_WORKSHEET_PART = re.compile(r"^xl/worksheets/[^/]+\.xml$", re.IGNORECASE)
# openpyxl holds one row at a time, as a tree and then as a list of cells: Excel's widest row
# (16,384 cells) at about 8 XML nodes a cell.
MAX_ROW_NODES = 16_384 * 8


class XlsxParser:
    format = "xlsx"
    extensions: tuple[str, ...] = (".xlsx", ".xlsm")

    def sniff(self, head: bytes, filename: str) -> bool:
        # A zip container is told apart by the registry from its member names.
        return False

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        with file_budget(filename) as budget:
            report = check_ooxml_package(data, filename, kind="XLSX", main_part="xl/workbook.xml")
            _charge_package(report, budget)
            return self._read(data, filename)

    def _read(self, data: bytes, filename: str) -> ParsedDocument:
        from openpyxl import load_workbook

        try:
            workbook = load_workbook(package_stream(data, filename), read_only=True, data_only=True)
        except ParseError:
            raise
        except Exception as exc:  # openpyxl raises KeyError, ValueError, lxml errors... for broken parts
            raise ParseError(f"{filename}: not a valid XLSX file ({exc})", code="corrupt_file") from exc
        sections: list[Section] = []
        sheet_names: list[str] = []
        try:
            for sheet in workbook.worksheets:
                sheet_names.append(sheet.title)
                # Some writers store a wrong sheet size (e.g. A1:A1); read-only mode would trust it and
                # stop early, so let openpyxl find the size from the rows themselves.
                sheet.reset_dimensions()
                rows = (_row_values(row) for row in sheet.iter_rows())
                sections.extend(table_sections(rows, heading=sheet.title, sheet=sheet.title))
            properties = workbook.properties
        finally:
            workbook.close()
        if not sections:
            raise ParseError(f"{filename}: every sheet of the workbook is empty", code="no_text")
        title = clean_text(properties.title or "") if properties is not None else ""
        date = (properties.modified or properties.created) if properties is not None else None
        return ParsedDocument(
            sections=sections,
            format=self.format,
            title=title or None,
            date=date,
            metadata={"sheets": ", ".join(sheet_names)},
        )


def _charge_package(report: ArchiveReport, budget: ParseBudget) -> None:
    """Charge what openpyxl keeps in memory; refuse a row wider than Excel's before it is read."""
    kept = 0
    for name, stats in report.markup.items():
        if stats.widest_row > MAX_ROW_NODES:
            raise budget.too_complex(
                f"a row of {name} has more than {MAX_ROW_NODES:,} XML elements and attributes "
                "(wider than any Excel sheet)"
            )
        # A worksheet's rows are streamed; the rest of it, and every other part, is kept whole.
        kept += stats.nodes - stats.row_nodes if _WORKSHEET_PART.match(name) else stats.nodes
    budget.add_nodes(kept)


def _row_values(cells: tuple[Any, ...]) -> list[object]:
    """Cell values, with percentages written as Excel shows them (``15%``, not ``0.15``).

    openpyxl already turns date-formatted numbers into dates; percent is the one
    other number format whose raw value reads wrongly.
    """
    values: list[object] = []
    for cell in cells:
        value = cell.value
        number_format = getattr(cell, "number_format", None) or ""
        if isinstance(value, int | float) and not isinstance(value, bool) and number_format.endswith("%"):
            values.append(f"{format_cell(round(value * 100, 6))}%")
        else:
            values.append(value)
    return values
