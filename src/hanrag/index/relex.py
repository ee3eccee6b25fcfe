"""Lexical-only re-index (``hanrag vocab reindex``, the ``vocab_reindex`` job): after the
company dictionary changed, every chunk's BM25 morphemes are analysed again from its
stored text (title included, as at ingestion). Vectors and character bigrams (which do
not depend on the analyser) are written back as they were: nothing is embedded again.

Documents go through :meth:`Index.export_documents` and :meth:`Index.upsert_documents`, the
path of index migrations, in batches of about ``BATCH_CHUNKS`` chunks. A document whose
chunks changed since they were read (re-ingested meanwhile, so already analysed with the
new dictionary) is left as it is.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from hanrag.index.base import DocumentChunks, Index, IndexedChunk
from hanrag.korean.analyzer import morpheme_tokens_many

BATCH_CHUNKS = 1000

Progress = Callable[[int, int, int], None]  # documents done, documents in all, chunks done


def reindex_lexical(
    index: Index,
    *,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    writing: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
) -> dict[str, Any]:
    """Re-analyse every chunk's morphemes; ``writing()`` wraps each batch's write (the data
    directory's write gate). Stops before a batch when ``should_stop()`` says so."""
    started = time.perf_counter()
    total = len(index.document_chunk_counts())
    documents = chunks = changed = skipped = 0
    batch: list[DocumentChunks] = []
    batch_chunks = 0
    cancelled = False

    def write_batch() -> None:
        nonlocal documents, chunks, changed, skipped, batch_chunks
        texts = [c.chunk.embedding_text for _d, indexed, _v in batch for c in indexed]
        analysed = iter(morpheme_tokens_many(texts))
        updated: list[DocumentChunks] = []
        for document_id, indexed, vectors in batch:
            fresh = [IndexedChunk(c.chunk, next(analysed), c.bigrams) for c in indexed]
            if any(f.morphemes != c.morphemes for f, c in zip(fresh, indexed, strict=True)):
                updated.append((document_id, fresh, vectors))
        with writing():
            still = []
            for document_id, fresh, vectors in updated:
                current = [c.chunk_id for c in index.document_chunks(document_id)]
                if current == [c.chunk.chunk_id for c in fresh]:
                    still.append((document_id, fresh, vectors))
                else:
                    skipped += 1
            if still:
                index.upsert_documents(still)
        changed += len(still)
        documents += len(batch)
        chunks += batch_chunks
        batch.clear()
        batch_chunks = 0
        if on_progress:
            on_progress(documents, total, chunks)

    for document in index.export_documents():
        if batch_chunks == 0 and should_stop is not None and should_stop():
            cancelled = True
            break
        batch.append(document)
        batch_chunks += len(document[1])
        if batch_chunks >= BATCH_CHUNKS:
            write_batch()
    if batch and not cancelled:
        write_batch()
    index.refresh()
    seconds = time.perf_counter() - started
    return {
        "documents": documents,
        "documents_total": total,
        "documents_changed": changed,
        "documents_skipped": skipped,
        "chunks": chunks,
        "cancelled": cancelled,
        "seconds": round(seconds, 2),
    }
