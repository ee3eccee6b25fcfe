"""Korean time expressions -> absolute date ranges, relative to a given today.

Handles what employees actually type: 작년/지난해/재작년/올해/금년/내년,
지난달/이번 달/다음 달, 지난주/이번 주, 어제/오늘/그제, "최근 3개월", "지난 2년", "최근 일주일",
"2023년", "2023년 상반기", "올해 1분기", "작년 4분기", "2024년 3월",
"3월" (this year), "2023년 3월 5일", "2023.03.05", "2023-03", "2021~2023년".
The first expression found wins; a range between two years is joined.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True, slots=True)
class DateRange:
    start: date
    end: date  # inclusive
    phrase: str


def _month_end(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def _shift_month(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


_YEAR_WORDS = {
    "재작년": -2,
    "지지난해": -2,
    "작년": -1,
    "지난해": -1,
    "전년": -1,
    "올해": 0,
    "금년": 0,
    "올 해": 0,
    "이번 해": 0,
    "내년": 1,
    "다음 해": 1,
    "명년": 1,
}
_NUMBER_WORDS = {
    "한": 1,
    "두": 2,
    "세": 3,
    "네": 4,
    "다섯": 5,
    "여섯": 6,
    "일곱": 7,
    "여덟": 8,
    "아홉": 9,
    "열": 10,
    "일": 1,  # only before 주일: "최근 일주일"
}

_YEAR_WORD = "|".join(sorted((re.escape(w) for w in _YEAR_WORDS), key=len, reverse=True))
_YEAR = rf"(?:(?P<year>(?:19|20)\d{{2}})\s*년|(?P<yword>{_YEAR_WORD}))"
_PART = (
    r"(?:(?P<quarter>[1-4])\s*분기|(?P<half>상반기|하반기)|(?P<month>1[0-2]|0?[1-9])\s*월"
    r"(?:\s*(?P<day>3[01]|[12]\d|0?[1-9])\s*일)?)"
)

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "year_range",
        re.compile(r"(?P<y1>(?:19|20)\d{2})\s*년?\s*(?:~|-|부터|에서)\s*(?P<y2>(?:19|20)\d{2})\s*년"),
    ),
    (
        "iso_day",
        re.compile(
            r"(?P<y>(?:19|20)\d{2})[.\-/]\s*(?P<m>1[0-2]|0?[1-9])[.\-/]\s*(?P<d>3[01]|[12]\d|0?[1-9])"
        ),
    ),
    ("iso_month", re.compile(r"(?P<y>(?:19|20)\d{2})[.\-/](?P<m>1[0-2]|0[1-9])(?!\d)")),
    ("year_part", re.compile(rf"{_YEAR}\s*(?:의\s*)?{_PART}")),
    (
        "recent",
        re.compile(
            r"(?:최근|지난|요\s*근)\s*(?P<n>\d+|한|두|세|네|다섯|여섯|일곱|여덟|아홉|열|일(?=\s*주일))\s*"
            r"(?P<unit>개월|달|년|주|일)"
        ),
    ),
    # 전월 but not 전월세 (jeonse / monthly rent, a housing term).
    (
        "month_word",
        re.compile(r"(?P<w>지난\s*달|저번\s*달|전월(?!세)|이번\s*달|이달|금월|다음\s*달|익월|내달)"),
    ),
    ("week_word", re.compile(r"(?P<w>지난\s*주|저번\s*주|이번\s*주|금주|다음\s*주)")),
    ("day_word", re.compile(r"(?P<w>그저께|그제|어제|오늘|금일|내일)")),
    ("year_only", re.compile(_YEAR)),
    ("part_only", re.compile(r"(?<![\d년])" + _PART)),
]


def _resolve_year(match: re.Match[str], today: date) -> int:
    if match.group("year"):
        return int(match.group("year"))
    word = re.sub(r"\s+", " ", match.group("yword"))
    return today.year + _YEAR_WORDS.get(word, _YEAR_WORDS.get(word.replace(" ", ""), 0))


def _part_range(match: re.Match[str], year: int) -> tuple[date, date]:
    if match.group("quarter"):
        quarter = int(match.group("quarter"))
        first = 3 * (quarter - 1) + 1
        return date(year, first, 1), _month_end(year, first + 2)
    if match.group("half"):
        return (
            (date(year, 1, 1), date(year, 6, 30))
            if match.group("half") == "상반기"
            else (date(year, 7, 1), date(year, 12, 31))
        )
    month = int(match.group("month"))
    if match.group("day"):
        day = min(int(match.group("day")), calendar.monthrange(year, month)[1])
        return date(year, month, day), date(year, month, day)
    return date(year, month, 1), _month_end(year, month)


def parse_date_range(text: str, today: date) -> DateRange | None:
    """The first time expression in ``text`` as an inclusive date range, or None."""
    best: tuple[int, DateRange] | None = None
    for kind, pattern in _PATTERNS:
        match = pattern.search(text)
        if match is None:
            continue
        try:
            found = _interpret(kind, match, today)
        except (ValueError, OverflowError):
            # "최근 5000년", "최근 99999999일": no calendar date that far back; not a usable range.
            found = None
        if found is None:
            continue
        # Earliest match in the text wins; at the same place, the more specific pattern (listed first).
        if best is None or match.start() < best[0]:
            best = (match.start(), found)
    return best[1] if best else None


def _interpret(kind: str, match: re.Match[str], today: date) -> DateRange | None:
    phrase = match.group(0).strip()
    if kind == "year_range":
        first, last = sorted((int(match.group("y1")), int(match.group("y2"))))
        return DateRange(date(first, 1, 1), date(last, 12, 31), phrase)
    if kind == "iso_day":
        year, month = int(match.group("y")), int(match.group("m"))
        day = min(int(match.group("d")), calendar.monthrange(year, month)[1])
        return DateRange(date(year, month, day), date(year, month, day), phrase)
    if kind == "iso_month":
        year, month = int(match.group("y")), int(match.group("m"))
        return DateRange(date(year, month, 1), _month_end(year, month), phrase)
    if kind == "year_part":
        start, end = _part_range(match, _resolve_year(match, today))
        return DateRange(start, end, phrase)
    if kind == "year_only":
        year = _resolve_year(match, today)
        return DateRange(date(year, 1, 1), date(year, 12, 31), phrase)
    if kind == "part_only":
        start, end = _part_range(match, today.year)
        return DateRange(start, end, phrase)
    if kind == "recent":
        raw = match.group("n")
        amount = int(raw) if raw.isdigit() else _NUMBER_WORDS[raw]
        unit = match.group("unit")
        if unit in ("개월", "달"):
            year, month = _shift_month(today.year, today.month, -amount)
            day = min(today.day, calendar.monthrange(year, month)[1])
            return DateRange(date(year, month, day), today, phrase)
        if unit == "년":
            day = min(today.day, calendar.monthrange(today.year - amount, today.month)[1])
            return DateRange(date(today.year - amount, today.month, day), today, phrase)
        days = amount * 7 if unit == "주" else amount
        return DateRange(today - timedelta(days=days), today, phrase)
    word = re.sub(r"\s+", "", match.group("w"))
    if kind == "month_word":
        delta = -1 if word in ("지난달", "저번달", "전월") else 1 if word in ("다음달", "익월", "내달") else 0
        year, month = _shift_month(today.year, today.month, delta)
        return DateRange(date(year, month, 1), _month_end(year, month), phrase)
    if kind == "week_word":
        delta = -7 if word in ("지난주", "저번주") else 7 if word == "다음주" else 0
        monday = today - timedelta(days=today.weekday()) + timedelta(days=delta)
        return DateRange(monday, monday + timedelta(days=6), phrase)
    if kind == "day_word":
        offset = {"그저께": -2, "그제": -2, "어제": -1, "오늘": 0, "금일": 0, "내일": 1}[word]
        moment = today + timedelta(days=offset)
        return DateRange(moment, moment, phrase)
    return None
