"""Dates written inside documents' own metadata, in the spellings parsers meet.

PDF info dictionaries use ``D:YYYYMMDDHHmmSS+HH'mm'``; HTML ``<meta>`` tags and
OOXML/OWPML packages use ISO 8601; Korean documents often write ``2024.01.05``
or ``2024년 1월 5일``. Anything else is "no date" rather than an error: a missing
date never makes a file unparseable.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_PDF_DATE = re.compile(
    r"^D:(?P<year>\d{4})(?P<month>\d{2})?(?P<day>\d{2})?(?P<hour>\d{2})?(?P<minute>\d{2})?(?P<second>\d{2})?"
    r"(?P<tz>[Zz]|[+-]\d{2}'?\d{2}'?|[+-]\d{2})?"
)
_KOREAN_DATE = re.compile(r"(?P<year>\d{4})\s*[.\-/년]\s*(?P<month>\d{1,2})\s*[.\-/월]\s*(?P<day>\d{1,2})")


def parse_pdf_date(value: str | None) -> datetime | None:
    """``D:20240105093000+09'00'`` (any trailing part may be missing) -> datetime."""
    if not value:
        return None
    match = _PDF_DATE.match(value.strip())
    if match is None:
        # Some producers leave out the ``D:`` prefix; the rest is the same.
        return parse_date(value)
    parts = match.groupdict()
    try:
        parsed = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
        )
    except ValueError:
        return None
    tz = parts["tz"]
    if tz is None:
        return parsed
    if tz in ("Z", "z"):
        return parsed.replace(tzinfo=UTC)
    digits = tz[1:].replace("'", "")
    hours = int(digits[:2])
    minutes = int(digits[2:4] or 0)
    offset = timedelta(hours=hours, minutes=minutes)
    return parsed.replace(tzinfo=timezone(offset if tz[0] == "+" else -offset))


def parse_date(value: str | None) -> datetime | None:
    """ISO 8601 (``2024-01-05``, ``2024-01-05T09:30:00Z``) or Korean ``2024.1.5`` / ``2024년 1월 5일``."""
    if not value:
        return None
    text = value.strip()
    if not text:
        return None
    if text.startswith("D:"):
        return parse_pdf_date(text)
    try:
        # Python 3.11 reads the full ISO 8601 profile, including a trailing ``Z``.
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    match = _KOREAN_DATE.search(text)
    if match is None:
        return None
    try:
        return datetime(int(match["year"]), int(match["month"]), int(match["day"]))
    except ValueError:
        return None
