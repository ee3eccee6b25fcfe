"""Ingestion: source bytes -> parser -> chunker -> Kiwi tokens -> embeddings -> index + catalog.

Idempotent and crash-safe: a document's chunks are replaced in one index
transaction, and the catalog records the new content hash only after that
commit, so an interrupted run is simply redone by the next one. An unchanged
file (same size and modification time, or same bytes) is neither parsed nor
embedded again; a failure on one file is recorded and the batch goes on.

Every batch (the CLI's ingest and sync, an ingestion job of server paths or of
uploaded files) is one :meth:`IngestPipeline.run` of an
:class:`~hanrag.ingest.model.IngestRequest`: its plan, then one outcome per file,
with a stop check (a job's pause or cancel) between files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from pathlib import Path

from hanrag.auth.access import SYSTEM, Caller, check_grant, may_read
from hanrag.cancellation import raise_if_cancelled
from hanrag.domain import Chunk, to_epoch
from hanrag.embed.manager import CachingEmbedder
from hanrag.errors import HanragError, InvalidInputError, ParseError
from hanrag.index.base import Index, IndexedChunk
from hanrag.ingest.chunking import Chunker, chunk_id
from hanrag.ingest.discovery import AclResolver, discover
from hanrag.ingest.model import (
    FileOutcome,
    IngestPlan,
    IngestReport,
    IngestRequest,
    OutcomeStatus,
    ProgressCallback,
    not_found,
)
from hanrag.ingest.parsers.budget import ParseLimits
from hanrag.ingest.parsers.registry import parse_bytes, read_limited
from hanrag.ingest.uploads import UploadStore, upload_file_name, upload_source
from hanrag.korean.analyzer import char_bigrams, morpheme_tokens_many
from hanrag.settings import Settings
from hanrag.store.catalog import Catalog
from hanrag.store.writegate import WriteGate

log = logging.getLogger("hanrag.ingest")

# Asked before each file of a run: True ends the run there (a job's pause or cancel).
StopCheck = Callable[[], bool]


def document_id_for(source_type: str, source: str) -> str:
    """Stable id from where the document came from: re-ingesting replaces it."""
    return hashlib.sha256(f"{source_type}:{source}".encode()).hexdigest()[:24]


class IngestPipeline:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        index: Index,
        embedder: CachingEmbedder,
        chunker: Chunker,
        uploads: UploadStore | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.index = index
        self.embedder = embedder
        self.chunker = chunker
        self.uploads = uploads or UploadStore(settings.data_dir)
        self.acls = AclResolver(settings.ingest)
        # Each document's group of writes is whole or absent in an online backup.
        self.gate = WriteGate(settings.data_dir)

    def permitted(self, path: Path, principals: list[str] | None) -> bool:
        """Whether a caller may ingest (and hear of) a server-side file: they must be able
        to read the document it would replace, or, for a new one, the document as its
        owner labelled it (its ACL file, else the default). Nobody re-labels, replaces or
        lists documents they cannot read by naming their files."""
        if principals is None:
            return True
        existing = self.catalog.get(document_id_for("file", str(path.resolve())))
        if existing is not None and existing.status == "indexed":
            return may_read(principals, existing.acl)
        try:
            return may_read(principals, self.acls.natural(path))
        except InvalidInputError:
            return False  # a broken ACL file: only an unrestricted caller hears of it

    @property
    def max_bytes(self) -> int:
        return int(self.settings.ingest.max_file_mb * 2**20)

    # ------------------------------------------------------------ one document

    def _build_chunks(
        self,
        *,
        data: bytes,
        filename: str,
        document_id: str,
        source: str,
        acl: list[str],
        fallback_date: datetime,
        date_override: datetime | None,
        metadata: dict[str, str],
    ) -> tuple[list[IndexedChunk], str, str, datetime, dict[str, str]]:
        parsed = parse_bytes(data, filename, limits=ParseLimits.from_settings(self.settings.ingest))
        drafts = self.chunker.split(parsed)
        if not drafts:
            raise ParseError(f"{filename}: no text could be extracted", code="no_text")
        limit = self.settings.ingest.max_chunks_per_document
        if len(drafts) > limit:
            # Before anything is analysed or embedded: one upload must not hold the model
            # (and the other uploads behind it) for an hour.
            raise ParseError(
                f"{filename}: {len(drafts):,} chunks, more than the limit of {limit:,} per document "
                "(ingest.max_chunks_per_document)",
                code="too_many_chunks",
            )
        title = (parsed.title or Path(filename).stem).strip()
        date = date_override or parsed.date or fallback_date
        epoch = to_epoch(date)
        # One metadata dict for the catalog and every chunk, so metadata filters mean the
        # same thing whichever index answers them: what the parser found, the format, and
        # the caller's keys (which win).
        chunk_metadata = {**parsed.metadata, "format": parsed.format, **metadata}
        chunks = [
            Chunk(
                chunk_id=chunk_id(document_id, position, draft.text),
                document_id=document_id,
                position=position,
                text=draft.text,
                title=title,
                source=source,
                content_hash=hashlib.sha256(draft.text.encode("utf-8")).hexdigest(),
                date=epoch,
                acl=list(acl),
                page=draft.page,
                sheet=draft.sheet,
                kind=draft.kind,
                metadata=chunk_metadata,
            )
            for position, draft in enumerate(drafts)
        ]
        # The title is part of what both the lexical and the dense signals see.
        lexical_texts = [c.embedding_text for c in chunks]
        morphemes = morpheme_tokens_many(lexical_texts)
        indexed = [
            IndexedChunk(chunk=c, morphemes=m, bigrams=char_bigrams(text))
            for c, m, text in zip(chunks, morphemes, lexical_texts, strict=True)
        ]
        return indexed, parsed.format, title, date, chunk_metadata

    def _failed(
        self, document_id: str, source: str, source_type: str, title: str, exc: HanragError, started: float
    ) -> FileOutcome:
        """Record why a document failed (an indexed previous version stays as it was)."""
        self.catalog.mark_failed(
            document_id,
            source=source,
            source_type=source_type,
            code=exc.code,
            message=exc.message,
            title=title,
        )
        log.warning("ingest failed", extra={"source": source, "code": exc.code})
        return FileOutcome(
            source,
            "failed",
            document_id,
            error_code=exc.code,
            error=exc.message,
            seconds=time.perf_counter() - started,
        )

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
        on_stored: Callable[[str], None] | None = None,
    ) -> FileOutcome:
        """Ingest one document's bytes; ``force`` re-parses even unchanged content (re-index).

        ``principals`` are the caller's (None: unrestricted): a document they cannot read
        is never replaced or re-labelled, and an explicit ACL holds only principals they hold.
        ``on_stored(document_id)`` runs with the document's writes (under the write gate)
        unless it failed: an upload keeps its original bytes there.
        """
        started = time.perf_counter()
        acl = self.acls.resolve(None, acl, metadata, principals=principals)
        metadata = dict(metadata or {})
        document_id = document_id_for(source_type, source)
        digest = hashlib.sha256(data).hexdigest()
        existing = self.catalog.get(document_id)
        if existing is not None and existing.status == "indexed" and not may_read(principals, existing.acl):
            return FileOutcome(
                source,
                "failed",
                document_id,
                error_code="not_permitted",
                error="you may not replace a document you cannot read",
                seconds=time.perf_counter() - started,
            )
        unchanged = (
            existing is not None
            and existing.status == "indexed"
            and existing.content_hash == digest
            # Same bytes but new metadata or a new date must still reach the chunks.
            and all((existing.meta or {}).get(key) == value for key, value in metadata.items())
            and (
                date_override is None
                or (existing.doc_date is not None and to_epoch(existing.doc_date) == to_epoch(date_override))
            )
        )
        if unchanged and not force:
            assert existing is not None
            relabel = sorted(existing.acl or []) != sorted(acl)
            status: OutcomeStatus = "acl_updated" if relabel else "unchanged"
            # Nothing to write when nothing changed (a full SQL sync re-reads every row: the
            # write was half of an unchanged row's cost), and then no gate to take either.
            restat = (file_size, mtime_ns) != (existing.size, existing.mtime_ns)
            if relabel or restat or on_stored is not None:
                with self.gate.writing():
                    if relabel:
                        self.index.set_document_acl(document_id, acl)
                    if relabel or restat:
                        self.catalog.upsert(document_id, size=file_size, mtime_ns=mtime_ns, acl=acl)
                    if on_stored is not None:
                        on_stored(document_id)
            return FileOutcome(
                source, status, document_id, existing.chunk_count, seconds=time.perf_counter() - started
            )
        fallback = datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC) if mtime_ns else datetime.now(UTC)
        try:
            chunks, fmt, title, date, doc_metadata = self._build_chunks(
                data=data,
                filename=filename,
                document_id=document_id,
                source=source,
                acl=acl,
                fallback_date=fallback,
                date_override=date_override,
                metadata=metadata,
            )
            raise_if_cancelled()  # the request gave up: embed nothing, write nothing
            # In small batches, each behind any waiting query (see hanrag.embed.manager).
            vectors = self.embedder.embed_passages(
                [c.chunk.embedding_text for c in chunks],
                batch_size=self.settings.embed.ingest_batch_size,
                batch_tokens=self.settings.embed.ingest_batch_tokens,
            )
            raise_if_cancelled()
            with self.gate.writing():
                self.catalog.upsert(
                    document_id,
                    source=source,
                    source_type=source_type,
                    title=title,
                    format=fmt,
                    status=existing.status if existing else "indexing",
                    acl=acl,
                    meta=doc_metadata,
                    doc_date=date,
                )
                self.index.upsert_document(document_id, chunks, vectors)
                self.catalog.mark_indexed(
                    document_id,
                    content_hash=digest,
                    chunk_count=len(chunks),
                    size=file_size,
                    mtime_ns=mtime_ns,
                    source=source,
                    source_type=source_type,
                    title=title,
                    format=fmt,
                    acl=acl,
                    meta=doc_metadata,
                    doc_date=date,
                )
                if on_stored is not None:
                    on_stored(document_id)
        except HanragError as exc:
            return self._failed(document_id, source, source_type, Path(filename).stem, exc, started)
        return FileOutcome(
            source,
            "updated" if existing is not None and existing.status == "indexed" else "added",
            document_id,
            len(chunks),
            seconds=time.perf_counter() - started,
        )

    def ingest_file(
        self,
        path: Path,
        *,
        acl: list[str] | None = None,
        date_override: datetime | None = None,
        metadata: dict[str, str] | None = None,
        known: dict[str, tuple[str, int | None, int | None, str | None]] | None = None,
        principals: list[str] | None = None,
    ) -> FileOutcome:
        started = time.perf_counter()
        source = str(path.resolve())
        if not self.permitted(path, principals):
            return not_found(path)  # told exactly like a file that is not there (see ``permitted``)
        try:
            stat = path.stat()
        except OSError as exc:
            return FileOutcome(
                source,
                "failed",
                error_code="corrupt_file",
                error=f"{path.name}: cannot read file ({exc.strerror or exc})",
            )
        state = (known if known is not None else self.catalog.file_states()).get(source)
        try:
            wanted_acl = self.acls.resolve(path, acl, metadata, principals=principals)
        except HanragError as exc:
            return FileOutcome(source, "failed", error_code=exc.code, error=exc.message)
        if (
            state is not None
            and state[1] == stat.st_size
            and state[2] == stat.st_mtime_ns
            and date_override is None
            and not metadata
        ):
            # Fast path: same size and modification time as when it was indexed.
            document_id = state[0]
            row = self.catalog.get(document_id)
            if row is not None and sorted(row.acl or []) == sorted(wanted_acl):
                return FileOutcome(
                    source, "unchanged", document_id, row.chunk_count, seconds=time.perf_counter() - started
                )
        try:
            data = read_limited(path, max_bytes=self.max_bytes)
        except ParseError as exc:
            return self._failed(document_id_for("file", source), source, "file", path.stem, exc, started)
        return self.ingest_bytes(
            data,
            path.name,
            source=source,
            source_type="file",
            acl=wanted_acl,
            date_override=date_override,
            metadata=metadata,
            file_size=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            principals=principals,
        )

    def ingest_upload(
        self,
        data: bytes,
        filename: str,
        *,
        caller: Caller,
        acl: list[str] | None = None,
        metadata: dict[str, str] | None = None,
        date_override: datetime | None = None,
    ) -> FileOutcome:
        """Ingest uploaded bytes, kept (see :mod:`hanrag.ingest.uploads`) so that the document
        can be re-indexed. The same file name uploaded again replaces the document, only the
        same uploader's (:func:`upload_source`); an explicit ACL holds only principals the
        caller holds."""
        name = upload_file_name(filename)
        source = upload_source(caller.name, name)
        with self.uploads.incoming(data) as staged:
            return self.ingest_bytes(
                data,
                name,
                source=source,
                source_type="upload",
                acl=acl,
                metadata=metadata,
                date_override=date_override,
                file_size=len(data),
                principals=caller.principal_list,
                # Kept with the document's writes: a backup has both or neither.
                on_stored=lambda document_id: self.uploads.keep(staged, document_id, name),
            )

    # ------------------------------------------------------------------- runs

    def plan(self, request: IngestRequest, principals: list[str] | None) -> IngestPlan:
        """The files of a request, less those the caller (``principals``; None: anyone) may
        not read: those are neither ingested nor reported, a named one is told like a
        missing one, and the totals count only what they may read."""
        if request.upload is not None:
            return IngestPlan(self.uploads.batch_files(request.upload))
        settings = self.settings.ingest
        files, skipped, missing = discover(
            request.paths,
            request.include if request.include is not None else settings.include,
            # ACL files configure ingestion; they are not documents.
            [*(request.exclude or []), *settings.exclude, settings.acl_file_name],
        )
        if principals is not None:
            readable = [p for p in files if self.permitted(p, principals)]
            kept = set(readable)
            named = {p.expanduser().resolve() for p in request.paths}
            missing += [p for p in files if p.resolve() in named and p not in kept]
            files, skipped = readable, [p for p in skipped if self.permitted(p, principals)]
        return IngestPlan(files, skipped, missing)

    def run(
        self,
        request: IngestRequest,
        *,
        caller: Caller,
        should_stop: StopCheck | None = None,
        done: Collection[str] = (),
    ) -> Iterator[IngestPlan | FileOutcome]:
        """One ingestion, step by step: its plan first, then each planned file's outcome, in
        the plan's order; the index is refreshed when the last file is done.

        ``caller``: whose principals limit what is found, replaced and granted (None: all);
        ``should_stop`` is asked before each file: true ends the run there (a job's pause
        or cancel); ``done``: planned files (``str(path)``) that an earlier attempt of the
        same request finished, not done again. A bad request (an invalid ACL, or one the
        caller may not grant) fails before any file is touched.
        """
        principals = caller.principal_list
        acl = check_grant(principals, request.acl) if request.acl is not None else None
        self.acls.clear()  # ACL files are read afresh by each run
        plan = self.plan(request, principals)
        yield plan
        upload = request.upload
        known = self.catalog.file_states() if upload is None else {}
        for path in plan.files:
            if str(path) in done:
                continue
            if should_stop is not None and should_stop():
                return
            if upload is not None:
                outcome = self.ingest_upload(
                    path.read_bytes(),
                    upload.names.get(path.name, path.name),  # the uploaded name
                    caller=caller,
                    acl=acl,
                    metadata=request.metadata,
                    date_override=request.date_override,
                )
            else:
                outcome = self.ingest_file(
                    path,
                    acl=acl,
                    date_override=request.date_override,
                    metadata=request.metadata,
                    known=known,
                    principals=principals,
                )
            outcome.path = str(path)
            yield outcome
        self.index.refresh()

    def ingest(
        self,
        request: IngestRequest,
        *,
        caller: Caller,
        on_start: Callable[[int], None] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """A whole run as one report: the missing and skipped paths, then each file's outcome."""
        return IngestReport.of_run(
            self.run(request, caller=caller), on_start=on_start, on_progress=on_progress
        )

    def sync(
        self,
        request: IngestRequest,
        *,
        on_start: Callable[[int], None] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Mirror a directory (the request's one path): add new files, update changed ones,
        remove the documents of vanished ones. An operator's command: it runs unrestricted
        (a caller's hidden files would otherwise count as vanished)."""
        directory = request.paths[0] if len(request.paths) == 1 and request.upload is None else None
        if directory is None or not directory.is_dir():
            shown = directory or ", ".join(str(p) for p in request.paths) or "no path"
            raise InvalidInputError(f"{shown}: not a directory", code="not_a_directory", field="directory")
        report = self.ingest(request, caller=SYSTEM, on_start=on_start, on_progress=on_progress)
        present = {o.source for o in report.outcomes if o.status != "skipped"}
        report.outcomes.extend(self.remove_vanished(directory, present))
        self.index.refresh()
        return report

    def remove_vanished(self, directory: Path, present: Collection[str]) -> list[FileOutcome]:
        """Delete the documents of files under ``directory`` whose sources are not in
        ``present`` (the files a sync found there); one ``removed`` outcome each."""
        prefix = str(directory.resolve()) + os.sep
        removed: list[FileOutcome] = []
        for source, document_id in self.catalog.sources_under(prefix).items():
            if source not in present:
                chunks = self.delete_document(document_id)
                removed.append(FileOutcome(source, "removed", document_id, chunks))
        return removed

    def delete_document(self, document_id: str) -> int:
        """Remove from the index first, then the catalog (a crash in between is redone by sync)."""
        with self.gate.writing():
            removed = self.index.delete_document(document_id)
            self.catalog.delete(document_id)
        return removed
