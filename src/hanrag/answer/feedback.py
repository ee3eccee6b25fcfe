"""Feedback on answers and the usage statistics of the admin dashboard (issue P12).

* :meth:`FeedbackService.record`: a thumbs up or down on one answer of one's own
  conversation (someone else's is answered like a missing one), with an optional reason
  and comment; one per caller and answer, a second replacing the first. The question, the
  answer, its citations, the model and the timings are copied into the row.
* :meth:`FeedbackService.page` and :meth:`FeedbackService.each`: administrators only.
* :func:`dataset_record`: one feedback row as a line of the evaluation dataset
  (``hanrag feedback export``; its format is documented in :mod:`hanrag.cli.feedback`).
* :meth:`FeedbackService.stats`: questions per day, latency and time-to-first-token
  percentiles, the feedback ratio and the documents' states, from hanrag's own tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import Engine as SqlEngine

from hanrag.auth.access import Caller, may_review, owns
from hanrag.errors import ForbiddenError, InvalidInputError, NotFoundError
from hanrag.store.feedback import FeedbackStore
from hanrag.store.models import FeedbackRow, MessageRow
from hanrag.store.sessions import SessionStore
from hanrag.store.usage import UsageStore

RATINGS = ("up", "down")
REASONS = ("wrong_source", "outdated", "incomplete", "other")
COMMENT_MAX_CHARS = 2000
STATS_MAX_DAYS = 366


def _check(value: str | None, allowed: tuple[str, ...], field: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in allowed:
        raise InvalidInputError(
            f"{field} must be one of {', '.join(allowed)}{' or null' if optional else ''}",
            code=f"invalid_{field}",
            field=field,
        )


def _aware(moment: datetime) -> datetime:
    """A moment with its zone: SQLite gives back the stored UTC wall time without one, and
    a time given without one is taken as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50 and p95 (linear between the nearest ranks), None for no values."""
    ordered = sorted(values)

    def at(fraction: float) -> float | None:
        if not ordered:
            return None
        position = (len(ordered) - 1) * fraction
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 1)

    return {"p50": at(0.5), "p95": at(0.95), "count": len(ordered)}


def cited(message: MessageRow) -> list[dict[str, Any]]:
    """The passages an answer cited: chunk id, document id and title, in citation order."""
    by_chunk = {ref.get("chunk_id"): ref for ref in message.references or [] if isinstance(ref, dict)}
    return [
        {
            "chunk_id": chunk_id,
            "document_id": by_chunk.get(chunk_id, {}).get("document_id"),
            "title": by_chunk.get(chunk_id, {}).get("title"),
        }
        for chunk_id in message.cited_chunk_ids or []
    ]


def dataset_record(row: FeedbackRow) -> dict[str, Any]:
    """One line of the evaluation dataset: the cited passages count as relevant only when
    the answer got a thumbs up (a thumbs down says nothing about which were wrong)."""
    return {
        "question": row.question,
        "answer": row.answer,
        "rating": row.rating,
        "reason": row.reason,
        "comment": row.comment,
        "relevant_chunk_ids": [c["chunk_id"] for c in row.citations or []] if row.rating == "up" else [],
        "cited_titles": [c.get("title") for c in row.citations or []],
        "model": row.model,
        "created_at": _aware(row.created_at).isoformat(),
    }


class FeedbackService:
    def __init__(self, engine: SqlEngine, sessions: SessionStore) -> None:
        self.store = FeedbackStore(engine)
        self.usage = UsageStore(engine)
        self.sessions = sessions

    @staticmethod
    def _check_reviewer(caller: Caller) -> None:
        if not may_review(caller):
            raise ForbiddenError("feedback and usage statistics are for administrators", code="forbidden")

    # ------------------------------------------------------------- writing

    def record(
        self,
        session_id: str,
        message_index: int,
        rating: str,
        *,
        reason: str | None = None,
        comment: str | None = None,
        caller: Caller,
    ) -> FeedbackRow:
        """The caller's rating of the answer at ``message_index`` (0-based, as
        ``GET /api/v1/sessions/{id}/messages`` lists them) of their own conversation."""
        _check(rating, RATINGS, "rating")
        _check(reason, REASONS, "reason", optional=True)
        if comment is not None and (len(comment) > COMMENT_MAX_CHARS or "\x00" in comment):
            raise InvalidInputError(
                f"a comment has at most {COMMENT_MAX_CHARS} characters and no NUL",
                code="invalid_comment",
                field="comment",
            )
        # Someone else's conversation is answered exactly like a missing one (one lookup either way).
        session = self.sessions.get(session_id)
        if not owns(caller, session.principal):
            raise NotFoundError(f"no session {session_id!r}", code="session_not_found", field="session_id")
        messages = self.sessions.messages(session_id)
        if not 0 <= message_index < len(messages) or messages[message_index].role != "assistant":
            raise InvalidInputError(
                f"message {message_index} of this conversation is not an answer",
                code="feedback_not_an_answer",
                field="message_index",
            )
        answer = messages[message_index]
        before = messages[message_index - 1] if message_index > 0 else None
        meta = answer.meta if isinstance(answer.meta, dict) else {}
        timings = meta.get("timings")
        return self.store.save(
            caller.name or "",
            session_id,
            answer.id,
            message_index=message_index,
            rating=rating,
            reason=reason,
            comment=comment or None,
            question=before.content if before is not None and before.role == "user" else "",
            answer=answer.content,
            citations=cited(answer),
            model=meta.get("generator"),
            timings=timings if isinstance(timings, dict) else {},
        )

    # ------------------------------------------------------------- reading

    def page(
        self,
        *,
        caller: Caller,
        rating: str | None = None,
        since: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[FeedbackRow], int]:
        """The newest feedback first, and how much matches (administrators only)."""
        self._check_reviewer(caller)
        _check(rating, RATINGS, "rating", optional=True)
        since = _aware(since).astimezone(UTC) if since is not None else None
        return self.store.page(rating=rating, since=since, offset=offset, limit=limit)

    def each(
        self, *, caller: Caller, rating: str | None = None, since: datetime | None = None
    ) -> Iterator[FeedbackRow]:
        """Every feedback row, oldest first (administrators only)."""
        self._check_reviewer(caller)
        _check(rating, RATINGS, "rating", optional=True)
        since = _aware(since).astimezone(UTC) if since is not None else None
        return self.store.each(rating=rating, since=since)

    def stats(self, *, caller: Caller, days: int = 30, tz: str = "UTC") -> dict[str, Any]:
        """The dashboard over the last ``days`` days (today included) in time zone ``tz``:
        questions per day (every day listed, zeros too), latency and time-to-first-token
        percentiles of the stored answers, the feedback counts and ratio (up / all), and
        the documents by state (now)."""
        self._check_reviewer(caller)
        if not 1 <= days <= STATS_MAX_DAYS:
            raise InvalidInputError(f"days must be 1-{STATS_MAX_DAYS}", code="invalid_days", field="days")
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInputError(f"unknown time zone {tz[:64]!r}", code="invalid_tz", field="tz") from None
        today = datetime.now(zone).date()
        first = today - timedelta(days=days - 1)
        since = datetime.combine(first, time.min, tzinfo=zone).astimezone(UTC)
        per_day: Counter[date] = Counter(
            _aware(at).astimezone(zone).date() for at in self.usage.question_times(since)
        )
        latency: list[float] = []
        ttft: list[float] = []
        for timings in self.usage.answer_timings(since):
            if isinstance(timings.get("total_ms"), int | float):
                latency.append(float(timings["total_ms"]))
            if isinstance(timings.get("time_to_first_token_ms"), int | float):
                ttft.append(float(timings["time_to_first_token_ms"]))
        ratings = self.store.rating_counts(since)
        up, down = ratings.get("up", 0), ratings.get("down", 0)
        documents = self.usage.document_states()
        return {
            "days": days,
            "tz": tz,
            "from": first.isoformat(),
            "to": today.isoformat(),
            "questions_per_day": [
                {
                    "date": (first + timedelta(days=i)).isoformat(),
                    "count": per_day.get(first + timedelta(days=i), 0),
                }
                for i in range(days)
            ],
            "questions": sum(per_day.values()),
            "latency_ms": percentiles(latency),
            "ttft_ms": percentiles(ttft),
            "feedback": {"up": up, "down": down, "ratio": round(up / (up + down), 3) if up + down else None},
            "documents": {
                **{state: documents.get(state, 0) for state in ("indexed", "indexing", "failed")},
                **documents,
                "total": sum(documents.values()),
            },
        }
