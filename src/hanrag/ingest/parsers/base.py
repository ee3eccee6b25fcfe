"""Parser port: bytes of one file in, text sections with structure out.

One module per format sits beside this file; ``registry.py`` picks the parser
by content sniffing first and the file extension second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

SectionKind = Literal["text", "table"]


@dataclass(slots=True)
class Section:
    """A run of text that shares one location in the source.

    ``page`` is 1-based (PDF pages, HWP sections are not pages and leave it None);
    ``sheet`` names the spreadsheet sheet. ``kind="table"`` marks text rendered
    from a table, which the chunker keeps whole where it fits.
    """

    text: str
    page: int | None = None
    sheet: str | None = None
    kind: SectionKind = "text"
    heading: str | None = None


@dataclass(slots=True)
class ParsedDocument:
    sections: list[Section]
    format: str
    title: str | None = None
    # Creation/modification date found inside the file's own metadata, if any.
    date: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections if s.text)


class Parser(Protocol):
    """Turns the bytes of one file into a :class:`ParsedDocument`.

    Implementations raise :class:`hanrag.errors.ParseError` with a stable code
    (``corrupt_file``, ``encrypted_file``, ``no_text`` ...) and never anything else
    for bad input.
    """

    format: str
    extensions: tuple[str, ...]

    def sniff(self, head: bytes, filename: str) -> bool:
        """True when the first bytes (up to 8 KiB) look like this format."""
        ...

    def parse(self, data: bytes, filename: str) -> ParsedDocument: ...
