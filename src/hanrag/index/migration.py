"""Copying an index into another backend (``hanrag index migrate``, :meth:`Engine.migrate_index`):
the stored vectors and tokens go over as they are, nothing is parsed or embedded again."""

from __future__ import annotations

import time
from typing import Any

from hanrag.index.base import DocumentChunks, Index

# Chunks per write when an index is copied to another backend.
MIGRATION_BATCH_CHUNKS = 1000


def copy_index(source: Index, destination: Index, on_progress: Any = None) -> dict[str, Any]:
    """Copy every document of ``source`` into ``destination`` (closed at the end);
    ``on_progress(documents done, documents in all, chunks done)`` after each batch."""
    started = time.perf_counter()
    documents = chunks = 0
    total = len(source.document_chunk_counts())
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
        for document in source.export_documents():
            batch.append(document)
            batch_chunks += len(document[1])
            if batch_chunks >= MIGRATION_BATCH_CHUNKS:
                write_batch()
        if batch:
            write_batch()
        destination.refresh()
    finally:
        destination.close()
    seconds = time.perf_counter() - started
    return {
        "documents": documents,
        "chunks": chunks,
        "seconds": round(seconds, 2),
        "chunks_per_second": round(chunks / seconds, 1) if seconds > 0 else None,
    }
