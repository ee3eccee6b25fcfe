"""The one engine: every entry point (CLI, HTTP API, job worker, evaluation) calls this.

It owns the components built from settings — catalog, embedder, index,
retriever, ingestion pipeline — and builds each lazily, so a command that only
lists documents never loads a model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import unicodedata
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hanrag.auth.access import check_grant
from hanrag.domain import SearchFilters, SearchResult
from hanrag.embed.cache import EmbeddingCache
from hanrag.embed.factory import get_embedder
from hanrag.embed.manager import CachingEmbedder, SharedEmbedder
from hanrag.errors import InvalidInputError, NotFoundError
from hanrag.index.base import DocumentChunks, Index
from hanrag.index.retriever import Retriever
from hanrag.ingest.chunking import Chunker
from hanrag.ingest.parsers.registry import read_limited
from hanrag.ingest.pipeline import (
    FileOutcome,
    IngestPipeline,
    IngestReport,
    ProgressCallback,
    document_id_for,
)
from hanrag.settings import Settings
from hanrag.store.catalog import Catalog
from hanrag.store.db import make_engine
from hanrag.store.models import DocumentRow
from hanrag.store.sessions import SessionStore

if TYPE_CHECKING:
    from hanrag.answer.engine import AnswerEngine, AnswerEvent, AnswerResult
    from hanrag.auth.audit import AuditLog
    from hanrag.auth.service import AuthService
    from hanrag.llm.base import GenerationOptions, Generator

log = logging.getLogger("hanrag.engine")

# Chunks per write when an index is copied to another backend.
MIGRATION_BATCH_CHUNKS = 1000


def document_not_found(key: str) -> NotFoundError:
    """The one error for a document that is missing — or hidden from the caller."""
    return NotFoundError(
        f"no document with id or source {key!r}", code="document_not_found", field="document"
    )


# Uploaded file names longer than this are refused; the stored copy's name is shortened
# further when needed, since filesystems allow 255 bytes (85 Korean characters in UTF-8).
UPLOAD_NAME_MAX_CHARS = 255
_STORED_NAME_MAX_BYTES = 200


def upload_file_name(filename: str) -> str:
    """An uploaded file's name as shown and kept in its source: the last path part
    (of '/' or '\\' paths), NFC, with no control characters."""
    name = unicodedata.normalize("NFC", filename or "").replace("\\", "/").rpartition("/")[2].strip()
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise InvalidInputError(
            "the file name contains control characters", code="invalid_filename", field="file"
        )
    if len(name) > UPLOAD_NAME_MAX_CHARS:
        raise InvalidInputError(
            f"the file name has {len(name)} characters; the limit is {UPLOAD_NAME_MAX_CHARS}",
            code="invalid_filename",
            field="file",
        )
    if name in (".", ".."):
        raise InvalidInputError(f"invalid file name {filename!r}", code="invalid_filename", field="file")
    return name or "upload"


def stored_file_name(name: str) -> str:
    """The name of an upload's kept copy: the uploaded name when the filesystem takes it,
    else a digest of it with the (short) extension the parsers sniff by."""
    if len(name.encode("utf-8")) <= _STORED_NAME_MAX_BYTES:
        return name
    suffix = Path(name).suffix
    suffix = suffix if len(suffix.encode("utf-8")) <= 16 else ""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:32] + suffix


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._build_lock = threading.RLock()

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
    def pipeline(self) -> IngestPipeline:
        chunker = Chunker(self.settings.chunk, self.shared_embedder.count_tokens)
        return IngestPipeline(self.settings, self.catalog, self.index, self.embedder, chunker)

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
    def generator(self) -> Generator:
        from hanrag.llm.factory import build_generator

        return build_generator(self.settings)

    @cached_property
    def answers(self) -> AnswerEngine:
        from hanrag.answer.engine import AnswerEngine
        from hanrag.answer.planner import Planner

        return AnswerEngine(self, self.generator, Planner(self.generator))

    def generation_options(self) -> GenerationOptions:
        from hanrag.llm.factory import generation_options

        return generation_options(self.settings)

    # ------------------------------------------------------------- ingestion

    def ingest(
        self,
        paths: list[Path],
        *,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        acl: list[str] | None = None,
        date_override: datetime | None = None,
        metadata: dict[str, str] | None = None,
        on_start: Any = None,
        on_progress: ProgressCallback | None = None,
    ) -> IngestReport:
        return self.pipeline.ingest_paths(
            paths,
            include=include,
            exclude=exclude,
            acl=acl,
            date_override=date_override,
            metadata=metadata,
            on_start=on_start,
            on_progress=on_progress,
        )

    def sync(
        self,
        directory: Path,
        *,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        acl: list[str] | None = None,
        on_start: Any = None,
        on_progress: ProgressCallback | None = None,
    ) -> IngestReport:
        return self.pipeline.sync(
            directory, include=include, exclude=exclude, acl=acl, on_start=on_start, on_progress=on_progress
        )

    def ingest_upload(
        self,
        data: bytes,
        filename: str,
        *,
        acl: list[str] | None = None,
        metadata: dict[str, str] | None = None,
        date_override: datetime | None = None,
        owner: str | None = None,
        principals: list[str] | None = None,
    ) -> FileOutcome:
        """Ingest uploaded bytes. The bytes are kept in the data directory so the
        document can be re-indexed later. Uploading the same file name again replaces
        the document — only the same uploader's: each signed-in user has their own
        namespace, so nobody can overwrite (or detect) a document they cannot read.
        ``principals`` are the uploader's (see :meth:`IngestPipeline.ingest_bytes`)."""
        name = upload_file_name(filename)
        source = f"upload:{owner}/{name}" if owner else f"upload:{name}"
        document_id = document_id_for("upload", source)
        uploads = self.settings.data_dir / "uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        # The bytes are written before anything is indexed, so that a write that fails
        # (disk full, a name the filesystem refuses) leaves no document without its bytes.
        staged = uploads / f".incoming-{uuid.uuid4().hex}"
        staged.write_bytes(data)
        try:
            outcome = self.pipeline.ingest_bytes(
                data,
                name,
                source=source,
                source_type="upload",
                acl=acl,
                metadata=metadata,
                date_override=date_override,
                file_size=len(data),
                principals=principals,
            )
            if outcome.status != "failed":
                stored = uploads / document_id
                stored.mkdir(parents=True, exist_ok=True)
                for old in stored.iterdir():
                    old.unlink()
                os.replace(staged, stored / stored_file_name(name))
        finally:
            staged.unlink(missing_ok=True)
        self.index.refresh()
        return outcome

    @staticmethod
    def _caller_metadata(row: DocumentRow) -> dict[str, str]:
        """Metadata a caller gave at ingest (the parser's own keys are found again on re-parse)."""
        parser_keys = {"format", "pages", "sheets", "encoding", "delimiter", "author"}
        return {k: str(v) for k, v in (row.meta or {}).items() if k not in parser_keys}

    def reindex(self, key: str) -> FileOutcome:
        """Parse, chunk and index a document again from its source (embeddings come from the cache)."""
        row = self.get_document(key)
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
            stored = self.settings.data_dir / "uploads" / row.id
            files = sorted(stored.iterdir()) if stored.is_dir() else []
            if not files:
                raise NotFoundError(f"the uploaded bytes of {row.id} are not kept", code="source_missing")
            outcome = self.pipeline.ingest_bytes(
                files[0].read_bytes(),
                # The uploaded name (the stored file's name may be shortened).
                row.source.rpartition("/")[2] if "/" in row.source else row.source.removeprefix("upload:"),
                source=row.source,
                source_type="upload",
                acl=list(row.acl),
                force=True,
                metadata=self._caller_metadata(row),
                file_size=files[0].stat().st_size,
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
        k: int | None = None,
        filters: SearchFilters | None = None,
        fusion: str | None = None,
        weights: dict[str, float] | None = None,
    ) -> SearchResult:
        return self.retriever.search(query, k=k, filters=filters, fusion=fusion, weights=weights)

    # ---------------------------------------------------------------- answers

    def ask(self, question: str, **kwargs: Any) -> AsyncIterator[AnswerEvent]:
        """Stream the answer events (see :mod:`hanrag.answer.engine`)."""
        return self.answers.ask(question, **kwargs)

    async def ask_result(self, question: str, **kwargs: Any) -> AnswerResult:
        return await self.answers.ask_result(question, **kwargs)

    # -------------------------------------------------------------- documents

    def list_documents(
        self, *, offset: int = 0, limit: int = 100, status: str | None = None
    ) -> list[DocumentRow]:
        return self.catalog.list_documents(offset=offset, limit=limit, status=status)

    def get_document(self, key: str, principals: list[str] | None = None) -> DocumentRow:
        """A document by id, source or file name, among those ``principals`` may read
        (None: all); hidden documents are missing ones."""
        row = self.catalog.find(key, principals)
        if row is None:
            raise document_not_found(key)
        return row

    def document_chunks(self, document_id: str) -> list[Any]:
        chunks: list[Any] = getattr(self.index, "document_chunks", lambda _doc: [])(document_id)
        return chunks

    def delete_document(self, key: str) -> tuple[DocumentRow, int]:
        row = self.get_document(key)
        removed = self.pipeline.delete_document(row.id)
        stored = self.settings.data_dir / "uploads" / row.id
        if stored.is_dir():
            for old in stored.iterdir():
                old.unlink()
            stored.rmdir()
        return row, removed

    def set_document_acl(
        self, key: str, acl: list[str], *, actor: str = "system", principals: list[str] | None = None
    ) -> DocumentRow:
        """Change who may read a document: its chunks are updated in place, not re-embedded.
        A caller with ``principals`` must read the document and may grant only what they hold."""
        row = self.get_document(key, principals)
        acl = check_grant(principals, acl)
        self.index.set_document_acl(row.id, acl)
        updated = self.catalog.upsert(row.id, acl=acl)
        self.audit.record(actor, "acl_change", target=row.id, detail={"from": list(row.acl or []), "to": acl})
        return updated

    # ------------------------------------------------------------- migration

    def migrate_index(self, target: Settings, on_progress: Any = None) -> dict[str, Any]:
        """Copy every document of this engine's local index into the index ``target`` names,
        with the stored vectors and tokens: nothing is parsed or embedded again."""
        import time as _time

        from hanrag.index.factory import build_index
        from hanrag.index.local import LocalIndex

        if not isinstance(self.index, LocalIndex):
            raise InvalidInputError(
                "migration reads from the local index; set index.backend=local", code="invalid_source"
            )
        destination = build_index(target, self.catalog)
        started = _time.perf_counter()
        documents = chunks = 0
        total = len(self.index.document_chunk_counts())
        batch: list[DocumentChunks] = []
        batch_chunks = 0

        def write_batch() -> None:
            nonlocal documents, chunks, batch_chunks
            destination.upsert_documents(batch)
            documents += len(batch)
            chunks += batch_chunks
            batch.clear()
            batch_chunks = 0
            if on_progress:
                on_progress(documents, total, chunks)

        try:
            # Documents go over in batches of about MIGRATION_BATCH_CHUNKS chunks: a remote
            # index then costs a few round trips per batch instead of per document.
            for document in self.index.export_documents():
                batch.append(document)
                batch_chunks += len(document[1])
                if batch_chunks >= MIGRATION_BATCH_CHUNKS:
                    write_batch()
            if batch:
                write_batch()
            destination.refresh()
        finally:
            destination.close()
        seconds = _time.perf_counter() - started
        return {
            "documents": documents,
            "chunks": chunks,
            "seconds": round(seconds, 2),
            "chunks_per_second": round(chunks / seconds, 1) if seconds > 0 else None,
        }

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
            self.search("준비", k=1)
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
