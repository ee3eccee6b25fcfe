"""Numeric conditions in Korean text, and whether a passage's ranges meet a question's.

Rules and tables state conditions as ranges (``3년 이상 5년 미만``, ``1년 미만``,
``5~10년``, ``만 19세 이하``, ``100만 원 초과``); questions ask about a point or a
span (``입사 3년차``, ``근속 4년``, ``6개월 된``). :func:`spans` reads both as
intervals with a dimension (durations in months, so ``6개월`` meets ``1년 미만``;
ages; money in won; percentages; counts of people; hours), and :func:`fit` says
whether a candidate's stated ranges hold the question's value (``> 0``), state
the dimension but exclude it (``< 0``), or say nothing comparable (``0``).

``N년차`` is read as the year after N completed years, ``[N, N+1)`` years, which
is how Korean workplaces use it (``3년차`` gets the ``3년 이상 5년 미만`` row).
A number of years of 1000 or more is a calendar year, not a duration, and is not read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# unit -> (dimension, factor to the dimension's base unit)
_UNITS: dict[str, tuple[str, float]] = {
    "년": ("duration", 12.0),
    "개월": ("duration", 1.0),
    "세": ("age", 1.0),
    "살": ("age", 1.0),
    "시간": ("hours", 1.0),
    "원": ("money", 1.0),
    "만원": ("money", 1e4),
    "만 원": ("money", 1e4),
    "억원": ("money", 1e8),
    "억 원": ("money", 1e8),
    "%": ("percent", 1.0),
    "퍼센트": ("percent", 1.0),
    "명": ("people", 1.0),
}
_UNIT = r"(?P<unit{n}>개월|년|세|살|시간|만\s?원|억\s?원|원|%|퍼센트|명)"
_NUMBER = r"(?P<num{n}>\d[\d,]*(?:\.\d+)?)"
_BOUND = r"\s*(?:을|를)?\s*(?P<bound{n}>이상|이하|초과|미만|넘는|넘게|부터|까지)?"
# ``3년 이상 5년 미만``, ``3~5년``, ``3년~5년``, ``3년차``, ``3년 이상``, ``3년``
_PATTERN = re.compile(
    r"(?P<a>\d[\d,]*(?:\.\d+)?)\s*(?:(?P<unita>개월|년|세|살|시간|만\s?원|억\s?원|원|%|퍼센트|명))?"
    r"\s*[~∼〜\-–]\s*"
    r"(?P<b>\d[\d,]*(?:\.\d+)?)\s*(?P<unitb>개월|년|세|살|시간|만\s?원|억\s?원|원|%|퍼센트|명)"
    r"|" + _NUMBER.format(n="1") + r"\s*" + _UNIT.format(n="1") + r"(?P<nth>차)?" + _BOUND.format(n="1")
)


@dataclass(frozen=True, slots=True)
class Span:
    """An interval of one dimension; ``stated`` is False for a bare quantity (``15일``, ``1년간``)."""

    dimension: str
    low: float
    high: float
    low_closed: bool = True
    high_closed: bool = True
    stated: bool = True

    @property
    def bounded(self) -> bool:
        return not (math.isinf(self.low) or math.isinf(self.high))

    def overlaps(self, other: Span) -> bool:
        if self.dimension != other.dimension:
            return False
        if self.low > other.low or (self.low == other.low and not self.low_closed):
            low, low_closed = self.low, self.low_closed
        else:
            low, low_closed = other.low, other.low_closed
        if self.high < other.high or (self.high == other.high and not self.high_closed):
            high, high_closed = self.high, self.high_closed
        else:
            high, high_closed = other.high, other.high_closed
        return low < high or (low == high and low_closed and high_closed)


def _unit(raw: str | None) -> tuple[str, float] | None:
    if not raw:
        return None
    return _UNITS.get(re.sub(r"\s+", " ", raw)) or _UNITS.get(raw.replace(" ", ""))


def _value(raw: str, factor: float) -> float:
    return float(raw.replace(",", "")) * factor


def _is_calendar_year(raw: str, unit: str | None) -> bool:
    return unit == "년" and float(raw.replace(",", "")) >= 1000


def spans(text: str) -> list[Span]:
    """Every quantity of a known unit in ``text``, as intervals; ranges joined (``N이상 M미만``)."""
    found: list[Span] = []
    pending_low: Span | None = None  # ``3년 이상`` waiting for a following ``5년 미만``
    last_end = -1
    for match in _PATTERN.finditer(text):
        joined = pending_low is not None and text[last_end : match.start()].strip() in {"", ",", "~"}
        last_end = match.end()
        if match.group("a") is not None:
            unit_b = match.group("unitb")
            dimension = _unit(unit_b)
            if dimension is None or _is_calendar_year(match.group("b"), unit_b):
                pending_low = None
                continue
            unit_a = _unit(match.group("unita")) or dimension
            if unit_a[0] != dimension[0]:
                pending_low = None
                continue
            low, high = _value(match.group("a"), unit_a[1]), _value(match.group("b"), dimension[1])
            found.append(Span(dimension[0], min(low, high), max(low, high)))
            pending_low = None
            continue
        unit_raw = match.group("unit1")
        dimension = _unit(unit_raw)
        if dimension is None or _is_calendar_year(match.group("num1"), unit_raw):
            pending_low = None
            continue
        name, factor = dimension
        value = _value(match.group("num1"), factor)
        bound = match.group("bound1")
        if match.group("nth"):
            # N년차: the year after N completed years (N개월차 likewise).
            span = Span(name, value, value + factor, True, False)
        elif bound in {"이상", "부터"}:
            span = Span(name, value, math.inf, True, False)
        elif bound in {"초과", "넘는", "넘게"}:
            span = Span(name, value, math.inf, False, False)
        elif bound in {"미만"}:
            span = Span(name, -math.inf, value, False, False)
        elif bound in {"이하", "까지"}:
            span = Span(name, -math.inf, value, False, True)
        else:
            span = Span(name, value, value, stated=False)
        if (
            joined
            and pending_low is not None
            and pending_low.dimension == name
            and math.isinf(span.low)
            and span.high >= pending_low.low
        ):
            # ``3년 이상 5년 미만``: one range, not two.
            found[-1] = Span(name, pending_low.low, span.high, pending_low.low_closed, span.high_closed)
            pending_low = None
            continue
        found.append(span)
        pending_low = span if math.isinf(span.high) and not math.isinf(span.low) and span.stated else None
    return found


def fit(question: list[Span], candidate: list[Span]) -> float:
    """How a candidate's stated ranges meet the question's quantities.

    ``1.0``: a bounded range holds one of the question's values; ``0.5``: an open
    range (``3년 이상``) or the same bare quantity does; ``-1.0``: the candidate
    states ranges of the question's dimension and none holds its value; ``0.0``:
    nothing comparable.
    """
    best = 0.0
    excluded = False
    for asked in question:
        for span in candidate:
            if span.dimension != asked.dimension:
                continue
            if span.stated:
                if span.overlaps(asked):
                    best = max(best, 1.0 if span.bounded else 0.5)
                else:
                    excluded = True
            elif asked.stated is False and span.low == asked.low:
                best = max(best, 0.5)
    if best > 0:
        return best
    return -1.0 if excluded else 0.0
