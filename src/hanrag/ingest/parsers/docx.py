"""Word documents (.docx) via python-docx.

The body XML is walked in order (``w:p``, ``w:tbl`` and content controls'
``w:sdt``) so that a table stays where it was between the paragraphs around it;
python-docx's ``paragraphs`` and ``tables`` lists would separate them.

Limits (see :mod:`hanrag.ingest.parsers.budget`): the archive guard checks the
package before python-docx opens it, and python-docx parses every XML part into
a tree at once, so the estimated size of those trees is charged before
``Document()`` is called. Table rows are read from the XML here rather than with
python-docx's ``_Row.cells``: that one repeats a cell once per grid column its
``w:gridSpan`` claims (any number a file writes) and finds each vertically merged
cell by walking up the table with XPath queries, a quadratic walk that also
recurses once per merged row; this reading is linear and gives the same rows (a
merge with no cell above it, where python-docx raises, reads as its own cell).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hanrag.errors import ParseError
from hanrag.ingest.parsers.archive_guard import package_stream
from hanrag.ingest.parsers.base import ParsedDocument
from hanrag.ingest.parsers.budget import ParseBudget, file_budget
from hanrag.ingest.parsers.containers import check_ooxml_package
from hanrag.ingest.parsers.sections import SectionBuilder, clean_text

if TYPE_CHECKING:
    from docx.document import Document as DocxDocument
    from docx.table import Table
    from docx.text.paragraph import Paragraph

# Built-in heading styles are stored under their English names whatever the
# language of Word that wrote the file; "제목 N" covers custom Korean ones.
_HEADING_STYLE = re.compile(r"^(?:heading|제목)\s*\d|^title$|^subtitle$", re.IGNORECASE)


class DocxParser:
    format = "docx"
    extensions: tuple[str, ...] = (".docx",)

    def sniff(self, head: bytes, filename: str) -> bool:
        # A zip container is told apart by the registry from its member names.
        return False

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        with file_budget(filename) as budget:
            report = check_ooxml_package(data, filename, kind="DOCX", main_part="word/document.xml")
            # python-docx parses every XML part into a tree as it opens the package.
            budget.add_nodes(report.nodes())
            return self._read(data, filename, budget)

    def _read(self, data: bytes, filename: str, budget: ParseBudget) -> ParsedDocument:
        from docx import Document
        from docx.table import Table

        try:
            document = Document(package_stream(data, filename))
        except ParseError:
            raise
        except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors... for broken parts
            raise ParseError(f"{filename}: not a valid DOCX file ({exc})", code="corrupt_file") from exc
        builder = SectionBuilder()
        first_heading: str | None = None
        for block in _iter_blocks(document):
            budget.check_time()
            if isinstance(block, Table):
                builder.add_table(_table_rows(block, budget))
                continue
            text = block.text
            if not text.strip():
                continue
            if _is_heading(block):
                builder.add_heading(text)
                first_heading = first_heading or clean_text(text).replace("\n", " ")
            else:
                builder.add_text(text)
        sections = builder.build()
        if not sections:
            raise ParseError(f"{filename}: DOCX document has no text", code="no_text")
        properties = document.core_properties
        title = clean_text(properties.title or "") or first_heading
        return ParsedDocument(
            sections=sections,
            format=self.format,
            title=title or None,
            date=_core_date(properties.modified, properties.created),
            metadata={"author": properties.author} if properties.author else {},
        )


def _iter_blocks(document: DocxDocument) -> Iterator[Paragraph | Table]:
    from docx.oxml.ns import qn
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    paragraph_tag, table_tag, sdt_tag, sdt_content_tag = (
        qn("w:p"),
        qn("w:tbl"),
        qn("w:sdt"),
        qn("w:sdtContent"),
    )
    body = document.element.body

    def walk(parent: Any) -> Iterator[Paragraph | Table]:
        for child in parent.iterchildren():
            if child.tag == paragraph_tag:
                yield Paragraph(child, document)
            elif child.tag == table_tag:
                yield Table(child, document)
            elif child.tag == sdt_tag:
                # A content control (e.g. a form field block) wraps ordinary paragraphs and tables.
                for content in child.iterchildren(sdt_content_tag):
                    yield from walk(content)

    yield from walk(body)


def _is_heading(paragraph: Paragraph) -> bool:
    from docx.oxml.ns import qn

    style = paragraph.style
    if style is not None and style.name and _HEADING_STYLE.match(style.name):
        return True
    # Direct outline levels (set without a heading style) mark headings too; level 9 means body text.
    properties = paragraph._p.pPr
    if properties is not None:
        level = properties.find(qn("w:outlineLvl"))
        if level is not None and level.get(qn("w:val")) not in (None, "9"):
            return True
    return False


def _table_rows(table: Table, budget: ParseBudget) -> Iterator[list[str]]:
    """The rows of a table as python-docx's ``row.cells`` would give them, in linear time.

    A cell spanning N grid columns is repeated N times, which keeps values under the
    right header; a vertically merged cell (``w:vMerge`` continue) repeats the cell it
    continues from the row above. Each row's width is checked against the budget
    before the row is built.
    """
    from docx.table import _Cell

    # Grid offset -> (text, span) of the cells of the previous row, merged ones resolved.
    above: dict[int, tuple[str, int]] = {}
    for tr in table._tbl.tr_lst:
        row: list[str] = []
        current: dict[int, tuple[str, int]] = {}
        offset = tr.grid_before
        for tc in tr.tc_lst:
            span = tc.grid_span
            if tc.vMerge == "continue" and offset in above:
                text, repeat = above[offset]
            else:
                text, repeat = clean_text(_Cell(tc, table).text).replace("\n", " "), span
            budget.room_for_cells(len(row) + max(0, repeat))
            row.extend([text] * repeat)
            current[offset] = (text, repeat)
            offset += span
        above = current
        yield row


def _core_date(modified: datetime | None, created: datetime | None) -> datetime | None:
    return modified or created
