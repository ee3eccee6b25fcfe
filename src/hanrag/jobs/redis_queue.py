"""Redis job queue through arq: any number of ``hanrag worker`` processes on any hosts.

arq keeps a job in its queue until a worker finishes it and marks it in progress
only for its time limit (:func:`arq_timeout_s`, plus 10 s), so a worker killed
mid-job leaves the job to be picked up again by another worker: at-least-once. Job state lives in
Redis (:class:`RedisJobStore`) so the API and every worker see the same record.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from hanrag.jobs.base import JobRecord
from hanrag.jobs.redis_store import QueueUnavailableError, RedisJobStore
from hanrag.jobs.runner import TransientJobError, run_job, worker_lost
from hanrag.settings import Settings

if TYPE_CHECKING:
    from hanrag.engine import Engine

JOB_FUNCTION = "hanrag_job"
log = logging.getLogger("hanrag.jobs")


def _redis_settings(url: str) -> Any:
    from arq.connections import RedisSettings

    return RedisSettings.from_dsn(url)


def store_for(settings: Settings) -> RedisJobStore:
    return RedisJobStore(
        settings.redis_url,
        prefix=settings.jobs.redis_queue_name,
        ttl_seconds=settings.jobs.result_ttl_days * 86400,
    )


def arq_timeout_s(settings: Settings) -> float:
    """arq's own limit for one try: the job's timeout (enforced by :func:`run_job`, which
    records it) plus the longest callback delivery, so that arq never cuts either short.
    A killed worker's job is picked up again this long (+10 s) after it started."""
    jobs = settings.jobs
    attempts = jobs.callback_attempts
    delivery = attempts * jobs.callback_timeout_s + jobs.callback_backoff_s * (2 ** (attempts - 1) - 1)
    return jobs.job_timeout_s + delivery + 2.0


class RedisQueue:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.settings = engine.settings
        if not self.settings.redis_url:
            from hanrag.errors import ConfigError

            raise ConfigError("jobs.queue is redis but redis_url is not set", code="invalid_settings")
        self.store = store_for(self.settings)
        self._pool: Any = None

    async def _arq(self) -> Any:
        if self._pool is None:
            from arq import create_pool

            try:
                self._pool = await create_pool(
                    _redis_settings(self.settings.redis_url),
                    default_queue_name=self.settings.jobs.redis_queue_name,
                )
            except Exception as exc:
                raise QueueUnavailableError(f"Redis is unavailable: {type(exc).__name__}") from exc
        return self._pool

    async def ping(self) -> bool:
        return await asyncio.to_thread(self.store.ping)

    async def start(self) -> None:
        return None

    async def enqueue(self, record: JobRecord) -> JobRecord:
        record.max_attempts = self.settings.jobs.max_attempts
        if not await self.ping():
            raise QueueUnavailableError("Redis is unavailable; the job was not accepted")
        await asyncio.to_thread(self.store.create, record)
        pool = await self._arq()
        try:
            await pool.enqueue_job(JOB_FUNCTION, record.id, _job_id=record.id)
        except Exception as exc:
            raise QueueUnavailableError(f"Redis is unavailable: {type(exc).__name__}") from exc
        return record

    async def requeue(self, job_id: str) -> None:
        pool = await self._arq()
        try:
            # A new arq id: arq keeps the finished try of the original id for a while and
            # would refuse that id again.
            await pool.enqueue_job(JOB_FUNCTION, job_id, _job_id=f"{job_id}:{uuid.uuid4().hex[:12]}")
        except Exception as exc:
            raise QueueUnavailableError(f"Redis is unavailable: {type(exc).__name__}") from exc

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None


async def hanrag_job(ctx: dict[str, Any], job_id: str) -> None:
    """The arq task: one attempt; a transient failure is retried with exponential backoff.

    arq allows one try more than ``jobs.max_attempts``: that try only happens when a worker
    died during the last attempt, and it ends the job ``dead`` (with its callback) instead
    of leaving it ``running`` for ever.
    """
    from arq.worker import Retry

    engine: Engine = ctx["engine"]
    store: RedisJobStore = ctx["store"]
    attempt = int(ctx.get("job_try", 1))
    max_attempts = engine.settings.jobs.max_attempts
    if attempt > max_attempts:
        await worker_lost(engine, store, job_id, attempts=max_attempts)
        return
    try:
        await run_job(
            engine,
            store,
            job_id,
            attempt=attempt,
            max_attempts=max_attempts,
            timeout_s=engine.settings.jobs.job_timeout_s,
        )
    except TransientJobError as exc:
        raise Retry(defer=engine.settings.jobs.retry_backoff_s * 2 ** (attempt - 1)) from exc


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    """Block running an arq worker (``hanrag worker``) until SIGTERM/SIGINT.

    On a signal arq stops taking jobs and waits for the running ones (up to the
    job timeout) before exiting; a job it cannot finish stays queued in Redis.
    """
    from arq.worker import Worker, func

    from hanrag.engine import Engine
    from hanrag.jobs.scheduler import scheduler_for

    async def startup(ctx: dict[str, Any]) -> None:
        engine = Engine(settings)
        ctx["engine"] = engine
        ctx["store"] = store_for(settings)
        # Before taking jobs, so that the first job's time limit does not pay for loading.
        await asyncio.to_thread(engine.warm_up)
        # The due SQL sources' syncs are queued from every worker too (tables.scheduler):
        # each due sync is claimed by one process only (see hanrag.jobs.scheduler).
        queue = RedisQueue(engine)
        ctx["scheduler_queue"] = queue
        ctx["scheduler"] = scheduler_for(engine, queue)

    async def shutdown(ctx: dict[str, Any]) -> None:
        scheduler = ctx.get("scheduler")
        if scheduler is not None:
            await scheduler.stop()
        queue = ctx.get("scheduler_queue")
        if queue is not None:
            await queue.stop()
        engine = ctx.get("engine")
        if engine is not None:
            engine.close()

    timeout = arq_timeout_s(settings)
    tries = settings.jobs.max_attempts + 1
    worker = Worker(
        functions=[func(hanrag_job, name=JOB_FUNCTION, max_tries=tries, timeout=timeout)],
        redis_settings=_redis_settings(settings.redis_url),
        queue_name=settings.jobs.redis_queue_name,
        on_startup=startup,
        on_shutdown=shutdown,
        max_jobs=settings.jobs.concurrency,
        job_timeout=timeout,
        max_tries=tries,
        keep_result=3600,
        burst=burst,
        handle_signals=True,
        job_completion_wait=int(timeout),
        poll_delay=0.2,
    )
    worker.run()
