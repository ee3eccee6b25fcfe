"""The one zip-bomb guard for every zip container: DOCX, XLSX, HWPX (PPTX, ODF... if they come) and any upload that is a zip.

:func:`inspect_zip` runs before python-docx, openpyxl or lxml unpack anything,
in two steps.

1. From the end-of-central-directory record and the central directory (which
   ``zipfile`` reads without unpacking): at most ``max_archive_entries``
   entries (counted from the end record before ``zipfile`` makes an object per
   entry, and again after); only stored or deflated entries (the only methods
   Office and Hangul write); no encrypted entry; no entry and no archive whose
   declared size is more than ``max_compression_ratio`` times its compressed
   size (entries and archives under :data:`RATIO_FLOOR_BYTES` unpacked are
   exempt: small XML parts legitimately compress 100:1); no entries whose
   compressed data overlap (the "non-recursive" zip bomb); a declared total of
   at most ``max_unpacked_mb``.
2. Then every entry is really inflated once, 64 KiB at a time, its output
   counted and dropped. Declared sizes are not trusted: ``zipfile``'s ``read()``
   asks zlib for up to 2 GiB in one call and only then cuts the output to the
   declared size, so an entry that declares 1 KB and inflates to 1 GB costs a
   library 1 GB. An entry that inflates past what it declares fails the file
   here. While inflating, markup entries (those that start as XML does) are
   sized (:class:`MarkupStats`) so that parsers can refuse a tree before it is
   built, and XML entity declarations (never in OOXML or OWPML; the heart of
   "billion laughs") are refused.

After that a library can unpack only what was measured. The libraries read the
package through :func:`package_stream`, which checks the parse's deadline on
every read, so even a library's own loop over a streamed part (openpyxl's
worksheets) stops at ``max_parse_seconds``; our own reads (:func:`read_entry`)
are bounded too. Nested archives are never opened: a zip inside a document is
only bytes to every parser here.

Real files are far from the defaults: documents have tens to a few hundred
entries; their parts pack 4-45:1 (the samples, a 3,000-paragraph Word file, a
100,000-row sheet), the most uniform content measured, a blank 30,000-row Word
table, 150:1, while a bomb's repeated empty element packs 500-1,000:1. The zip
layout is read with ``zipfile`` and inflated with ``zlib``, both from the
standard library; the checks themselves are written here because the zip-bomb
packages on PyPI (``safezip``, ``defusezip``) are young, aim at extracting to
disk, and would not size the XML a parser is about to load.
"""

from __future__ import annotations

import codecs
import io
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from hanrag.errors import ParseError
from hanrag.ingest.parsers.budget import ParseBudget, count_markup_nodes, file_budget

# What zipfile raises for a damaged archive; NotImplementedError is its answer to an
# unknown "version needed" or compression method, which a flipped byte produces as well.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, ValueError, EOFError)
# Entries (and archives) that unpack to less than this are not held to the compression ratio.
RATIO_FLOOR_BYTES = 1024 * 1024
# A central directory entry is 46 bytes plus the name and extra fields; Office's are about 100.
_MAX_DIRECTORY_BYTES_PER_ENTRY = 256
_INFLATE_CHUNK = 64 * 1024
_END_RECORD = b"PK\x05\x06"
_END_RECORD_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END_RECORD = b"PK\x06\x06"
_LOCAL_HEADER = b"PK\x03\x04"
_LOCAL_HEADER_SIZE = 30
_ENTITY_MARK = b"<!ENTITY"
# Start and end of spreadsheet rows (SpreadsheetML ``row`` in ``sheetData``), with any prefix.
_ROW_MARK = re.compile(rb"<(/?)(?:[A-Za-z_][\w.\-]{0,31}:)?(row|sheetData)(?=[\s/>])")
_ASCII_WHITESPACE = b" \t\r\n"
_UTF8_BOM = b"\xef\xbb\xbf"
# XML in UTF-32 (with or without a byte order mark) or EBCDIC: parsers read it, no Office or
# Hangul program writes it, and it would have to be decoded to be sized.
_REFUSED_XML_STARTS = (
    b"\x00\x00\xfe\xff",
    b"\xff\xfe\x00\x00",
    b"\x00\x00\x00<",
    b"<\x00\x00\x00",
    b"\x4c\x6f\xa7\x94",
)


@dataclass(slots=True)
class MarkupStats:
    """What one XML entry would make in a parser: estimated nodes, and its spreadsheet rows.

    ``nodes`` estimates elements plus attributes (see
    :func:`~hanrag.ingest.parsers.budget.count_markup_nodes`); ``rows`` counts
    ``row`` elements, ``row_nodes`` the nodes inside them and ``widest_row`` the
    most in one row: a streaming reader holds one row at a time, everything
    else of a part it keeps.
    """

    nodes: int = 0
    rows: int = 0
    row_nodes: int = 0
    widest_row: int = 0


@dataclass(frozen=True, slots=True)
class ArchiveReport:
    """What a zip really holds: entry count, bytes unpacked and the XML of each markup entry."""

    entries: int
    unpacked_bytes: int
    markup: dict[str, MarkupStats] = field(default_factory=dict)

    def nodes(self) -> int:
        """Estimated XML elements plus attributes of all markup entries together."""
        return sum(stats.nodes for stats in self.markup.values())


def inspect_zip(data: bytes, filename: str, *, kind: str = "zip") -> ArchiveReport:
    """Check a zip container against the limits of the parse in progress (see the module docstring).

    Raises ``ParseError`` with ``file_too_complex`` (bomb-like), ``file_too_large``
    (honestly too much content), ``corrupt_file``, ``encrypted_file`` or
    ``unsupported_format``. A second call on the same bytes in the same parse
    returns the first answer. ``kind`` names the format in messages (``DOCX``).
    """
    with file_budget(filename) as budget:
        if budget.verified is not None and budget.verified[0] is data:
            return budget.verified[1]
        _check_end_record(data, budget)
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                infos = archive.infolist()
        except ZIP_ERRORS as exc:
            raise ParseError(
                f"{filename}: not a valid {kind} file (damaged zip: {exc})", code="corrupt_file"
            ) from exc
        _check_directory(infos, len(data), budget)
        markup: dict[str, MarkupStats] = {}
        unpacked = 0
        rows = 0
        for info in infos:
            budget.check_time()
            size, stats = _inflate_entry(data, info, budget, rows)
            unpacked += size
            if stats is not None:
                rows += stats.rows
                markup[info.filename] = stats
        report = ArchiveReport(entries=len(infos), unpacked_bytes=unpacked, markup=markup)
        budget.verified = (data, report)
        return report


class _MeteredStream(io.BytesIO):
    """A package's bytes for a library to open; every read first checks the parse's deadline."""

    def __init__(self, data: bytes, budget: ParseBudget) -> None:
        super().__init__(data)
        self._budget = budget

    def read(self, size: int | None = -1, /) -> bytes:
        self._budget.check_time()
        return super().read(size)


def package_stream(data: bytes, filename: str) -> io.BytesIO:
    """``data`` as a file for python-docx or openpyxl: reads fail ``file_too_complex`` past the deadline."""
    with file_budget(filename) as budget:
        return _MeteredStream(data, budget)


def read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, filename: str) -> bytes:
    """An entry's bytes, reading at most its declared size (checked by :func:`inspect_zip`) plus one."""
    with archive.open(info) as handle:
        raw = handle.read(info.file_size + 1)
    if len(raw) > info.file_size:
        with file_budget(filename) as budget:
            raise budget.too_complex(f"zip entry {info.filename} unpacks to more than its declared size")
    return raw


def _check_end_record(data: bytes, budget: ParseBudget) -> None:
    """Entry count and central directory size from the end record, before zipfile reads the directory.

    ``zipfile`` walks the whole central directory and makes an object per entry;
    100,000 entries would cost that before any count could be checked.
    """
    position = data.rfind(_END_RECORD, max(0, len(data) - _END_RECORD_SIZE - 0xFFFF))
    if position < 0 or position + _END_RECORD_SIZE > len(data):
        return  # not a readable zip: zipfile says so in its own words
    entries, directory_size = struct.unpack_from("<2xHI", data, position + 8)
    locator = position - 20
    if locator >= 0 and data[locator : locator + 4] == _ZIP64_LOCATOR:
        record = locator - 56
        if record >= 0 and data[record : record + 4] == _ZIP64_END_RECORD:
            entries, directory_size = struct.unpack_from("<QQ", data, record + 32)
    limits = budget.limits
    if entries > limits.max_archive_entries or directory_size > max(
        64 * 1024, limits.max_archive_entries * _MAX_DIRECTORY_BYTES_PER_ENTRY
    ):
        raise budget.too_complex(
            f"zip container has more than {limits.max_archive_entries:,} entries (ingest.max_archive_entries)"
        )


def _check_directory(infos: list[zipfile.ZipInfo], archive_size: int, budget: ParseBudget) -> None:
    limits = budget.limits
    if len(infos) > limits.max_archive_entries:
        raise budget.too_complex(
            f"zip container has more than {limits.max_archive_entries:,} entries (ingest.max_archive_entries)"
        )
    declared = 0
    compressed = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise ParseError(
                f"{budget.filename}: zip entry {info.filename} is encrypted; "
                "remove the password and upload it again",
                code="encrypted_file",
            )
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ParseError(
                f"{budget.filename}: zip entry {info.filename} uses compression method {info.compress_type}, "
                "which Office and Hangul files never use",
                code="unsupported_format",
            )
        if _too_compressed(info.file_size, info.compress_size, limits.max_compression_ratio):
            raise budget.too_complex(
                f"zip entry {info.filename} unpacks {info.file_size / max(1, info.compress_size):,.0f} times "
                f"its packed size (more than {limits.max_compression_ratio:g}:1, ingest.max_compression_ratio): "
                "a zip bomb"
            )
        declared += info.file_size
        compressed += info.compress_size
    if compressed > archive_size:
        raise budget.too_complex("zip entries share their compressed data (an overlapping-entry zip bomb)")
    if _too_compressed(declared, archive_size, limits.max_compression_ratio):
        raise budget.too_complex(
            f"zip container unpacks {declared / max(1, archive_size):,.0f} times its size (more than "
            f"{limits.max_compression_ratio:g}:1, ingest.max_compression_ratio): a zip bomb"
        )
    if declared > limits.max_unpacked_bytes:
        raise ParseError(
            f"{budget.filename}: unpacks to {declared:,} bytes, more than the "
            f"{limits.max_unpacked_bytes:,}-byte limit (ingest.max_unpacked_mb)",
            code="file_too_large",
        )


def _too_compressed(unpacked: int, packed: int, ratio: float) -> bool:
    return unpacked > RATIO_FLOOR_BYTES and unpacked > ratio * max(1, packed)


def _inflate_entry(
    data: bytes, info: zipfile.ZipInfo, budget: ParseBudget, rows_before: int
) -> tuple[int, MarkupStats | None]:
    """Bytes an entry really unpacks to, and what it holds if it is markup (else None)."""
    start = info.header_offset
    header = data[start : start + _LOCAL_HEADER_SIZE]
    if len(header) < _LOCAL_HEADER_SIZE or not header.startswith(_LOCAL_HEADER):
        # zipfile refuses to open such an entry too, so no library can unpack it.
        return 0, None
    name_length, extra_length = struct.unpack_from("<HH", header, 26)
    begin = start + _LOCAL_HEADER_SIZE + name_length + extra_length
    raw = memoryview(data)[begin : begin + info.compress_size]
    size = 0
    scan: _MarkupScan | None = None
    # The first bytes that are not white space say whether the entry is markup; deflate may hand
    # them out a few at a time, so they are gathered first.
    head = b""
    decided = False
    for chunk in _inflate(raw, info.compress_type, info.file_size):
        budget.check_time()
        size += len(chunk)
        if size > info.file_size:
            raise budget.too_complex(
                f"zip entry {info.filename} unpacks to more than the {info.file_size:,} bytes it declares "
                "(a forged zip header)"
            )
        budget.add_unpacked(len(chunk))
        if not decided:
            head = (head + chunk) if head.lstrip(_ASCII_WHITESPACE) else chunk
            if len(head.lstrip(_ASCII_WHITESPACE)) < 4:
                continue
            decided = True
            scan = _MarkupScan.for_start(head, info.filename, budget, rows_before)
            chunk, head = head, b""
        if scan is not None:
            scan.feed(chunk)
    if not decided and head.strip(_ASCII_WHITESPACE):
        scan = _MarkupScan.for_start(head, info.filename, budget, rows_before)
        if scan is not None:
            scan.feed(head)
    return size, (scan.finish() if scan is not None else None)


class _MarkupScan:
    """Sizes one XML entry from its bytes, chunk by chunk, as :class:`MarkupStats`.

    UTF-16 is transcoded to UTF-8 first (XML parsers read both); encodings no
    Office or Hangul program writes (UTF-32, EBCDIC) are refused rather than
    sized. Marks split across two chunks are missed, which only merges two
    pieces into one: the estimate errs on the large side.
    """

    def __init__(self, name: str, budget: ParseBudget, rows_before: int, encoding: str | None) -> None:
        self._name = name
        self._budget = budget
        self._rows_before = rows_before
        self._decoder = codecs.getincrementaldecoder(encoding)("replace") if encoding else None
        self._stats = MarkupStats()
        self._in_row = False
        self._piece = 0
        self._tail = b""

    @classmethod
    def for_start(cls, chunk: bytes, name: str, budget: ParseBudget, rows_before: int) -> _MarkupScan | None:
        """A scanner if ``chunk`` (an entry's first bytes) starts as XML does, else None."""
        if chunk.startswith(_REFUSED_XML_STARTS):
            raise budget.too_complex(
                f"zip entry {name} is XML in UTF-32 or EBCDIC, which no Office or Hangul file is"
            )
        if chunk.startswith((b"\xff\xfe", b"<\x00")):
            return cls(name, budget, rows_before, "utf-16-le")
        if chunk.startswith((b"\xfe\xff", b"\x00<")):
            return cls(name, budget, rows_before, "utf-16-be")
        if chunk.removeprefix(_UTF8_BOM).lstrip(_ASCII_WHITESPACE).startswith(b"<"):
            return cls(name, budget, rows_before, None)
        return None

    def feed(self, chunk: bytes) -> None:
        if self._decoder is not None:
            chunk = self._decoder.decode(chunk).encode("utf-8")
        window = self._tail + chunk[: len(_ENTITY_MARK) - 1]
        if _ENTITY_MARK in chunk or _ENTITY_MARK in window:
            raise self._budget.too_complex(
                f"zip entry {self._name} declares XML entities, which no Office or Hangul file does "
                "(an entity-expansion bomb)"
            )
        self._tail = chunk[-(len(_ENTITY_MARK) - 1) :]
        if b"row" not in chunk and not (self._in_row and b"sheetData" in chunk):
            # No row starts or ends here (the usual case outside spreadsheets): skip the regex.
            self._count(chunk)
            return
        position = 0
        for match in _ROW_MARK.finditer(chunk):
            self._count(chunk[position : match.start()])
            self._end_piece()
            position = match.start()
            if match.group(2) == b"row" and not match.group(1):
                self._in_row = True
                self._stats.rows += 1
                if self._rows_before + self._stats.rows > self._budget.limits.max_table_rows:
                    raise self._budget.too_complex(
                        f"has more than {self._budget.limits.max_table_rows:,} spreadsheet rows "
                        "(ingest.max_table_rows)"
                    )
        self._count(chunk[position:])

    def finish(self) -> MarkupStats:
        self._end_piece()
        return self._stats

    def _count(self, piece: bytes) -> None:
        nodes = count_markup_nodes(piece)
        self._stats.nodes += nodes
        self._piece += nodes

    def _end_piece(self) -> None:
        if self._in_row:
            self._stats.row_nodes += self._piece
            self._stats.widest_row = max(self._stats.widest_row, self._piece)
            self._in_row = False
        self._piece = 0


def _inflate(raw: memoryview, method: int, declared: int) -> Iterator[bytes]:
    """An entry's unpacked bytes in chunks of at most 64 KiB, stopping one chunk past ``declared``.

    A damaged deflate stream just ends the output: zipfile fails on the same bytes
    when a library reads that entry, and an entry no library reads may be damaged.
    """
    if method == zipfile.ZIP_STORED:
        # zipfile returns at most the declared size of a stored entry.
        for offset in range(0, min(len(raw), declared + 1), _INFLATE_CHUNK):
            yield bytes(raw[offset : min(offset + _INFLATE_CHUNK, declared + 1)])
        return
    inflater = zlib.decompressobj(-15)
    produced = 0
    offset = 0
    pending: bytes | memoryview = b""
    try:
        while not inflater.eof and produced <= declared:
            if not pending:
                if offset >= len(raw):
                    break
                pending = raw[offset : offset + _INFLATE_CHUNK]
                offset += _INFLATE_CHUNK
            chunk = inflater.decompress(pending, _INFLATE_CHUNK)
            pending = inflater.unconsumed_tail
            if chunk:
                produced += len(chunk)
                yield chunk
        if not inflater.eof and produced <= declared:
            # All input taken; what zlib still holds is at most one match (258 bytes).
            rest = inflater.flush()
            if rest:
                yield rest
    except zlib.error:
        return
