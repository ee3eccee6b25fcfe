"""HTML pages (beautifulsoup4 with the lxml parser).

Scripts, styles and navigation are dropped; headings start sections; tables
become table sections with one ``헤더: 값`` line per row, except one-row or
one-column tables, which pages use for layout and which read better as text.

Limits (see :mod:`hanrag.ingest.parsers.budget`): BeautifulSoup's tree takes
about 1 KB per tag, so the tags are counted (and charged five budget nodes each)
before it is built.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from hanrag.errors import ParseError
from hanrag.ingest.parsers.base import ParsedDocument
from hanrag.ingest.parsers.budget import charge_markup, file_budget
from hanrag.ingest.parsers.dates import parse_date
from hanrag.ingest.parsers.sections import SectionBuilder, clean_text
from hanrag.ingest.parsers.text import decode_text

if TYPE_CHECKING:
    from bs4 import BeautifulSoup, Tag

_DROPPED_TAGS = ["script", "style", "nav", "noscript", "template", "iframe", "svg", "canvas", "head"]
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
# Elements that end a line of text; everything else is inline and joins its neighbours.
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "dd", "details", "dialog", "div", "dl", "dt",
        "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "li", "main", "ol",
        "p", "pre", "section", "summary", "ul", "tr", "td", "th", "caption",
    }
)  # fmt: skip
# <meta> names that carry a page's date, most specific (last change) first.
_DATE_META_NAMES = (
    "article:modified_time",
    "og:updated_time",
    "last-modified",
    "dcterms.modified",
    "article:published_time",
    "dcterms.created",
    "dc.date",
    "dcterms.date",
    "date",
)
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")
_DECLARED_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.IGNORECASE)


class HtmlParser:
    format = "html"
    extensions: tuple[str, ...] = (".html", ".htm", ".xhtml")

    def sniff(self, head: bytes, filename: str) -> bool:
        start = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        return start.startswith((b"<!doctype html", b"<html")) or (
            start.startswith((b"<?xml", b"<!--")) and b"<html" in start
        )

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        from bs4 import BeautifulSoup

        with file_budget(filename):
            markup = self._decode(data, filename)
            charge_markup(markup, tag_weight=5, what="HTML tags (x5) and attributes")
            return self._read(BeautifulSoup(markup, "lxml"), filename)

    def _read(self, soup: BeautifulSoup, filename: str) -> ParsedDocument:
        title = self._title(soup)
        date = self._date(soup)
        for tag in soup.find_all(_DROPPED_TAGS):
            tag.decompose()
        body = soup.body or soup
        builder = SectionBuilder()
        walker = _Walker(builder)
        walker.walk(body)
        walker.flush()
        sections = builder.build()
        if not sections:
            raise ParseError(f"{filename}: HTML page has no text", code="no_text")
        return ParsedDocument(sections=sections, format=self.format, title=title, date=date)

    @staticmethod
    def _decode(data: bytes, filename: str) -> str:
        declared = _DECLARED_CHARSET.search(data[:4096])
        if declared:
            encoding = declared.group(1).decode("ascii").lower()
            # Pages that say euc-kr routinely contain CP949-only syllables (똠, 햏).
            if encoding in ("euc-kr", "euckr", "ks_c_5601-1987", "ksc5601"):
                encoding = "cp949"
            try:
                return data.decode(encoding)
            except (LookupError, UnicodeDecodeError):
                pass  # a wrong declaration: detect as for any text file
        return decode_text(data, filename)[0]

    @staticmethod
    def _title(soup: BeautifulSoup) -> str | None:
        if soup.title is not None:
            title = clean_text(soup.title.get_text(" ")).replace("\n", " ")
            if title:
                return title
        h1 = soup.find("h1")
        if h1 is not None:
            return clean_text(h1.get_text(" ")).replace("\n", " ") or None
        return None

    @staticmethod
    def _date(soup: BeautifulSoup) -> datetime | None:
        found: dict[str, str] = {}
        for meta in soup.find_all("meta"):
            key = meta.get("property") or meta.get("name") or meta.get("http-equiv") or meta.get("itemprop")
            content = meta.get("content")
            if isinstance(key, str) and isinstance(content, str):
                found.setdefault(key.strip().lower(), content)
        for name in _DATE_META_NAMES:
            if name in found:
                parsed = parse_date(found[name])
                if parsed is not None:
                    return parsed
        return None


class _Walker:
    """Walks the DOM in order, feeding text, headings and tables to a SectionBuilder."""

    def __init__(self, builder: SectionBuilder) -> None:
        self._builder = builder
        self._buffer: list[str] = []

    def flush(self) -> None:
        # Block elements already end their lines; the blank lines between them carry no meaning.
        self._builder.add_text(_BLANK_LINES.sub("\n", "".join(self._buffer)))
        self._buffer = []

    def walk(self, node: Tag) -> None:
        from bs4 import Comment, NavigableString, Tag

        for child in node.children:
            if isinstance(child, Comment):
                continue
            if isinstance(child, NavigableString):
                # Source line breaks inside a paragraph are just spaces.
                self._buffer.append(re.sub(r"\s+", " ", str(child)))
                continue
            if not isinstance(child, Tag):
                continue
            name = child.name
            if name in _HEADINGS:
                self.flush()
                self._builder.add_heading(child.get_text(" "))
            elif name == "table":
                self.flush()
                self._table(child)
            elif name == "br":
                self._buffer.append("\n")
            elif name == "pre":
                self._buffer.append("\n" + child.get_text() + "\n")
            elif name in _BLOCKS:
                self._buffer.append("\n")
                if name == "li":
                    self._buffer.append(_list_marker(child))
                self.walk(child)
                self._buffer.append("\n")
            else:
                self.walk(child)

    def _table(self, table: Tag) -> None:
        # Rows of a nested table belong to the cell that holds it, not to this table.
        row_tags = [row for row in table.find_all("tr") if row.find_parent("table") is table]
        cell_tags = [row.find_all(("td", "th"), recursive=False) for row in row_tags]
        caption_tag = table.find("caption")
        caption = caption_tag.get_text(" ") if caption_tag is not None else None
        if len(row_tags) <= 1 or max((len(cells) for cells in cell_tags), default=0) <= 1:
            # A layout table (one row or one column, often the whole page): its cells hold ordinary
            # content, headings and paragraphs included, so they are walked like the rest of the page.
            if caption:
                self._buffer.append(f"\n{caption}\n")
            for cell in (cell for cells in cell_tags for cell in cells):
                self._buffer.append("\n")
                self.walk(cell)
                self._buffer.append("\n")
            self.flush()
            return
        rows: list[list[str]] = []
        for cells in cell_tags:
            texts: list[str] = []
            for cell in cells:
                text = clean_text(cell.get_text(" ")).replace("\n", " ")
                # A merged header cell names every column under it.
                texts.extend([text] * max(1, min(_int_attribute(cell.get("colspan")), 50)))
            if any(texts):
                rows.append(texts)
        self._builder.add_table(rows, caption=caption)


def _int_attribute(value: object) -> int:
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return 1
    return 1


def _list_marker(item: Tag) -> str:
    """``3. `` for the third item of an ordered list, ``- `` for any other list item."""
    parent = item.parent
    if parent is not None and parent.name == "ol":
        return f"{len(item.find_previous_siblings('li')) + 1}. "
    return "- "
