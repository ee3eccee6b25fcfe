"""The per-file parsing budget: a deadline and caps on what one file may make a parser build.

Every parse runs inside :func:`file_budget` (the registry opens one per file).
Going over a limit fails that one file with ``ParseError`` code
``file_too_complex`` (``file_too_large`` for ``max_unpacked_mb``), which HTTP
answers with 422; the process and the other files go on. The limits are the
``ingest.*`` settings (:meth:`ParseLimits.from_settings`):

* ``max_parse_seconds``: a deadline, checked in every parser's loops (per row,
  paragraph, page, record, zip chunk) and on every read a library makes from
  a zip package (:func:`~hanrag.ingest.parsers.archive_guard.package_stream`);
* ``max_document_nodes``: XML elements plus attributes a parser may hold as a
  tree (python-docx, lxml for HWPX, openpyxl's workbook parts and what a
  worksheet has outside its rows), HWP records, HTML tags (five units each) and
  JSON values; one unit is about 200 bytes of memory. It is estimated from the
  bytes *before* the tree is built (:func:`count_markup_nodes`): a tree, once
  built, has already taken the memory;
* ``max_table_rows`` and ``max_table_cells``: table rows and cells visited,
  empty ones included (a sheet of a million empty rows is a million rows; openpyxl
  spends about 14 µs on each, and the archive guard counts a worksheet's row
  elements before openpyxl starts);
* ``max_text_chars``: text produced;
* ``max_unpacked_mb``: bytes unpacked from zip entries and HWP streams (with
  ``max_archive_entries`` and ``max_compression_ratio``, see
  :mod:`hanrag.ingest.parsers.archive_guard`).

Why a cooperative budget rather than parsing in a child process under
``RLIMIT_AS`` with a timeout. A worker process would give a hard ceiling
whatever a library does, but ``RLIMIT_AS`` limits *virtual* memory, which a
Python process with lxml, pypdfium2 and openpyxl maps far more of than it uses,
so the limit is either loose or kills normal files; every upload (up to
``max_file_mb``) and every parsed document would be copied through a pipe; one
worker serialises the server's concurrent uploads while a pool multiplies idle
memory; workers need respawning and shutting down with the engine, and tests
that patch a parser in-process would no longer see their patch; and macOS does
not enforce ``RLIMIT_AS``. Instead nothing that can grow reaches a library
unmeasured: zip entries are checked from the central directory, then really
inflated once with a bound (:mod:`~hanrag.ingest.parsers.archive_guard`); XML
trees are sized from their bytes before they are built; rows, cells, records,
paragraphs and text are counted as they are produced. The normal path pays one
extra inflate of each zip entry and a byte count over its XML: a few
milliseconds for an ordinary document. What this cannot do is interrupt C code
(lxml building a tree, PDFium decoding a page) or a library's own super-linear
loop between two checks; so every input to C code is bounded first, and the one
super-linear library path met so far, python-docx's merged-cell lookup, is not
used (see :mod:`hanrag.ingest.parsers.docx`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from hanrag.cancellation import raise_if_cancelled
from hanrag.errors import ParseError

if TYPE_CHECKING:
    from hanrag.ingest.parsers.archive_guard import ArchiveReport
    from hanrag.settings import IngestSettings

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """The limits of one file's parse; build it from settings with :meth:`from_settings`."""

    max_unpacked_bytes: int
    max_archive_entries: int
    max_compression_ratio: float
    max_nodes: int
    max_table_rows: int
    max_table_cells: int
    max_text_chars: int
    timeout_s: float

    @classmethod
    def from_settings(cls, ingest: IngestSettings) -> ParseLimits:
        return cls(
            max_unpacked_bytes=int(ingest.max_unpacked_mb * MB),
            max_archive_entries=ingest.max_archive_entries,
            max_compression_ratio=ingest.max_compression_ratio,
            max_nodes=ingest.max_document_nodes,
            max_table_rows=ingest.max_table_rows,
            max_table_cells=ingest.max_table_cells,
            max_text_chars=ingest.max_text_chars,
            timeout_s=ingest.max_parse_seconds,
        )


@lru_cache(maxsize=1)
def default_limits() -> ParseLimits:
    """The limits of the default settings (for parsers called without settings, as in tests)."""
    from hanrag.settings import IngestSettings

    return ParseLimits.from_settings(IngestSettings())


class ParseBudget:
    """What one file's parse has used so far; the ``add_*`` methods raise past a limit."""

    __slots__ = (
        "cells",
        "deadline",
        "filename",
        "limits",
        "nodes",
        "rows",
        "text_chars",
        "unpacked",
        "verified",
    )

    def __init__(self, filename: str, limits: ParseLimits) -> None:
        self.filename = filename
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout_s
        self.nodes = 0
        self.rows = 0
        self.cells = 0
        self.text_chars = 0
        self.unpacked = 0
        # (the bytes, what archive_guard found in them): a zip is inspected once per parse.
        self.verified: tuple[bytes, ArchiveReport] | None = None

    def too_complex(self, reason: str) -> ParseError:
        return ParseError(f"{self.filename}: {reason}", code="file_too_complex")

    def check_time(self) -> None:
        """Raise past the deadline, or ``WorkCancelled`` once the request the parse serves was given up."""
        raise_if_cancelled()
        if time.monotonic() > self.deadline:
            raise self.too_complex(
                f"parsing took longer than {self.limits.timeout_s:g} s "
                "(ingest.max_parse_seconds); the file is too complex to read"
            )

    def add_nodes(self, count: int, what: str = "XML elements and attributes") -> None:
        self.nodes += count
        if self.nodes > self.limits.max_nodes:
            raise self.too_complex(
                f"holds more than {self.limits.max_nodes:,} {what} (ingest.max_document_nodes)"
            )

    def add_row(self, cells: int) -> None:
        """One table row visited with ``cells`` cells (empty ones included)."""
        self.rows += 1
        if self.rows > self.limits.max_table_rows:
            raise self.too_complex(
                f"has more than {self.limits.max_table_rows:,} table rows, empty ones included "
                "(ingest.max_table_rows)"
            )
        self.cells += cells
        self.room_for_cells(0)
        self.check_time()

    def room_for_cells(self, count: int) -> None:
        """Raise unless ``count`` more cells fit (called before building a row that wide)."""
        if self.cells + count > self.limits.max_table_cells:
            raise self.too_complex(
                f"has more than {self.limits.max_table_cells:,} table cells, empty ones included "
                "(ingest.max_table_cells)"
            )

    def add_text(self, chars: int) -> None:
        self.text_chars += chars
        if self.text_chars > self.limits.max_text_chars:
            raise self.too_complex(
                f"yields more than {self.limits.max_text_chars:,} characters of text (ingest.max_text_chars)"
            )

    def add_unpacked(self, size: int) -> None:
        self.unpacked += size
        if self.unpacked > self.limits.max_unpacked_bytes:
            raise ParseError(
                f"{self.filename}: unpacks to more than {self.limits.max_unpacked_bytes // MB:,} MB "
                "(ingest.max_unpacked_mb)",
                code="file_too_large",
            )


_CURRENT: ContextVar[ParseBudget | None] = ContextVar("hanrag_parse_budget", default=None)


@contextmanager
def file_budget(filename: str, limits: ParseLimits | None = None) -> Iterator[ParseBudget]:
    """The budget of the parse in progress, or a new one (``limits`` or the default) for ``filename``.

    Nested calls share the outer budget, so the registry opens it once per file and
    a parser called on its own still gets one.
    """
    current = _CURRENT.get()
    if current is not None:
        yield current
        return
    budget = ParseBudget(filename, limits or default_limits())
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def active_budget() -> ParseBudget | None:
    """The budget of the parse in progress in this thread, if any (shared helpers charge it)."""
    return _CURRENT.get()


def count_markup_nodes(chunk: bytes) -> int:
    """An upper estimate of the elements plus attributes that ``chunk`` of XML/HTML makes in a tree.

    Every start tag, comment and processing instruction begins with ``<`` not
    followed by ``/``; every attribute has an ``=``. Counting bytes runs at memory
    speed, where a parse would build the very tree being sized. UTF-16 markup has
    the same bytes, with a zero beside each.
    """
    return chunk.count(b"<") - chunk.count(b"</") + chunk.count(b"=")


def charge_markup(
    text: str | bytes, *, tag_weight: int = 1, what: str = "XML elements and attributes"
) -> None:
    """Charge the active budget for markup about to be parsed into a tree.

    ``tag_weight`` is what one tag costs in budget units of about 200 bytes (an
    lxml element); BeautifulSoup's tags take about 1 KB each, so HTML charges 5.
    """
    budget = active_budget()
    if budget is None:
        return
    if isinstance(text, str):
        tags = text.count("<") - text.count("</")
        attributes = text.count("=")
    else:
        tags = text.count(b"<") - text.count(b"</")
        attributes = text.count(b"=")
    budget.add_nodes(tags * tag_weight + attributes, what)
