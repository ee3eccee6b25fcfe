"""HWP 5.0 binary documents, read directly with olefile and zlib.

Library choice. We installed and tried the pure-Python readers on PyPI against
HWP files written by ``python-hwpx``:

* ``hwplib-py`` 1.0.0 fails on import (its ``hwp5.core.defs`` module is
  missing from the published wheel).
* ``gethwp`` decodes PARA_TEXT without skipping the 8-unit control
  sequences, so every table or section definition leaks as garbage such as
  ``捤獥`` (the bytes of the ``secd`` control id read as text), and it
  does not report encrypted or distribution documents.
* ``pyhwp`` (``hwp5txt``) is AGPL-3.0 (we are Apache-2.0), needs ``six``
  without declaring it, and prints ``<표>`` in place of table contents.
* ``python-hwpx`` (Apache-2.0) reads HWP 5.0 by converting it into its HWPX
  editing model; it is reliable but large, and its paragraph API leaves table
  cells out. We use it to *write* HWP files for tests and samples.

The part of the format that text extraction needs is small and documented in
Hancom's public "한글 문서 파일 형식 5.0" specification, so this module reads
it directly: the ``FileHeader`` stream (signature, compression and
password/distribution/DRM flags), ``DocInfo`` (style names and paragraph
shapes, to find headings), and the ``BodyText/Section*`` record streams
(raw-deflate compressed). Records are ``(tag, level, size)`` headers; the
text is in ``HWPTAG_PARA_TEXT`` as UTF-16LE with control characters mixed in;
tables are a ``tbl `` control whose cells are ``LIST_HEADER`` records each
followed by the cell's paragraphs.

Limits (see :mod:`hanrag.ingest.parsers.budget`): streams are inflated with a
bound, the unpacked bytes count against ``ingest.max_unpacked_mb`` and a stream
that inflates more than ``ingest.max_compression_ratio`` times its size is a
bomb; every record counts as a node against ``ingest.max_document_nodes``
(checked as records are cut, before the list grows) and the deadline is checked
per stream and per paragraph.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from hanrag.errors import ParseError
from hanrag.ingest.parsers.archive_guard import RATIO_FLOOR_BYTES
from hanrag.ingest.parsers.base import ParsedDocument
from hanrag.ingest.parsers.budget import ParseBudget, file_budget
from hanrag.ingest.parsers.containers import OLE_MAGIC
from hanrag.ingest.parsers.sections import SectionBuilder, clean_text
from hanrag.ingest.parsers.tabular import iter_row_lines, rows_from_cells

if TYPE_CHECKING:
    import olefile

HWP_SIGNATURE = b"HWP Document File"
HWP3_SIGNATURE = b"HWP Document File V3"

# FileHeader property bits (spec table "파일 인식 정보").
_FLAG_COMPRESSED = 1 << 0
_FLAG_PASSWORD = 1 << 1
_FLAG_DISTRIBUTION = 1 << 2
_FLAG_DRM = 1 << 4
_FLAG_CERTIFICATE_ENCRYPTION = 1 << 8
_FLAG_CERTIFICATE_DRM = 1 << 10

# Record tags: HWPTAG_BEGIN (0x10) plus the offsets the specification lists.
_HWPTAG_BEGIN = 0x10
_TAG_PARA_SHAPE = _HWPTAG_BEGIN + 9
_TAG_STYLE = _HWPTAG_BEGIN + 10
_TAG_PARA_HEADER = _HWPTAG_BEGIN + 50
_TAG_PARA_TEXT = _HWPTAG_BEGIN + 51  # 67
_TAG_CTRL_HEADER = _HWPTAG_BEGIN + 55
_TAG_LIST_HEADER = _HWPTAG_BEGIN + 56
_TAG_TABLE = _HWPTAG_BEGIN + 61

# PARA_TEXT control characters. "Char" controls take one UTF-16 unit; inline and
# extended controls take eight (the code, six units of parameters, the code again).
_SINGLE_UNIT_CONTROLS = frozenset({0, 10, 13, *range(24, 32)})
_CONTROL_REPLACEMENTS = {9: "\t", 10: "\n", 24: "-", 30: " ", 31: " "}
_CONTROL_UNITS = 8
# Extended controls that anchor an object read elsewhere (11: table or drawing object,
# 15: hidden comment, 16: header/footer, 17: footnote/endnote) stand between words:
# they become a space, so ``표[table]끝`` does not read ``표끝``. Field starts and ends
# (3, 4) and bookmarks (22) sit inside words and vanish.
_OBJECT_CONTROLS = frozenset({11, 15, 16, 17})

# Controls whose text is not document content: hidden comments. Headers and footers
# (``head``, ``foot``) are read once each, as HWPX's are.
_SKIPPED_CONTROL_IDS = frozenset({"tcmt"})
_OUTLINE_STYLE = re.compile(r"^(?:개요|outline)\s*\d+$", re.IGNORECASE)


@dataclass(slots=True)
class _Record:
    tag: int
    level: int
    payload: bytes


@dataclass(slots=True)
class _Block:
    kind: Literal["text", "heading", "table"]
    text: str = ""
    rows: list[list[str]] | None = None


class HwpParser:
    format = "hwp"
    extensions: tuple[str, ...] = (".hwp",)

    def sniff(self, head: bytes, filename: str) -> bool:
        if head.startswith(HWP3_SIGNATURE):
            return True
        # The FileHeader stream's directory entry (UTF-16LE name) sits in the first sectors.
        return head.startswith(OLE_MAGIC) and (
            "FileHeader".encode("utf-16-le") in head or HWP_SIGNATURE in head
        )

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        with file_budget(filename) as budget:
            return self._read(data, filename, budget)

    def _read(self, data: bytes, filename: str, budget: ParseBudget) -> ParsedDocument:
        if data.startswith(HWP3_SIGNATURE):
            raise ParseError(
                f"{filename}: HWP 3.0 documents are not supported; save it as HWP 5.0 or HWPX in Hangul",
                code="unsupported_format",
            )
        import olefile

        try:
            ole = olefile.OleFileIO(data)
        except Exception as exc:  # olefile raises OSError, struct.error, IndexError... on damage
            raise ParseError(f"{filename}: not a valid HWP file ({exc})", code="corrupt_file") from exc
        with ole:
            streams = ["/".join(entry) for entry in ole.listdir(streams=True, storages=False)]
            flags = self._check_header(self._stream(ole, "FileHeader", filename), filename, streams)
            compressed = bool(flags & _FLAG_COMPRESSED)
            doc_info = (
                self._records(ole, "DocInfo", filename, compressed, budget) if "DocInfo" in streams else []
            )
            headings = _HeadingShapes(doc_info)
            builder = SectionBuilder()
            first_heading: str | None = None
            for name in _body_sections(streams):
                records = self._records(ole, name, filename, compressed, budget)
                blocks, _ = _BodyReader(records, headings, budget).paragraphs(0, 0)
                for block in blocks:
                    if block.kind == "table" and block.rows is not None:
                        builder.add_table(block.rows)
                    elif block.kind == "heading":
                        builder.add_heading(block.text)
                        first_heading = first_heading or clean_text(block.text).replace("\n", " ")
                    else:
                        builder.add_text(block.text)
            title, date = _summary(ole)
        sections = builder.build()
        if not sections:
            raise ParseError(f"{filename}: HWP document has no text", code="no_text")
        return ParsedDocument(sections=sections, format=self.format, title=title or first_heading, date=date)

    @staticmethod
    def _stream(ole: olefile.OleFileIO, name: str, filename: str) -> bytes:
        if not ole.exists(name):
            raise ParseError(f"{filename}: not a valid HWP file (no {name} stream)", code="corrupt_file")
        try:
            return bytes(ole.openstream(name).read())
        except Exception as exc:  # a broken sector chain surfaces as OSError or IndexError
            raise ParseError(
                f"{filename}: cannot read the {name} stream ({exc})", code="corrupt_file"
            ) from exc

    @staticmethod
    def _check_header(header: bytes, filename: str, streams: list[str]) -> int:
        if not header.startswith(HWP_SIGNATURE) or len(header) < 40:
            raise ParseError(
                f"{filename}: not an HWP document (bad FileHeader signature)", code="corrupt_file"
            )
        major = header[35]
        if major != 5:
            raise ParseError(
                f"{filename}: HWP version {major} is not supported (only HWP 5.x)", code="unsupported_format"
            )
        (flags,) = struct.unpack_from("<I", header, 36)
        if flags & (_FLAG_PASSWORD | _FLAG_CERTIFICATE_ENCRYPTION):
            raise ParseError(
                f"{filename}: HWP document is password-protected; "
                "remove the password in Hangul and upload it again",
                code="encrypted_file",
            )
        if flags & _FLAG_DISTRIBUTION or any(name.startswith("ViewText/") for name in streams):
            raise ParseError(
                f"{filename}: HWP distribution document (배포용 문서): its text is encrypted and cannot be "
                "extracted; upload the original document instead",
                code="encrypted_file",
            )
        if flags & (_FLAG_DRM | _FLAG_CERTIFICATE_DRM):
            raise ParseError(f"{filename}: HWP document is DRM-protected", code="encrypted_file")
        return int(flags)

    def _records(
        self, ole: olefile.OleFileIO, name: str, filename: str, compressed: bool, budget: ParseBudget
    ) -> list[_Record]:
        budget.check_time()
        raw = self._stream(ole, name, filename)
        if compressed:
            raw = _inflate_stream(raw, name, filename, budget)
        else:
            budget.add_unpacked(len(raw))
        return _parse_records(raw, filename, name, budget)


def _inflate_stream(raw: bytes, name: str, filename: str, budget: ParseBudget) -> bytes:
    """A raw-deflate stream unpacked, never past the unpacked-size budget or the compression ratio."""
    limits = budget.limits
    room = max(0, limits.max_unpacked_bytes - budget.unpacked)
    allowed = min(room, max(RATIO_FLOOR_BYTES, int(limits.max_compression_ratio * len(raw))))
    # Raw deflate, no zlib header; one byte more than allowed tells a stream that is too large.
    decompressor = zlib.decompressobj(-15)
    try:
        unpacked = decompressor.decompress(raw, allowed + 1)
    except zlib.error as exc:
        raise ParseError(f"{filename}: the {name} stream is damaged ({exc})", code="corrupt_file") from exc
    if len(unpacked) > allowed:
        if allowed == room:
            budget.add_unpacked(len(unpacked))  # raises file_too_large
        raise budget.too_complex(
            f"the {name} stream unpacks more than {limits.max_compression_ratio:g} times its size "
            "(ingest.max_compression_ratio): a compression bomb"
        )
    budget.add_unpacked(len(unpacked))
    return unpacked


def _parse_records(data: bytes, filename: str, stream: str, budget: ParseBudget) -> list[_Record]:
    records: list[_Record] = []
    offset = 0
    end = len(data)
    while offset < end:
        if len(records) % 4096 == 4095:
            # A stream of empty four-byte records would be tens of millions of objects.
            budget.add_nodes(4096, "HWP records")
            budget.check_time()
        if offset + 4 > end:
            raise ParseError(f"{filename}: the {stream} stream is truncated", code="corrupt_file")
        (header,) = struct.unpack_from("<I", data, offset)
        offset += 4
        tag, level, size = header & 0x3FF, (header >> 10) & 0x3FF, header >> 20
        if size == 0xFFF:
            # Records of 4095 bytes or more carry their real size in the next four bytes.
            if offset + 4 > end:
                raise ParseError(f"{filename}: the {stream} stream is truncated", code="corrupt_file")
            (size,) = struct.unpack_from("<I", data, offset)
            offset += 4
        if offset + size > end:
            raise ParseError(f"{filename}: the {stream} stream is truncated", code="corrupt_file")
        records.append(_Record(tag, level, data[offset : offset + size]))
        offset += size
    budget.add_nodes(len(records) % 4096, "HWP records")
    return records


def _body_sections(streams: list[str]) -> list[str]:
    numbered: list[tuple[int, str]] = []
    for name in streams:
        match = re.fullmatch(r"BodyText/Section(\d+)", name)
        if match:
            numbered.append((int(match.group(1)), name))
    return [name for _, name in sorted(numbered)]


def decode_para_text(payload: bytes) -> str:
    """The readable text of a PARA_TEXT record: control sequences dropped, tabs and breaks kept."""
    parts: list[str] = []
    run_start = 0
    position = 0
    length = len(payload) - len(payload) % 2
    while position < length:
        unit = payload[position] | (payload[position + 1] << 8)
        if unit >= 32:
            position += 2
            continue
        # Decode the plain run before the control as a whole, so surrogate pairs stay intact.
        parts.append(payload[run_start:position].decode("utf-16-le", errors="replace"))
        parts.append(" " if unit in _OBJECT_CONTROLS else _CONTROL_REPLACEMENTS.get(unit, ""))
        position += 2 if unit in _SINGLE_UNIT_CONTROLS else 2 * _CONTROL_UNITS
        run_start = position
    parts.append(payload[run_start:length].decode("utf-16-le", errors="replace"))
    return "".join(parts)


class _HeadingShapes:
    """Which paragraphs are headings: DocInfo's outline styles (``개요 N``) and outline paragraph shapes."""

    def __init__(self, doc_info: list[_Record]) -> None:
        self.style_ids: set[int] = set()
        self.para_shape_ids: set[int] = set()
        style_index = 0
        shape_index = 0
        for record in doc_info:
            if record.tag == _TAG_STYLE:
                if _OUTLINE_STYLE.match(_style_name(record.payload).strip()):
                    self.style_ids.add(style_index)
                style_index += 1
            elif record.tag == _TAG_PARA_SHAPE:
                if len(record.payload) >= 4:
                    (properties,) = struct.unpack_from("<I", record.payload, 0)
                    # Bits 23-24: paragraph head kind, 1 = outline (개요).
                    if (properties >> 23) & 0b11 == 1:
                        self.para_shape_ids.add(shape_index)
                shape_index += 1

    def is_heading(self, para_header: bytes) -> bool:
        if len(para_header) < 11:
            return False
        (shape_id,) = struct.unpack_from("<H", para_header, 8)
        style_id = para_header[10]
        return style_id in self.style_ids or shape_id in self.para_shape_ids


def _style_name(payload: bytes) -> str:
    """A STYLE record starts with its local name (length-prefixed UTF-16LE), then its English name."""
    names: list[str] = []
    offset = 0
    for _ in range(2):
        if offset + 2 > len(payload):
            break
        (length,) = struct.unpack_from("<H", payload, offset)
        offset += 2
        names.append(payload[offset : offset + 2 * length].decode("utf-16-le", errors="replace"))
        offset += 2 * length
    return next((name for name in names if _OUTLINE_STYLE.match(name.strip())), names[0] if names else "")


class _BodyReader:
    """Walks a section's record list; nesting is given by each record's level."""

    def __init__(self, records: list[_Record], headings: _HeadingShapes, budget: ParseBudget) -> None:
        self._records = records
        self._headings = headings
        self._budget = budget

    def paragraphs(self, index: int, level: int) -> tuple[list[_Block], int]:
        """The consecutive paragraphs at ``level`` starting at ``index``, and the index after them."""
        records = self._records
        blocks: list[_Block] = []
        while (
            index < len(records) and records[index].level == level and records[index].tag == _TAG_PARA_HEADER
        ):
            header = records[index].payload
            index += 1
            self._budget.check_time()
            text = ""
            anchored: list[_Block] = []
            while index < len(records) and records[index].level > level:
                record = records[index]
                if record.level == level + 1 and record.tag == _TAG_PARA_TEXT:
                    text = decode_para_text(record.payload)
                    index += 1
                elif record.level == level + 1 and record.tag == _TAG_CTRL_HEADER:
                    control_blocks, index = self._control(index)
                    anchored.extend(control_blocks)
                else:
                    index += 1
            if text.strip():
                kind: Literal["text", "heading"] = "heading" if self._headings.is_heading(header) else "text"
                blocks.append(_Block(kind, text))
            # Tables, text boxes and footnotes anchored in the paragraph follow its own text.
            blocks.extend(anchored)
        return blocks, index

    def _control(self, index: int) -> tuple[list[_Block], int]:
        records = self._records
        control = records[index]
        control_id = control.payload[:4][::-1].decode("latin-1") if len(control.payload) >= 4 else ""
        level = control.level
        index += 1
        if control_id == "tbl ":
            return self._table(index, level)
        blocks: list[_Block] = []
        while index < len(records) and records[index].level > level:
            record = records[index]
            if record.tag == _TAG_LIST_HEADER and control_id not in _SKIPPED_CONTROL_IDS:
                nested, index = self.paragraphs(index + 1, record.level)
                blocks.extend(nested)
            else:
                index += 1
        return blocks, index

    def _table(self, index: int, level: int) -> tuple[list[_Block], int]:
        records = self._records
        cells: list[tuple[int, int, int, str]] = []
        caption: list[_Block] = []
        seen_table_record = False
        while index < len(records) and records[index].level > level:
            record = records[index]
            if record.level == level + 1 and record.tag == _TAG_TABLE:
                seen_table_record = True
                index += 1
            elif record.level == level + 1 and record.tag == _TAG_LIST_HEADER:
                nested, next_index = self.paragraphs(index + 1, record.level)
                if not seen_table_record:
                    # A list before the TABLE record is the table's caption.
                    caption.extend(nested)
                else:
                    row, column, span = _cell_address(record.payload, fallback_column=len(cells))
                    cells.append((row, column, span, _flatten(nested)))
                index = next_index
            else:
                index += 1
        table = _Block("table", rows=rows_from_cells(cells))
        return [*caption, table], index


def _cell_address(payload: bytes, *, fallback_column: int) -> tuple[int, int, int]:
    """(row, column, column span) from a cell's LIST_HEADER.

    Layout: UINT16 paragraph count, UINT16 (unused), UINT32 list properties, then
    UINT16 column, row, column span, row span.
    """
    if len(payload) < 14:
        return 0, fallback_column, 1
    column, row, span = struct.unpack_from("<HHH", payload, 8)
    return row, column, span


def _flatten(blocks: list[_Block]) -> str:
    parts: list[str] = []
    for block in blocks:
        if block.kind == "table" and block.rows is not None:
            parts.extend(iter_row_lines(block.rows))
        elif block.text:
            parts.append(block.text)
    return clean_text(" ".join(parts)).replace("\n", " ")


def _summary(ole: olefile.OleFileIO) -> tuple[str | None, datetime | None]:
    """Title and last-saved (or created) time from the ``\\x05HwpSummaryInformation`` property set."""
    name = "\x05HwpSummaryInformation"
    if not ole.exists(name):
        return None, None
    try:
        properties = _property_set(bytes(ole.openstream(name).read()))
    except (struct.error, ValueError, OSError, IndexError):
        # A damaged summary only loses the title and date; the text is still good.
        return None, None
    raw_title = properties.get(_PID_TITLE)
    title = clean_text(raw_title).replace("\n", " ") if isinstance(raw_title, str) else None
    date = next(
        (
            value
            for value in (properties.get(_PID_LAST_SAVED), properties.get(_PID_CREATED))
            if isinstance(value, datetime)
        ),
        None,
    )
    return title or None, date


# SummaryInformation property ids, and the two value types HWP stores in them.
_PID_TITLE = 2
_PID_CREATED = 12
_PID_LAST_SAVED = 13
_VT_LPWSTR = 0x1F
_VT_FILETIME = 0x40
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


def _property_set(data: bytes) -> dict[int, str | datetime]:
    """Strings and times of the first section of an OLE property set stream ([MS-OLEPS]).

    Read here rather than with olefile's ``getproperties``, which (0.47) ignores
    the length of UTF-16 strings and returns the rest of the stream with them.
    """
    # Header: byte order, version, system id, CLSID (28 bytes), then the first FMTID and its offset.
    (section_offset,) = struct.unpack_from("<I", data, 44)
    _, count = struct.unpack_from("<II", data, section_offset)
    properties: dict[int, str | datetime] = {}
    for index in range(count):
        pid, offset = struct.unpack_from("<II", data, section_offset + 8 + 8 * index)
        position = section_offset + offset
        (value_type,) = struct.unpack_from("<I", data, position)
        if value_type == _VT_LPWSTR:
            (length,) = struct.unpack_from("<I", data, position + 4)
            raw = data[position + 8 : position + 8 + 2 * length]
            properties[pid] = raw.decode("utf-16-le", errors="replace").split("\x00", 1)[0]
        elif value_type == _VT_FILETIME:
            (ticks,) = struct.unpack_from("<Q", data, position + 4)
            # FILETIME counts 100-nanosecond intervals since 1601-01-01 UTC; zero means "not set".
            if ticks:
                properties[pid] = _FILETIME_EPOCH + timedelta(microseconds=ticks // 10)
    return properties
