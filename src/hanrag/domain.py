"""Plain data types shared by every layer (no I/O, no heavy imports)."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Literal, TypeAlias

from hanrag.errors import HanragError

PUBLIC = "public"


def to_epoch(value: datetime | date) -> int:
    """Seconds since the epoch (UTC); naive datetimes are taken as UTC."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def epoch_bound(moment: datetime | date | None, *, end: bool) -> int | None:
    """An inclusive date filter bound in epoch seconds: naive moments are UTC, and an end
    given as a bare date (or as midnight) covers that whole day."""
    if moment is None:
        return None
    seconds = to_epoch(moment)
    midnight = not isinstance(moment, datetime) or (
        moment.hour == moment.minute == moment.second == moment.microsecond == 0
    )
    return seconds + (86399 if end and midnight else 0)


def from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


@dataclass(slots=True)
class Chunk:
    """One retrievable piece of a document, with everything a citation needs."""

    chunk_id: str
    document_id: str
    position: int
    text: str
    title: str
    source: str
    content_hash: str
    date: int  # epoch seconds (UTC)
    acl: list[str] = field(default_factory=lambda: [PUBLIC])
    page: int | None = None
    sheet: str | None = None
    kind: str = "text"
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def embedding_text(self) -> str:
        """What the embedder sees: the title gives a passage its topic."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(slots=True)
class Hit:
    chunk: Chunk
    score: float
    dense_score: float | None = None
    bm25_score: float | None = None
    bigram_score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        c = self.chunk
        return {
            "chunk_id": c.chunk_id,
            "document_id": c.document_id,
            "source": c.source,
            "title": c.title,
            "text": c.text,
            "score": round(self.score, 6),
            "dense_score": None if self.dense_score is None else round(self.dense_score, 6),
            "bm25_score": None if self.bm25_score is None else round(self.bm25_score, 6),
            "bigram_score": None if self.bigram_score is None else round(self.bigram_score, 6),
            "page": c.page,
            "sheet": c.sheet,
            "date": from_epoch(c.date).date().isoformat(),
        }


@dataclass(slots=True)
class SearchFilters:
    """Restrictions applied inside the index query, never to a top-k afterwards.

    ``principals``: the caller may read a chunk when any of its ACL entries is in
    this list (None = no ACL restriction, for admin tools only).
    ``date_from``/``date_to``: inclusive, epoch seconds.
    ``metadata``: equality on document metadata keys.
    """

    principals: list[str] | None = None
    date_from: int | None = None
    date_to: int | None = None
    document_ids: list[str] | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def as_payload(self) -> dict[str, Any]:
        """The filters a client asked for, as JSON (a queued job's payload); who may read
        what is not part of it: the job applies its own caller's principals."""
        return {
            "date_from": self.date_from,
            "date_to": self.date_to,
            "document_ids": self.document_ids,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any] | None) -> SearchFilters:
        """The filters back from :meth:`as_payload` (dates as epoch seconds)."""
        data = data or {}
        return cls(
            date_from=None if data.get("date_from") is None else int(data["date_from"]),
            date_to=None if data.get("date_to") is None else int(data["date_to"]),
            document_ids=data.get("document_ids"),
            metadata=dict(data.get("metadata") or {}),
        )

    def without_dates(self) -> SearchFilters:
        return SearchFilters(
            principals=self.principals,
            document_ids=self.document_ids,
            metadata=dict(self.metadata),
        )


@dataclass(slots=True)
class SearchResult:
    query: str
    hits: list[Hit]
    # The time range actually applied after adaptive widening (None = no range).
    applied_date_from: int | None = None
    applied_date_to: int | None = None
    widened_months: int | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"query": self.query, "hits": [h.as_dict() for h in self.hits]}
        if self.widened_months is not None:
            # Say when a time range had to be widened (months on each side) or dropped (-1).
            data["time_range"] = {
                "date_from": None
                if self.applied_date_from is None
                else from_epoch(self.applied_date_from).isoformat(),
                "date_to": None
                if self.applied_date_to is None
                else from_epoch(self.applied_date_to).isoformat(),
                "widened_months": self.widened_months,
            }
        return data


# ------------------------------------------------------------------- answers


@dataclass(slots=True)
class AnswerResult:
    """A finished answer: what ``done`` carries and every non-streaming consumer returns."""

    answer: str
    citations: list[dict[str, Any]]
    references: list[dict[str, Any]]
    session_id: str | None
    timings: dict[str, float]
    usage: dict[str, int | None] | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    fallback: str | None = None
    generator: str | None = None  # the generator that wrote the answer (after any fallback)
    # The table route's result (P10): title, source, SQL, columns, rows, chart; None otherwise.
    table: dict[str, Any] | None = None
    # Ensemble mode (P11): the chosen provider, the consensus score, each candidate's score.
    ensemble: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        data = {
            "answer": self.answer,
            "citations": self.citations,
            "session_id": self.session_id,
            "timings": self.timings,
            "usage": self.usage,
            "fallback": self.fallback,
        }
        if self.table is not None:
            data["table"] = self.table
        if self.ensemble is not None:
            data["ensemble"] = self.ensemble
        return data


# The events of an answer stream, in order: references, deltas, then done or error.
# ``type`` is the event's name on the wire (SSE ``event:``) and ``data`` its payload.


@dataclass(frozen=True, slots=True)
class ReferencesEvent:
    """The numbered sources (once, before any text) and the plan that found them; on the
    table route, no sources but the query's ``table`` (SQL, rows, chart)."""

    references: list[dict[str, Any]]
    plan: dict[str, Any]
    table: dict[str, Any] | None = None
    type: ClassVar[Literal["references"]] = "references"

    @property
    def data(self) -> dict[str, Any]:
        data = {"references": self.references, "plan": self.plan}
        if self.table is not None:
            data["table"] = self.table
        return data


@dataclass(frozen=True, slots=True)
class DeltaEvent:
    """An increment of the answer text (never the whole text again)."""

    text: str
    type: ClassVar[Literal["delta"]] = "delta"

    @property
    def data(self) -> dict[str, Any]:
        return {"text": self.text}


@dataclass(frozen=True, slots=True)
class DoneEvent:
    """The answer is complete (and its turn stored)."""

    result: AnswerResult
    type: ClassVar[Literal["done"]] = "done"

    @property
    def data(self) -> dict[str, Any]:
        r = self.result
        return {
            "answer": r.answer,
            "citations": r.citations,
            "session_id": r.session_id,
            "timings": r.timings,
            "usage": r.usage,
            "plan": r.plan,
            "fallback": r.fallback,
            "generator": r.generator,
            **({"table": r.table} if r.table is not None else {}),
            **({"ensemble": r.ensemble} if r.ensemble is not None else {}),
        }


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """The answer failed with a stable code; nothing was stored for the turn."""

    exception: HanragError
    type: ClassVar[Literal["error"]] = "error"

    @property
    def code(self) -> str:
        return self.exception.code

    @property
    def message(self) -> str:
        return self.exception.message

    @property
    def data(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


AnswerEvent: TypeAlias = ReferencesEvent | DeltaEvent | DoneEvent | ErrorEvent


class IncompleteAnswerError(HanragError):
    """An answer stream that ended with neither ``done`` nor ``error`` (a bug, never the caller's)."""

    code = "internal_error"


async def fold_answer(
    events: AsyncIterable[AnswerEvent], *, on_event: Callable[[AnswerEvent], object] | None = None
) -> AnswerResult:
    """The one fold of an answer stream into its result: ``done`` gives the result, ``error``
    raises the exception behind it. ``on_event`` sees every event first (a live display,
    metrics); consumers that turn events into a wire stream switch on the event types."""
    async for event in events:
        if on_event is not None:
            on_event(event)
        if isinstance(event, ErrorEvent):
            raise event.exception
        if isinstance(event, DoneEvent):
            return event.result
    raise IncompleteAnswerError("the answer stream ended without a result")
