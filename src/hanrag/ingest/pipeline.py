"""Ingestion: source bytes -> parser -> chunker -> Kiwi tokens -> embeddings -> index + catalog.

Idempotent and crash-safe: a document's chunks are replaced in one index
transaction, and the catalog records the new content hash only after that
commit, so an interrupted run is simply redone by the next one. An unchanged
file (same size and modification time, or same bytes) is neither parsed nor
embedded again; a failure on one file is recorded and the batch goes on.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from hanrag.domain import Chunk, to_epoch
from hanrag.embed.manager import CachingEmbedder
from hanrag.errors import HanragError, InvalidInputError, ParseError
from hanrag.index.base import Index, IndexedChunk
from hanrag.ingest.chunking import Chunker, chunk_id
from hanrag.ingest.parsers.registry import parse_bytes, read_limited, supported_extensions
from hanrag.korean.analyzer import char_bigrams, morpheme_tokens_many
from hanrag.settings import Settings
from hanrag.store.catalog import Catalog

log = logging.getLogger("hanrag.ingest")

OutcomeStatus = Literal["added", "updated", "unchanged", "acl_updated", "failed", "removed", "skipped"]


@dataclass(slots=True)
class FileOutcome:
    source: str
    status: OutcomeStatus
    document_id: str | None = None
    chunks: int = 0
    error_code: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "status": self.status,
            "document_id": self.document_id,
            "chunks": self.chunks,
            "error_code": self.error_code,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class IngestReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts

    @property
    def failures(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def as_dict(self) -> dict[str, object]:
        return {
            "counts": self.counts(),
            "chunks": sum(o.chunks for o in self.outcomes),
            "seconds": round(self.seconds, 3),
            "files": [o.as_dict() for o in self.outcomes],
        }


ProgressCallback = Callable[[int, int, FileOutcome], None]


def document_id_for(source_type: str, source: str) -> str:
    """Stable id from where the document came from: re-ingesting replaces it."""
    return hashlib.sha256(f"{source_type}:{source}".encode()).hexdigest()[:24]


def _matches(path: Path, root: Path, patterns: Iterable[str]) -> bool:
    relative = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    candidates = (relative, path.name, path.as_posix())
    return any(
        fnmatch.fnmatch(candidate, pattern) or fnmatch.fnmatch(candidate, pattern.removeprefix("**/"))
        for pattern in patterns
        for candidate in candidates
    )


def discover(
    paths: Iterable[Path], include: list[str], exclude: list[str]
) -> tuple[list[Path], list[Path], list[Path]]:
    """Files to ingest, files skipped (unsupported extension inside a folder), and missing paths.

    A file named explicitly is always tried (and fails clearly if unsupported);
    inside folders only files with a supported extension are taken.
    """
    extensions = set(supported_extensions())
    found: dict[Path, None] = {}
    skipped: list[Path] = []
    missing: list[Path] = []
    for raw in paths:
        path = raw.expanduser()
        if path.is_file():
            if not exclude or not _matches(path, path.parent, exclude):
                found[path.resolve()] = None
            continue
        if not path.is_dir():
            missing.append(path)
            continue
        root = path.resolve()
        for directory, subdirs, files in os.walk(root):
            subdirs.sort()
            for name in sorted(files):
                file_path = Path(directory) / name
                if exclude and _matches(file_path, root, exclude):
                    continue
                if include and not _matches(file_path, root, include):
                    continue
                if file_path.suffix.lower() not in extensions:
                    skipped.append(file_path)
                    continue
                found[file_path] = None
    return list(found), skipped, missing


class IngestPipeline:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        index: Index,
        embedder: CachingEmbedder,
        chunker: Chunker,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.index = index
        self.embedder = embedder
        self.chunker = chunker
        # Directory -> ACL from its ACL file (None: no file there); cleared per batch.
        self._acl_files: dict[Path, list[str] | None] = {}

    def acl_from_file(self, path: Path) -> list[str] | None:
        """Principals from the nearest ACL file in the file's directory or above it."""
        name = self.settings.ingest.acl_file_name
        for directory in path.resolve().parents:
            if directory in self._acl_files:
                found = self._acl_files[directory]
            else:
                candidate = directory / name
                found = None
                if candidate.is_file():
                    lines = candidate.read_text(encoding="utf-8", errors="replace").splitlines()
                    entries = [line.split("#", 1)[0].strip() for line in lines]
                    try:
                        found = validate_acl([e for e in entries if e])
                    except InvalidInputError as exc:
                        raise InvalidInputError(
                            f"{candidate}: {exc.message}", code="invalid_acl", field="acl"
                        ) from exc
                self._acl_files[directory] = found
            if found is not None:
                return found
        return None

    def acl_from_metadata(self, metadata: dict[str, str] | None) -> list[str] | None:
        mapping = self.settings.ingest.acl_from_metadata
        principals = [
            template.format(value=metadata[key])
            for key, template in mapping.items()
            if metadata and metadata.get(key)
        ]
        return validate_acl(principals) if principals else None

    def resolve_acl(
        self, path: Path | None, explicit: list[str] | None, metadata: dict[str, str] | None
    ) -> list[str]:
        """Explicit ACL, else the nearest ACL file, else the metadata mapping, else the default."""
        if explicit is not None:
            return validate_acl(explicit)
        from_file = self.acl_from_file(path) if path is not None else None
        if from_file is not None:
            return from_file
        return self.acl_from_metadata(metadata) or validate_acl(self.settings.ingest.default_acl)

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
        parsed = parse_bytes(data, filename)
        drafts = self.chunker.split(parsed)
        if not drafts:
            raise ParseError(f"{filename}: no text could be extracted", code="no_text")
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
    ) -> FileOutcome:
        """Ingest one document's bytes; ``force`` re-parses even unchanged content (re-index)."""
        started = time.perf_counter()
        acl = self.resolve_acl(None, acl, metadata)
        metadata = dict(metadata or {})
        document_id = document_id_for(source_type, source)
        digest = hashlib.sha256(data).hexdigest()
        existing = self.catalog.get(document_id)
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
            status: OutcomeStatus = "unchanged"
            if sorted(existing.acl or []) != sorted(acl):
                self.index.set_document_acl(document_id, acl)
                status = "acl_updated"
            self.catalog.upsert(document_id, size=file_size, mtime_ns=mtime_ns, acl=acl)
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
            vectors = self.embedder.embed_passages([c.chunk.embedding_text for c in chunks])
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
        except HanragError as exc:
            self.catalog.mark_failed(
                document_id,
                source=source,
                source_type=source_type,
                code=exc.code,
                message=exc.message,
                title=Path(filename).stem,
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
    ) -> FileOutcome:
        started = time.perf_counter()
        source = str(path.resolve())
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
            wanted_acl = self.resolve_acl(path, acl, metadata)
        except InvalidInputError as exc:
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
            document_id = document_id_for("file", source)
            self.catalog.mark_failed(
                document_id,
                source=source,
                source_type="file",
                code=exc.code,
                message=exc.message,
                title=path.stem,
            )
            return FileOutcome(
                source,
                "failed",
                document_id,
                error_code=exc.code,
                error=exc.message,
                seconds=time.perf_counter() - started,
            )
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
        )

    # ---------------------------------------------------------------- batches

    def ingest_paths(
        self,
        paths: list[Path],
        *,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        acl: list[str] | None = None,
        date_override: datetime | None = None,
        metadata: dict[str, str] | None = None,
        on_start: Callable[[int], None] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> IngestReport:
        started = time.perf_counter()
        acl = validate_acl(acl) if acl is not None else None  # bad input fails before any file is touched
        self._acl_files.clear()
        files, skipped, missing = discover(
            paths,
            include if include is not None else self.settings.ingest.include,
            # ACL files configure ingestion; they are not documents.
            [*(exclude or []), *self.settings.ingest.exclude, self.settings.ingest.acl_file_name],
        )
        report = IngestReport()
        for path in missing:
            report.outcomes.append(
                FileOutcome(
                    str(path), "failed", error_code="not_found", error=f"{path}: no such file or directory"
                )
            )
        report.outcomes.extend(
            FileOutcome(str(p), "skipped", error_code="unsupported_format") for p in skipped
        )
        if on_start:
            on_start(len(files))
        known = self.catalog.file_states()
        for done, path in enumerate(files, start=1):
            outcome = self.ingest_file(
                path, acl=acl, date_override=date_override, metadata=metadata, known=known
            )
            report.outcomes.append(outcome)
            if on_progress:
                on_progress(done, len(files), outcome)
        self.index.refresh()
        report.seconds = time.perf_counter() - started
        return report

    def sync(
        self,
        directory: Path,
        *,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        acl: list[str] | None = None,
        on_start: Callable[[int], None] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Mirror a directory: add new files, update changed ones, remove vanished ones."""
        if not directory.is_dir():
            raise InvalidInputError(
                f"{directory}: not a directory", code="not_a_directory", field="directory"
            )
        report = self.ingest_paths(
            [directory], include=include, exclude=exclude, acl=acl, on_start=on_start, on_progress=on_progress
        )
        present = {o.source for o in report.outcomes if o.status != "skipped"}
        prefix = str(directory.resolve()) + os.sep
        for source, document_id in self.catalog.sources_under(prefix).items():
            if source not in present:
                removed = self.delete_document(document_id)
                report.outcomes.append(FileOutcome(source, "removed", document_id, removed))
        self.index.refresh()
        return report

    def delete_document(self, document_id: str) -> int:
        """Remove from the index first, then the catalog (a crash in between is redone by sync)."""
        removed = self.index.delete_document(document_id)
        self.catalog.delete(document_id)
        return removed


def validate_acl(acl: list[str]) -> list[str]:
    """ACL entries are ``public``, ``user:NAME`` or ``group:NAME``."""
    cleaned: list[str] = []
    for entry in acl:
        entry = entry.strip()
        kind, _, name = entry.partition(":")
        kind = kind.strip().lower()
        # User and group names are stored lower-cased; principals must match them.
        entry = "public" if entry.lower() == "public" else f"{kind}:{name.strip().lower()}"
        if entry == "public" or (kind in ("user", "group") and name.strip()):
            if entry not in cleaned:
                cleaned.append(entry)
            continue
        raise InvalidInputError(
            f"invalid ACL entry {entry!r}: use 'public', 'user:NAME' or 'group:NAME'",
            code="invalid_acl",
            field="acl",
        )
    if not cleaned:
        raise InvalidInputError(
            "the ACL is empty: give at least one principal", code="invalid_acl", field="acl"
        )
    return cleaned
