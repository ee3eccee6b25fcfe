"""Plain data types shared by every layer (no I/O, no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

PUBLIC = "public"


def to_epoch(value: datetime | date) -> int:
    """Seconds since the epoch (UTC); naive datetimes are taken as UTC."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


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
