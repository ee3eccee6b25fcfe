"""Which parser reads a file: content sniffing first, the file extension second.

Sniffing first means a PDF saved as ``보고서.txt`` is read as a PDF, and a PNG
renamed ``.txt`` is refused as unsupported instead of being decoded into
garbage. Every parser module imports its third-party library inside its
functions, so importing this registry costs nothing.

:func:`parse_bytes` runs each file under its own
:class:`~hanrag.ingest.parsers.budget.ParseBudget` (the ``ingest.*`` limits),
and puts any zip through the archive guard before even the format is sniffed
from its member names.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

from hanrag.errors import ParseError, WorkCancelled
from hanrag.ingest.parsers.archive_guard import inspect_zip
from hanrag.ingest.parsers.base import ParsedDocument, Parser
from hanrag.ingest.parsers.budget import ParseLimits, file_budget
from hanrag.ingest.parsers.containers import OLE_MAGIC, ZIP_ERRORS
from hanrag.ingest.parsers.csv import CsvParser
from hanrag.ingest.parsers.docx import DocxParser
from hanrag.ingest.parsers.html import HtmlParser
from hanrag.ingest.parsers.hwp import HwpParser
from hanrag.ingest.parsers.hwpx import HwpxParser
from hanrag.ingest.parsers.json import JsonParser
from hanrag.ingest.parsers.pdf import PdfParser
from hanrag.ingest.parsers.text import MarkdownParser, TextParser
from hanrag.ingest.parsers.xlsx import XlsxParser

# How many leading bytes sniffing looks at.
SNIFF_BYTES = 8192

_PARSERS: dict[str, Parser] = {
    parser.format: parser
    for parser in (
        PdfParser(),
        DocxParser(),
        XlsxParser(),
        HwpxParser(),
        HwpParser(),
        HtmlParser(),
        JsonParser(),
        CsvParser(),
        MarkdownParser(),
        TextParser(),
    )
}
_BY_EXTENSION: dict[str, str] = {
    extension: parser.format for parser in _PARSERS.values() for extension in parser.extensions
}

# Signatures of common binary formats nobody should try to read as text, whatever their name.
_BINARY_SIGNATURES: tuple[bytes, ...] = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"BM",  # Windows bitmap
    b"II*\x00",  # TIFF
    b"MM\x00*",
    b"RIFF",  # WAV, AVI, WebP
    b"MZ",  # Windows executables
    b"\x7fELF",
    b"\xca\xfe\xba\xbe",  # Java class, Mach-O fat binary
    b"\xcf\xfa\xed\xfe",  # Mach-O
    b"\x1f\x8b",  # gzip
    b"BZh",
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!\x1a\x07",
    b"ID3",  # MP3
    b"OggS",
    b"fLaC",
    b"SQLite format 3\x00",
    b"\x00\x00\x01\x00",  # Windows icon
    b"wOFF",
    b"wOF2",
)
_LOCAL_FILE_HEADER = re.compile(rb"PK\x03\x04")


def supported_extensions() -> list[str]:
    """Every file extension (lower case, with the dot) some parser reads."""
    return sorted(_BY_EXTENSION)


def get_parser(fmt: str) -> Parser:
    """The parser for a format name as :func:`detect_format` returns it."""
    try:
        return _PARSERS[fmt]
    except KeyError:
        raise ParseError(f"no parser for format {fmt!r}", code="unsupported_format") from None


def detect_format(head: bytes, filename: str) -> str | None:
    """The format of a file from its first bytes (or all of them) and its name; None when unsupported.

    ``head`` should be at least :data:`SNIFF_BYTES` long where the file is; when it
    is the whole file, zip and OLE containers are identified by their real
    member lists instead of by what the first bytes show.
    """
    extension = Path(filename).suffix.lower()
    by_extension = _BY_EXTENSION.get(extension)
    if _PARSERS["pdf"].sniff(head, filename):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return _zip_format(head) or (by_extension if by_extension in ("docx", "xlsx", "hwpx") else None)
    if _PARSERS["hwp"].sniff(head, filename) or (head.startswith(OLE_MAGIC) and _ole_has_hwp_header(head)):
        return "hwp"
    if head.startswith(OLE_MAGIC):
        # An encrypted .docx/.xlsx is an OLE file too: its parser explains what to do about it.
        return by_extension if by_extension in ("docx", "xlsx", "hwp") else None
    if _looks_binary(head):
        return None
    for fmt in ("html", "json"):
        if _PARSERS[fmt].sniff(head, filename):
            return fmt
    return by_extension


def _zip_format(head: bytes) -> str | None:
    if _PARSERS["hwpx"].sniff(head, ""):
        return "hwpx"
    names = _zip_member_names(head)
    # Any part under word/ or xl/ will do: the main part may not be among the first members.
    if any(name.startswith("word/") for name in names):
        return "docx"
    if any(name.startswith("xl/") for name in names):
        return "xlsx"
    if any(name.lower().startswith("contents/section") for name in names):
        return "hwpx"
    return None


def _zip_member_names(head: bytes) -> list[str]:
    """Member names: from the central directory when ``head`` is the whole zip, else from local headers.

    Local file headers (``PK\\x03\\x04``, name length at offset 26, name at 30)
    precede each member's data, so the first bytes show the first members' names.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(head)) as archive:
            return archive.namelist()
    except ZIP_ERRORS:
        pass
    names: list[str] = []
    for match in _LOCAL_FILE_HEADER.finditer(head):
        start = match.start()
        if start + 30 > len(head):
            break
        name_length = int.from_bytes(head[start + 26 : start + 28], "little")
        raw_name = head[start + 30 : start + 30 + name_length]
        names.append(raw_name.decode("utf-8", errors="replace"))
    return names


def _ole_has_hwp_header(data: bytes) -> bool:
    """Whether an OLE file has a ``FileHeader`` stream, when its directory lies past the first bytes.

    Only answers for the whole file; a truncated head is not a readable OLE file.
    """
    import olefile

    try:
        with olefile.OleFileIO(data) as ole:
            return bool(ole.exists("FileHeader"))
    except Exception:  # not readable as OLE (e.g. only the first bytes): not provably HWP
        return False


def _looks_binary(head: bytes) -> bool:
    sample = head[:SNIFF_BYTES]
    has_nul = b"\x00" in sample
    for signature in _BINARY_SIGNATURES:
        # An ASCII signature ("MZ", "BM") may also start a text file ("MZ세대 보고서"):
        # only a NUL byte nearby makes it binary.
        if sample.startswith(signature) and (not signature.isascii() or has_nul):
            return True
    # A stray NUL or two (a damaged byte) does not make a text file binary; real binary data
    # is full of them.
    if sample.count(0) * 100 < len(sample):
        return False
    # UTF-16/32 text has NULs too, but in a regular pattern or after a byte order mark.
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False
    even_nuls = sample[0::2].count(0)
    odd_nuls = sample[1::2].count(0)
    half = max(1, len(sample) // 2)
    # ASCII in UTF-16 puts its zero byte always on one side; Hangul rarely has a zero byte at all.
    looks_utf16 = max(even_nuls, odd_nuls) > 0.05 * half and min(even_nuls, odd_nuls) * 5 < max(
        even_nuls, odd_nuls
    )
    return not looks_utf16


def read_limited(path: Path, *, max_bytes: int) -> bytes:
    """A file's bytes, refusing empty and over-limit files before reading them whole."""
    name = path.name
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ParseError(f"{name}: cannot read file ({exc.strerror or exc})", code="corrupt_file") from exc
    if size == 0:
        raise ParseError(f"{name}: file is empty", code="empty_file")
    if size > max_bytes:
        raise ParseError(
            f"{name}: file is {size:,} bytes, larger than the {max_bytes:,}-byte limit", code="file_too_large"
        )
    try:
        with path.open("rb") as handle:
            # One byte more than allowed tells a file that grew since stat() from one that did not.
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ParseError(f"{name}: cannot read file ({exc.strerror or exc})", code="corrupt_file") from exc
    if not data:
        raise ParseError(f"{name}: file is empty", code="empty_file")
    if len(data) > max_bytes:
        raise ParseError(f"{name}: file is larger than the {max_bytes:,}-byte limit", code="file_too_large")
    return data


def parse_file(path: Path, *, max_bytes: int, limits: ParseLimits | None = None) -> ParsedDocument:
    """Read and parse one file; every failure is a :class:`ParseError` that names the file."""
    return parse_bytes(read_limited(path, max_bytes=max_bytes), path.name, limits=limits)


def parse_bytes(data: bytes, filename: str, *, limits: ParseLimits | None = None) -> ParsedDocument:
    """Parse a file's bytes already in memory (uploads); same errors as :func:`parse_file`.

    ``limits`` (default: those of the default settings) bound the parse; past one the
    file fails with ``file_too_complex``.
    """
    if not data:
        raise ParseError(f"{filename}: file is empty", code="empty_file")
    with file_budget(filename, limits) as budget:
        if data.startswith(b"PK\x03\x04"):
            # Sniffing reads the member list; nothing of a zip is read before the guard has seen it.
            kind = _BY_EXTENSION.get(Path(filename).suffix.lower(), "")
            inspect_zip(data, filename, kind=kind.upper() if kind in ("docx", "xlsx", "hwpx") else "zip")
        fmt = detect_format(data, filename)
        if fmt is None:
            extension = Path(filename).suffix.lower() or "no extension"
            raise ParseError(
                f"{filename}: unsupported file format ({extension}); "
                f"supported: {', '.join(supported_extensions())}",
                code="unsupported_format",
            )
        parser = get_parser(fmt)
        try:
            document = parser.parse(data, filename)
        except (ParseError, WorkCancelled):
            raise  # a ParseError already names the file; cancelled work is not a damaged file
        except MemoryError as exc:
            raise budget.too_complex(f"ran out of memory while reading it as {fmt}") from exc
        except Exception as exc:  # a library choking on malformed input is a damaged file, not a server bug
            raise ParseError(
                f"{filename}: could not be read as {fmt} ({type(exc).__name__}: {exc})", code="corrupt_file"
            ) from exc
        # Parsers charge their text as they go; this catches whatever a parser did not.
        if sum(len(section.text) for section in document.sections) > budget.limits.max_text_chars:
            raise budget.too_complex(
                f"yields more than {budget.limits.max_text_chars:,} characters of text (ingest.max_text_chars)"
            )
    if not document.text.strip():
        raise ParseError(f"{filename}: no text could be extracted", code="no_text")
    return document
