"""HWPX (Hangul's OWPML format, KS X 6101): a zip of XML parts, read with zipfile and lxml.

Library choice. We tried the pure-Python packages on PyPI against documents
written by ``python-hwpx``:

* ``python-hwpx`` (Apache-2.0) reads and writes HWPX and even HWP 5.0, but it
  is a document *editing* library (about 10 MB installed, its paragraph API
  leaves table cells out), far more than text extraction needs. We use it in
  the tests and in ``scripts/build_samples.py`` to *write* HWPX/HWP files.
* ``gethwp`` concatenates every ``hp:t`` of every part including
  ``header.xml``, so numbering templates (``^1.``, ``(^5)``) end up in the
  text, and it has no notion of tables or headings.
* ``hwplib-py`` 1.0.0 does not import (its ``hwp5.core.defs`` module is
  missing from the wheel) and has no HWPX reader worth the name.

The format itself is simple to read, so this module walks it directly:
``Contents/content.hpf`` gives the sections in reading order and the
title/dates, ``Contents/header.xml`` the style names (``개요 N`` styles and
outline paragraph shapes mark headings), and each ``Contents/section*.xml``
holds ``hp:p`` paragraphs whose ``hp:run``/``hp:t`` carry the text and whose
``hp:tbl`` carry tables (cells addressed by ``hp:cellAddr``). Elements are
matched by local name, so both the 2011 namespaces and older ones work.

Limits (see :mod:`hanrag.ingest.parsers.budget`): the archive guard checks the
package first, the estimated size of every XML tree is charged before any is
built, parts are read with a bound, and the deadline is checked per paragraph.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from hanrag.errors import ParseError
from hanrag.ingest.parsers.archive_guard import inspect_zip, read_entry
from hanrag.ingest.parsers.base import ParsedDocument
from hanrag.ingest.parsers.budget import ParseBudget, file_budget
from hanrag.ingest.parsers.containers import ZIP_ERRORS
from hanrag.ingest.parsers.dates import parse_date
from hanrag.ingest.parsers.sections import SectionBuilder, clean_text
from hanrag.ingest.parsers.tabular import rows_from_cells

if TYPE_CHECKING:
    from lxml import etree

HWPX_MIMETYPE = b"application/hwp+zip"
_SECTION_PART = re.compile(r"^Contents/section(\d+)\.xml$", re.IGNORECASE)
_OUTLINE_STYLE = re.compile(r"^(?:개요|outline)\s*\d+$", re.IGNORECASE)
# Page numbers and hidden notes say nothing about the content. Headers and footers are
# read once each (where they are defined), as the HWP parser reads them.
_SKIPPED_CONTROLS = frozenset({"pageNum", "pageHiding", "hiddenComment"})
# Run children that are not objects standing between words: section and column settings,
# fields (hyperlinks start and end inside words), composed characters and ruby text.
_IN_WORD = frozenset({"t", "secPr", "ctrl", "compose", "dutmal"})
_INLINE_CHARACTERS = {"tab": "\t", "lineBreak": "\n", "nbSpace": " ", "fwSpace": " ", "hyphen": "-"}


def _local(element: etree._Element) -> str:
    tag = element.tag
    if not isinstance(tag, str):  # comments and processing instructions
        return ""
    return tag.rsplit("}", 1)[-1]


class HwpxParser:
    format = "hwpx"
    extensions: tuple[str, ...] = (".hwpx",)

    def sniff(self, head: bytes, filename: str) -> bool:
        # The first zip member is an uncompressed ``mimetype`` file, as in EPUB and ODF.
        return head.startswith(b"PK\x03\x04") and HWPX_MIMETYPE in head[:200]

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        with file_budget(filename) as budget:
            report = inspect_zip(data, filename, kind="HWPX")
            # Every part this parser reads becomes a tree; a document's other parts are small.
            budget.add_nodes(report.nodes())
            return self._read(data, filename, budget)

    def _read(self, data: bytes, filename: str, budget: ParseBudget) -> ParsedDocument:
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except ZIP_ERRORS as exc:
            raise ParseError(
                f"{filename}: not a valid HWPX file (damaged zip: {exc})", code="corrupt_file"
            ) from exc
        with archive:
            reader = _PartReader(archive, filename)
            manifest = reader.text("META-INF/manifest.xml")
            if manifest is not None and "encryption-data" in manifest:
                raise ParseError(
                    f"{filename}: HWPX document is password-protected; "
                    "remove the password and upload it again",
                    code="encrypted_file",
                )
            package = reader.xml("Contents/content.hpf")
            section_parts = _section_parts(archive, package)
            if not section_parts:
                raise ParseError(
                    f"{filename}: not a valid HWPX file (no Contents/section*.xml)", code="corrupt_file"
                )
            header = reader.xml("Contents/header.xml")
            styles = _HeadingStyles(header)
            builder = SectionBuilder()
            walker = _SectionWalker(builder, styles, budget)
            for part in section_parts:
                section = reader.xml(part)
                if section is not None:
                    walker.walk_paragraphs(section)
        sections = builder.build()
        if not sections:
            raise ParseError(f"{filename}: HWPX document has no text", code="no_text")
        title, date = _package_metadata(package)
        return ParsedDocument(
            sections=sections, format=self.format, title=title or walker.first_heading, date=date
        )


class _PartReader:
    """Reads zip members as text or parsed XML, with size limits and errors mapped to ParseError."""

    def __init__(self, archive: zipfile.ZipFile, filename: str) -> None:
        self._archive = archive
        self._filename = filename
        self._names = {info.filename: info for info in archive.infolist()}

    def raw(self, name: str) -> bytes | None:
        info = self._names.get(name)
        if info is None:
            return None
        try:
            return read_entry(self._archive, info, self._filename)
        except (*ZIP_ERRORS, RuntimeError, zlib.error) as exc:
            # RuntimeError is zipfile's "encrypted member" error.
            raise ParseError(
                f"{self._filename}: cannot read part {name} ({exc})", code="corrupt_file"
            ) from exc

    def text(self, name: str) -> str | None:
        raw = self.raw(name)
        return None if raw is None else raw.decode("utf-8", errors="replace")

    def xml(self, name: str) -> etree._Element | None:
        from lxml import etree

        raw = self.raw(name)
        if raw is None:
            return None
        # No entity expansion and no network: the XML comes from an uploaded file.
        parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
        try:
            return etree.fromstring(raw, parser)
        except etree.XMLSyntaxError as exc:
            raise ParseError(
                f"{self._filename}: part {name} is not well-formed XML ({exc})", code="corrupt_file"
            ) from exc


def _section_parts(archive: zipfile.ZipFile, package: etree._Element | None) -> list[str]:
    """Section part names in reading order: the package spine if there is one, else by number."""
    names = set(archive.namelist())
    if package is not None:
        hrefs = {item.get("id"): item.get("href", "") for item in package.iter() if _local(item) == "item"}
        ordered: list[str] = []
        for itemref in package.iter():
            if _local(itemref) != "itemref":
                continue
            href = hrefs.get(itemref.get("idref"), "")
            name = href if href in names else f"Contents/{href}"
            if name in names and _SECTION_PART.match(name) and name not in ordered:
                ordered.append(name)
        if ordered:
            return ordered
    numbered = [(int(match.group(1)), name) for name in names if (match := _SECTION_PART.match(name))]
    return [name for _, name in sorted(numbered)]


def _package_metadata(package: etree._Element | None) -> tuple[str | None, datetime | None]:
    if package is None:
        return None, None
    title: str | None = None
    dates: dict[str, str] = {}
    for element in package.iter():
        name = _local(element)
        if name == "title" and element.text and element.text.strip():
            title = clean_text(element.text).replace("\n", " ")
        elif name == "meta" and element.text:
            dates[element.get("name", "")] = element.text
    date = parse_date(dates.get("ModifiedDate")) or parse_date(dates.get("CreatedDate"))
    return title, date


class _HeadingStyles:
    """Which paragraphs are headings: an outline style (``개요 1``) or an outline paragraph shape."""

    def __init__(self, header: etree._Element | None) -> None:
        self.style_ids: set[str] = set()
        self.para_shape_ids: set[str] = set()
        if header is None:
            return
        for element in header.iter():
            name = _local(element)
            if name == "style":
                names = (element.get("name", ""), element.get("engName", ""))
                if any(_OUTLINE_STYLE.match(value.strip()) for value in names):
                    self.style_ids.add(element.get("id", ""))
            elif name == "paraPr":
                for child in element.iter():
                    if _local(child) == "heading" and child.get("type") == "OUTLINE":
                        self.para_shape_ids.add(element.get("id", ""))

    def is_heading(self, paragraph: etree._Element) -> bool:
        return (
            paragraph.get("styleIDRef") in self.style_ids
            or paragraph.get("paraPrIDRef") in self.para_shape_ids
        )


class _SectionWalker:
    """Feeds one section part's paragraphs and tables, in order, to a SectionBuilder."""

    def __init__(self, builder: SectionBuilder, styles: _HeadingStyles, budget: ParseBudget) -> None:
        self._builder = builder
        self._styles = styles
        self._budget = budget
        self.first_heading: str | None = None

    def walk_paragraphs(self, container: etree._Element) -> None:
        for child in container:
            if _local(child) == "p":
                self._budget.check_time()
                self._paragraph(child)

    def _paragraph(self, paragraph: etree._Element) -> None:
        text: list[str] = []
        # Text boxes and footnotes anchored in this paragraph: read after the paragraph itself.
        nested: list[etree._Element] = []
        for run in paragraph:
            if _local(run) != "run":
                continue
            for child in run:
                name = _local(child)
                if name == "t":
                    text.append(_run_text(child))
                elif name == "tbl":
                    self._emit(paragraph, "".join(text))
                    text = []
                    self._table(child)
                elif name == "ctrl":
                    found = [
                        sub for control in child if _local(control) not in _SKIPPED_CONTROLS
                        for sub in _sub_lists(control)
                    ]  # fmt: skip
                    if found:  # a footnote or header anchored here stands between words
                        text.append(" ")
                    nested.extend(found)
                else:
                    if name not in _IN_WORD:
                        # A picture, shape or equation between two words keeps them apart.
                        text.append(" ")
                    nested.extend(_sub_lists(child))
        self._emit(paragraph, "".join(text))
        for sub_list in nested:
            self.walk_paragraphs(sub_list)

    def _emit(self, paragraph: etree._Element, text: str) -> None:
        if not text.strip():
            return
        if self._styles.is_heading(paragraph):
            self._builder.add_heading(text)
            if self.first_heading is None:
                self.first_heading = clean_text(text).replace("\n", " ")
        else:
            self._builder.add_text(text)

    def _table(self, table: etree._Element) -> None:
        cells: list[tuple[int, int, int, str]] = []
        for row_index, row in enumerate(child for child in table if _local(child) == "tr"):
            for column_index, cell in enumerate(child for child in row if _local(child) == "tc"):
                address = _first_child(cell, "cellAddr")
                span = _first_child(cell, "cellSpan")
                cells.append(
                    (
                        _int(address.get("rowAddr") if address is not None else None, row_index),
                        _int(address.get("colAddr") if address is not None else None, column_index),
                        _int(span.get("colSpan") if span is not None else None, 1),
                        _cell_text(cell),
                    )
                )
        self._builder.add_table(rows_from_cells(cells))


def _first_child(element: etree._Element, name: str) -> etree._Element | None:
    return next((child for child in element if _local(child) == name), None)


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _run_text(element: etree._Element) -> str:
    """The text of an ``hp:t``: its own text plus inline tabs/line breaks and what follows them."""
    parts = [element.text or ""]
    for child in element:
        parts.append(_INLINE_CHARACTERS.get(_local(child), ""))
        parts.append(child.tail or "")
    return "".join(parts)


def _sub_lists(element: etree._Element) -> Iterator[etree._Element]:
    """The outermost ``hp:subList`` paragraph containers under a drawing object or control.

    Sub-lists inside those are reached when their paragraphs are walked, so they are not yielded here.
    """
    for child in element:
        if _local(child) == "subList":
            yield child
        else:
            yield from _sub_lists(child)


def _cell_text(cell: etree._Element) -> str:
    # Everything in the cell, nested tables included, reads as one line of the row.
    texts = [_run_text(element) for element in cell.iter() if _local(element) == "t"]
    return clean_text(" ".join(texts)).replace("\n", " ")
