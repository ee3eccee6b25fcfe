"""The SQL-source scheduler and the ``sql_sync`` job (P10).

* a source with a one-minute interval is claimed and synced by the scheduler of a real
  server (its ``next_sync_at`` is moved into the past instead of waiting a minute), and by
  the scheduler of a real ``hanrag worker`` process on Redis;
* processes claiming at the same instant never claim the same source (SQLite and
  PostgreSQL catalogs; and two schedulers over one catalog queue each due sync once);
* a running ``sql_sync`` job stops at its next batch when cancelled, and the next sync goes
  on from where it stopped; the scheduler outlives failing rounds and stops cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import update

from api_server import start_server
from conftest import EngineFactory
from hanrag.auth.access import SYSTEM
from hanrag.engine import Engine
from hanrag.jobs.base import FINAL_STATES, JobRecord, JobStore
from hanrag.jobs.redis_queue import store_for
from hanrag.jobs.scheduler import SyncScheduler, scheduler_for
from hanrag.jobs.sql_store import SqlJobStore
from hanrag.settings import Settings
from hanrag.store.db import make_engine as catalog_engine
from hanrag.store.models import SqlSourceRow, utcnow
from hanrag.store.sql_sources import SqlSourceStore
from hanrag.tables.options import source_from_options
from jobs_support import wait_until
from sources_support import drop_postgres, make_notes_db, scratch_postgres, wait_job

HANRAG = str(Path(sys.executable).with_name("hanrag"))
REDIS_URL = "redis://127.0.0.1:6379/0"


def add_source(engine: Engine, name: str, url: str, **options: Any) -> None:
    interval = options.pop("interval_minutes", None)
    source = source_from_options(name, url, tables=["notes"], **options)
    engine.sources.add(source, caller=SYSTEM, interval_minutes=interval)


def make_due(store: SqlSourceStore, *names: str) -> None:
    """Move the sources' next scheduled sync into the past (rather than waiting for it)."""
    with store._sessions.begin() as session:
        session.execute(
            update(SqlSourceRow)
            .where(SqlSourceRow.name.in_(names))
            .values(next_sync_at=utcnow() - timedelta(minutes=5))
        )


def sync_jobs(store: JobStore, source: str) -> list[JobRecord]:
    jobs = store.list_jobs(limit=1000)
    return sorted(
        (j for j in jobs if j.kind == "sql_sync" and j.payload.get("source") == source),
        key=lambda j: j.created_at,
    )


# ----------------------------------------------------------------- scheduling


def test_the_server_s_scheduler_syncs_a_due_source(make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(tables={"scheduler": True, "scheduler_poll_s": 0.1})
    url = make_notes_db(f"sqlite:///{tmp_path / 'notes.db'}")
    add_source(engine, "hourly", url, interval_minutes=1, acl=["group:a"])
    live = start_server(engine)
    try:
        store = live.app.state.jobs.store
        assert live.app.state.scheduler is not None and live.app.state.scheduler.running
        # Due at once (a new source's first sync is not a minute away).
        first = wait_until(
            lambda: [j for j in sync_jobs(store, "hourly") if j.state in FINAL_STATES], 60, "a sync"
        )
        [job] = first
        assert job.state == "succeeded", job.error
        assert job.principal is None and job.principals is None  # the system's
        assert job.payload == {"source": "hourly", "full": False}
        assert job.result is not None and job.result["counts"] == {"added": 2}
        row = engine.sources.store.get("hourly")
        assert row is not None and row.next_sync_at is not None and row.last_sync is not None
        ahead = row.next_sync_at.replace(tzinfo=None) - utcnow().replace(tzinfo=None)
        assert timedelta(seconds=45) < ahead <= timedelta(minutes=1)
        time.sleep(0.6)  # several rounds: not due any more, nothing else queued
        assert len(sync_jobs(store, "hourly")) == 1

        make_due(engine.sources.store, "hourly")
        wait_until(lambda: len(sync_jobs(store, "hourly")) == 2, 30, "the next scheduled sync")
        second = wait_until(
            lambda: [j for j in sync_jobs(store, "hourly")[1:] if j.state in FINAL_STATES], 60, "its end"
        )[0]
        assert second.state == "succeeded" and "added" not in second.result["counts"]
    finally:
        live.stop()
    assert not live.thread.is_alive()  # the scheduler stopped with the server


def test_a_source_without_interval_or_a_server_without_scheduler_is_never_scheduled(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    url = make_notes_db(f"sqlite:///{tmp_path / 'notes.db'}")
    off = make_engine(tables={"scheduler": False, "scheduler_poll_s": 0.1})
    add_source(off, "due", url, interval_minutes=1)
    add_source(off, "manual", url)
    live = start_server(off)
    try:
        assert live.app.state.scheduler is None
        time.sleep(0.4)
        assert sync_jobs(live.app.state.jobs.store, "due") == []
    finally:
        live.stop()
    assert off.sources.claim_due() == ["due"]  # it was due all along: nobody claimed it
    assert off.sources.claim_due() == []


class RecordingQueue:
    """A queue that only records what is enqueued (for schedulers that must not run jobs)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.enqueued: list[JobRecord] = []

    async def enqueue(self, record: JobRecord) -> JobRecord:
        self.enqueued.append(record)
        return record


def _race(stores: list[SqlSourceStore], claimers: int) -> list[list[str]]:
    barrier = threading.Barrier(claimers)
    results: list[list[str]] = [[] for _ in range(claimers)]

    def claim(i: int) -> None:
        barrier.wait()
        results[i] = stores[i % len(stores)].claim_due()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_claimers_never_claim_the_same_source(backend: str, tmp_path: Path) -> None:
    scratch = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        scratch = scratch_postgres()
        if scratch is None:
            pytest.skip("no PostgreSQL server reachable")
        url = scratch[1]
    # Two engines (connection pools) on one catalog, like two server processes.
    engines = [catalog_engine(url), catalog_engine(url)]
    try:
        stores = [SqlSourceStore(e) for e in engines]
        names = [f"src{i:02d}" for i in range(12)]
        for name in names:
            stores[0].put(name, url="sqlite:///x.db", config={}, owner=None, sync_interval_minutes=5)
        for _ in range(4):
            make_due(stores[0], *names)
            results = _race(stores, claimers=6)
            claimed = [name for result in results for name in result]
            assert sorted(claimed) == names, results  # every due source once, by one claimer
            assert _race(stores, claimers=3) == [[], [], []]  # and none is due any more
    finally:
        for engine in engines:
            engine.dispose()
        if scratch is not None:
            drop_postgres(scratch[0])


def test_two_schedulers_on_one_catalog_queue_each_due_sync_once(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    first = make_engine(tables={"scheduler": False})
    second = make_engine(data_dir=first.settings.data_dir, tables={"scheduler": False})
    for i in range(8):
        first.sources.store.put(f"s{i}", url="sqlite:///x.db", config={}, owner=None, sync_interval_minutes=5)
    queues = [RecordingQueue(SqlJobStore(e.catalog.engine)) for e in (first, second)]
    schedulers = [SyncScheduler(e, q, poll_s=60) for e, q in zip((first, second), queues, strict=True)]

    async def both() -> None:
        for _ in range(3):
            make_due(first.sources.store, *(f"s{i}" for i in range(8)))
            await asyncio.gather(*(s.tick() for s in schedulers))

    asyncio.run(both())
    queued = [r.payload["source"] for q in queues for r in q.enqueued]
    assert sorted(queued) == sorted(f"s{i}" for i in range(8) for _ in range(3))
    assert all(r.kind == "sql_sync" and r.principal is None for q in queues for r in q.enqueued)


def test_the_scheduler_outlives_failing_rounds_and_stops_cleanly(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine()
    calls: list[float] = []

    def claim_due() -> list[str]:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise RuntimeError("catalog down")
        return []

    monkeypatch.setattr(engine.sources, "claim_due", claim_due)
    caplog.set_level(logging.INFO, logger="hanrag.jobs.scheduler")

    async def run() -> None:
        queue = RecordingQueue(SqlJobStore(engine.catalog.engine))
        scheduler = scheduler_for(engine, queue)
        assert scheduler is not None  # tables.scheduler is on by default
        scheduler.poll_s = 0.05
        await asyncio.sleep(0.5)
        assert scheduler.running
        await scheduler.stop()
        assert not scheduler.running
        count = len(calls)
        await asyncio.sleep(0.2)
        assert len(calls) == count  # no round after the stop

    asyncio.run(run())
    assert len(calls) >= 4
    failures = [r for r in caplog.records if r.getMessage() == "SQL source scheduling failed"]
    assert len(failures) == 2 and failures[0].levelno == logging.ERROR
    assert not [r for r in caplog.records if r.exc_info]  # one line each, no traceback


# ------------------------------------------------------------------- cancel


def test_cancelling_a_running_sync_job_stops_it_at_the_next_batch(
    make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(tables={"scheduler": False})
    url = make_notes_db(f"sqlite:///{tmp_path / 'notes.db'}", rows=6)
    add_source(engine, "slow", url, batch_size=1)
    pipeline = engine.pipeline
    ingest_bytes = pipeline.ingest_bytes

    def slow_ingest(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)  # a slow embedding backend: the sync lasts long enough to be cancelled
        return ingest_bytes(*args, **kwargs)

    monkeypatch.setattr(pipeline, "ingest_bytes", slow_ingest)
    live = start_server(engine)
    try:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            job_id = client.post("/api/v1/sources/slow/sync", json={}).json()["data"]["job_id"]

            def started() -> bool:
                data = client.get(f"/api/v1/jobs/{job_id}").json()["data"]
                return bool(data["state"] == "running" and data["progress"].get("rows", 0) >= 1)

            wait_until(started, 60, "the first batch")
            paused = client.post(f"/api/v1/jobs/{job_id}/pause")
            assert paused.status_code == 400 and paused.json()["data"]["code"] == "not_pausable"
            assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
            job = wait_job(client, job_id)
            assert job["state"] == "cancelled", job
            assert job["result"] is None and job["progress"]["rows_total"] == 6
            done = job["progress"]["rows"]
            assert 1 <= done < 6
            # The rows synced stay, and the next sync goes on from the last whole batch.
            time.sleep(0.5)
            added = engine.catalog.documents_with_metadata({"sql_source": "slow"})
            assert done <= len(added) <= done + 1
            last = engine.sources.store.get("slow")
            assert last is not None and last.last_sync is not None and last.last_sync["cancelled"] is True
            rest = wait_job(client, client.post("/api/v1/sources/slow/sync").json()["data"]["job_id"])
            assert rest["state"] == "succeeded", rest
            assert rest["result"]["counts"].get("added", 0) == 6 - len(added)
            assert len(engine.catalog.documents_with_metadata({"sql_source": "slow"})) == 6
    finally:
        live.stop()


# ------------------------------------------------------------ hanrag worker


def test_a_hanrag_worker_s_scheduler_queues_and_runs_the_sync(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    connection = redis.Redis.from_url(REDIS_URL)
    try:
        connection.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    queue_name = f"hanrag:test:{uuid.uuid4().hex}"
    data_dir = tmp_path / "data"
    settings = Settings(
        data_dir=data_dir, redis_url=REDIS_URL, jobs={"queue": "redis", "redis_queue_name": queue_name}
    )
    engine = make_engine(data_dir=data_dir, jobs=settings.jobs.model_dump(), redis_url=REDIS_URL)
    add_source(engine, "nightly", make_notes_db(f"sqlite:///{tmp_path / 'notes.db'}"), interval_minutes=1)
    env = {
        **os.environ,
        "HANRAG_DATA_DIR": str(data_dir),
        "HANRAG_REDIS_URL": REDIS_URL,
        "HANRAG_JOBS__QUEUE": "redis",
        "HANRAG_JOBS__REDIS_QUEUE_NAME": queue_name,
        "HANRAG_TABLES__SCHEDULER_POLL_S": "0.2",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen([HANRAG, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)
    store = store_for(settings)
    try:

        def ended() -> list[JobRecord]:
            assert worker.poll() is None, log.read_text(errors="replace")
            return [j for j in sync_jobs(store, "nightly") if j.state in FINAL_STATES]

        [job] = wait_until(ended, 120, "the worker's scheduled sync", interval=0.2)
        assert job.state == "succeeded", (job.error, log.read_text(errors="replace"))
        assert job.result is not None and job.result["counts"] == {"added": 2}
        assert len(engine.catalog.documents_with_metadata({"sql_source": "nightly"})) == 2
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
        keys = list(connection.scan_iter(match=f"{queue_name}*", count=1000))
        if keys:
            connection.delete(*keys)
        connection.close()
    assert worker.returncode == 0, log.read_text(errors="replace")
