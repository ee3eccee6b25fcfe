"""Chart suggestions and Markdown tables for table answers (P10, the table route)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from hanrag.tables.chart import chart_spec
from hanrag.tables.execute import QueryResult
from hanrag.tables.render import markdown_table


def _result(columns: list[str], rows: list[list[Any]], *, truncated: bool = False) -> QueryResult:
    return QueryResult(columns, rows, truncated=truncated, elapsed_ms=1.0)


# ---------------------------------------------------------------------- chart


def test_no_chart_for_nothing_a_single_value_or_no_numbers() -> None:
    none = {"type": "none", "title": "t", "x": None, "y": []}
    assert chart_spec(_result(["지역", "건수"], []), "t") == none
    assert chart_spec(_result(["건수"], [[42]]), "t") == none
    assert chart_spec(_result(["지역", "상태"], [["서울", "배송 완료"], ["부산", "반송"]]), "t") == none
    assert chart_spec(_result(["지역", "ok"], [["서울", True], ["부산", False]]), "t") == none  # bools
    assert chart_spec(_result(["지역", "메모"], [["서울", None], ["부산", None]]), "t") == none


def test_categories_make_a_bar_chart() -> None:
    result = _result(
        ["지역", "건수", "금액", "비고"],
        [["서울", 2, 3001, "a"], ["부산", 1, 1500.25, None], ["제주", 1, None, "c"]],
    )
    assert chart_spec(result, "지역별 배송") == {
        "type": "bar",
        "title": "지역별 배송",
        "x": "지역",
        "y": ["건수", "금액"],
    }
    one_row = _result(["지역", "건수"], [["서울", 2]])
    assert chart_spec(one_row, "t") == {"type": "bar", "title": "t", "x": "지역", "y": ["건수"]}
    # Only numbers in one row: the columns are the bars.
    totals = _result(["건수", "합계"], [[6, 6001.25]])
    assert chart_spec(totals, "t") == {"type": "bar", "title": "t", "x": None, "y": ["건수", "합계"]}


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("shipped_at", ["2025-03-01", "2025-03-02", "2025-03-03"]),
        ("updated_at", ["2025-03-01T09:00:00", "2025-03-01 10:30:00", "2025-03-02T00:00:00+09:00"]),
        ("ym", ["2024-01", "2024-02", "2024-03"]),
        ("기간", ["2024년 1월", "2024년 2월", "2024년 3월"]),
        ("m", ["1월", "2월", "3월"]),
        ("분기", ["2024Q1", "2024-Q2", "2024Q3"]),
        ("분기", ["2024년 1분기", "2024년 2분기"]),
        ("연도", [2022, 2023, 2024]),
        ("sales_year", ["2022", "2023"]),
        ("월", [1, 2, 3]),
        ("orderMonth", [1, 2, 12]),
        ("d", [date(2025, 3, 1), date(2025, 3, 2)]),
    ],
)
def test_dates_and_periods_make_a_line_chart(column: str, values: list[Any]) -> None:
    result = _result([column, "매출"], [[v, 100 * (i + 1)] for i, v in enumerate(values)])
    assert chart_spec(result, "추이") == {"type": "line", "title": "추이", "x": column, "y": ["매출"]}


def test_numbers_that_only_look_like_years_are_not_a_time_axis() -> None:
    # "money" is not a month column; 2023 under a name that says nothing of time is a number.
    plain = _result(["money", "건수"], [[2022, 1], [2023, 2]])
    assert chart_spec(plain, "t") == {"type": "bar", "title": "t", "x": None, "y": ["money", "건수"]}
    assert chart_spec(_result(["월", "매출"], [[1, 5], [13, 6]]), "t")["type"] == "bar"  # 13: no month
    # A single dated row is a bar, not a line.
    assert chart_spec(_result(["월", "매출"], [["2024-03", 5]]), "t")["type"] == "bar"
    # Time in a later text column: the first non-numeric column is the x axis.
    later = _result(["id", "기준월", "매출"], [[1, "2024-01", 5], [2, "2024-02", 6]])
    assert chart_spec(later, "t") == {"type": "line", "title": "t", "x": "기준월", "y": ["id", "매출"]}


# ------------------------------------------------------------------- markdown


def test_markdown_table_escapes_and_aligns() -> None:
    result = _result(
        ["지역", "건수", "메모"],
        [["서울", 2, "a|b"], ["부산", 1, "첫 줄\n둘째 줄"], ["제주", None, None]],
    )
    assert markdown_table(result) == (
        "| 지역 | 건수 | 메모 |\n"
        "| --- | ---: | --- |\n"
        "| 서울 | 2 | a\\|b |\n"
        "| 부산 | 1 | 첫 줄<br>둘째 줄 |\n"
        "| 제주 |  |  |"
    )


def test_markdown_table_says_when_rows_were_left_out() -> None:
    rows: list[list[Any]] = [[i, f"행{i}"] for i in range(120)]
    shown = markdown_table(_result(["n", "이름"], rows))
    lines = shown.splitlines()
    assert len(lines) == 2 + 50 + 1
    assert lines[-1] == "(처음 50행만 표시, 전체 120행)"
    capped = markdown_table(_result(["n", "이름"], rows, truncated=True), max_rows=10)
    assert capped.splitlines()[-1].startswith("(처음 10행만 표시")
    assert "잘려" in capped.splitlines()[-1]
    all_shown = markdown_table(_result(["n"], [[1], [2]], truncated=True))
    assert all_shown.splitlines()[-1] == "(조회 결과가 2행에서 잘렸습니다: 전체 행은 더 많습니다)"
    assert markdown_table(_result(["n"], [[1], [2]])).splitlines()[-1] == "| 2 |"
    assert markdown_table(_result(["n"], [])).splitlines()[-1] == "(결과 없음)"
