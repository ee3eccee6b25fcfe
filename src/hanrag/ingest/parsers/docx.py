"""Word documents (.docx) via python-docx.

The body XML is walked in order (``w:p``, ``w:tbl`` and content controls'
``w:sdt``) so that a table stays where it was between the paragraphs around it;
python-docx's ``paragraphs`` and ``tables`` lists would separate them.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hanrag.errors import ParseError
from hanrag.ingest.parsers.base import ParsedDocument
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
        check_ooxml_package(data, filename, kind="DOCX", main_part="word/document.xml")
        from docx import Document
        from docx.table import Table

        try:
            document = Document(io.BytesIO(data))
        except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors... for broken parts
            raise ParseError(f"{filename}: not a valid DOCX file ({exc})", code="corrupt_file") from exc
        builder = SectionBuilder()
        first_heading: str | None = None
        for block in _iter_blocks(document):
            if isinstance(block, Table):
                builder.add_table(_table_rows(block))
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


def _table_rows(table: Table) -> list[list[str]]:
    rows: list[list[str]] = []
    for row in table.rows:
        # ``row.cells`` repeats a merged cell for each grid column it spans, which keeps values
        # under the right header.
        rows.append([clean_text(cell.text).replace("\n", " ") for cell in row.cells])
    return rows


def _core_date(modified: datetime | None, created: datetime | None) -> datetime | None:
    return modified or created
