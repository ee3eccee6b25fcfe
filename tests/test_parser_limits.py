"""Decompression bombs and other hostile files: each fails alone with ``file_too_complex``.

The bombs are built here, in memory, small on disk and huge unpacked: a DOCX of
300 MB of ``<w:p/>`` (under 1 MB), an XLSX of a million empty rows with a
sheet size of A1:XFD1048576, a zip of 100,000 entries, an HWPX and an HWP of
300 MB of empty paragraphs, a DOCX whose zip header lies about its size, a DOCX
carrying a zip bomb inside it, a 300 KB PDF whose page content stream (or object
stream) inflates to 300 MB. They go through the real registry, the real
ingestion pipeline and a real HTTP upload (uvicorn on loopback), and each
assertion also bounds the resident memory the process gained while the bomb
was being read (sampled every few milliseconds). The bundled samples must parse
exactly as they did before the limits existed, and a parse whose request was given
up stops with ``WorkCancelled``.

:data:`BOMBS` is also what ``bench/parser_bombs.py`` uploads, so this module
imports nothing of the server or the engine at its top.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import lru_cache, partial
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import pytest

from hanrag.errors import ParseError
from hanrag.ingest.parsers.base import ParsedDocument
from hanrag.ingest.parsers.budget import ParseLimits
from hanrag.ingest.parsers.registry import parse_bytes
from hanrag.settings import IngestSettings

if TYPE_CHECKING:
    from conftest import EngineFactory

SAMPLES = Path(str(files("hanrag") / "samples"))
MB = 1024 * 1024
# How much resident memory reading one bomb may add to the process (the bound).
RSS_BOUND = 300 * MB
# Unpacked size of the compression bombs.
BOMB_UNPACKED = 300 * MB

WORD_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
SHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


# --- building bombs ---------------------------------------------------------------------------


def _repeat(unit: bytes, total: int, *, head: bytes = b"", tail: bytes = b"") -> Iterator[bytes]:
    """``head``, ``unit`` repeated to about ``total`` bytes in 4 MB pieces, ``tail``."""
    yield head
    piece = unit * max(1, (4 * MB) // len(unit))
    for _ in range(max(1, total // len(piece))):
        yield piece
    yield tail


def _zip(parts: dict[str, bytes | Iterable[bytes]], *, stored: Iterable[str] = ()) -> bytes:
    """A zip of ``parts`` in order; an iterable part is written piece by piece (never whole in memory)."""
    keep_stored = set(stored)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, content in parts.items():
            method = zipfile.ZIP_STORED if name in keep_stored else zipfile.ZIP_DEFLATED
            if isinstance(content, bytes):
                archive.writestr(name, content, compress_type=method)
            else:
                info = zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0))
                info.compress_type = method
                with archive.open(info, "w") as handle:
                    for piece in content:
                        handle.write(piece)
    return buffer.getvalue()


def _parts(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _docx_parts(text: str = "정상 문단입니다.") -> dict[str, bytes]:
    from docx import Document

    document = Document()
    document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return _parts(buffer.getvalue())


def _word_body(inner: Iterable[bytes]) -> Iterator[bytes]:
    yield f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:document xmlns:w="{WORD_NS}"><w:body>'.encode()
    yield b"<w:p><w:r><w:t>\xec\xb2\xab \xeb\xac\xb8\xeb\x8b\xa8</w:t></w:r></w:p>"  # "첫 문단"
    yield from inner
    yield b"</w:body></w:document>"


@lru_cache(maxsize=1)
def docx_paragraph_bomb() -> bytes:
    """A DOCX whose body is 300 MB of empty paragraphs; under 1 MB on disk."""
    parts: dict[str, bytes | Iterable[bytes]] = dict(_docx_parts())
    parts["word/document.xml"] = _word_body(_repeat(b"<w:p/>", BOMB_UNPACKED))
    return _zip(parts)


def _xlsx_parts() -> dict[str, bytes]:
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.active.append(["제품", "가격"])
    workbook.active.append(["AP-500", 1000])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return _parts(buffer.getvalue())


def xlsx_empty_rows_bomb(rows: int = 1_000_000) -> bytes:
    """An XLSX: a header, then a million empty (formatted) rows, in a sheet declared A1:XFD1048576."""
    parts: dict[str, bytes | Iterable[bytes]] = dict(_xlsx_parts())

    def sheet() -> Iterator[bytes]:
        yield (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="{SHEET_NS}">'
            '<dimension ref="A1:XFD1048576"/><sheetData>'
            '<row r="1"><c r="A1" t="inlineStr"><is><t>제품</t></is></c></row>'
        ).encode()
        for start in range(2, rows + 2, 100_000):
            stop = min(rows + 2, start + 100_000)
            yield b"".join(b'<row r="%d" ht="20" customHeight="1"/>' % index for index in range(start, stop))
        yield b"</sheetData></worksheet>"

    parts["xl/worksheets/sheet1.xml"] = sheet()
    return _zip(parts)


def xlsx_wide_rows_bomb(rows: int = 200) -> bytes:
    """An XLSX whose rows each hold one cell in the last column (XFD): 16,384 cells a row."""
    parts: dict[str, bytes | Iterable[bytes]] = dict(_xlsx_parts())
    body = b"".join(
        b'<row r="%d"><c r="XFD%d"><v>1</v></c></row>' % (index, index) for index in range(1, rows)
    )
    parts["xl/worksheets/sheet1.xml"] = (
        f'<worksheet xmlns="{SHEET_NS}"><sheetData>'.encode() + body + b"</sheetData></worksheet>"
    )
    return _zip(parts)


def zip_many_entries_bomb(entries: int = 100_000) -> bytes:
    """A "DOCX" of 100,000 (empty) entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, content in _docx_parts().items():
            archive.writestr(name, content)
        for index in range(entries):
            archive.writestr(f"word/media/e{index}", b"")
    return buffer.getvalue()


def _hwpx_document() -> Any:
    from hwpx import HwpxDocument

    document = HwpxDocument.new()
    document.add_heading("폭탄 문서", level=1)
    document.add_paragraph("본문 한 줄.", style="바탕글")
    return document


def hwpx_paragraph_bomb() -> bytes:
    """An HWPX whose section is 300 MB of empty paragraphs (the ``mimetype`` entry first and stored)."""
    parts: dict[str, bytes | Iterable[bytes]] = dict(_parts(bytes(_hwpx_document().to_bytes())))
    section = parts["Contents/section0.xml"]
    assert isinstance(section, bytes)
    cut = section.rindex(b"</")
    parts["Contents/section0.xml"] = _repeat(
        b"<hp:p/>", BOMB_UNPACKED, head=section[:cut], tail=section[cut:]
    )
    return _zip(parts, stored=["mimetype"])


def hwp_section_bomb() -> bytes:
    """An HWP 5.0 file whose body section stream inflates to 300 MB of empty records."""
    import olefile
    from hwpx.hwp5.cfb import build_compound_file

    with olefile.OleFileIO(bytes(_hwpx_document().to_bytes(format="hwp"))) as ole:
        streams = {"/".join(entry): ole.openstream(entry).read() for entry in ole.listdir()}
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    # Zero-size records (tag 0, level 0): four bytes of zeros each.
    body = b"".join(compressor.compress(piece) for piece in _repeat(b"\x00" * 4, BOMB_UNPACKED))
    streams["BodyText/Section0"] = body + compressor.flush()
    return bytes(build_compound_file(streams.items()))


def docx_lying_header() -> bytes:
    """A DOCX whose central directory says word/document.xml unpacks to 2 KB; it unpacks to 300 MB."""
    data = bytearray(docx_paragraph_bomb())
    name = b"word/document.xml"
    position = 0
    while True:
        position = data.index(b"PK\x01\x02", position + 1)
        name_length = struct.unpack_from("<H", data, position + 28)[0]
        if bytes(data[position + 46 : position + 46 + name_length]) == name:
            break
    struct.pack_into("<I", data, position + 24, 2048)  # uncompressed size
    return bytes(data)


def docx_with_nested_bomb() -> bytes:
    """A normal DOCX that carries the 300 MB DOCX bomb as an embedded file (never to be unpacked)."""
    parts: dict[str, bytes | Iterable[bytes]] = dict(_docx_parts("바깥 문서의 본문입니다."))
    parts["word/embeddings/bomb.docx"] = docx_paragraph_bomb()
    return _zip(parts, stored=["word/embeddings/bomb.docx"])


def _pdf(objects: dict[int, bytes], packed: dict[int, int]) -> bytes:
    """A PDF 1.5 of ``objects`` (1: the catalog), ``packed`` ones (number: index) in object stream 6."""
    out = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number, body in objects.items():
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    size = max(objects) + 2  # the cross-reference stream is the last object
    entry = {n: (2, 6, packed[n]) if n in packed else (1, offsets[n], 0) for n in (*objects, *packed)}
    rows = [entry.get(n, (0, 0, 0)) for n in range(size - 1)] + [(1, len(out), 0)]
    table = b"".join(struct.pack(">BIH", *row) for row in rows)
    xref = b"<< /Type /XRef /Size %d /W [1 4 2] /Root 1 0 R /Length %d >>" % (size, len(table))
    out += b"%d 0 obj\n%s\nstream\n%s\nendstream\nendobj\n" % (size - 1, xref, table)
    return bytes(out + b"startxref\n%d\n%%%%EOF\n" % rows[-1][1])


def _deflated(pieces: Iterable[bytes]) -> bytes:
    compressor = zlib.compressobj(9)
    return b"".join(compressor.compress(piece) for piece in pieces) + compressor.flush()


def _stream(dictionary: bytes, data: bytes) -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (dictionary, len(data), data)


def pdf_flate_bomb(
    variant: str = "content",
    *,
    filters: bytes = b"/FlateDecode",
    content: bytes = b"",
    extra: dict[int, bytes] | None = None,
) -> bytes:
    """A one-page PDF whose page content stream inflates to 300 MB of ``q Q`` (``indirect``: its /Length
    in object 5), or (``objstm``) whose page tree is in an object stream padded to 300 MB."""
    pages = b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"
    page = b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R /Resources << /XObject << /Im1 7 0 R >> >> >>"
    content = content or _deflated([b"q Q\n"] if variant == "objstm" else _repeat(b"q Q\n", BOMB_UNPACKED))
    length = b"5 0 R" if variant == "indirect" else b"%d" % len(content)
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R >>", 2: pages, 3: page, 5: b"%d" % len(content)}
    objects[4] = b"<< /Filter %s /Length %s >>\nstream\n%s\nendstream" % (filters, length, content)
    objects[6] = b"[/FlateDecode]"  # for filters=b"6 0 R"
    objects.update(extra or {})  # 7: the image /Im1
    if variant != "objstm":
        return _pdf(objects, {})
    head = b"2 0 3 %d " % (len(pages) + 1)
    packed = _deflated(_repeat(b" ", BOMB_UNPACKED, head=head + objects.pop(2) + b" " + objects.pop(3)))
    objects[6] = _stream(b"/Type /ObjStm /N 2 /First %d /Filter /Fl" % len(head), packed)
    return _pdf(objects, {2: 0, 3: 1})


def lzw_bomb(total: int) -> bytes:
    """LZW whose codes each name the entry they define (a string of zeros one byte longer), then repeat
    the longest, 3,837 bytes a 12-bit code; widths as PDFium reads them (EarlyChange 1)."""
    codes = [256, 0, *range(258, 4094), *[4093] * (total // 3837), 257]
    widths = (9 if i < 255 else 10 if i < 767 else 11 if i < 1791 else 12 for i in range(len(codes)))
    bits = "".join(f"{code:0{width}b}" for code, width in zip(codes, widths, strict=True))
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


@dataclass(frozen=True)
class Bomb:
    name: str
    filename: str
    build: Callable[[], bytes]
    # What ingesting it must answer: a ParseError code, or None for a document that parses.
    code: str | None = "file_too_complex"


BOMBS = [
    Bomb("docx: 300 MB of <w:p/>", "문단폭탄.docx", docx_paragraph_bomb),
    Bomb("xlsx: 1M empty rows, A1:XFD1048576", "빈행폭탄.xlsx", xlsx_empty_rows_bomb),
    Bomb("xlsx: rows 16,384 cells wide", "넓은행.xlsx", xlsx_wide_rows_bomb),
    Bomb("zip: 100,000 entries", "항목폭탄.docx", zip_many_entries_bomb),
    Bomb("hwpx: 300 MB of <hp:p/>", "문단폭탄.hwpx", hwpx_paragraph_bomb),
    Bomb("hwp: 300 MB of empty records", "레코드폭탄.hwp", hwp_section_bomb),
    Bomb("docx: lying zip header", "거짓헤더.docx", docx_lying_header),
    Bomb("docx: carries a nested bomb", "중첩.docx", docx_with_nested_bomb, code=None),
    Bomb("pdf: 300 MB Flate content stream", "스트림폭탄.pdf", pdf_flate_bomb),
    Bomb("pdf: the same, indirect /Length", "간접길이.pdf", partial(pdf_flate_bomb, "indirect")),
    Bomb("pdf: 300 MB object stream", "객체스트림.pdf", partial(pdf_flate_bomb, "objstm")),
]


# --- measuring --------------------------------------------------------------------------------


class PeakRss:
    """The largest resident set size of this process (and its children) while the block runs."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.process = psutil.Process()
        self.start = self._rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def _rss(self) -> int:
        total = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            with suppress(psutil.Error):
                total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    @property
    def grown(self) -> int:
        return self.peak - self.start

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


@contextmanager
def bounded_rss(what: str, bound: int = RSS_BOUND) -> Iterator[PeakRss]:
    with PeakRss() as meter:
        yield meter
    assert meter.grown <= bound, f"{what}: resident memory grew by {meter.grown / MB:.0f} MB"


@pytest.fixture(scope="module", autouse=True)
def _libraries_loaded() -> None:
    """Import the parsing libraries first, so that their own memory is not counted against a bomb."""
    for path in sorted(SAMPLES.iterdir()):
        parse_bytes(path.read_bytes(), path.name)


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {bomb.filename: bomb.build() for bomb in BOMBS}


# --- the registry -----------------------------------------------------------------------------


@pytest.mark.parametrize("bomb", BOMBS, ids=[bomb.filename for bomb in BOMBS])
def test_bomb_fails_alone_with_bounded_memory(bomb: Bomb, bombs: dict[str, bytes]) -> None:
    data = bombs[bomb.filename]
    started = time.monotonic()
    with bounded_rss(bomb.name):
        if bomb.code is None:
            document = parse_bytes(data, bomb.filename)
        else:
            with pytest.raises(ParseError) as caught:
                parse_bytes(data, bomb.filename)
    seconds = time.monotonic() - started
    if bomb.code is None:
        assert "바깥 문서의 본문입니다." in document.text
    else:
        assert caught.value.code == bomb.code, str(caught.value)
        assert bomb.filename in caught.value.message
    assert seconds < 30, f"{bomb.name} took {seconds:.1f} s"


def test_the_bombs_are_small_on_disk(bombs: dict[str, bytes]) -> None:
    assert len(bombs["문단폭탄.docx"]) < 1 * MB
    assert len(bombs["문단폭탄.hwpx"]) < 1 * MB
    assert len(bombs["빈행폭탄.xlsx"]) < 5 * MB
    assert len(bombs["스트림폭탄.pdf"]) < 1 * MB and len(bombs["객체스트림.pdf"]) < 1 * MB


# --- the pipeline and HTTP --------------------------------------------------------------------


def test_pipeline_records_the_bombs_as_failed_and_goes_on(
    make_engine: EngineFactory, bombs: dict[str, bytes]
) -> None:
    from hanrag.auth.access import SYSTEM

    engine = make_engine()
    for bomb in BOMBS:
        if bomb.code is None:
            continue
        with bounded_rss(bomb.name):
            outcome = engine.ingest_upload(bombs[bomb.filename], bomb.filename, caller=SYSTEM)
        assert (outcome.status, outcome.error_code) == ("failed", bomb.code), outcome
    docx = SAMPLES / "제품매뉴얼.docx"
    outcome = engine.ingest_upload(docx.read_bytes(), docx.name, caller=SYSTEM)
    assert outcome.status == "added" and outcome.document_id is not None, outcome
    assert engine.catalog.get(outcome.document_id) is not None


def test_http_upload_of_each_bomb_is_a_422_and_the_server_keeps_answering(
    make_engine: EngineFactory, bombs: dict[str, bytes]
) -> None:
    from api_server import start_server

    server = start_server(make_engine())
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            for bomb in BOMBS:
                if bomb.code is None:
                    continue
                with bounded_rss(bomb.name):
                    response = client.post(
                        "/api/v1/documents", files={"file": (bomb.filename, bombs[bomb.filename])}
                    )
                assert response.status_code == 422, response.text
                assert response.json()["code"] == bomb.code, response.text
                assert client.get("/healthz").status_code == 200
            sample = SAMPLES / "가격표.xlsx"
            response = client.post("/api/v1/documents", files={"file": (sample.name, sample.read_bytes())})
            assert response.status_code == 201, response.text
    finally:
        server.stop()


# --- each limit, from the settings ------------------------------------------------------------


def _limits(**changes: Any) -> ParseLimits:
    return ParseLimits.from_settings(IngestSettings(**changes))


def _too_complex(data: bytes, filename: str, limits: ParseLimits) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse_bytes(data, filename, limits=limits)
    assert caught.value.code == "file_too_complex", str(caught.value)
    return caught.value


def test_a_low_ratio_docx_is_refused_by_its_tree_size_before_it_is_built() -> None:
    # Random attribute values compress about 3:1, under any ratio limit, yet each empty
    # paragraph is an lxml element: the tree is sized from the bytes first.
    rng = random.Random(7)
    paragraphs = b"".join(b'<w:p w:rsidR="%08X"/>' % rng.getrandbits(32) for _ in range(60_000))
    parts: dict[str, bytes | Iterable[bytes]] = dict(_docx_parts())
    parts["word/document.xml"] = _word_body([paragraphs])
    error = _too_complex(_zip(parts), "속성폭탄.docx", _limits(max_document_nodes=100_000))
    assert "max_document_nodes" in error.message


def _docx_with_table(rows: Iterable[bytes]) -> bytes:
    parts: dict[str, bytes | Iterable[bytes]] = dict(_docx_parts())
    parts["word/document.xml"] = _word_body([b"<w:tbl>", *rows, b"</w:tbl>"])
    return _zip(parts)


def test_a_huge_grid_span_is_refused_before_the_row_is_built() -> None:
    # python-docx's row.cells would repeat this one cell a hundred million times.
    cell = b'<w:tc><w:tcPr><w:gridSpan w:val="100000000"/></w:tcPr><w:p><w:r><w:t>x</w:t></w:r></w:p></w:tc>'
    data = _docx_with_table([b"<w:tr>" + cell + b"</w:tr>"] * 2)
    started = time.monotonic()
    with bounded_rss("gridSpan"), pytest.raises(ParseError) as caught:
        parse_bytes(data, "병합폭탄.docx")
    assert caught.value.code == "file_too_complex" and "max_table_cells" in caught.value.message
    assert time.monotonic() - started < 5


def test_a_long_vertical_merge_reads_in_linear_time() -> None:
    # python-docx finds each merged cell by walking up the rows (recursively): quadratic, and a
    # RecursionError past about a thousand rows.
    first = '<w:tr><w:tc><w:tcPr><w:vMerge w:val="restart"/></w:tcPr><w:p><w:r><w:t>구분</w:t></w:r></w:p></w:tc>'.encode()
    continued = b"<w:tr><w:tc><w:tcPr><w:vMerge/></w:tcPr><w:p/></w:tc>"
    value = b"<w:tc><w:p><w:r><w:t>%d</w:t></w:r></w:p></w:tc></w:tr>"
    rows = [first + value % 0] + [continued + value % index for index in range(1, 5_000)]
    started = time.monotonic()
    document = parse_bytes(_docx_with_table(rows), "긴병합.docx")
    assert time.monotonic() - started < 10
    lines = [
        line for section in document.sections if section.kind == "table" for line in section.text.split("\n")
    ]
    assert lines[0] == "구분: 구분, 0: 1" and lines[-1] == "구분: 구분, 0: 4999"


def test_entity_declarations_are_refused() -> None:
    laughs = (
        f'<?xml version="1.0"?><!DOCTYPE w:document [<!ENTITY a "웃음웃음웃음웃음">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        f'<w:document xmlns:w="{WORD_NS}"><w:body><w:p><w:r><w:t>&b;</w:t></w:r></w:p></w:body></w:document>'
    ).encode()
    parts = _docx_parts()
    parts["word/document.xml"] = laughs
    _too_complex(_zip(dict(parts)), "엔티티.docx", _limits())


def test_utf16_markup_is_sized_too() -> None:
    rows = "".join(f'<row r="{index}"/>' for index in range(2, 3_000))
    sheet = f'<?xml version="1.0" encoding="UTF-16"?><worksheet xmlns="{SHEET_NS}"><sheetData>{rows}</sheetData></worksheet>'
    parts = _xlsx_parts()
    parts["xl/worksheets/sheet1.xml"] = sheet.encode("utf-16")
    error = _too_complex(_zip(dict(parts)), "유니코드.xlsx", _limits(max_table_rows=1_000))
    assert "max_table_rows" in error.message


def test_rows_openpyxl_would_skip_are_counted_too() -> None:
    # Rows that repeat one row number are parsed but never yielded by openpyxl: the guard
    # counts the row elements themselves.
    rows = b'<row r="1" ht="20" customHeight="1"/>' * 5_000
    parts = _xlsx_parts()
    parts["xl/worksheets/sheet1.xml"] = (
        f'<worksheet xmlns="{SHEET_NS}"><sheetData>'.encode() + rows + b"</sheetData></worksheet>"
    )
    _too_complex(_zip(dict(parts)), "같은행.xlsx", _limits(max_table_rows=1_000))


def test_overlapping_entries_are_a_bomb() -> None:
    # Entries whose central directory records all point at the same compressed data.
    kernel = random.Random(3).randbytes(2 * MB)
    data = bytearray(_zip({"word/document.xml": kernel}, stored=["word/document.xml"]))
    end = data.rindex(b"PK\x05\x06")
    directory_at = struct.unpack_from("<I", data, end + 16)[0]
    record = bytes(data[directory_at:end])
    copies = 50
    new_end = bytearray(data[end:])
    struct.pack_into("<HHI", new_end, 8, copies, copies, len(record) * copies)
    forged = bytes(data[:directory_at]) + record * copies + bytes(new_end)
    _too_complex(forged, "겹침.docx", _limits())


def test_deadline() -> None:
    rows = [[f"제품{index}", index, f"비고 {index}"] for index in range(5_000)]
    from openpyxl import Workbook

    workbook = Workbook()
    for row in [["제품", "가격", "비고"], *rows]:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    error = _too_complex(buffer.getvalue(), "큰표.xlsx", _limits(max_parse_seconds=0.05))
    assert "max_parse_seconds" in error.message


def test_text_and_cell_limits() -> None:
    sample = SAMPLES / "가격표.xlsx"  # 1,795 characters of text
    _too_complex(sample.read_bytes(), sample.name, _limits(max_text_chars=1_000))
    rows = b"".join(b'<row r="%d"><c r="KZ%d"><v>1</v></c></row>' % (index, index) for index in range(1, 20))
    parts = _xlsx_parts()
    parts["xl/worksheets/sheet1.xml"] = (
        f'<worksheet xmlns="{SHEET_NS}"><sheetData>'.encode() + rows + b"</sheetData></worksheet>"
    )
    # 19 rows of 312 cells (column KZ), empty ones included.
    _too_complex(_zip(dict(parts)), "넓은표.xlsx", _limits(max_table_cells=5_000))
    html = ("<html><body>" + "<p>문단</p>" * 5_000 + "</body></html>").encode()
    _too_complex(html, "태그폭탄.html", _limits(max_document_nodes=10_000))


@pytest.mark.parametrize(
    ("filters", "encode"),
    [
        (b"[/FlateDecode /FlateDecode]", lambda packed: _deflated([packed])),
        (b"[/AHx /Fl]", lambda packed: packed.hex().encode() + b">"),
        (b"[/A85 /Fl]", lambda packed: base64.a85encode(packed) + b"~>"),
        (b"/Flate#44ecode", lambda packed: packed),
        (b"6 0 R", lambda packed: packed),
        (b"/LZWDecode", lambda packed: lzw_bomb(30 * MB)),
    ],
    ids=["flate-twice", "hex", "ascii85", "escaped-name", "indirect-filter", "lzw"],
)
def test_pdf_streams_are_measured_through_their_filters(
    filters: bytes, encode: Callable[[bytes], bytes]
) -> None:
    # 30 MB of content, 1,000:1 (LZW 2,500:1): PDFium decodes every one of these in full.
    data = pdf_flate_bomb(filters=filters, content=encode(_deflated(_repeat(b"q Q\n", 30 * MB))))
    assert "max_compression_ratio" in _too_complex(data, "필터.pdf", _limits()).message


def test_a_pdf_under_the_ratio_parses_and_counts_towards_max_unpacked_mb() -> None:
    rng = random.Random(11)  # 1.3 MB of content that packs 6:1, past the 1 MB ratio floor
    content = b"".join(
        b"q 1 0 0 1 %d %d cm Q\n" % (rng.randrange(600), rng.randrange(800)) for _ in range(60_000)
    )
    data = pdf_flate_bomb(content=_deflated([b"BT /F1 12 Tf 72 700 Td (ordinary page) Tj ET\n", content]))
    assert parse_bytes(data, "보통.pdf").text == "ordinary page"
    with pytest.raises(ParseError) as caught:
        parse_bytes(data, "보통.pdf", limits=_limits(max_unpacked_mb=1))
    assert caught.value.code == "file_too_large"


def test_pdf_images_are_held_to_the_unpacked_size_not_the_ratio() -> None:
    # A white 1500 x 1500 image packs 1,000:1 as a bomb does; PDFium decodes images only to draw them.
    image = b"/Subtype /Image /Width 1500 /Height 1500 /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /Fl"
    pixels = _stream(image, _deflated([b"\xff" * (1500 * 1500 * 3)]))
    content = _deflated([b"q 200 0 0 200 72 400 cm /Im1 Do Q BT /F1 12 Tf 72 700 Td (picture) Tj ET\n"])
    data = pdf_flate_bomb(content=content, extra={7: pixels})
    assert parse_bytes(data, "그림.pdf").text == "picture"
    _too_complex(data.replace(b"/Subtype /Image", b"/Subtype /Fake0"), "그림.pdf", _limits())


def test_unpacked_total_is_file_too_large() -> None:
    data = _zip({**_docx_parts(), "word/media/image1.png": random.Random(5).randbytes(3 * MB)})
    with pytest.raises(ParseError) as caught:
        parse_bytes(data, "큰압축.docx", limits=_limits(max_unpacked_mb=2))
    assert caught.value.code == "file_too_large"


@pytest.mark.parametrize("name", sorted(path.name for path in SAMPLES.iterdir()))
def test_a_cancelled_parse_stops_with_work_cancelled(name: str) -> None:
    from hanrag.cancellation import cancel_scope
    from hanrag.errors import WorkCancelled

    with cancel_scope() as token, pytest.raises(WorkCancelled):
        token.cancel("the request timed out")
        parse_bytes((SAMPLES / name).read_bytes(), name)


# --- normal files are not affected ------------------------------------------------------------

# sha256 of each bundled sample's parse (format, title, date, metadata, sections) as it was
# before the limits existed; the limits must not change a byte of what normal files give.
SAMPLE_DIGESTS = {
    "가격표.xlsx": "e7a193c2b51ad1d71b1aedc10abcfcce481ce202e5b7e02085c4f0787e842684",
    "경비처리지침.html": "cbd0864769ffa3f75b75d03275a54c5450a1dbb6e980d87c442e87783c7de0f5",
    "복리후생안내.hwpx": "aaa6a06e9a62a14df8b6f1449dde9d6b594b9c5004eb7d9ce0391f9334f1e604",
    "인사규정.md": "8f631f5a0018045e2f5df1d7557807dd658a28da862a0e4a3d942f411e6e6c88",
    "정보보안정책.txt": "f018de5cd9b9acd9cd840457603e3015b2ca64bf1d89445f98eab59cc8a1e82d",
    "제품매뉴얼.docx": "4d6865ac31b2b749aa2a0fadeb9612c3e6d3950f265e44ec34f2b77c656dea73",
    "제품매뉴얼.pdf": "a3fbdd443411d890a6f872361498b775bd7de08ef56b2e36758a5f8856f56a69",
}
# The limits that must not bite on the samples either way: the defaults and none at all.
NO_LIMITS = ParseLimits(
    max_unpacked_bytes=2**62,
    max_archive_entries=2**62,
    max_compression_ratio=float("inf"),
    max_nodes=2**62,
    max_table_rows=2**62,
    max_table_cells=2**62,
    max_text_chars=2**62,
    timeout_s=3600,
)


def _digest(document: ParsedDocument) -> str:
    blob = json.dumps(
        {
            "format": document.format,
            "title": document.title,
            "date": document.date.isoformat() if document.date else None,
            "metadata": document.metadata,
            "sections": [[s.text, s.page, s.sheet, s.kind, s.heading] for s in document.sections],
        },
        ensure_ascii=False,
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(SAMPLE_DIGESTS))
def test_samples_parse_exactly_as_before(name: str) -> None:
    data = (SAMPLES / name).read_bytes()
    assert _digest(parse_bytes(data, name)) == SAMPLE_DIGESTS[name]
    assert _digest(parse_bytes(data, name, limits=NO_LIMITS)) == SAMPLE_DIGESTS[name]


def test_docx_merged_cells_read_as_python_docx_reads_them() -> None:
    from docx import Document

    from hanrag.ingest.parsers.budget import file_budget
    from hanrag.ingest.parsers.docx import _table_rows
    from hanrag.ingest.parsers.sections import clean_text

    document = Document()
    table = document.add_table(rows=5, cols=4)
    for r, row in enumerate(table.rows):
        for c, cell in enumerate(row.cells):
            cell.text = f"칸{r}{c}"
    table.cell(0, 0).merge(table.cell(0, 1))  # across
    table.cell(1, 2).merge(table.cell(3, 2))  # down three rows
    table.cell(1, 0).merge(table.cell(2, 1))  # a block
    table.cell(4, 1).merge(table.cell(4, 3))  # across to the end
    expected = [[clean_text(cell.text).replace("\n", " ") for cell in row.cells] for row in table.rows]
    with file_budget("병합.docx") as budget:
        assert list(_table_rows(table, budget)) == expected
    assert expected[1][:2] == expected[2][:2] and expected[1][2] == expected[3][2]
