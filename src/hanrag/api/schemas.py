"""Request and response models of the native API (pydantic; documented in OpenAPI)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from hanrag.domain import SearchFilters, epoch_bound

# The most images a question may carry whatever the settings (``images.max_images`` <= 8).
MAX_IMAGES = 8


def parse_flexible_datetime(value: Any) -> Any:
    """ISO 8601 strings, or Java ``LocalDateTime`` arrays ``[y, m, d, h, mi, s, nanos]``.

    The 7th element is nanoseconds, as Jackson writes it (``123456789`` is
    ``.123456789`` s); Python keeps microseconds, so it is divided by 1000
    (``.123456``). Outside 0 to 999,999,999 it is refused.
    """
    if isinstance(value, list | tuple):
        if not 3 <= len(value) <= 7 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ValueError(
                "a date array is [year, month, day, hour?, minute?, second?, nanosecond?] of integers"
            )
        parts = list(value) + [0] * (7 - len(value))
        if not 0 <= parts[6] <= 999_999_999:
            raise ValueError("the 7th element of a date array is nanoseconds: 0 to 999999999")
        parts[6] //= 1000
        try:
            return datetime(*parts)
        except (ValueError, OverflowError) as exc:  # OverflowError: not a validation error
            raise ValueError(f"not a date: {exc}") from exc
    return value


def require_utc_moment(value: datetime) -> datetime:
    """The moment must exist in UTC too (years 1-9999): ``0001-01-01T00:00:00+14:00`` is
    in year 0 and ``9999-12-31T23:59:59-14:00`` in year 10000 once converted, which every
    later step (epoch seconds back to dates, time-range widening) would fail on."""
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except (OverflowError, ValueError) as exc:
            raise ValueError("the date is out of range: years 1 to 9999 once converted to UTC") from exc
    return value


FlexibleDateTime = Annotated[
    datetime, BeforeValidator(parse_flexible_datetime), AfterValidator(require_utc_moment)
]


class FiltersIn(BaseModel):
    """Restrict what is searched (applied inside the index query)."""

    model_config = ConfigDict(extra="forbid")

    date_from: FlexibleDateTime | None = Field(
        None, description="Inclusive; ISO 8601 or LocalDateTime array."
    )
    date_to: FlexibleDateTime | None = Field(None, description="Inclusive; a bare date covers the whole day.")
    document_ids: list[str] | None = Field(None, max_length=1000)
    metadata: dict[str, str] = Field(default_factory=dict, description="Equality on document metadata keys.")

    def to_filters(self) -> SearchFilters:
        """The domain filters (who may read what is added by the engine: see
        :func:`hanrag.auth.access.scope`)."""

        return SearchFilters(
            date_from=epoch_bound(self.date_from, end=False),
            date_to=epoch_bound(self.date_to, end=True),
            document_ids=self.document_ids,
            metadata=dict(self.metadata),
        )


class AskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., max_length=100_000, description="The question, in Korean or English.")
    session_id: str | None = Field(None, max_length=64, description="Continue this conversation.")
    filters: FiltersIn | None = None
    rag: bool = Field(True, description="False answers from the language model alone (with memory).")
    stream: bool = Field(False, description="Server-Sent Events instead of one JSON result.")
    k: int | None = Field(None, ge=1, le=50, description="How many passages to retrieve.")
    images: list[str] = Field(
        default_factory=list,
        max_length=MAX_IMAGES,
        description="Images the question is about: base64, `data:image/...;base64,` URLs, or http(s) "
        "URLs of hosts in `images.url_allow`; at most `images.max_images` (PNG, JPEG, WebP, GIF). "
        "A vision model describes them; without one: 400 `vision_unavailable`.",
    )
    mode: Literal["single", "ensemble"] | None = Field(
        None,
        description="`ensemble`: several models answer and the best-grounded answer wins "
        "(default: the `llm.mode` setting).",
    )
    candidates: bool = Field(False, description="In ensemble mode, return every candidate with its scores.")


class CitationOut(BaseModel):
    n: int
    chunk_id: str
    document_id: str
    source: str
    title: str
    page: int | None = None


class ReferenceOut(BaseModel):
    n: int
    chunk_id: str
    document_id: str
    source: str
    file_name: str
    title: str
    page: int | None = None
    sheet: str | None = None
    date: str
    score: float
    snippet: str


class AskOut(BaseModel):
    answer: str
    citations: list[CitationOut]
    references: list[ReferenceOut]
    session_id: str
    timings: dict[str, float]
    usage: dict[str, int | None] | None = None
    fallback: str | None = None
    # The table route's result (title, source, sql, columns, rows, truncated, row_count, chart).
    table: dict[str, Any] | None = None
    # Ensemble mode: the chosen provider, the consensus score (and the candidates when asked).
    ensemble: dict[str, Any] | None = None


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., max_length=100_000)
    k: int | None = Field(None, ge=1, le=200)
    filters: FiltersIn | None = None
    fusion: Literal["weighted", "rrf"] | None = None


class HitOut(BaseModel):
    chunk_id: str
    document_id: str
    source: str
    title: str
    text: str
    score: float
    dense_score: float | None
    bm25_score: float | None
    bigram_score: float | None = None
    page: int | None
    sheet: str | None = None
    date: str | None = None


class TimeRangeOut(BaseModel):
    date_from: str | None
    date_to: str | None
    widened_months: int = Field(..., description="Months added on each side; 0 as asked, -1 dropped.")


class SearchOut(BaseModel):
    query: str
    hits: list[HitOut]
    time_range: TimeRangeOut | None = None


class DocumentOut(BaseModel):
    document_id: str
    source: str
    source_type: str
    title: str
    format: str | None
    status: str
    chunk_count: int
    acl: list[str]
    metadata: dict[str, Any]
    date: str | None
    size: int | None
    last_error: str | None
    error_code: str | None
    created_at: str | None
    updated_at: str | None
    indexed_at: str | None


class DocumentPage(BaseModel):
    items: list[DocumentOut]
    total: int
    offset: int
    limit: int


class IngestOutcomeOut(BaseModel):
    source: str
    status: str
    document_id: str | None
    chunks: int
    error_code: str | None = None
    error: str | None = None


class SessionOut(BaseModel):
    session_id: str
    principal: str | None
    title: str
    created_at: str
    updated_at: str


class MessageOut(BaseModel):
    role: str
    content: str
    cited_chunk_ids: list[str]
    # The answer's numbered sources, as the references event gave them, limited to the
    # documents the caller may still read.
    references: list[dict[str, Any]] = Field(default_factory=list)
    created_at: str
