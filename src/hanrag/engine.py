"""The one engine: every entry point (CLI, HTTP API, job worker, evaluation) calls this.

It owns the components built from settings — catalog, embedder, index,
retriever, ingestion pipeline — and builds each lazily, so a command that only
lists documents never loads a model.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hanrag.auth.access import SYSTEM, Caller, check_grant, may_read, owns, room_id, scope
from hanrag.domain import AnswerEvent, AnswerResult, Chunk, SearchFilters, SearchResult, fold_answer
from hanrag.embed.cache import EmbeddingCache
from hanrag.embed.factory import get_embedder
from hanrag.embed.manager import CachingEmbedder, SharedEmbedder
from hanrag.errors import InvalidInputError, NotFoundError
from hanrag.index.base import Index
from hanrag.index.retriever import Retriever
from hanrag.ingest.chunking import Chunker
from hanrag.ingest.model import FileOutcome, IngestReport, IngestRequest, ProgressCallback
from hanrag.ingest.originals import Original, original_of
from hanrag.ingest.parsers.registry import read_limited
from hanrag.ingest.pipeline import IngestPipeline
from hanrag.ingest.uploads import UploadStore, uploaded_name
from hanrag.settings import Settings
from hanrag.store.catalog import Catalog, matches
from hanrag.store.db import make_engine
from hanrag.store.models import ChatSessionRow, DocumentRow, MessageRow
from hanrag.store.sessions import SessionStore
from hanrag.store.writegate import WriteGate

if TYPE_CHECKING:
    from hanrag.answer.engine import AnswerEngine, AskOptions
    from hanrag.answer.feedback import FeedbackService
    from hanrag.answer.prompts import PromptSet
    from hanrag.auth.audit import AuditLog
    from hanrag.auth.service import AuthService
    from hanrag.llm.base import GenerationOptions, Generator
    from hanrag.llm.registry import ProviderRegistry
    from hanrag.tables.service import SourceService

log = logging.getLogger("hanrag.engine")


def document_not_found(key: str) -> NotFoundError:
    """The one error for a document that is missing — or hidden from the caller."""
    return NotFoundError(
        f"no document with id or source {key!r}", code="document_not_found", field="document"
    )


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        from hanrag.korean.vocabulary import activate  # the company vocabulary, read lazily

        activate(settings.data_dir)
        self._build_lock = threading.RLock()
        if settings.offline:
            # Libraries that fetch models on first use (sentence-transformers) stay off the network.
            for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
                os.environ.setdefault(name, "1")

    # ------------------------------------------------------------ components

    @cached_property
    def catalog(self) -> Catalog:
        with self._build_lock:
            return Catalog(make_engine(self.settings.resolved_catalog_url))

    @cached_property
    def shared_embedder(self) -> SharedEmbedder:
        return get_embedder(self.settings.embed)

    @cached_property
    def embedding_cache(self) -> EmbeddingCache | None:
        if not self.settings.embed.cache:
            return None
        return EmbeddingCache(self.settings.data_dir / "embed-cache.db")

    @cached_property
    def embedder(self) -> CachingEmbedder:
        return CachingEmbedder(self.shared_embedder, self.embedding_cache)

    @cached_property
    def index(self) -> Index:
        from hanrag.index.factory import build_index

        with self._build_lock:
            return build_index(self.settings, self.catalog)

    @cached_property
    def retriever(self) -> Retriever:
        return Retriever(self.index, self.embedder, self.settings.retrieval)

    @cached_property
    def uploads(self) -> UploadStore:
        return UploadStore(self.settings.data_dir)

    @cached_property
    def pipeline(self) -> IngestPipeline:
        chunker = Chunker(self.settings.chunk, self.shared_embedder.count_tokens)
        return IngestPipeline(
            self.settings, self.catalog, self.index, self.embedder, chunker, uploads=self.uploads
        )

    @cached_property
    def sessions(self) -> SessionStore:
        with self._build_lock:
            return SessionStore(self.catalog.engine, max_messages=self.settings.answer.max_session_messages)

    @cached_property
    def auth(self) -> AuthService:
        from hanrag.auth.service import AuthService

        with self._build_lock:
            return AuthService(self.catalog.engine, self.settings.auth, self.settings.data_dir)

    @cached_property
    def audit(self) -> AuditLog:
        from hanrag.auth.audit import AuditLog

        with self._build_lock:
            return AuditLog(self.catalog.engine, retention_days=self.settings.auth.audit_retention_days)

    @cached_property
    def sources(self) -> SourceService:
        """SQL sources (P10): kept in the catalog, synced through the ingestion pipeline."""
        from hanrag.store.sql_sources import SqlSourceStore
        from hanrag.tables.service import SourceService

        with self._build_lock:
            return SourceService(
                SqlSourceStore(self.catalog.engine),
                lambda: self.pipeline,
                self.settings,
                audit=lambda: self.audit,
            )

    @cached_property
    def feedback(self) -> FeedbackService:
        """Feedback on answers and the admin dashboard's statistics (P12)."""
        from hanrag.answer.feedback import FeedbackService

        with self._build_lock:
            return FeedbackService(self.catalog.engine, self.sessions)

    def _llm_parts(self) -> tuple[ProviderRegistry, dict[str, Generator]]:
        """The provider registry and the per-role generators, built once per ``llm``
        settings: tools and tests point an engine at another server by changing
        ``settings.llm`` and dropping the cached ``generator`` and ``answers``, which then
        get a registry of their own (fresh breakers included)."""
        from hanrag.llm.factory import build_generators, build_registry

        with self._build_lock:
            llm = self.settings.llm
            parts = self.__dict__.get("_llm_built")
            if parts is None or parts[0] != llm:
                registry = build_registry(self.settings)
                parts = (llm.model_copy(deep=True), registry, build_generators(self.settings, registry))
                self.__dict__["_llm_built"] = parts
            return parts[1], parts[2]

    @property
    def llm_registry(self) -> ProviderRegistry:
        """The model providers (``llm.providers``, or the one the single-provider fields
        describe), each with its circuit breaker and live statistics."""
        return self._llm_parts()[0]

    @property
    def generators(self) -> dict[str, Generator]:
        """role (answer, planner, sql, vision, judge) -> its generator over the registry;
        ``answer`` is always there (extractive when no provider serves it)."""
        return self._llm_parts()[1]

    @cached_property
    def generator(self) -> Generator:
        """The answer role's generator."""
        return self.generators["answer"]

    def model_status(self) -> dict[str, Any]:
        """The embedding model, the answer generator, and every provider with its breaker
        state and statistics and the roles it serves; no API key nor URL credentials (any
        authenticated caller may read it)."""
        from hanrag.llm.factory import ROLES

        registry = self.llm_registry
        return {
            "embedder": self.shared_embedder.status().as_dict(),
            "generator": self.generator.status(),
            **registry.status(),
            "roles": {role: [p.name for p in registry.for_role(role)] for role in ROLES},
        }

    @cached_property
    def prompts(self) -> PromptSet:
        """The operator's prompts over the Korean defaults, checked once (a bad file is a
        ConfigError here, which ``serve`` and ``worker`` reach before taking work)."""
        from hanrag.answer.prompts import load_prompts

        return load_prompts(self.settings.prompts)

    @cached_property
    def answers(self) -> AnswerEngine:
        """The ask flow, given exactly the parts it uses (it never sees this engine); the
        index, the retriever and the tokenizer are reached only when an answer needs them."""
        from hanrag.answer.engine import AnswerEngine
        from hanrag.answer.planner import Planner
        from hanrag.answer.table_route import TableRoute
        from hanrag.llm.extractive import ExtractiveGenerator

        settings = self.settings
        generator = self.generator
        # The planner's own (cheaper) provider when one is set; none: rule-based plans only.
        planner = self.generators.get("planner") if settings.llm.planner else None
        # What answers when the language model fails before its first token.
        extractive = (
            generator
            if isinstance(generator, ExtractiveGenerator)
            else ExtractiveGenerator(
                max_sentences=settings.answer.extractive_sentences,
                analysis_cache_size=settings.answer.extractive_cache_passages,
            )
        )

        def search(query: str, *, k: int | None = None, filters: SearchFilters | None = None) -> SearchResult:
            # The answer engine puts the asker's principals into the filters itself.
            return self.retriever.search(query, k=k, filters=filters)

        return AnswerEngine(
            search=search,
            sessions=self.sessions,
            audit=self.audit,
            count_tokens=lambda text: self.shared_embedder.count_tokens(text),
            metadata_keys=lambda principals: self.index.metadata_keys(principals),
            generator=generator,
            planner=Planner(planner, prompts=self.prompts),
            extractive=extractive,
            settings=settings.answer,
            generation_options=self.generation_options,
            fallback_to_extractive=settings.llm.fallback_to_extractive,
            # The writes an answer leaves behind get their own threads: one for a SQLite catalog,
            # which takes one writer at a time anyway (more threads would only wait on its lock
            # while taking CPU from the retrieval of newer questions), a few for a server database.
            writer_threads=1 if settings.resolved_catalog_url.startswith("sqlite") else 4,
            tables=TableRoute(self.sources.queryable, settings.tables, prompts=self.prompts),
            # The table route's SQL comes from the sql role (the answer's when none serves it).
            sql_generator=self.generators.get("sql"),
            prompts=self.prompts,
            vision=self.generators.get("vision"),
            ensemble_members=self.ensemble_members,
            mode=settings.llm.mode,
            ensemble_timeout_s=settings.llm.ensemble_timeout_s,
            judge=self.generators.get("judge"),
        )

    def ensemble_members(self) -> list[tuple[str, Generator]]:
        """The answer providers that answer side by side in ensemble mode (at most
        ``llm.ensemble_size``, in priority order), each behind its own breaker and slots."""
        from hanrag.llm.factory import member_generators

        return member_generators(self.settings, self.llm_registry, "answer", self.settings.llm.ensemble_size)

    def generation_options(self) -> GenerationOptions:
        from hanrag.llm.factory import generation_options

        return generation_options(self.settings)

    # ------------------------------------------------------------- ingestion

    def ingest(
        self,
        request: IngestRequest | Sequence[Path],
        *,
        on_start: Any = None,
        on_progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Ingest server-side files and folders (a bare list of paths: with the default options)."""
        if not isinstance(request, IngestRequest):
            request = IngestRequest(paths=list(request))
        return self.pipeline.ingest(request, caller=SYSTEM, on_start=on_start, on_progress=on_progress)

    def sync(
        self,
        request: IngestRequest | Path,
        *,
        on_start: Any = None,
        on_progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Mirror one directory (a bare path: with the default options)."""
        if not isinstance(request, IngestRequest):
            request = IngestRequest(paths=[request])
        return self.pipeline.sync(request, on_start=on_start, on_progress=on_progress)

    def ingest_upload(
        self,
        data: bytes,
        filename: str,
        *,
        acl: list[str] | None = None,
        metadata: dict[str, str] | None = None,
        date_override: datetime | None = None,
        caller: Caller,
    ) -> FileOutcome:
        """Ingest one uploaded file, its bytes kept for re-indexing (see
        :meth:`IngestPipeline.ingest_upload`)."""
        outcome = self.pipeline.ingest_upload(
            data, filename, caller=caller, acl=acl, metadata=metadata, date_override=date_override
        )
        self.index.refresh()
        return outcome

    @staticmethod
    def _caller_metadata(row: DocumentRow) -> dict[str, str]:
        """Metadata a caller gave at ingest (the parser's own keys are found again on re-parse)."""
        parser_keys = {"format", "pages", "sheets", "encoding", "delimiter", "author"}
        return {k: str(v) for k, v in (row.meta or {}).items() if k not in parser_keys}

    def reindex(self, key: str, *, caller: Caller) -> FileOutcome:
        """Parse, chunk and index a document again from its source (embeddings come from the cache)."""
        row = self.get_document(key, caller=caller)
        if row.source_type == "file":
            path = Path(row.source)
            if not path.is_file():
                raise NotFoundError(f"the source file {row.source} no longer exists", code="source_missing")
            data = read_limited(path, max_bytes=self.pipeline.max_bytes)
            stat = path.stat()
            outcome = self.pipeline.ingest_bytes(
                data,
                path.name,
                source=row.source,
                source_type="file",
                acl=list(row.acl),
                force=True,
                metadata=self._caller_metadata(row),
                file_size=stat.st_size,
                mtime_ns=stat.st_mtime_ns,
            )
        elif row.source_type == "upload":
            original = self.uploads.original(row.id)
            if original is None:
                raise NotFoundError(f"the uploaded bytes of {row.id} are not kept", code="source_missing")
            outcome = self.pipeline.ingest_bytes(
                original.read_bytes(),
                uploaded_name(row.source),  # the kept file's name may be shortened
                source=row.source,
                source_type="upload",
                acl=list(row.acl),
                force=True,
                metadata=self._caller_metadata(row),
                file_size=original.stat().st_size,
            )
        else:
            raise InvalidInputError(
                f"documents from {row.source_type!r} sources cannot be re-indexed here",
                code="not_reindexable",
            )
        self.index.refresh()
        return outcome

    # -------------------------------------------------------------- retrieval

    def search(
        self,
        query: str,
        *,
        caller: Caller,
        k: int | None = None,
        filters: SearchFilters | None = None,
        fusion: str | None = None,
        weights: dict[str, float] | None = None,
    ) -> SearchResult:
        """Hybrid search over what ``caller`` may read (the scope is applied here, always)."""
        return self.retriever.search(
            query, k=k, filters=scope(filters, caller), fusion=fusion, weights=weights
        )

    # ---------------------------------------------------------------- answers

    def ask(
        self,
        question: str,
        *,
        caller: Caller,
        session_id: str | None = None,
        filters: SearchFilters | None = None,
        options: AskOptions | None = None,
    ) -> AsyncIterator[AnswerEvent]:
        """Stream the answer events (see :mod:`hanrag.answer.engine`), retrieving only what
        ``caller`` may read; the conversation is the caller's own."""
        return self.answers.ask(
            question,
            session_id=session_id,
            principal=caller.name,
            principals=caller.principal_list,
            filters=scope(filters, caller),
            options=options,
        )

    async def ask_result(
        self,
        question: str,
        *,
        caller: Caller,
        session_id: str | None = None,
        filters: SearchFilters | None = None,
        options: AskOptions | None = None,
    ) -> AnswerResult:
        """The whole answer (the one fold over :meth:`ask`'s events)."""
        return await fold_answer(
            self.ask(question, caller=caller, session_id=session_id, filters=filters, options=options)
        )

    def check_ask(
        self, question: str, *, caller: Caller, session_id: str | None, filters: SearchFilters | None
    ) -> str:
        """The checks an ask passes before any work, run now (a job at submit time)."""
        return self.answers.check_request(
            question, session_id=session_id, principal=caller.name, filters=scope(filters, caller)
        )

    # -------------------------------------------------------------- documents

    def list_documents(
        self, *, caller: Caller, offset: int = 0, limit: int = 100, status: str | None = None
    ) -> list[DocumentRow]:
        """A page of the documents ``caller`` may read."""
        return self.document_page(caller=caller, offset=offset, limit=limit, status=status)[0]

    def document_page(
        self, *, caller: Caller, offset: int = 0, limit: int = 100, status: str | None = None, q: str = ""
    ) -> tuple[list[DocumentRow], int]:
        """A page of the documents ``caller`` may read (``q``: whose title or file name holds
        it, in any case), and how many there are in all."""
        if caller.unrestricted and not q:
            rows = self.catalog.list_documents(offset=offset, limit=limit, status=status)
            return rows, self.catalog.count(status)
        visible = [
            row
            for row in self.catalog.list_documents(offset=0, limit=10**9, status=status)
            if may_read(caller.principals, row.acl) and matches(row, q)
        ]
        return visible[offset : offset + limit], len(visible)

    def get_document(self, key: str, *, caller: Caller) -> DocumentRow:
        """A document by id, source or file name, among those ``caller`` may read;
        a hidden document is answered exactly like a missing one."""
        row = self.catalog.find(key, lambda candidate: may_read(caller.principals, candidate.acl))
        if row is None:
            raise document_not_found(key)
        return row

    def document_original(self, key: str, *, caller: Caller) -> Original:
        """The original of a document ``caller`` may read (see :mod:`hanrag.ingest.originals`)."""
        row = self.get_document(key, caller=caller)
        chunks = lambda: self.index.document_chunks(row.id)  # noqa: E731
        return original_of(row, self.uploads, chunks, max_bytes=int(self.settings.ingest.max_file_mb * 2**20))

    def document_chunks(self, document_id: str, *, caller: Caller) -> list[Chunk]:
        """A document's chunks, in order (none for an unknown document); a caller who may
        not read it is told it does not exist."""
        if not caller.unrestricted:
            document_id = self.get_document(document_id, caller=caller).id
        return self.index.document_chunks(document_id)

    def delete_document(self, key: str, *, caller: Caller) -> tuple[DocumentRow, int]:
        row = self.get_document(key, caller=caller)
        removed = self.pipeline.delete_document(row.id)
        self.uploads.discard_original(row.id)
        return row, removed

    def set_document_acl(self, key: str, acl: list[str], *, caller: Caller) -> DocumentRow:
        """Change who may read a document: its chunks are updated in place, not re-embedded.
        The caller must read the document and may grant only principals they hold."""
        row = self.get_document(key, caller=caller)
        acl = check_grant(caller.principals, acl)
        actor = caller.name or "system"
        with WriteGate(self.settings.data_dir).writing():  # index and catalog agree in a backup
            self.index.set_document_acl(row.id, acl)
            updated = self.catalog.upsert(row.id, acl=acl)
        self.audit.record(actor, "acl_change", target=row.id, detail={"from": list(row.acl or []), "to": acl})
        return updated

    # -------------------------------------------------------------- sessions

    def list_sessions(self, *, caller: Caller, offset: int = 0, limit: int = 100) -> list[ChatSessionRow]:
        """The caller's conversations (all of them for the implicit single user)."""
        return self.sessions.list_sessions(principal=caller.name, offset=offset, limit=limit)

    def get_session(self, session_id: str, *, caller: Caller) -> ChatSessionRow:
        """A conversation the caller owns; someone else's is answered like a missing one."""
        row = self.sessions.get(session_id)
        if not owns(caller, row.principal):
            raise NotFoundError(f"no session {session_id!r}", code="session_not_found", field="session_id")
        return row

    def session_messages(self, session_id: str, *, caller: Caller) -> list[MessageRow]:
        self.get_session(session_id, caller=caller)
        return list(self.sessions.messages(session_id))

    def readable_references(
        self, references: list[dict[str, Any]], *, caller: Caller
    ) -> list[dict[str, Any]]:
        """A stored answer's references that ``caller`` may still read (access can be lost
        after the answer: a reopened conversation must not show those passages again)."""
        if caller.unrestricted:
            return references
        rows = {i: self.catalog.get(i) for i in {str(r.get("document_id")) for r in references}}
        readable = {i for i, row in rows.items() if row is not None and may_read(caller.principals, row.acl)}
        return [r for r in references if str(r.get("document_id")) in readable]

    def room_id(self, page_id: str, *, caller: Caller) -> str:
        """The conversation a client-named room (legacy ``page_id``) is stored as, in the
        caller's own namespace (see :func:`hanrag.auth.access.room_id`)."""
        return room_id(caller, page_id, self.sessions.owner)

    def room_messages(self, page_id: str, *, caller: Caller) -> list[MessageRow]:
        """A client-named room's messages in the caller's namespace (none when it has none)."""
        room = self.room_id(page_id, caller=caller)
        return list(self.sessions.messages(room)) if self.sessions.exists(room) else []

    def rename_session(self, session_id: str, title: str, *, caller: Caller) -> ChatSessionRow:
        """Retitle a conversation the caller owns (someone else's is answered like a missing one)."""
        return self.sessions.rename(self.get_session(session_id, caller=caller).id, title)

    def delete_session(self, session_id: str, *, caller: Caller) -> None:
        self.get_session(session_id, caller=caller)
        self.sessions.delete(session_id)

    # ------------------------------------------------------------- migration

    def migrate_index(self, target: Settings, on_progress: Any = None) -> dict[str, Any]:
        """Copy every document of this engine's local index into the index ``target`` names,
        with the stored vectors and tokens: nothing is parsed or embedded again."""
        from hanrag.index.factory import build_index
        from hanrag.index.migration import copy_index

        if self.index.backend != "local":
            raise InvalidInputError(
                "migration reads from the local index; set index.backend=local", code="invalid_source"
            )
        return copy_index(self.index, build_index(target, self.catalog), on_progress)

    # ----------------------------------------------------------------- status

    def status(self, *, load_model: bool = False) -> dict[str, Any]:
        if load_model:
            self.shared_embedder.load()
        stats = self.index.stats()
        cache = self.embedding_cache
        return {
            "data_dir": str(self.settings.data_dir.resolve()),
            "documents": self.catalog.status_counts(),
            "index": {
                "backend": self.index.backend,
                "chunks": stats.chunks,
                "documents": stats.documents,
                "dimension": stats.dimension,
                "disk_mb": round(stats.disk_bytes / 2**20, 2),
                **stats.details,
            },
            "embedding_model": self.shared_embedder.status().as_dict(),
            "generator": self.generator.status(),
            "embedding_cache": None
            if cache is None
            else {"entries": cache.count(), "hit_rate": cache.hit_rate()},
        }

    def warm_up(self) -> None:
        """Load the index, the tokenizer and the embedding model now, so that the first
        request or job does not pay for it (loading may also hold the GIL for seconds)."""
        try:
            self.search("준비", caller=SYSTEM, k=1)
        except Exception as exc:  # a broken backend shows in /readyz and in the first request
            log.warning("warm-up failed: %s", type(exc).__name__)

    def close(self) -> None:
        if "answers" in self.__dict__:
            self.answers.close()  # lets the last answers' writes finish first
        if "index" in self.__dict__:
            self.index.close()
        if "embedding_cache" in self.__dict__ and self.embedding_cache is not None:
            self.embedding_cache.close()
        if "catalog" in self.__dict__:
            self.catalog.engine.dispose()
