"""Document catalog repository: what was ingested from where, in which state."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from hanrag.store.db import create_schema, session_factory
from hanrag.store.models import DocumentRow, utcnow


def matches(row: DocumentRow, q: str) -> bool:
    """Whether a document's title or file name (the last part of its source) holds ``q``,
    in any case (an empty ``q``: every document)."""
    if not q:
        return True

    def folded(text: str) -> str:  # NFKC too: file names from macOS come decomposed (NFD)
        return unicodedata.normalize("NFKC", text).casefold()

    wanted = folded(q)
    name = row.source.replace("\\", "/").rpartition("/")[2].removeprefix("upload:")
    return wanted in folded(row.title or "") or wanted in folded(name)


class Catalog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_schema(engine)
        self._sessions = session_factory(engine)

    def get(self, document_id: str) -> DocumentRow | None:
        with self._sessions() as session:
            return session.get(DocumentRow, document_id)

    def find(self, key: str, readable: Callable[[DocumentRow], bool] | None = None) -> DocumentRow | None:
        """By document id, exact source path, or a file name that only one source ends with,
        among the documents ``readable`` accepts (the caller's access rule; None: all).

        The same queries run whatever exists, and documents the caller may not read are
        dropped before the choice: a hidden document neither answers faster than a
        missing one nor changes which visible document a file name resolves to.
        """
        with self._sessions() as session:
            by_id = session.get(DocumentRow, key)
            by_source = session.scalars(select(DocumentRow).where(DocumentRow.source == key).limit(2)).all()
            by_name: list[DocumentRow] = []
            if key and "/" not in key:
                by_name = list(
                    session.scalars(
                        select(DocumentRow).where(DocumentRow.source.endswith("/" + key, autoescape=True))
                    )
                )
        visible = readable or (lambda _row: True)
        by_id = by_id if by_id is not None and visible(by_id) else None
        visible_source = [row for row in by_source if visible(row)]
        visible_name = [row for row in by_name if visible(row)]
        if by_id is not None:
            return by_id
        if visible_source:
            return visible_source[0]
        return visible_name[0] if len(visible_name) == 1 else None

    def list_documents(
        self,
        *,
        offset: int = 0,
        limit: int = 100,
        status: str | None = None,
        ids: Iterable[str] | None = None,
    ) -> list[DocumentRow]:
        with self._sessions() as session:
            query = select(DocumentRow).order_by(DocumentRow.source)
            if status:
                query = query.where(DocumentRow.status == status)
            if ids is not None:
                query = query.where(DocumentRow.id.in_(list(ids)))
            return list(session.scalars(query.offset(offset).limit(limit)))

    def count(self, status: str | None = None) -> int:
        with self._sessions() as session:
            query = select(func.count()).select_from(DocumentRow)
            if status:
                query = query.where(DocumentRow.status == status)
            return int(session.scalar(query) or 0)

    def status_counts(self) -> dict[str, int]:
        with self._sessions() as session:
            rows = session.execute(select(DocumentRow.status, func.count()).group_by(DocumentRow.status))
            return {status: int(n) for status, n in rows}

    def file_states(
        self, source_type: str = "file"
    ) -> dict[str, tuple[str, int | None, int | None, str | None]]:
        """source -> (id, size, mtime_ns, content_hash) for the fast unchanged check."""
        with self._sessions() as session:
            rows = session.execute(
                select(
                    DocumentRow.source,
                    DocumentRow.id,
                    DocumentRow.size,
                    DocumentRow.mtime_ns,
                    DocumentRow.content_hash,
                ).where(DocumentRow.source_type == source_type, DocumentRow.status == "indexed")
            )
            return {source: (doc_id, size, mtime, digest) for source, doc_id, size, mtime, digest in rows}

    def sources_under(self, prefix: str) -> dict[str, str]:
        """source -> id for every file document whose path starts with ``prefix``."""
        with self._sessions() as session:
            rows = session.execute(
                select(DocumentRow.source, DocumentRow.id).where(
                    DocumentRow.source_type == "file", DocumentRow.source.startswith(prefix, autoescape=True)
                )
            )
            return {source: doc_id for source, doc_id in rows}

    def documents_with_metadata(self, metadata: dict[str, str]) -> list[str]:
        """Ids of indexed documents whose metadata has every given key = value.

        Evaluated in Python over the (small) documents table rather than with
        database-specific JSON operators, so SQLite and PostgreSQL agree.
        """
        with self._sessions() as session:
            rows = session.execute(
                select(DocumentRow.id, DocumentRow.meta).where(DocumentRow.status == "indexed")
            )
            return [
                doc_id
                for doc_id, meta in rows
                if all(str((meta or {}).get(k)) == v for k, v in metadata.items())
            ]

    def metadata_keys(self, principals: list[str] | None = None) -> set[str]:
        """Metadata keys of indexed documents (with ``principals``: of those they may read)."""
        allowed = None if principals is None else set(principals)
        with self._sessions() as session:
            keys: set[str] = {"format"}
            rows = session.execute(
                select(DocumentRow.meta, DocumentRow.acl).where(DocumentRow.status == "indexed")
            )
            for meta, acl in rows:
                if allowed is None or allowed.intersection(acl or ()):
                    keys.update((meta or {}).keys())
            return keys

    def upsert(self, document_id: str, **fields: Any) -> DocumentRow:
        with self._sessions.begin() as session:
            row = session.get(DocumentRow, document_id)
            if row is None:
                row = DocumentRow(id=document_id, **fields)
                session.add(row)
            else:
                for key, value in fields.items():
                    setattr(row, key, value)
                row.updated_at = utcnow()
        return row

    def mark_indexed(
        self,
        document_id: str,
        *,
        content_hash: str,
        chunk_count: int,
        indexed_at: datetime | None = None,
        **fields: Any,
    ) -> DocumentRow:
        return self.upsert(
            document_id,
            content_hash=content_hash,
            chunk_count=chunk_count,
            status="indexed",
            last_error=None,
            error_code=None,
            indexed_at=indexed_at or utcnow(),
            **fields,
        )

    def mark_failed(
        self, document_id: str, *, source: str, code: str, message: str, **fields: Any
    ) -> DocumentRow:
        existing = self.get(document_id)
        if existing is not None and existing.status == "indexed":
            # The previous version stays searchable; only remember what went wrong.
            return self.upsert(document_id, last_error=message, error_code=code)
        return self.upsert(
            document_id,
            source=source,
            status="failed",
            last_error=message,
            error_code=code,
            chunk_count=0,
            **fields,
        )

    def delete(self, document_id: str) -> bool:
        with self._sessions.begin() as session:
            row = session.get(DocumentRow, document_id)
            if row is None:
                return False
            session.delete(row)
            return True
