"""The ``sql_sync`` job: one SQL source synced through :class:`hanrag.tables.service.SourceService`.

Queued by ``POST /api/v1/sources/{name}/sync`` (for its caller) and by the scheduler
(:mod:`hanrag.jobs.scheduler`, for the system). The payload is ``{"source", "full"}``;
the URL never enters the job record (the source is read from the catalog when the job
runs, so a job queued before a source was changed syncs its current definition).

Progress is stored after each batch (``table``, ``tables_done``, ``tables_total``, ``rows``
of that table, ``rows_total`` of that table or None, and ``counts`` over the source); a
cancel asked for the job stops the sync before its next batch (the rows already synced stay,
and the table's watermark keeps up to the last whole batch). At-least-once is safe: a row
synced twice is ``unchanged`` the second time.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from hanrag.jobs.base import JobRecord, JobStore

if TYPE_CHECKING:
    from hanrag.auth.access import Caller
    from hanrag.engine import Engine
    from hanrag.tables.sync import SyncProgress

KIND = "sql_sync"


def sync_payload(source: str, *, full: bool = False) -> dict[str, Any]:
    """A ``sql_sync`` job's payload."""
    return {"source": source, "full": bool(full)}


def progress_of(progress: SyncProgress) -> dict[str, Any]:
    return {
        "table": progress.table,
        "tables_done": progress.tables_done,
        "tables_total": progress.tables_total,
        "rows": progress.rows,
        "rows_total": progress.rows_total,
        "counts": dict(progress.counts),
    }


async def run_sql_sync(
    engine: Engine, store: JobStore, record: JobRecord, caller: Caller
) -> dict[str, Any] | None:
    """Run the job's sync in a thread; its summary, or None when it was cancelled."""
    name = str(record.payload.get("source") or "")
    full = bool(record.payload.get("full", False))
    # Set once the attempt is over for whatever reason (its time limit, a shutdown): a sync
    # thread still running then stops at its next batch instead of running on unseen.
    abandoned = threading.Event()

    def should_stop() -> bool:
        """Asked in the sync's thread before each batch."""
        if abandoned.is_set():
            return True
        current = store.get(record.id)
        return current is None or current.control == "cancel"

    def on_progress(progress: SyncProgress) -> None:
        store.update(record.id, progress=progress_of(progress))

    try:
        report = await asyncio.to_thread(
            engine.sources.sync,
            name,
            caller=caller,
            full=full,
            on_progress=on_progress,
            should_stop=should_stop,
        )
    finally:
        abandoned.set()
    if report.cancelled:
        return None
    return report.summary()
