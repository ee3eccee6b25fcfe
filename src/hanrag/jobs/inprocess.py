"""In-process job queue: asyncio workers inside the server, state in the catalog database.

Jobs survive a restart: unfinished ones (queued, running, paused) are put back
on the queue when the worker starts. On shutdown running jobs get a grace
period to finish; the rest are cancelled and left ``queued`` for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from hanrag.jobs.base import FINAL_STATES, JobRecord
from hanrag.jobs.runner import TransientJobError, run_job
from hanrag.jobs.sql_store import SqlJobStore

if TYPE_CHECKING:
    from hanrag.engine import Engine

log = logging.getLogger("hanrag.jobs")


class InProcessQueue:
    def __init__(self, engine: Engine, *, grace_seconds: float = 10.0) -> None:
        self.engine = engine
        self.settings = engine.settings.jobs
        self.store = SqlJobStore(engine.catalog.engine)
        self._queue: asyncio.Queue[str] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._running: dict[str, asyncio.Task[JobRecord | None]] = {}
        self._timers: set[asyncio.Task[None]] = set()
        self._grace = grace_seconds
        self._known: set[str] = set()
        self._poller: asyncio.Task[None] | None = None

    async def ping(self) -> bool:
        return True

    async def start(self) -> None:
        if self._queue is not None:
            return
        self._queue = asyncio.Queue()
        for record in await asyncio.to_thread(self.store.unfinished):
            if record.state == "paused":
                continue  # holds no worker until it is resumed
            if record.state == "running":
                await asyncio.to_thread(self.store.update, record.id, state="queued")
            self._put(record.id)
        self._workers = [asyncio.create_task(self._work(i)) for i in range(self.settings.concurrency)]
        self._poller = asyncio.create_task(self._poll())

    def _put(self, job_id: str) -> None:
        assert self._queue is not None
        self._known.add(job_id)
        self._queue.put_nowait(job_id)

    async def _poll(self, interval: float = 2.0) -> None:
        """Pick up jobs that another process (``hanrag ingest --background``) put in the table."""
        while True:
            await asyncio.sleep(interval)
            try:
                queued = await asyncio.to_thread(self.store.list_jobs, limit=200, state="queued")
            except Exception:
                log.exception("job poll failed")
                continue
            for record in queued:
                if record.id not in self._known:
                    self._put(record.id)

    async def enqueue(self, record: JobRecord) -> JobRecord:
        record.max_attempts = self.settings.max_attempts
        await asyncio.to_thread(self.store.create, record)
        if self._queue is None:
            await self.start()  # queues every unfinished job of the table, this one included
        if record.id not in self._known:
            self._put(record.id)
        return record

    async def requeue(self, job_id: str) -> None:
        # Not started (a CLI process): the serving process's poller picks the job up.
        if self._queue is not None and job_id not in self._running:
            self._put(job_id)

    def _retry_later(self, job_id: str, attempt: int) -> None:
        delay = self.settings.retry_backoff_s * 2 ** (attempt - 1)

        async def later() -> None:
            await asyncio.sleep(delay)
            if self._queue is not None:
                self._put(job_id)

        timer = asyncio.create_task(later())
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def _work(self, number: int) -> None:
        assert self._queue is not None
        while True:
            job_id = await self._queue.get()
            record = await asyncio.to_thread(self.store.get, job_id)
            if record is None:
                continue
            attempt = record.attempts + 1
            task = asyncio.create_task(
                run_job(
                    self.engine,
                    self.store,
                    job_id,
                    attempt=attempt,
                    max_attempts=record.max_attempts,
                    timeout_s=self.settings.job_timeout_s,
                )
            )
            self._running[job_id] = task
            ran = False
            after: JobRecord | None = None
            try:
                # Shielded: stop() decides what happens to a running job (grace period, requeue).
                after = await asyncio.shield(task)
                ran = True
            except TransientJobError:
                self._retry_later(job_id, attempt)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job worker error", extra={"job_id": job_id})
            finally:
                self._running.pop(job_id, None)
            if ran and (after is None or after.state == "paused" or after.state in FINAL_STATES):
                # Forget it: a paused job left its slot, and a resume (here, or through the
                # table from another process) queues it again; an ended one is done with.
                self._known.discard(job_id)

    async def stop(self) -> None:
        """Let running jobs finish within the grace period; requeue the rest for the next start."""
        if self._queue is None:
            return
        running = list(self._running.items())
        # Workers first, so that none starts another job during the grace period (the
        # running jobs are shielded from their worker's cancellation).
        tasks = [*self._workers, *self._timers, *([self._poller] if self._poller else [])]
        for worker in tasks:
            worker.cancel()
        for worker in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
        if running:
            _done, pending = await asyncio.wait([t for _, t in running], timeout=self._grace)
            for job_id, task in running:
                if task in pending:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    await asyncio.to_thread(self.store.update, job_id, state="queued")
        self._running.clear()
        self._workers.clear()
        self._poller = None
        self._queue = None
