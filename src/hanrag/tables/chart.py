"""A chart suggestion for a table answer, chosen from the result's shape alone (issue P10).

The client draws it; this only says which kind fits and which columns go where:
``{"type": "bar" | "line" | "none", "title": ..., "x": <column or None>, "y": [<numeric columns>]}``.

- ``none``: no rows, a single value (1 row x 1 column), or no numeric column to plot.
- ``line``: the x column holds dates or periods (a time series) and there are 2+ rows.
- ``bar``: anything else with numbers (categories, or the numeric columns of one row).

The x column is the first column when it is time-like (even a numeric one, such as years in
a column named ``연도``), else the first non-numeric column, else none.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from hanrag.tables.execute import QueryResult

# Strings that name a point or a period in time.
_TIME_PATTERNS = [
    r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?",  # ISO date/datetime
    r"\d{4}[-./]\d{1,2}",  # 2024-03, 2024.3
    r"\d{4}\.\s?\d{1,2}\.\s?\d{1,2}\.?",  # 2024. 3. 1.
    r"\d{4}\s*-?\s*[Qq][1-4]|[Qq][1-4]\s*\d{4}",  # 2024Q1, 2024-Q1, Q1 2024
    r"\d{4}-?W\d{2}",  # ISO week
    r"(\d{2,4}년\s*)?\d{1,2}월(\s*\d{1,2}일)?",  # 3월, 2024년 3월, 2024년 3월 1일
    r"\d{4}년(\s*[1-4]\s*분기|\s*[상하]반기)?",  # 2024년, 2024년 1분기, 2024년 상반기
    r"[1-4]\s*분기",  # 1분기
]
_TIME_VALUE = re.compile("|".join(f"(?:{p})" for p in _TIME_PATTERNS))
_BARE_NUMBER = re.compile(r"\d{1,4}")
# Column names under which a plain number (2023, or 3) is a year or a month.
# English words whole ("sales_month", not "money"); Korean ones anywhere ("기준연도").
_TIME_NAME = re.compile(
    r"(?<![a-z])(year|yr|month|date|day|dt|period|quarter|qtr|week|ym)s?(?![a-z])"
    r"|연도|년도|연월|년|월|일자|날짜|기간|분기|주차|시점",
    re.IGNORECASE,
)


def _values(result: QueryResult, index: int) -> list[Any]:
    """The non-null values of one column."""
    return [row[index] for row in result.rows if index < len(row) and row[index] is not None]


def _is_numeric(values: list[Any]) -> bool:
    """Numbers (not booleans) in every non-null cell, and at least one."""
    return bool(values) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _is_time_value(value: Any, time_name: bool) -> bool:
    if isinstance(value, date):  # date and datetime, when a caller kept them typed
        return True
    if isinstance(value, bool):
        return False
    text = str(value).strip()
    if _TIME_VALUE.fullmatch(text):
        return True
    # A bare number is a year (1900-2100) or a month (1-12) only under a time-like name.
    if time_name and _BARE_NUMBER.fullmatch(text) and isinstance(value, int | str):
        number = int(text)
        return 1900 <= number <= 2100 or 1 <= number <= 12
    return False


def _is_time(name: str, values: list[Any]) -> bool:
    time_name = bool(_TIME_NAME.search(re.sub(r"([a-z])([A-Z])", r"\1_\2", name)))  # camelCase too
    return bool(values) and all(_is_time_value(v, time_name) for v in values)


def chart_spec(result: QueryResult, title: str) -> dict[str, Any]:
    """Which chart fits ``result``; see the module docstring for the rules."""
    none: dict[str, Any] = {"type": "none", "title": title, "x": None, "y": []}
    columns = result.columns
    if not result.rows or not columns or (len(result.rows) == 1 and len(columns) == 1):
        return none
    values = [_values(result, i) for i in range(len(columns))]
    numeric = [i for i in range(len(columns)) if _is_numeric(values[i])]

    # The x axis: the first column when it is time-like (years may be numbers), else the
    # first non-numeric column (its values may still be dates or periods), else none.
    x: int | None = 0 if _is_time(columns[0], values[0]) else None
    if x is None:
        x = next((i for i in range(len(columns)) if i not in numeric), None)
    time_axis = x is not None and _is_time(columns[x], values[x])

    y = [columns[i] for i in numeric if i != x]
    if not y:
        return none
    x_name = columns[x] if x is not None else None
    if time_axis and len(result.rows) >= 2:
        return {"type": "line", "title": title, "x": x_name, "y": y}
    return {"type": "bar", "title": title, "x": x_name, "y": y}
