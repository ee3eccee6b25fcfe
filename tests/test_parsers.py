"""Document parsers: every format's happy path, the bad inputs each must refuse, and the bundled samples.

Fixtures are made in ``tmp_path`` with the libraries that write each format
(reportlab/fpdf2, python-docx, openpyxl, python-hwpx) or as plain bytes.
"""

from __future__ import annotations

import io
import json
import random
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from datetime import date, datetime
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hanrag.errors import ParseError
from hanrag.ingest.parsers.base import ParsedDocument
from hanrag.ingest.parsers.hwp import decode_para_text
from hanrag.ingest.parsers.registry import (
    detect_format,
    get_parser,
    parse_bytes,
    parse_file,
    supported_extensions,
)
from hanrag.ingest.parsers.tabular import MAX_ROWS_PER_SECTION, format_cell, render_row
from hanrag.ingest.parsers.text import TextParser

if TYPE_CHECKING:
    from docx.document import Document as DocxDocument
    from hwpx import HwpxDocument

MAX_BYTES = 20 * 1024 * 1024
SAMPLES = Path(str(files("hanrag") / "samples"))


@pytest.fixture
def parse(tmp_path: Path) -> Callable[..., ParsedDocument]:
    """Write ``data`` to ``tmp_path/name`` and parse it through the registry."""

    def run(name: str, data: bytes, *, max_bytes: int = MAX_BYTES) -> ParsedDocument:
        path = tmp_path / name
        path.write_bytes(data)
        return parse_file(path, max_bytes=max_bytes)

    return run


@pytest.fixture
def parse_error(parse: Callable[..., ParsedDocument]) -> Callable[..., ParseError]:
    """Parse and expect a ParseError with ``code`` whose message names the file."""

    def run(name: str, data: bytes, code: str, *, max_bytes: int = MAX_BYTES) -> ParseError:
        with pytest.raises(ParseError) as caught:
            parse(name, data, max_bytes=max_bytes)
        assert caught.value.code == code, str(caught.value)
        assert name in caught.value.message
        return caught.value

    return run


# --- plain text and encodings -------------------------------------------------------------------

POLICY_TEXT = (
    "보안 정책 안내\n\n제1장 총칙\n이 정책은 모든 임직원에게 적용한다.\n\n"
    "제2장 비밀번호\n비밀번호는 90일마다 변경한다. 똠방각하 같은 희귀 음절도 읽어야 한다.\n"
)


def test_utf8_text_splits_at_korean_chapter_headings(parse: Callable[..., ParsedDocument]) -> None:
    document = parse("정책.txt", POLICY_TEXT.encode("utf-8"))
    assert document.format == "text"
    assert document.title == "보안 정책 안내"
    assert document.metadata["encoding"] == "utf-8"
    assert [section.heading for section in document.sections] == [None, "제1장 총칙", "제2장 비밀번호"]
    assert "90일마다 변경" in document.sections[2].text


@pytest.mark.parametrize(
    ("encoding", "prefix"),
    [
        ("cp949", b""),
        ("utf-8", b"\xef\xbb\xbf"),
        ("utf-16-le", b"\xff\xfe"),
        ("utf-16-be", b"\xfe\xff"),
    ],
)
def test_text_encodings_are_detected(
    parse: Callable[..., ParsedDocument], encoding: str, prefix: bytes
) -> None:
    document = parse("정책.txt", prefix + POLICY_TEXT.encode(encoding))
    assert "똠방각하" in document.text
    assert "\ufeff" not in document.text


def test_euc_kr_text_is_read_as_cp949(parse: Callable[..., ParsedDocument]) -> None:
    text = "연차휴가는 15일이며 최대 25일까지 늘어난다.\n" * 3
    document = parse("휴가.txt", text.encode("euc-kr"))
    assert document.metadata["encoding"] == "cp949"
    assert "최대 25일" in document.text


@pytest.mark.parametrize("encoding", ["utf-8", "cp949"])
def test_a_stray_damaged_byte_does_not_lose_the_encoding(
    parse: Callable[..., ParsedDocument], encoding: str
) -> None:
    text = (POLICY_TEXT * 10).encode(encoding)
    # A byte that is invalid here, and a file cut off inside its last character.
    damaged = text[:60] + b"\xff" + text[60:] + "가".encode(encoding)[:1]
    document = parse("손상.txt", damaged)
    assert document.metadata["encoding"] == encoding
    assert "똠방각하" in document.text


def test_undecodable_text_is_an_encoding_error(parse_error: Callable[..., ParseError]) -> None:
    rng = random.Random(3)
    # No NUL bytes (which would make it "binary"), and no encoding gives readable text.
    noise = bytes(rng.randrange(0x80, 0x100) for _ in range(3000))
    parse_error("깨진파일.txt", noise, "encoding_error")


def test_markdown_headings_title_tables_and_code_fences(parse: Callable[..., ParsedDocument]) -> None:
    markdown = """# 인사규정

머리말 문단.

## 연차휴가

1년 근속 시 15일을 준다.

| 근속 연수 | 휴가 일수 |
| --- | ---: |
| 1년 | 15일 |
| 3년 | 16일 |

```text
# 이것은 제목이 아니다
```

## 병가
연간 30일까지 유급이다.
"""
    document = parse("규정.md", markdown.encode("utf-8"))
    assert document.format == "markdown"
    assert document.title == "인사규정"
    headings = [section.heading for section in document.sections]
    assert "연차휴가" in headings and "병가" in headings
    assert "이것은 제목이 아니다" not in headings
    table = next(section for section in document.sections if section.kind == "table")
    assert table.heading == "연차휴가"
    assert "근속 연수: 3년, 휴가 일수: 16일" in table.text
    assert "# 이것은 제목이 아니다" in document.text


# --- HTML -------------------------------------------------------------------------------------


def test_html_drops_scripts_and_navigation_and_renders_tables(parse: Callable[..., ParsedDocument]) -> None:
    page = """<!DOCTYPE html><html><head><title>경비 지침</title>
<meta property="article:modified_time" content="2025-02-03T10:00:00+09:00">
<style>p { color: red }</style><script>var secret = "스크립트";</script></head>
<body><nav>홈 | 메뉴</nav><h1>경비 처리</h1><p>법인카드를 우선 사용한다.</p>
<h2>한도</h2><table><tr><th>항목</th><th>한도</th></tr>
<tr><td>야근 식대</td><td>12,000원</td></tr><tr><td>택시비</td><td>실비</td></tr></table>
<ol><li>7일 안에 정산한다.</li><li>25일에 마감한다.</li></ol></body></html>"""
    document = parse("경비.html", page.encode("utf-8"))
    assert document.format == "html"
    assert document.title == "경비 지침"
    assert document.date == datetime.fromisoformat("2025-02-03T10:00:00+09:00")
    assert "스크립트" not in document.text and "메뉴" not in document.text and "color" not in document.text
    table = next(section for section in document.sections if section.kind == "table")
    assert table.heading == "한도"
    # The heading had no text of its own before the table, so it leads the table section.
    assert table.text.splitlines() == ["한도", "항목: 야근 식대, 한도: 12,000원", "항목: 택시비, 한도: 실비"]
    assert "1. 7일 안에 정산한다.\n2. 25일에 마감한다." in document.text


def test_html_declared_euc_kr_and_h1_title(parse: Callable[..., ParsedDocument]) -> None:
    page = '<html><head><meta charset="euc-kr"></head><body><h1>공지사항</h1><p>똠양꿍 회식</p></body></html>'
    document = parse("공지.htm", page.encode("cp949"))
    assert document.title == "공지사항"
    assert "똠양꿍 회식" in document.text


def test_html_layout_table_is_read_as_page_content(parse: Callable[..., ParsedDocument]) -> None:
    page = """<html><body><table><tr><td><h2>공지</h2><p>첫째 문단.</p><p>둘째 문단.</p></td></tr>
<tr><td><h2>연락처</h2><p>내선 3120</p></td></tr></table></body></html>"""
    document = parse("공지.html", page.encode("utf-8"))
    assert [(section.kind, section.heading) for section in document.sections] == [
        ("text", "공지"),
        ("text", "연락처"),
    ]
    assert document.sections[0].text == "공지\n첫째 문단.\n둘째 문단."


# --- PDF --------------------------------------------------------------------------------------


def _korean_pdf(pages: list[str], *, title: str = "제품 설명서", encrypt: object = None) -> bytes:
    """A PDF with one line of Korean per page, in reportlab's built-in CID font (no font file needed)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("HYSMyeongJo-Medium"))
    buffer = io.BytesIO()
    # invariant=1 stamps the fixed date 2000-01-01 instead of "now".
    pdf = canvas.Canvas(buffer, invariant=1, encrypt=encrypt)
    pdf.setTitle(title)
    for text in pages:
        pdf.setFont("HYSMyeongJo-Medium", 12)
        pdf.drawString(72, 720, text)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def test_pdf_one_section_per_page_with_metadata(parse: Callable[..., ParsedDocument]) -> None:
    pages = ["1장 안전 주의사항", "2장 필터 교체는 6개월마다", "3장 고객센터 080-500-5000"]
    document = parse("매뉴얼.pdf", _korean_pdf(pages))
    assert document.format == "pdf"
    assert [section.page for section in document.sections] == [1, 2, 3]
    assert [section.text for section in document.sections] == pages
    assert document.title == "제품 설명서"
    assert document.date is not None and document.date.year == 2000
    assert document.metadata["pages"] == "3"


def test_pdf_date_from_fpdf2_metadata(parse: Callable[..., ParsedDocument]) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title("Quarterly report")
    pdf.set_creation_date(datetime.fromisoformat("2024-01-05T09:30:00+09:00"))
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.cell(0, 10, "Revenue grew 12 percent.")
    document = parse("report.pdf", bytes(pdf.output()))
    assert document.date == datetime.fromisoformat("2024-01-05T09:30:00+09:00")
    assert document.title == "Quarterly report"


def test_password_protected_pdf_is_encrypted_file(parse_error: Callable[..., ParseError]) -> None:
    from reportlab.lib.pdfencrypt import StandardEncryption

    data = _korean_pdf(["비밀 문서"], encrypt=StandardEncryption("user-password", "owner-password"))
    parse_error("비밀.pdf", data, "encrypted_file")


def test_pdf_with_only_an_owner_password_still_parses(parse: Callable[..., ParsedDocument]) -> None:
    from reportlab.lib.pdfencrypt import StandardEncryption

    data = _korean_pdf(["인쇄 금지 문서"], encrypt=StandardEncryption("", "owner-password", canPrint=0))
    assert "인쇄 금지 문서" in parse("제한.pdf", data).text


def test_pdf_without_text_is_no_text(parse_error: Callable[..., ParseError]) -> None:
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    # A scanned page: pictures only, nothing to extract.
    pdf.rect(100, 100, 300, 400, fill=1)
    pdf.showPage()
    pdf.save()
    error = parse_error("스캔.pdf", buffer.getvalue(), "no_text")
    assert "OCR" in error.message


def test_corrupt_pdf_is_corrupt_file(parse_error: Callable[..., ParseError]) -> None:
    data = _korean_pdf(["정상 문서"])
    parse_error("잘림.pdf", data[:200], "corrupt_file")


# --- DOCX -------------------------------------------------------------------------------------


def _docx(build: Callable[[DocxDocument], object]) -> bytes:
    from docx import Document

    document = Document()
    build(document)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_docx_keeps_tables_in_place_with_headings_and_properties(
    parse: Callable[..., ParsedDocument],
) -> None:
    def build(document: DocxDocument) -> None:
        document.add_heading("공기청정기 매뉴얼", level=0)
        document.add_paragraph("첫 문단입니다.")
        document.add_heading("제품 사양", level=1)
        table = document.add_table(rows=3, cols=2)
        for row_index, row in enumerate([["항목", "사양"], ["소비 전력", "45W"], ["무게", "8.5kg"]]):
            for column_index, text in enumerate(row):
                table.cell(row_index, column_index).text = text
        document.add_paragraph("표 다음 문단입니다.")
        document.add_heading("문제 해결", level=1)
        document.add_paragraph("E1은 팬 모터 이상입니다.")
        properties = document.core_properties
        properties.title = "AP-500 매뉴얼"
        properties.created = datetime(2025, 3, 10, 9, 0)
        properties.modified = datetime(2025, 3, 15, 10, 0)

    document = parse("매뉴얼.docx", _docx(build))
    assert document.format == "docx"
    assert document.title == "AP-500 매뉴얼"
    assert document.date is not None and document.date.replace(tzinfo=None) == datetime(2025, 3, 15, 10, 0)
    kinds = [(section.kind, section.heading) for section in document.sections]
    assert kinds == [
        ("text", "공기청정기 매뉴얼"),
        ("table", "제품 사양"),
        ("text", "제품 사양"),
        ("text", "문제 해결"),
    ]
    assert document.sections[1].text == "제품 사양\n항목: 소비 전력, 사양: 45W\n항목: 무게, 사양: 8.5kg"
    assert document.sections[2].text == "표 다음 문단입니다."


def test_truncated_docx_is_corrupt_file(parse_error: Callable[..., ParseError]) -> None:
    data = _docx(lambda document: document.add_paragraph("내용"))
    parse_error("잘림.docx", data[: len(data) // 2], "corrupt_file")


def _encrypted_office_file() -> bytes:
    """What Office writes for a password-protected .docx/.xlsx: an OLE file with an encrypted package."""
    from hwpx.hwp5.cfb import build_compound_file

    return build_compound_file(
        [("EncryptionInfo", b"\x04\x00\x04\x00" + b"\x00" * 60), ("EncryptedPackage", b"\x01" * 600)]
    )


@pytest.mark.parametrize("name", ["암호.docx", "암호.xlsx"])
def test_password_protected_office_file_is_encrypted_file(
    parse_error: Callable[..., ParseError], name: str
) -> None:
    parse_error(name, _encrypted_office_file(), "encrypted_file")


# --- XLSX -------------------------------------------------------------------------------------


def _xlsx(sheets: dict[str, list[list[object]]], *, percent_columns: tuple[int, ...] = ()) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.remove(workbook.active)
    for name, rows in sheets.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
        for column in percent_columns:
            for (cell,) in sheet.iter_rows(min_row=2, min_col=column, max_col=column):
                cell.number_format = "0%"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_xlsx_rows_become_header_value_lines(parse: Callable[..., ParsedDocument]) -> None:
    data = _xlsx(
        {
            "제품": [
                [None, None, None],
                ["제품코드", "가격", "출시일", "할인율"],
                ["AP-500", 459000.0, datetime(2025, 3, 1), 0.15],
                ["AP-700", 689000, date(2025, 3, 1), None],
            ],
            "빈 시트": [],
            "옵션": [["항목", "가격"], ["설치", 0], ["연장 보증", 39000]],
        },
        percent_columns=(4,),
    )
    document = parse("가격표.xlsx", data)
    assert document.format == "xlsx"
    assert [section.sheet for section in document.sections] == ["제품", "옵션"]
    assert all(section.kind == "table" for section in document.sections)
    assert document.sections[0].text.splitlines() == [
        "제품코드: AP-500, 가격: 459000, 출시일: 2025-03-01, 할인율: 15%",
        "제품코드: AP-700, 가격: 689000, 출시일: 2025-03-01",
    ]
    assert "항목: 설치, 가격: 0" in document.sections[1].text


def test_large_sheet_is_split_into_sections(parse: Callable[..., ParsedDocument]) -> None:
    rows: list[list[object]] = [["번호", "이름"], *([number, f"직원{number}"] for number in range(1, 121))]
    document = parse("명단.xlsx", _xlsx({"명단": rows}))
    line_counts = [len(section.text.splitlines()) for section in document.sections]
    assert line_counts == [MAX_ROWS_PER_SECTION, MAX_ROWS_PER_SECTION, 20]
    assert document.sections[2].text.splitlines()[-1] == "번호: 120, 이름: 직원120"
    assert {section.sheet for section in document.sections} == {"명단"}


def test_truncated_xlsx_is_corrupt_file(parse_error: Callable[..., ParseError]) -> None:
    data = _xlsx({"시트": [["a", "b"], [1, 2]]})
    parse_error("잘림.xlsx", data[: len(data) - 300], "corrupt_file")


# --- CSV and JSON -----------------------------------------------------------------------------


def test_cp949_csv_with_quoted_commas(parse: Callable[..., ParsedDocument]) -> None:
    text = '제품명,가격,비고\r\n공기청정기,"459,000원",봄 할인\r\n필터,"49,000원",\r\n'
    document = parse("가격.csv", text.encode("cp949"))
    assert document.format == "csv"
    assert document.metadata["encoding"] == "cp949"
    assert document.sections[0].kind == "table"
    assert document.sections[0].text.splitlines() == [
        "제품명: 공기청정기, 가격: 459,000원, 비고: 봄 할인",
        "제품명: 필터, 가격: 49,000원",
    ]


@pytest.mark.parametrize(("name", "delimiter"), [("목록.tsv", "\t"), ("목록.csv", ";")])
def test_csv_delimiter_is_sniffed(parse: Callable[..., ParsedDocument], name: str, delimiter: str) -> None:
    text = delimiter.join(["이름", "부서"]) + "\n" + delimiter.join(["김민지", "인사팀"]) + "\n"
    document = parse(name, text.encode("utf-8"))
    assert document.text == "이름: 김민지, 부서: 인사팀"


def test_json_object_is_flattened_and_record_lists_become_tables(
    parse: Callable[..., ParsedDocument],
) -> None:
    value = {
        "title": "복지 제도",
        "updated_at": "2025-01-02",
        "담당": {"부서": "인사팀", "연락처": {"내선": 2314}},
        "태그": ["복지", "건강"],
        "제도": [{"이름": "건강검진", "지원": "전액"}, {"이름": "통신비", "지원": "월 5만 원"}],
    }
    document = parse("복지.json", json.dumps(value, ensure_ascii=False).encode("utf-8"))
    assert document.format == "json"
    assert document.title == "복지 제도"
    assert document.date == datetime(2025, 1, 2)
    assert "담당.연락처.내선: 2314" in document.sections[0].text
    assert "태그: 복지, 건강" in document.sections[0].text
    records = document.sections[1]
    assert (records.kind, records.heading) == ("table", "제도")
    assert records.text.splitlines() == ["이름: 건강검진, 지원: 전액", "이름: 통신비, 지원: 월 5만 원"]


def test_json_lines_one_line_per_record(parse: Callable[..., ParsedDocument]) -> None:
    lines = ['{"질문": "연차는 며칠?", "답": "15일"}', '{"질문": "병가는?", "답": "30일"}']
    document = parse("faq.jsonl", "\n".join(lines).encode("utf-8"))
    assert document.text == "질문: 연차는 며칠?, 답: 15일\n질문: 병가는?, 답: 30일"


def test_invalid_json_is_corrupt_file(parse_error: Callable[..., ParseError]) -> None:
    parse_error("깨짐.json", b'{"title": "unterminated', "corrupt_file")


# --- HWPX and HWP -----------------------------------------------------------------------------


def _hangul_document() -> HwpxDocument:
    """A python-hwpx document: heading, body paragraphs, a 3x2 table, a closing paragraph."""
    from hwpx import HwpxDocument

    document = HwpxDocument.new()
    document.add_heading("복리후생 안내", level=1)
    # Explicit body style: python-hwpx would otherwise copy the heading style of the previous paragraph.
    document.add_paragraph("건강검진은 매년 10월까지 받는다.", style="바탕글")
    table = document.add_table(3, 2)
    for row_index, row in enumerate(
        [["항목", "금액"], ["자녀 학자금", "연 300만 원"], ["통신비", "월 5만 원"]]
    ):
        for column_index, text in enumerate(row):
            table.set_cell_text(row_index, column_index, text)
    document.add_heading("문의", level=2)
    document.add_paragraph("인사팀 김민지 과장 (내선 2314)", style="바탕글")
    document.parts.set_document_metadata(title="2025 복리후생", modified_date="2025-01-02T00:30:00Z")
    return document


def _assert_hangul_document(document: ParsedDocument) -> None:
    assert document.title == "2025 복리후생"
    assert [(section.kind, section.heading) for section in document.sections] == [
        ("text", "복리후생 안내"),
        ("table", "복리후생 안내"),
        ("text", "문의"),
    ]
    assert document.sections[0].text == "복리후생 안내\n건강검진은 매년 10월까지 받는다."
    assert document.sections[1].text == "항목: 자녀 학자금, 금액: 연 300만 원\n항목: 통신비, 금액: 월 5만 원"
    assert document.sections[2].text == "문의\n인사팀 김민지 과장 (내선 2314)"


@pytest.fixture(scope="module")
def hwpx_bytes() -> bytes:
    return bytes(_hangul_document().to_bytes())


@pytest.fixture(scope="module")
def hwp_bytes() -> bytes:
    return bytes(_hangul_document().to_bytes(format="hwp"))


def test_hwpx_text_headings_tables_and_metadata(
    parse: Callable[..., ParsedDocument], hwpx_bytes: bytes
) -> None:
    document = parse("복리후생.hwpx", hwpx_bytes)
    assert document.format == "hwpx"
    assert document.date is not None and document.date.year == 2025
    _assert_hangul_document(document)


def test_password_protected_hwpx_is_encrypted_file(
    parse_error: Callable[..., ParseError], hwpx_bytes: bytes
) -> None:
    source = zipfile.ZipFile(io.BytesIO(hwpx_bytes))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "META-INF/manifest.xml":
                # What Hangul writes for an encrypted part (ODF-style manifest encryption data).
                data = (
                    b'<odf:manifest xmlns:odf="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0">'
                    b'<odf:file-entry odf:full-path="Contents/section0.xml"><odf:encryption-data/>'
                    b"</odf:file-entry></odf:manifest>"
                )
            target.writestr(info, data)
    parse_error("암호.hwpx", buffer.getvalue(), "encrypted_file")


def test_corrupt_hwpx_is_corrupt_file(parse_error: Callable[..., ParseError], hwpx_bytes: bytes) -> None:
    parse_error("잘림.hwpx", hwpx_bytes[:3000], "corrupt_file")


def test_hwp_text_headings_tables_and_metadata(
    parse: Callable[..., ParsedDocument], hwp_bytes: bytes
) -> None:
    document = parse("복리후생.hwp", hwp_bytes)
    assert document.format == "hwp"
    _assert_hangul_document(document)


def _rewrite_hwp(data: bytes, change: Callable[[dict[str, bytes]], None]) -> bytes:
    """Re-pack an HWP compound file after ``change`` edits its streams (python-hwpx's CFB writer)."""
    import olefile
    from hwpx.hwp5.cfb import build_compound_file

    with olefile.OleFileIO(data) as ole:
        streams = {"/".join(entry): ole.openstream(entry).read() for entry in ole.listdir()}
    change(streams)
    return bytes(build_compound_file(streams.items()))


def _set_header_flags(streams: dict[str, bytes], set_bits: int = 0, clear_bits: int = 0) -> None:
    header = bytearray(streams["FileHeader"])
    (flags,) = struct.unpack_from("<I", header, 36)
    struct.pack_into("<I", header, 36, (flags | set_bits) & ~clear_bits)
    streams["FileHeader"] = bytes(header)


def test_uncompressed_hwp_is_read_too(parse: Callable[..., ParsedDocument], hwp_bytes: bytes) -> None:
    def decompress(streams: dict[str, bytes]) -> None:
        for name in ("DocInfo", "BodyText/Section0"):
            streams[name] = zlib.decompress(streams[name], -15)
        _set_header_flags(streams, clear_bits=0b1)

    _assert_hangul_document(parse("비압축.hwp", _rewrite_hwp(hwp_bytes, decompress)))


def test_password_protected_hwp_is_encrypted_file(
    parse_error: Callable[..., ParseError], hwp_bytes: bytes
) -> None:
    data = _rewrite_hwp(hwp_bytes, lambda streams: _set_header_flags(streams, set_bits=0b10))
    parse_error("암호.hwp", data, "encrypted_file")


def test_distribution_hwp_is_encrypted_file_with_clear_message(
    parse_error: Callable[..., ParseError], hwp_bytes: bytes
) -> None:
    def to_distribution(streams: dict[str, bytes]) -> None:
        # A distribution document keeps its encrypted body in ViewText/ instead of BodyText/.
        streams["ViewText/Section0"] = streams.pop("BodyText/Section0")
        _set_header_flags(streams, set_bits=0b100)

    error = parse_error("배포용.hwp", _rewrite_hwp(hwp_bytes, to_distribution), "encrypted_file")
    assert "배포용 문서" in error.message


def test_hwp3_is_unsupported(parse_error: Callable[..., ParseError]) -> None:
    parse_error(
        "옛문서.hwp",
        b"HWP Document File V3.00 \x1a\x01\x02\x03\x04\x05" + b"\x00" * 200,
        "unsupported_format",
    )


def test_corrupt_hwp_is_corrupt_file(parse_error: Callable[..., ParseError], hwp_bytes: bytes) -> None:
    parse_error("잘림.hwp", hwp_bytes[:1500], "corrupt_file")


def test_para_text_control_characters() -> None:
    def units(*values: int) -> bytes:
        return struct.pack(f"<{len(values)}H", *values)

    # Extended (table anchor) and inline (tab) controls: the code, six units of parameters, the code.
    extended = units(0x0B, 0x6C74, 0x2062, 0, 0, 0, 0, 0x0B)
    tab = units(0x09, 0, 0, 0, 0, 0, 0, 0x09)
    payload = (
        "가".encode("utf-16-le")
        + extended
        + "나".encode("utf-16-le")
        + tab
        + "😀".encode("utf-16-le")  # a surrogate pair survives
        + units(0x0A)
        + "다".encode("utf-16-le")
        + units(0x0D)
    )
    # The table anchor stands between words: it reads as a space (issue 18 item 7).
    assert decode_para_text(payload) == "가 나\t😀\n다"


# --- registry: sniffing, limits, refusals -----------------------------------------------------


def test_empty_file_is_empty_file(parse_error: Callable[..., ParseError]) -> None:
    parse_error("빈파일.txt", b"", "empty_file")


def test_file_over_the_limit_is_refused_before_reading(parse_error: Callable[..., ParseError]) -> None:
    error = parse_error("큰파일.txt", "가".encode() * 2000, "file_too_large", max_bytes=1000)
    assert "1,000" in error.message


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("사진.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 100),
        ("사진인척.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 100),
        ("setup.exe", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + b"\x00" * 100),
        ("데이터.bin", b"\x00\x01\x02\x03" * 50),
        ("노트.xyz", "그냥 텍스트".encode()),
    ],
)
def test_unknown_or_binary_formats_are_unsupported(
    parse_error: Callable[..., ParseError], name: str, data: bytes
) -> None:
    error = parse_error(name, data, "unsupported_format")
    assert Path(name).suffix in error.message


def test_text_starting_with_an_ascii_binary_signature_is_still_text(
    parse: Callable[..., ParsedDocument],
) -> None:
    assert parse("트렌드.txt", "MZ세대 소비 트렌드 보고서".encode()).text == "MZ세대 소비 트렌드 보고서"


def test_content_sniffing_wins_over_the_extension(parse: Callable[..., ParsedDocument]) -> None:
    document = parse("사실은PDF.txt", _korean_pdf(["확장자는 txt 이지만 PDF"]))
    assert document.format == "pdf"
    assert "PDF" in document.text


def test_detect_format_reads_zip_member_names(hwpx_bytes: bytes) -> None:
    docx = _docx(lambda document: document.add_paragraph("내용"))
    xlsx = _xlsx({"시트": [["a"], [1]]})
    for data, expected in ((docx, "docx"), (xlsx, "xlsx"), (hwpx_bytes, "hwpx")):
        assert detect_format(data, "이름없음") == expected
        # Only the first bytes (local file headers) are needed, whatever the name says.
        assert detect_format(data[:8192], "file.zip") == expected


def test_detect_format_other_signatures(hwp_bytes: bytes) -> None:
    assert detect_format(hwp_bytes, "문서") == "hwp"
    assert detect_format(b"<!DOCTYPE html><html><body>", "page.txt") == "html"
    assert detect_format(b'  {"title": "x"}', "data.txt") == "json"
    assert detect_format(b"[link](https://example.com) is markdown", "readme.md") == "markdown"
    assert detect_format("제목\n본문".encode(), "a.TXT") == "text"


def test_unexpected_parser_exception_becomes_corrupt_file(
    parse_error: Callable[..., ParseError], monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: TextParser, data: bytes, filename: str) -> ParsedDocument:
        raise IndexError("list index out of range")

    monkeypatch.setattr(TextParser, "parse", explode)
    error = parse_error("문서.txt", "내용".encode(), "corrupt_file")
    assert "IndexError" in error.message


def test_whitespace_only_document_is_no_text() -> None:
    with pytest.raises(ParseError) as caught:
        parse_bytes(b"  \n\n\t \n", "공백.txt")
    assert caught.value.code == "no_text"


def test_supported_extensions_and_get_parser() -> None:
    extensions = supported_extensions()
    for extension in (".pdf", ".docx", ".xlsx", ".hwp", ".hwpx", ".html", ".md", ".txt", ".csv", ".json"):
        assert extension in extensions
    assert get_parser("pdf").format == "pdf"
    with pytest.raises(ParseError):
        get_parser("doc")


def test_importing_the_registry_does_not_import_parser_libraries() -> None:
    heavy = ["pypdfium2", "docx", "openpyxl", "bs4", "olefile", "charset_normalizer", "lxml"]
    code = (
        "import sys, hanrag.ingest.parsers.registry\n"
        f"print([name for name in {heavy!r} if name in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_cell_formatting() -> None:
    assert format_cell(3.0) == "3"
    assert format_cell(0.1 + 0.2) == "0.3"
    assert format_cell(datetime(2025, 3, 1)) == "2025-03-01"
    assert format_cell(datetime(2025, 3, 1, 14, 30)) == "2025-03-01 14:30"
    assert format_cell(" 여러\n줄 ") == "여러 줄"
    assert render_row(["이름", "", "부서"], ["김민지", "메모", ""]) == "이름: 김민지, 메모"


# --- bundled samples --------------------------------------------------------------------------

SAMPLE_PHRASES = {
    "인사규정.md": ("markdown", "15일의 유급 연차휴가"),
    "정보보안정책.txt": ("text", "HB-Connect"),
    "경비처리지침.html": ("html", "야근 식대, 한도: 1인 1회 12,000원"),
    "제품매뉴얼.pdf": ("pdf", "APF-500H"),
    "제품매뉴얼.docx": ("docx", "청정 능력(CADR), 사양: 420m³/h"),
    "가격표.xlsx": ("xlsx", "제품코드: AP-500, 제품명: 스마트 공기청정기 AP-500"),
    "복리후생안내.hwpx": ("hwpx", "임직원 1인당 연 120만 원의 자기계발비"),
}


def test_every_sample_has_an_expected_phrase_and_samples_stay_small() -> None:
    names = {path.name for path in SAMPLES.iterdir() if path.is_file()}
    assert names == set(SAMPLE_PHRASES)
    assert sum(path.stat().st_size for path in SAMPLES.iterdir()) < 1024 * 1024


@pytest.mark.parametrize("name", sorted(SAMPLE_PHRASES))
def test_bundled_samples_parse(name: str) -> None:
    expected_format, phrase = SAMPLE_PHRASES[name]
    document = parse_file(SAMPLES / name, max_bytes=MAX_BYTES)
    assert document.format == expected_format
    assert phrase in document.text
    assert document.title


def test_sample_pdf_has_pages_and_the_text_sample_is_cp949() -> None:
    pdf = parse_file(SAMPLES / "제품매뉴얼.pdf", max_bytes=MAX_BYTES)
    assert int(pdf.metadata["pages"]) >= 3
    assert all(section.page is not None for section in pdf.sections)
    assert parse_file(SAMPLES / "정보보안정책.txt", max_bytes=MAX_BYTES).metadata["encoding"] == "cp949"
