"""The job scheduler: queues a ``sql_sync`` job for every SQL source whose sync is due, and
an ``ingest`` job with sync semantics for every folder of ``sources.folders`` whose interval
has passed (:mod:`hanrag.jobs.folder_sync`, claimed the same way).

Runs as one asyncio task beside the job queue of every serving process (``hanrag serve``,
each of its ``--workers``, and ``hanrag worker``) when ``tables.scheduler`` is true. Every
``tables.scheduler_poll_s`` seconds it asks the catalog, in a thread, for the sources due
now (:meth:`hanrag.tables.service.SourceService.claim_due`) and queues an incremental
``sql_sync`` job for each, owned by the system (``principal`` None: only administrators see
it). An error of one round (catalog or queue down) is logged and the next round comes as
usual; :meth:`SyncScheduler.stop` ends the task cleanly on shutdown.

**Several processes, one sync.** Any number of processes may run this loop against one
catalog: :meth:`claim_due` moves a due source's ``next_sync_at`` one interval on in a
*conditional* update (``WHERE next_sync_at = <the value just read>``), which the database
applies atomically, so of the processes that read the same due source only the first
update changes a row and only that process gets the source back; the others see zero rows
changed and queue nothing. A claim is spent even if queuing its job then fails (the source
is synced at its next interval), and a source whose previous sync job is still queued or
running is not queued a second time (that check is best-effort; a duplicate would only
find its rows ``unchanged``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from hanrag.errors import HanragError
from hanrag.jobs.base import JobQueue, JobRecord
from hanrag.jobs.folder_sync import queue_due_folders
from hanrag.jobs.sql_sync import KIND, sync_payload

if TYPE_CHECKING:
    from hanrag.engine import Engine

log = logging.getLogger("hanrag.jobs.scheduler")


class SyncScheduler:
    def __init__(self, engine: Engine, queue: JobQueue, *, poll_s: float | None = None) -> None:
        self.engine = engine
        self.queue = queue
        self.poll_s = poll_s if poll_s is not None else engine.settings.tables.scheduler_poll_s
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="hanrag-sql-scheduler")
            log.info("SQL source scheduler started", extra={"poll_s": self.poll_s})

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop outlives any one round
                log.error(
                    "SQL source scheduling failed",
                    extra={"error_type": type(exc).__name__, "error": _shown(exc)},
                )
            await asyncio.sleep(self.poll_s)

    async def tick(self) -> list[JobRecord]:
        """One round: claim the due SQL sources and folders and queue their sync jobs; the
        jobs queued. A failure of the folders' part is logged; the SQL sources' part goes on."""
        try:
            folders = await queue_due_folders(self.engine, self.queue)
        except Exception as exc:
            log.error(
                "folder sync scheduling failed",
                extra={"error_type": type(exc).__name__, "error": _shown(exc)},
            )
            folders = []
        return [*folders, *await self._tick_sql()]

    async def _tick_sql(self) -> list[JobRecord]:
        # engine.sources is built (catalog I/O) in the thread too, on the first round.
        claimed = await asyncio.to_thread(lambda: self.engine.sources.claim_due())
        if not claimed:
            return []
        try:
            pending = await asyncio.to_thread(self._pending_sources)
        except Exception as exc:  # the queue's store is down: enqueue will say so per source
            log.warning("pending SQL syncs unknown", extra={"error_type": type(exc).__name__})
            pending = set()
        queued: list[JobRecord] = []
        for name in claimed:
            if name in pending:
                log.info("scheduled SQL sync skipped: one is pending", extra={"sql_source": name})
                continue
            try:
                record = await self.queue.enqueue(JobRecord(kind=KIND, payload=sync_payload(name)))
            except Exception as exc:
                log.warning(
                    "scheduled SQL sync not queued",
                    extra={"sql_source": name, "error_type": type(exc).__name__, "error": _shown(exc)},
                )
                continue
            log.info("scheduled SQL sync queued", extra={"sql_source": name, "job_id": record.id})
            queued.append(record)
        return queued

    def _pending_sources(self) -> set[str]:
        """The sources with a sync job queued or running now (best-effort: recent jobs)."""
        pending: set[str] = set()
        for state in ("queued", "running"):
            for record in self.queue.store.list_jobs(limit=200, state=state):
                if record.kind == KIND:
                    pending.add(str(record.payload.get("source")))
        return pending


def _shown(exc: Exception) -> str:
    """What a log line says of an error: a stable error's message (never a source URL: the
    scheduler reads names and times only), else just its type."""
    return exc.message if isinstance(exc, HanragError) else type(exc).__name__


def scheduler_for(engine: Engine, queue: JobQueue) -> SyncScheduler | None:
    """A started scheduler when ``tables.scheduler`` is on (None otherwise)."""
    if not engine.settings.tables.scheduler:
        return None
    scheduler = SyncScheduler(engine, queue)
    scheduler.start()
    return scheduler
