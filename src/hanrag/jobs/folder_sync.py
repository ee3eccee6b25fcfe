"""Scheduled folder syncs (P14): the folders of ``sources.folders`` mirrored by ingestion jobs.

Every round of the job scheduler (:mod:`hanrag.jobs.scheduler`, in ``hanrag serve`` and
``hanrag worker`` when ``tables.scheduler`` is on) claims the folders whose interval has
passed (:meth:`hanrag.store.folder_sync.FolderSyncStore.claim_due`: one process per due
folder, whichever number of processes poll the catalog) and queues for each an ``ingest``
job of the system with *sync* semantics (:attr:`hanrag.ingest.model.IngestRequest.sync`):
new files are added, changed ones updated, and — once every file is done — the documents
of vanished files removed, as ``hanrag sync`` does. The payload carries ``folder`` (the
folder's absolute path), by which the job's end is recorded as the folder's last run
(``hanrag source list``, ``GET /api/v1/sources``). A folder whose previous job is still
queued, running or paused is not queued again (one run at a time per folder).

A folder that is missing fails its run (nothing is removed); one that is present but
empty while the catalog holds documents from it removes nothing either and says so (an
unmounted share looks like that).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hanrag.errors import HanragError
from hanrag.ingest.model import IngestPlan, IngestRequest
from hanrag.jobs.base import FINAL_STATES, JobQueue, JobRecord
from hanrag.settings import FolderSourceSettings
from hanrag.store.folder_sync import FolderSyncStore

if TYPE_CHECKING:
    from hanrag.engine import Engine
    from hanrag.ingest.pipeline import IngestPipeline

log = logging.getLogger("hanrag.jobs.scheduler")

KIND = "ingest"


def folder_key(folder: FolderSourceSettings) -> str:
    """A configured folder's key: its absolute path."""
    return str(folder.path.expanduser().resolve())


def folder_payload(folder: FolderSourceSettings) -> dict[str, Any]:
    """The ``ingest`` job of one scheduled sync of ``folder``."""
    request = IngestRequest(
        paths=[Path(folder_key(folder))],
        include=folder.include or None,
        exclude=folder.exclude or None,
        acl=folder.acl or None,
        sync=True,
    )
    return {**request.as_payload(), "folder": folder_key(folder)}


def store_of(engine: Engine) -> FolderSyncStore:
    return FolderSyncStore(engine.catalog.engine)


def _claim(engine: Engine, queue: JobQueue) -> list[FolderSourceSettings]:
    """The due folders claimed for this process, less those whose last job is not over."""
    folders = {folder_key(f): f for f in engine.settings.sources.folders}
    if not folders:
        return []
    store = store_of(engine)
    claimed = store.claim_due([(key, f.interval_minutes) for key, f in folders.items()])
    if not claimed:
        return []
    rows = store.all()
    ready: list[FolderSourceSettings] = []
    for key in claimed:
        job_id = rows[key].last_job_id if key in rows else None
        previous = queue.store.get(job_id) if job_id else None
        if previous is not None and previous.state not in FINAL_STATES:
            log.info("scheduled folder sync skipped: one is pending", extra={"folder": key, "job_id": job_id})
            continue
        ready.append(folders[key])
    return ready


async def queue_due_folders(engine: Engine, queue: JobQueue) -> list[JobRecord]:
    """One scheduler round for the folders: claim the due ones and queue their jobs."""
    if not engine.settings.sources.folders:
        return []
    due = await asyncio.to_thread(_claim, engine, queue)
    queued: list[JobRecord] = []
    for folder in due:
        key = folder_key(folder)
        try:
            record = await queue.enqueue(JobRecord(kind=KIND, payload=folder_payload(folder)))
            await asyncio.to_thread(store_of(engine).set_job, key, record.id)
        except Exception as exc:
            log.warning(
                "scheduled folder sync not queued",
                extra={"folder": key, "error_type": type(exc).__name__},
            )
            continue
        log.info("scheduled folder sync queued", extra={"folder": key, "job_id": record.id})
        queued.append(record)
    return queued


def finish_sync(pipeline: IngestPipeline, request: IngestRequest, plan: IngestPlan) -> tuple[int, list[str]]:
    """After every planned file of a sync job: remove the documents of files that are gone
    (how many, and warnings)."""
    directory = request.paths[0]
    if not directory.is_dir():
        return 0, []
    if not plan.files and pipeline.catalog.sources_under(str(directory.resolve()) + os.sep):
        return 0, [f"{directory} has no files: nothing was removed (is the share mounted?)"]
    removed = pipeline.remove_vanished(directory, {str(p.resolve()) for p in plan.files})
    if removed:
        pipeline.index.refresh()
    return len(removed), []


async def recorded(engine: Engine, record: JobRecord, work: Coroutine[Any, Any, Any]) -> Any:
    """Run a folder sync job's attempt and record how it went as the folder's last run."""
    key = str(record.payload.get("folder"))
    report: dict[str, Any] = {"job_id": record.id, "attempt": record.attempts}
    try:
        result = await work
    except HanragError as exc:
        report.update(state="failed", error={"code": exc.code, "message": exc.message})
        raise
    except Exception as exc:
        report.update(state="failed", error={"code": type(exc).__name__, "message": str(exc)[:300]})
        raise
    else:
        if isinstance(result, dict):
            report.update(state="succeeded", **{k: v for k, v in result.items() if k != "failures"})
            report["failures"] = result.get("failures", [])[:20]
        else:
            report.update(state="cancelled" if result is None else "paused")
        return result
    finally:
        try:
            await asyncio.to_thread(store_of(engine).record, key, report)
        except Exception as exc:  # the job's own outcome matters more than its report
            log.warning(
                "folder sync report not stored", extra={"folder": key, "error_type": type(exc).__name__}
            )


def folder_views(engine: Engine) -> list[dict[str, Any]]:
    """The configured folders as ``hanrag source list`` and ``GET /api/v1/sources`` show them."""
    folders = engine.settings.sources.folders
    rows = store_of(engine).all() if folders else {}
    views: list[dict[str, Any]] = []
    for folder in folders:
        key = folder_key(folder)
        row = rows.get(key)
        views.append(
            {
                "kind": "folder",
                "name": key,
                "path": key,
                "interval_minutes": folder.interval_minutes,
                "acl": folder.acl,
                "include": folder.include,
                "exclude": folder.exclude,
                "next_sync_at": row.next_sync_at.isoformat() if row and row.next_sync_at else None,
                "last_sync_at": row.last_sync_at.isoformat() if row and row.last_sync_at else None,
                "last_job_id": row.last_job_id if row else None,
                "last_sync": row.last_sync if row else None,
            }
        )
    return views
