"""How the local index keeps chunks in SQLite: the schema, and chunk rows back to chunks.

SQLite (``index.db``) is the local index's source of truth; see :mod:`hanrag.index.local`.
"""

from __future__ import annotations

import json
from typing import Any

from hanrag.domain import Chunk

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    slot INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk_id TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    text TEXT NOT NULL,
    title TEXT NOT NULL,
    source TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    date INTEGER NOT NULL,
    acl TEXT NOT NULL,
    page INTEGER,
    sheet TEXT,
    kind TEXT NOT NULL,
    metadata TEXT NOT NULL,
    morphemes TEXT NOT NULL,
    bigrams TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document_id);
-- Deletions and ACL changes, so other processes can follow incrementally.
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    slot INTEGER NOT NULL,
    kind TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

CHUNK_COLUMNS = (
    "slot, chunk_id, document_id, position, text, title, source, content_hash, date, acl, page, sheet, kind, "
    "metadata"
)


def row_to_chunk(row: tuple[Any, ...]) -> Chunk:
    """A chunk from a ``CHUNK_COLUMNS`` row."""
    (
        _slot,
        chunk_id,
        document_id,
        position,
        text,
        title,
        source,
        content_hash,
        date,
        acl,
        page,
        sheet,
        kind,
        metadata,
    ) = row
    return Chunk(
        chunk_id=chunk_id,
        document_id=document_id,
        position=int(position),
        text=text,
        title=title,
        source=source,
        content_hash=content_hash,
        date=int(date),
        acl=json.loads(acl),
        page=page,
        sheet=sheet,
        kind=kind,
        metadata=json.loads(metadata),
    )
