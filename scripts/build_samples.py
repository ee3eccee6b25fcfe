"""Build the bundled sample documents in ``src/hanrag/samples/`` from ``scripts/sample_sources/``.

The samples are original Korean documents of a fictional company (주식회사 한빛테크)
written for this project. The text ones are kept as they are: ``인사규정.md`` and
``경비처리지침.html`` live directly in ``src/hanrag/samples/``. This script makes
the rest, so each file's origin can be traced to a readable source:

* ``정보보안정책.txt``: ``sample_sources/정보보안정책.txt`` re-encoded as CP949,
  as Korean Windows' Notepad used to save it (tests the encoding detection).
* ``제품매뉴얼.pdf`` and ``제품매뉴얼.docx``: ``sample_sources/제품매뉴얼.md``
  laid out with fpdf2 and python-docx.
* ``복리후생안내.hwpx``: ``sample_sources/복리후생안내.md`` written with python-hwpx.
* ``가격표.xlsx``: the price list defined in this file, written with openpyxl.

The PDF embeds a Hangul TrueType font so its text can be extracted and it looks
right in any viewer; it uses NanumGothic, which Debian ships as ``fonts-nanum``
(``apt-get install fonts-nanum``). Pass ``--font-dir`` to use another copy.
Documents carry fixed dates so a rebuild gives the same metadata.

Usage: ``python scripts/build_samples.py [--font-dir DIR] [--out DIR]``
(needs the dev extras: ``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "scripts" / "sample_sources"
DEFAULT_OUT = ROOT / "src" / "hanrag" / "samples"
DEFAULT_FONT_DIR = Path("/usr/share/fonts/truetype/nanum")
KST = timezone(timedelta(hours=9))
COMPANY = "주식회사 한빛테크"

BlockKind = Literal["title", "heading", "subheading", "paragraph", "bullet", "numbered", "table"]


@dataclass
class Block:
    """One unit of a source document: a heading, a paragraph, a list item or a table."""

    kind: BlockKind
    text: str = ""
    rows: list[list[str]] = field(default_factory=list)


_NUMBERED_ITEM = re.compile(r"^\d+\.\s+")


def read_source(path: Path) -> list[Block]:
    """The blocks of a source file in the small Markdown subset the sources use.

    ``#``/``##``/``###`` headings, ``- `` bullets, ``1. `` numbered items, pipe
    tables (the ``| --- |`` row is skipped) and paragraphs of one line each.
    """
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not line:
            continue
        if line.startswith("### "):
            blocks.append(Block("subheading", line[4:]))
        elif line.startswith("## "):
            blocks.append(Block("heading", line[3:]))
        elif line.startswith("# "):
            blocks.append(Block("title", line[2:]))
        elif line.startswith("- "):
            blocks.append(Block("bullet", line[2:]))
        elif _NUMBERED_ITEM.match(line):
            blocks.append(Block("numbered", line))
        elif line.startswith("|"):
            rows = [_table_cells(line)]
            while index < len(lines) and lines[index].strip().startswith("|"):
                cells = _table_cells(lines[index])
                index += 1
                if not all(set(cell) <= {"-", ":"} for cell in cells):
                    rows.append(cells)
            blocks.append(Block("table", rows=rows))
        else:
            blocks.append(Block("paragraph", line))
    return blocks


def _table_cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def build_cp949_text(out: Path) -> Path:
    target = out / "정보보안정책.txt"
    text = (SOURCES / "정보보안정책.txt").read_text(encoding="utf-8")
    # Windows line ends as well: that is how such files arrive.
    target.write_bytes(text.replace("\n", "\r\n").encode("cp949"))
    return target


def build_manual_pdf(out: Path, font_dir: Path) -> Path:
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    regular, bold = font_dir / "NanumGothic.ttf", font_dir / "NanumGothicBold.ttf"
    for font in (regular, bold):
        if not font.is_file():
            sys.exit(f"font not found: {font} (apt-get install fonts-nanum, or pass --font-dir)")
    blocks = read_source(SOURCES / "제품매뉴얼.md")
    title = blocks[0].text

    class ManualPdf(FPDF):
        def footer(self) -> None:
            self.set_y(-15)
            self.set_font("Nanum", size=8)
            self.cell(0, 10, f"AP-500 사용 설명서 - {self.page_no()}", align="C")

    pdf = ManualPdf(format="A4")
    pdf.add_font("Nanum", "", str(regular))
    pdf.add_font("Nanum", "B", str(bold))
    pdf.set_title(title)
    pdf.set_author(f"{COMPANY} 고객지원팀")
    pdf.set_subject("스마트 공기청정기 AP-500 사용 설명서")
    pdf.set_creator("scripts/build_samples.py")
    pdf.set_creation_date(datetime(2025, 3, 15, 10, 0, tzinfo=KST))
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    for block in blocks:
        if block.kind == "title":
            pdf.set_font("Nanum", "B", 18)
            pdf.multi_cell(0, 10, block.text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(4)
        elif block.kind == "heading":
            # Each chapter on a fresh page once the page is half full, as printed manuals do.
            if pdf.get_y() > pdf.h / 2:
                pdf.add_page()
            pdf.ln(4)
            pdf.set_font("Nanum", "B", 14)
            pdf.multi_cell(0, 8, block.text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(2)
        elif block.kind == "subheading":
            pdf.ln(2)
            pdf.set_font("Nanum", "B", 12)
            pdf.multi_cell(0, 7, block.text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        elif block.kind == "table":
            pdf.set_font("Nanum", size=9)
            widths = (30, 60, 80) if len(block.rows[0]) == 3 else (45, 125)
            with pdf.table(col_widths=widths, text_align="LEFT", line_height=5.5) as table:
                for row in block.rows:
                    table_row = table.row()
                    for cell in row:
                        table_row.cell(cell)
            pdf.ln(3)
        else:
            pdf.set_font("Nanum", size=10.5)
            prefix = "• " if block.kind == "bullet" else ""
            pdf.multi_cell(0, 6.5, prefix + block.text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(1.5)
    target = out / "제품매뉴얼.pdf"
    pdf.output(str(target))
    return target


def build_manual_docx(out: Path) -> Path:
    from docx import Document
    from docx.oxml.ns import qn
    from docx.shared import Pt

    blocks = read_source(SOURCES / "제품매뉴얼.md")
    document = Document()
    normal = document.styles["Normal"]
    normal.font.size = Pt(10.5)
    # Word picks the font for Hangul from the East Asian slot, which the template leaves empty.
    normal.element.get_or_add_rPr().get_or_add_rFonts().set(qn("w:eastAsia"), "맑은 고딕")
    for block in blocks:
        if block.kind == "title":
            document.add_heading(block.text, level=0)
        elif block.kind == "heading":
            document.add_heading(block.text, level=1)
        elif block.kind == "subheading":
            document.add_heading(block.text, level=2)
        elif block.kind == "bullet":
            document.add_paragraph(block.text, style="List Bullet")
        elif block.kind == "numbered":
            document.add_paragraph(_NUMBERED_ITEM.sub("", block.text), style="List Number")
        elif block.kind == "table":
            table = document.add_table(rows=len(block.rows), cols=len(block.rows[0]), style="Table Grid")
            for row_index, row in enumerate(block.rows):
                for column_index, text in enumerate(row):
                    cell = table.cell(row_index, column_index)
                    cell.text = text
                    if row_index == 0:
                        for run in cell.paragraphs[0].runs:
                            run.bold = True
        else:
            document.add_paragraph(block.text)
    properties = document.core_properties
    properties.title = blocks[0].text
    properties.author = f"{COMPANY} 고객지원팀"
    properties.last_modified_by = f"{COMPANY} 고객지원팀"
    properties.subject = "스마트 공기청정기 AP-500 사용 설명서"
    properties.created = datetime(2025, 3, 10, 9, 0)
    properties.modified = datetime(2025, 3, 15, 10, 0)
    properties.revision = 3
    target = out / "제품매뉴얼.docx"
    document.save(str(target))
    return target


def build_benefits_hwpx(out: Path) -> Path:
    from hwpx import HwpxDocument

    blocks = read_source(SOURCES / "복리후생안내.md")
    document = HwpxDocument.new()
    for block in blocks:
        if block.kind == "title":
            document.add_heading(block.text, level=1)
        elif block.kind in ("heading", "subheading"):
            document.add_heading(block.text, level=2 if block.kind == "heading" else 3)
        elif block.kind == "table":
            table = document.add_table(len(block.rows), len(block.rows[0]))
            for row_index, row in enumerate(block.rows):
                for column_index, text in enumerate(row):
                    table.set_cell_text(row_index, column_index, text)
        else:
            prefix = "• " if block.kind == "bullet" else ""
            # An explicit style: new paragraphs would otherwise inherit the heading style above them.
            document.add_paragraph(prefix + block.text, style="바탕글")
    document.parts.set_document_metadata(
        title=blocks[0].text,
        creator=f"{COMPANY} 인사팀",
        subject="임직원 복리후생 제도 안내",
        created_date="2025-01-02T00:00:00Z",
        modified_date="2025-01-02T00:30:00Z",
    )
    target = out / "복리후생안내.hwpx"
    document.save_to_path(str(target))
    # python-hwpx writes through a private temporary file (mode 0600); samples are for everyone to read.
    target.chmod(0o644)
    return target


PRODUCT_HEADER = ["제품코드", "제품명", "분류", "출고가(원)", "할인가(원)", "출시일", "재고 여부", "비고"]
PRODUCTS: list[list[object]] = [
    [
        "AP-300",
        "스마트 공기청정기 AP-300",
        "공기청정기",
        289000,
        259000,
        date(2024, 3, 4),
        True,
        "적용 면적 33m²",
    ],
    [
        "AP-500",
        "스마트 공기청정기 AP-500",
        "공기청정기",
        459000,
        399000,
        date(2025, 3, 1),
        True,
        "적용 면적 66m²",
    ],
    [
        "AP-700",
        "스마트 공기청정기 AP-700",
        "공기청정기",
        689000,
        629000,
        date(2025, 3, 1),
        True,
        "적용 면적 99m²",
    ],
    [
        "AP-500W",
        "스마트 공기청정기 AP-500 화이트 에디션",
        "공기청정기",
        479000,
        None,
        date(2025, 4, 1),
        False,
        "4월 입고 예정",
    ],
    ["HM-200", "가습 공기청정기 HM-200", "가습청정기", 529000, 479000, date(2024, 9, 2), True, None],
    ["APF-300H", "AP-300용 헤파 필터", "필터", 35000, None, date(2024, 3, 4), True, "6개월 교체"],
    [
        "APF-500H",
        "AP-500용 헤파 필터",
        "필터",
        49000,
        None,
        date(2025, 3, 1),
        True,
        "6개월 또는 2,000시간 교체",
    ],
    ["APF-500C", "AP-500용 탈취 필터", "필터", 29000, None, date(2025, 3, 1), True, "12개월 교체"],
    ["APF-700H", "AP-700용 헤파 필터", "필터", 59000, None, date(2025, 3, 1), True, "6개월 교체"],
    [
        "ST-01",
        "공기청정기 전용 바퀴 받침대",
        "액세서리",
        19000,
        15000,
        date(2024, 5, 20),
        True,
        "AP 전 모델 호환",
    ],
]
OPTION_HEADER = ["구분", "항목", "조건", "가격(원)", "할인율", "시작일", "종료일"]
OPTIONS: list[list[object]] = [
    ["서비스", "방문 설치", "AP-700 구매 시", 0, None, date(2025, 1, 1), date(2025, 12, 31)],
    [
        "서비스",
        "연장 보증 1년",
        "무상 보증 2년 종료 후 3년째",
        39000,
        None,
        date(2025, 1, 1),
        date(2025, 12, 31),
    ],
    [
        "정기배송",
        "필터 정기배송 (연 2회)",
        "AP-500 헤파 필터 2개",
        89000,
        None,
        date(2025, 1, 1),
        date(2025, 12, 31),
    ],
    ["할인", "봄맞이 프로모션", "AP-500 구매 시", None, 0.15, date(2025, 3, 1), date(2025, 4, 30)],
    ["할인", "법인 대량 구매", "같은 모델 10대 이상", None, 0.1, date(2025, 1, 1), date(2025, 12, 31)],
    ["할인", "법인 대량 구매", "같은 모델 50대 이상", None, 0.15, date(2025, 1, 1), date(2025, 12, 31)],
    [
        "할인",
        "임직원 할인",
        "한빛테크 임직원 본인, 연 2대까지",
        None,
        0.3,
        date(2025, 1, 1),
        date(2025, 12, 31),
    ],
    ["할인", "보상 판매", "타사 공기청정기 반납 시", 50000, None, date(2025, 5, 1), date(2025, 6, 30)],
]


def build_price_list(out: Path) -> Path:
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.writer.excel import ExcelWriter

    workbook = Workbook()
    products = workbook.active
    products.title = "제품 가격"
    options = workbook.create_sheet("옵션 및 할인")
    for sheet, header, rows in ((products, PRODUCT_HEADER, PRODUCTS), (options, OPTION_HEADER, OPTIONS)):
        sheet.append(header)
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in rows:
            sheet.append(row)
        for column_cells in sheet.columns:
            for cell in column_cells[1:]:
                if isinstance(cell.value, date):
                    cell.number_format = "yyyy-mm-dd"
                elif isinstance(cell.value, float):
                    cell.number_format = "0%"
                elif isinstance(cell.value, int) and not isinstance(cell.value, bool):
                    cell.number_format = "#,##0"
            width = max(len(str(cell.value or "")) for cell in column_cells)
            sheet.column_dimensions[column_cells[0].column_letter].width = min(40, 4 + width * 1.6)
        sheet.freeze_panes = "A2"
    properties = workbook.properties
    properties.title = "2025년 클린에어 제품 가격표"
    properties.creator = f"{COMPANY} 영업기획팀"
    properties.lastModifiedBy = f"{COMPANY} 영업기획팀"
    properties.created = datetime(2025, 2, 20, 9, 0)
    properties.modified = datetime(2025, 3, 1, 9, 0)
    target = out / "가격표.xlsx"
    # openpyxl's save() stamps "modified" with the current time; the writer keeps the date set above.
    from zipfile import ZIP_DEFLATED, ZipFile

    with ZipFile(target, "w", ZIP_DEFLATED) as archive:
        ExcelWriter(workbook, archive).save()
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--font-dir", type=Path, default=DEFAULT_FONT_DIR, help="folder with NanumGothic*.ttf"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the samples go")
    args = parser.parse_args()
    # fontTools logs every font table it drops while subsetting the embedded font; none of it matters here.
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    built = [
        build_cp949_text(args.out),
        build_manual_pdf(args.out, args.font_dir),
        build_manual_docx(args.out),
        build_benefits_hwpx(args.out),
        build_price_list(args.out),
    ]
    for path in built:
        print(
            f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}  {path.stat().st_size:,} bytes"
        )


if __name__ == "__main__":
    main()
