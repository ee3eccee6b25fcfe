"""Korean time expressions -> absolute inclusive date ranges, relative to a fixed today."""

from __future__ import annotations

from datetime import date

import pytest

from hanrag.korean.dates import DateRange, parse_date_range

# A Sunday at a month end in a leap year: every month-end and leap-day edge shows up.
MARCH_END = date(2024, 3, 31)


def _range(text: str, today: date) -> tuple[date, date] | None:
    found = parse_date_range(text, today)
    return None if found is None else (found.start, found.end)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        # years
        ("작년 매출 보고서", date(2023, 1, 1), date(2023, 12, 31)),
        ("지난해 입사자", date(2023, 1, 1), date(2023, 12, 31)),
        ("재작년 규정", date(2022, 1, 1), date(2022, 12, 31)),
        ("올해 휴가 계획", date(2024, 1, 1), date(2024, 12, 31)),
        ("금년 예산", date(2024, 1, 1), date(2024, 12, 31)),
        ("내년 교육 일정", date(2025, 1, 1), date(2025, 12, 31)),
        ("2023년 실적", date(2023, 1, 1), date(2023, 12, 31)),
        # months relative to today (March 31 of a leap year)
        ("지난달 정산", date(2024, 2, 1), date(2024, 2, 29)),
        ("지난 달 정산", date(2024, 2, 1), date(2024, 2, 29)),
        ("이번 달 일정", date(2024, 3, 1), date(2024, 3, 31)),
        ("이달의 공지", date(2024, 3, 1), date(2024, 3, 31)),
        ("전월 대비 경비", date(2024, 2, 1), date(2024, 2, 29)),
        ("다음 달 교육", date(2024, 4, 1), date(2024, 4, 30)),
        # weeks run Monday..Sunday; 2024-03-31 is a Sunday
        ("지난주 회의록", date(2024, 3, 18), date(2024, 3, 24)),
        ("이번 주 당직", date(2024, 3, 25), date(2024, 3, 31)),
        # days
        ("어제 올라온 공지", date(2024, 3, 30), date(2024, 3, 30)),
        ("오늘 점심", date(2024, 3, 31), date(2024, 3, 31)),
        # "recent N units", digits and Korean number words
        ("최근 3개월 동안의 경비", date(2023, 12, 31), date(2024, 3, 31)),
        ("최근 1개월", date(2024, 2, 29), date(2024, 3, 31)),
        ("최근 세 달", date(2023, 12, 31), date(2024, 3, 31)),
        ("최근 한 달", date(2024, 2, 29), date(2024, 3, 31)),
        ("지난 2년간", date(2022, 3, 31), date(2024, 3, 31)),
        ("최근 두 주", date(2024, 3, 17), date(2024, 3, 31)),
        ("최근 2주", date(2024, 3, 17), date(2024, 3, 31)),
        ("최근 일주일", date(2024, 3, 24), date(2024, 3, 31)),
        ("최근 10일", date(2024, 3, 21), date(2024, 3, 31)),
        ("최근 다섯 달", date(2023, 10, 31), date(2024, 3, 31)),
        # halves, quarters, months, days of named years
        ("2023년 상반기 실적", date(2023, 1, 1), date(2023, 6, 30)),
        ("2023년 하반기 실적", date(2023, 7, 1), date(2023, 12, 31)),
        ("2023년의 하반기", date(2023, 7, 1), date(2023, 12, 31)),
        ("올해 1분기 매출", date(2024, 1, 1), date(2024, 3, 31)),
        ("작년 4분기 매출", date(2023, 10, 1), date(2023, 12, 31)),
        ("재작년 2분기", date(2022, 4, 1), date(2022, 6, 30)),
        ("2024년 3월 공지", date(2024, 3, 1), date(2024, 3, 31)),
        ("2024년 2월", date(2024, 2, 1), date(2024, 2, 29)),
        ("2023년 2월", date(2023, 2, 1), date(2023, 2, 28)),
        ("3월 교육", date(2024, 3, 1), date(2024, 3, 31)),
        ("11월에 있었던 일", date(2024, 11, 1), date(2024, 11, 30)),
        ("2023년 3월 5일 회의", date(2023, 3, 5), date(2023, 3, 5)),
        ("작년 12월 24일", date(2023, 12, 24), date(2023, 12, 24)),
        # numeric forms
        ("2023.03.05 회의록", date(2023, 3, 5), date(2023, 3, 5)),
        ("2023-03-05", date(2023, 3, 5), date(2023, 3, 5)),
        ("2023/3/5", date(2023, 3, 5), date(2023, 3, 5)),
        ("2023-03 보고서", date(2023, 3, 1), date(2023, 3, 31)),
        ("2021~2023년 자료", date(2021, 1, 1), date(2023, 12, 31)),
        ("2021년부터 2023년까지", date(2021, 1, 1), date(2023, 12, 31)),
        ("2023~2021년", date(2021, 1, 1), date(2023, 12, 31)),
    ],
)
def test_supported_phrases(text: str, start: date, end: date) -> None:
    assert _range(text, MARCH_END) == (start, end)


def test_the_phrase_is_reported() -> None:
    found = parse_date_range("작년 4분기 보안사고 건수는?", MARCH_END)
    assert found == DateRange(date(2023, 10, 1), date(2023, 12, 31), "작년 4분기")


@pytest.mark.parametrize(
    ("text", "today", "start", "end"),
    [
        # January: last month and last week cross into the previous year.
        ("지난달", date(2024, 1, 15), date(2023, 12, 1), date(2023, 12, 31)),
        ("지난주", date(2024, 1, 3), date(2023, 12, 25), date(2023, 12, 31)),
        ("어제", date(2024, 1, 1), date(2023, 12, 31), date(2023, 12, 31)),
        # December: next month is January of the next year.
        ("다음 달", date(2024, 12, 31), date(2025, 1, 1), date(2025, 1, 31)),
        # The day after a leap day, and a leap day itself.
        ("어제", date(2024, 3, 1), date(2024, 2, 29), date(2024, 2, 29)),
        ("최근 1년", date(2024, 2, 29), date(2023, 2, 28), date(2024, 2, 29)),
        ("최근 12개월", date(2024, 2, 29), date(2023, 2, 28), date(2024, 2, 29)),
        ("최근 1개월", date(2023, 3, 31), date(2023, 2, 28), date(2023, 3, 31)),
        ("최근 1개월", date(2024, 5, 31), date(2024, 4, 30), date(2024, 5, 31)),
        ("지난달", date(2023, 3, 31), date(2023, 2, 1), date(2023, 2, 28)),
        # A month name without a year is this year's month, also when it is in the future.
        ("2월 29일", date(2024, 6, 1), date(2024, 2, 29), date(2024, 2, 29)),
        ("12월", date(2024, 6, 1), date(2024, 12, 1), date(2024, 12, 31)),
        # Monday: "this week" starts today.
        ("이번 주", date(2024, 4, 1), date(2024, 4, 1), date(2024, 4, 7)),
        ("올해 4분기", date(2025, 6, 15), date(2025, 10, 1), date(2025, 12, 31)),
    ],
)
def test_relative_edges(text: str, today: date, start: date, end: date) -> None:
    assert _range(text, today) == (start, end)


def test_a_day_that_does_not_exist_is_kept_inside_its_month() -> None:
    found = parse_date_range("2023년 2월 29일", MARCH_END)
    assert found is not None
    assert found.start == found.end
    assert (found.start.year, found.start.month) == (2023, 2)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "USB 사용 승인은 얼마 동안 유효한가요?",
        "헤파 필터는 언제 교체하나요?",
        "보안사고는 몇 시간 안에 신고해야 하나요?",
        # Durations, seniority and counts are numbers, not periods of time to search in.
        "1년 이상 근무한 직원의 연차는?",
        "3년차 직원의 연차휴가는 며칠인가요?",
        "입사 3년차",
        "근속 2년 이상 무주택 직원",
        "수습 기간은 3개월로 한다",
        "육아휴직은 최대 1년 6개월",
        "1일 8시간 근무",
        "주 40시간, 연장 근무는 주 12시간",
        "30일 안에 사용해야 한다",
        "최근에 사용한 5개의 비밀번호",
        "헤파 필터는 6개월 또는 2,000시간마다 교체",
        "AP-500 모델",
        "제3조 수습 기간",
        "내선 7119, 외부 02-6200-7119",
        "13월의 월급",
        # 전월세 is a kind of lease (jeonse / monthly rent), not 전월 (the previous month).
        "전월세 대출 지원 조건",
        "20230305",
    ],
)
def test_no_time_phrase_gives_none(text: str) -> None:
    assert parse_date_range(text, MARCH_END) is None


@pytest.mark.parametrize("text", ["최근 5000년", "최근 99999999일", "최근 999999개월"])
def test_absurd_spans_do_not_raise(text: str) -> None:
    # No calendar date is that far back: no range rather than an exception in the planner.
    assert parse_date_range(text, MARCH_END) is None


def test_the_earliest_phrase_wins() -> None:
    assert _range("작년과 올해 비교", MARCH_END) == (date(2023, 1, 1), date(2023, 12, 31))
    assert _range("올해와 작년 비교", MARCH_END) == (date(2024, 1, 1), date(2024, 12, 31))
    # At the same place the more specific reading wins: 2023년 3월, not all of 2023.
    assert _range("2023년 3월과 4월", MARCH_END) == (date(2023, 3, 1), date(2023, 3, 31))


def test_results_are_relative_to_the_given_today() -> None:
    assert _range("작년", date(2030, 1, 1)) == (date(2029, 1, 1), date(2029, 12, 31))
    assert _range("작년", date(2020, 12, 31)) == (date(2019, 1, 1), date(2019, 12, 31))
    # An explicit year does not move with today.
    assert _range("2023년", date(2030, 1, 1)) == _range("2023년", date(2020, 1, 1))
