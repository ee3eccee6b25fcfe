"""Scheduled folder sync (P14): ``sources.folders`` mirrored by the job scheduler.

* a server's scheduler queues a folder's sync (an ``ingest`` job with sync semantics) at
  once, then once per interval: new files added, changed ones updated, vanished ones'
  documents removed; the last run's report is in ``hanrag source list`` and the API;
* processes claiming at the same instant never claim the same folder, and a folder whose
  last job is not over is not queued again;
* a missing folder fails its run and removes nothing; an empty one (an unmounted share)
  removes nothing and says so.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update
from typer.testing import CliRunner

from api_server import start_server
from conftest import EngineFactory, copy_samples
from hanrag.cli.main import app
from hanrag.engine import Engine
from hanrag.jobs.base import FINAL_STATES, JobRecord
from hanrag.jobs.folder_sync import folder_key, folder_payload, queue_due_folders, store_of
from hanrag.jobs.inprocess import InProcessQueue
from hanrag.settings import FolderSourceSettings
from hanrag.store.folder_sync import FolderSyncStore
from hanrag.store.models import FolderSyncRow, utcnow
from jobs_support import wait_until


def make_due(engine: Engine, path: str) -> None:
    store = store_of(engine)
    with store._sessions.begin() as session:
        session.execute(
            update(FolderSyncRow)
            .where(FolderSyncRow.path == path)
            .values(next_sync_at=utcnow() - timedelta(minutes=1))
        )


def folder_jobs(engine: Engine) -> list[dict[str, Any]]:
    from hanrag.jobs.sql_store import SqlJobStore

    jobs = SqlJobStore(engine.catalog.engine).list_jobs(limit=100)
    return sorted((j.to_dict() for j in jobs if j.payload.get("folder")), key=lambda j: j["created_at"])


def test_the_scheduler_mirrors_a_folder_and_reports_each_run(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    share = copy_samples(tmp_path / "share", ["인사규정.md", "정보보안정책.txt"])
    engine = make_engine(
        tables={"scheduler": True, "scheduler_poll_s": 0.1},
        sources={"folders": [{"path": str(share), "interval_minutes": 30, "acl": ["group:hr"]}]},
    )
    key = str(share.resolve())
    live = start_server(engine)
    try:
        with httpx.Client(base_url=live.url, timeout=60) as client:

            def last_run(count: int) -> dict[str, Any] | None:
                [view] = [v for v in client.get("/api/v1/sources").json() if v["kind"] == "folder"]
                jobs = folder_jobs(engine)
                done = len(jobs) >= count and jobs[count - 1]["state"] in FINAL_STATES
                return view if done and view["last_sync"]["job_id"] == jobs[count - 1]["id"] else None

            first = wait_until(lambda: last_run(1), 60, "the first scheduled sync")
            assert first["path"] == key and first["interval_minutes"] == 30
            assert first["last_sync"]["state"] == "succeeded"
            assert first["last_sync"]["counts"] == {"added": 2}
            [job] = folder_jobs(engine)
            assert job["kind"] == "ingest" and job["principal"] is None
            assert job["payload"] == {
                "paths": [key],
                "acl": ["group:hr"],
                "include": None,
                "exclude": None,
                "sync": True,
                "folder": key,
            }
            assert {d["acl"][0] for d in client.get("/api/v1/documents").json()["items"]} == {"group:hr"}
            # Not due again for 30 minutes: nothing more is queued meanwhile.
            time.sleep(1)
            assert len(folder_jobs(engine)) == 1

            (share / "정보보안정책.txt").unlink()
            (share / "새규정.md").write_text(
                "# 재택근무\n\n재택근무는 주 2회까지 허용한다.\n", encoding="utf-8"
            )
            make_due(engine, key)
            second = wait_until(lambda: last_run(2), 60, "the second scheduled sync")
            assert second["last_sync"]["counts"] == {"added": 1, "unchanged": 1, "removed": 1}
            sources = sorted(Path(d["source"]).name for d in client.get("/api/v1/documents").json()["items"])
            assert sources == ["새규정.md", "인사규정.md"]
    finally:
        live.stop()
    listed = CliRunner().invoke(
        app,
        ["--data-dir", str(engine.settings.data_dir), "source", "list"],
        env=_env(engine),
        catch_exceptions=False,
    )
    assert listed.exit_code == 0 and "Scheduled folders" in listed.stdout and "removed 1" in listed.stdout


def _env(engine: Engine) -> dict[str, str]:
    folders = [
        {"path": str(f.path), "interval_minutes": f.interval_minutes} for f in engine.settings.sources.folders
    ]

    return {"HANRAG_SOURCES__FOLDERS": json.dumps(folders)}


def test_one_claim_per_due_folder_and_no_second_job_while_one_is_pending(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    share = copy_samples(tmp_path / "share", ["인사규정.md"])
    engine = make_engine(sources={"folders": [{"path": str(share), "interval_minutes": 5}]})
    key = str(share.resolve())
    stores = [FolderSyncStore(engine.catalog.engine) for _ in range(8)]
    claimed: list[list[str]] = []
    barrier = threading.Barrier(len(stores))

    def claim(store: FolderSyncStore) -> None:
        barrier.wait()
        claimed.append(store.claim_due([(key, 5)]))

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(c) for c in claimed) == [0] * 7 + [1]  # one process got it
    assert stores[0].claim_due([(key, 5)]) == []  # not due again for 5 minutes

    async def rounds() -> list[list[JobRecord]]:
        queue = InProcessQueue(engine)  # not started: the first job stays queued
        make_due(engine, key)
        first = await queue_due_folders(engine, queue)
        make_due(engine, key)
        second = await queue_due_folders(engine, queue)  # the first is still queued
        return [first, second]

    first, second = asyncio.run(rounds())
    assert len(first) == 1 and second == []
    assert store_of(engine).all()[key].last_job_id == first[0].id
    assert first[0].payload == folder_payload(FolderSourceSettings(path=share, interval_minutes=5))
    assert folder_key(FolderSourceSettings(path=share / ".." / "share", interval_minutes=5)) == key


def test_a_missing_or_empty_folder_removes_nothing(make_engine: EngineFactory, tmp_path: Path) -> None:
    share = copy_samples(tmp_path / "share", ["인사규정.md"])
    missing = tmp_path / "gone"
    engine = make_engine(
        tables={"scheduler": True, "scheduler_poll_s": 0.1},
        sources={
            "folders": [
                {"path": str(share), "interval_minutes": 60},
                {"path": str(missing), "interval_minutes": 60},
            ]
        },
    )
    live = start_server(engine)
    try:

        def runs() -> dict[str, Any]:
            rows = store_of(engine).all()
            return {path: row.last_sync for path, row in rows.items() if row.last_sync}

        reports = wait_until(lambda: len(runs()) == 2 and runs(), 60, "both folders' runs")
        assert reports[str(share.resolve())]["counts"] == {"added": 1}
        failed = reports[str(missing.resolve())]
        assert failed["state"] == "failed" and failed["error"]["code"] == "invalid_input"

        # (the run's report is stored just before its job's end: wait for that too)
        wait_until(lambda: all(j["state"] in FINAL_STATES for j in folder_jobs(engine)), 30, "the jobs' end")
        (share / "인사규정.md").unlink()  # as if the share were not mounted
        make_due(engine, str(share.resolve()))
        wait_until(lambda: runs()[str(share.resolve())].get("warnings") or None, 60, "the empty folder's run")
        report = runs()[str(share.resolve())]
        assert report["state"] == "succeeded" and "removed" not in report["counts"]
        assert "mounted" in report["warnings"][0]
        assert engine.catalog.count(status="indexed") == 1  # the document stays
    finally:
        live.stop()
