"""Korean text fidelity in HWP and HWPX (issue 18 item 7) and extractive answers that read
table rows and numeric ranges (item 8).

HWP/HWPX fixtures are written with python-hwpx and, where Hangul itself writes a part
differently (headers and footers sit in ``hp:ctrl``), the section XML is rewritten the
way Hangul writes it.
"""

from __future__ import annotations

import asyncio
import io
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from hanrag.auth.access import SYSTEM
from hanrag.ingest.parsers.hwp import decode_para_text
from hanrag.ingest.parsers.registry import parse_bytes
from hanrag.llm.extractive import render_row
from hanrag.llm.numeric_ranges import Span, fit, spans

OLD_HANGUL = "\u1112\u119e\u11ab글"  # ᄒᆞᆫ글, as Hangul's own sample documents spell it
EXTENDED_JAMO = "\ua960\u1161\ud7b0"  # a syllable with extended-block initial and vowel jamo
_HEADER = (
    '<hp:ctrl><hp:{kind} id="{id}" applyPageType="BOTH"><hp:subList id="" textDirection="HORIZONTAL" '
    'lineWrap="BREAK" vertAlign="TOP"><hp:p id="{id}" paraPrIDRef="0" styleIDRef="0"><hp:run '
    'charPrIDRef="0"><hp:t>{text}</hp:t></hp:run></hp:p></hp:subList></hp:{kind}></hp:ctrl>'
)


def _document() -> Any:
    from hwpx import HwpxDocument

    document = HwpxDocument.new()
    document.add_paragraph(
        f"{OLD_HANGUL} 문서는 옛한글 {EXTENDED_JAMO} 자모를 그대로 담는다.", style="바탕글"
    )
    paragraph = document.add_paragraph("표", style="바탕글")
    table = paragraph.add_table(2, 2)
    for row, values in enumerate([["항목", "값"], ["가", "나"]]):
        for column, value in enumerate(values):
            table.set_cell_text(row, column, value)
    paragraph.add_run("끝")
    document.add_paragraph("표 끝", style="바탕글")
    shape = document.add_paragraph("그림", style="바탕글")
    shape.add_rectangle()
    shape.add_run("뒤")
    return document


def _with_hangul_header(data: bytes) -> bytes:
    """Headers and footers as Hangul writes them: ``hp:ctrl`` in the first paragraph's run."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            part = source.read(info)
            if info.filename == "Contents/section0.xml":
                xml = part.decode()
                run = xml.index("<hp:t>" + OLD_HANGUL)
                controls = _HEADER.format(kind="header", id="901", text="한빛테크 머리말") + _HEADER.format(
                    kind="footer", id="902", text="대외비 꼬리말"
                )
                part = (xml[:run] + controls + xml[run:]).encode()
            target.writestr(info, part)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hwpx_bytes() -> bytes:
    return _with_hangul_header(bytes(_document().to_bytes()))


@pytest.fixture(scope="module")
def hwp_bytes() -> bytes:
    return bytes(_document().to_bytes(format="hwp"))


def _texts(data: bytes, name: str) -> str:
    return "\n".join(section.text for section in parse_bytes(data, name).sections)


@pytest.mark.parametrize("name", ["옛한글.hwpx", "옛한글.hwp"])
def test_old_hangul_and_spacing_around_objects(name: str, hwpx_bytes: bytes, hwp_bytes: bytes) -> None:
    text = _texts(hwpx_bytes if name.endswith("x") else hwp_bytes, name)
    assert f"{OLD_HANGUL} 문서는 옛한글 {EXTENDED_JAMO} 자모를" in text
    assert "표 끝" in text.split("\n")
    assert "표표" not in text and "표끝" not in text
    assert "그림뒤" not in text and "그림" in text and "뒤" in text
    assert "항목: 가, 값: 나" in text


def test_hwpx_header_and_footer_are_read_once(hwpx_bytes: bytes) -> None:
    text = _texts(hwpx_bytes, "머리말.hwpx")
    assert text.count("한빛테크 머리말") == 1
    assert text.count("대외비 꼬리말") == 1


def test_table_and_object_controls_stand_between_words() -> None:
    def units(*values: int) -> bytes:
        return struct.pack(f"<{len(values)}H", *values)

    table = units(11, *b"lbt ", 0, 0, 11)  # "tbl " control id, little-endian, as Hangul writes it
    assert decode_para_text("표".encode("utf-16-le") + table + "끝".encode("utf-16-le")) == "표 끝"
    field = units(3, *b"klh%", 0, 0, 3)  # a hyperlink field starts inside a word
    assert decode_para_text("한".encode("utf-16-le") + field + "글".encode("utf-16-le")) == "한글"


def test_old_hangul_reaches_the_chunks_and_is_found(
    make_engine: Any, tmp_path: Path, hwpx_bytes: bytes
) -> None:
    path = tmp_path / "docs" / "옛한글.hwpx"
    path.parent.mkdir()
    path.write_bytes(hwpx_bytes)
    engine = make_engine()
    engine.ingest([path.parent])
    hits = engine.search(OLD_HANGUL, caller=SYSTEM, k=3).hits
    assert hits and OLD_HANGUL in hits[0].chunk.text
    assert hits[0].bm25_score or hits[0].bigram_score


# --- numeric ranges and table rows in extractive answers ------------------------------------


def _one(text: str) -> Span:
    (span,) = spans(text)
    return span


def test_ranges_are_read_as_intervals() -> None:
    assert _one("3년 이상 5년 미만") == Span("duration", 36, 60, True, False)
    assert _one("1년 미만") == Span("duration", float("-inf"), 12, False, False)
    assert _one("만 19세 이하") == Span("age", float("-inf"), 19, False, True)
    assert _one("3~5년") == Span("duration", 36, 60)
    assert _one("100만 원 초과") == Span("money", 1e6, float("inf"), False, False)
    assert _one("입사 3년차") == Span("duration", 36, 48, True, False)
    assert _one("6개월") == Span("duration", 6, 6, stated=False)
    assert spans("2024년 3월 1일") == []  # a calendar year is not a duration


@pytest.mark.parametrize(
    ("question", "candidate", "expected"),
    [
        ("입사 3년차", "3년 이상 5년 미만", 1.0),
        ("입사 3년차", "1년 이상 3년 미만", -1.0),
        ("입사 3년차", "3년 이상 근무한 직원", 0.5),
        ("입사 6개월 된 직원", "입사 1년 미만인 직원", 0.5),
        ("근속 5년", "3년 이상 5년 미만", -1.0),
        ("근속 5년", "5년 이상 7년 미만", 1.0),
        ("20% 할인", "10~30%", 1.0),
        ("입사 3년차", "건강검진은 매년 10월까지 받는다.", 0.0),
    ],
)
def test_range_fit(question: str, candidate: str, expected: float) -> None:
    assert fit(spans(question), spans(candidate)) == expected


def test_a_row_is_quoted_with_its_headers_condition_first() -> None:
    row = "근속 연수: 3년 이상 5년 미만, 연차휴가 일수: 16일"
    assert render_row(row, spans("입사 3년차")) == "근속 연수 3년 이상 5년 미만 → 연차휴가 일수 16일"
    assert render_row("항목: 통신비, 금액: 월 5만 원", []) == "항목 통신비 → 금액 월 5만 원"


def test_the_demo_question_is_answered_from_the_table(samples_engine: Any) -> None:
    result = asyncio.run(
        samples_engine.engine.ask_result("입사 3년차 직원의 연차휴가는 며칠인가요?", caller=SYSTEM)
    )
    assert "16일" in result.answer
    assert "근속 연수 3년 이상 5년 미만 → 연차휴가 일수 16일" in result.answer
    cited = {ref["file_name"] for ref in result.references if f"[{ref['n']}]" in result.answer}
    assert cited == {"인사규정.md"}
