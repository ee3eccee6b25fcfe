"""The ``vocab_reindex`` job: a lexical-only re-index after the company dictionary changed
(:mod:`hanrag.index.relex`: morphemes analysed again, vectors kept, nothing embedded).

Queued by ``POST``/``DELETE /api/v1/admin/vocab/words`` and ``POST /api/v1/admin/vocab/reindex``;
``hanrag vocab reindex`` runs the same work in the foreground. Progress after each batch:
``documents``, ``documents_total``, ``chunks``. A cancel stops it before its next batch
(documents already done keep their new morphemes; running it again finishes the rest).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hanrag.index.relex import reindex_lexical
from hanrag.jobs.base import JobRecord, JobStore
from hanrag.korean.vocabulary import current
from hanrag.store.writegate import WriteGate

if TYPE_CHECKING:
    from hanrag.engine import Engine

KIND = "vocab_reindex"


def reindex(
    engine: Engine,
    *,
    on_progress: Callable[[int, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Re-analyse every chunk of ``engine``'s index with the current dictionary."""
    vocabulary = current()  # reads the dictionary's latest version before the first batch
    report = reindex_lexical(
        engine.index,
        on_progress=on_progress,
        should_stop=should_stop,
        writing=WriteGate(engine.settings.data_dir).writing,
    )
    return {**report, "vocabulary_version": vocabulary.version}


async def run_vocab_reindex(engine: Engine, store: JobStore, record: JobRecord) -> dict[str, Any] | None:
    """Run the re-index in a thread; its summary, or None when it was cancelled."""
    abandoned = threading.Event()

    def should_stop() -> bool:
        if abandoned.is_set():
            return True
        now = store.get(record.id)
        return now is None or now.control == "cancel"

    def on_progress(documents: int, total: int, chunks: int) -> None:
        store.update(record.id, progress={"documents": documents, "documents_total": total, "chunks": chunks})

    try:
        report = await asyncio.to_thread(reindex, engine, on_progress=on_progress, should_stop=should_stop)
    finally:
        abandoned.set()
    return None if report["cancelled"] else report
