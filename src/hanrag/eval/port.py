"""What evaluation needs from the engine, as a Protocol: ``hanrag.eval`` sits below
``hanrag.engine`` and never imports it; the CLI passes the :class:`~hanrag.engine.Engine`
(which satisfies this structurally), tests may pass anything that does."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hanrag.answer.model import AskOptions
    from hanrag.auth.access import Caller
    from hanrag.domain import AnswerResult, Chunk, SearchFilters, SearchResult
    from hanrag.ingest.model import FileOutcome
    from hanrag.llm.base import Generator
    from hanrag.settings import Settings
    from hanrag.store.models import DocumentRow


class PassageIngestor(Protocol):
    """The ingestion pipeline's one-document entry (a corpus passage's bytes)."""

    def ingest_bytes(
        self,
        data: bytes,
        filename: str,
        *,
        source: str,
        source_type: str = "file",
        acl: list[str] | None = None,
        date_override: datetime | None = None,
        metadata: dict[str, str] | None = None,
        file_size: int | None = None,
        mtime_ns: int | None = None,
        force: bool = False,
        principals: list[str] | None = None,
    ) -> FileOutcome: ...


class Refreshable(Protocol):
    def refresh(self) -> None: ...


class StatusSource(Protocol):
    def status(self) -> dict[str, Any]: ...


class EvalEngine(Protocol):
    """Search, answers, ingestion of a scratch corpus, the generators (the judge role's)
    and the model providers' live statistics (tokens, cost)."""

    settings: Settings

    @property
    def pipeline(self) -> PassageIngestor: ...

    @property
    def index(self) -> Refreshable: ...

    @property
    def generators(self) -> dict[str, Generator]: ...

    @property
    def llm_registry(self) -> StatusSource: ...

    def search(
        self,
        query: str,
        *,
        caller: Caller,
        k: int | None = None,
        filters: SearchFilters | None = None,
        fusion: str | None = None,
        weights: dict[str, float] | None = None,
    ) -> SearchResult: ...

    async def ask_result(
        self,
        question: str,
        *,
        caller: Caller,
        session_id: str | None = None,
        filters: SearchFilters | None = None,
        options: AskOptions | None = None,
    ) -> AnswerResult: ...

    def get_document(self, key: str, *, caller: Caller) -> DocumentRow: ...


class DocumentReader(Protocol):
    """The operator's documents and their chunks (synthetic test sets read them)."""

    def list_documents(
        self, *, caller: Caller, offset: int = 0, limit: int = 100, status: str | None = None
    ) -> list[DocumentRow]: ...

    def document_chunks(self, document_id: str, *, caller: Caller) -> list[Chunk]: ...
