"""Excel workbooks (.xlsx, .xlsm) via openpyxl in read-only, values-only mode.

Every worksheet becomes table sections: the first non-empty row is the header and
each later row one ``헤더: 값`` line (see :mod:`tabular`), at most
:data:`~hanrag.ingest.parsers.tabular.MAX_ROWS_PER_SECTION` rows per section.
``data_only`` gives the values Excel last calculated rather than formulas,
which is what a reader of the sheet sees.
"""

from __future__ import annotations

import io
from typing import Any

from hanrag.errors import ParseError
from hanrag.ingest.parsers.base import ParsedDocument, Section
from hanrag.ingest.parsers.containers import check_ooxml_package
from hanrag.ingest.parsers.sections import clean_text
from hanrag.ingest.parsers.tabular import format_cell, table_sections


class XlsxParser:
    format = "xlsx"
    extensions: tuple[str, ...] = (".xlsx", ".xlsm")

    def sniff(self, head: bytes, filename: str) -> bool:
        # A zip container is told apart by the registry from its member names.
        return False

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        check_ooxml_package(data, filename, kind="XLSX", main_part="xl/workbook.xml")
        from openpyxl import load_workbook

        try:
            workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
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
