"""Running one job: the same code for the in-process worker and the arq workers.

Effects are idempotent so that at-least-once execution is safe: a job that
already succeeded only re-sends an undelivered callback; ingestion skips
unchanged files; the callback carries the job id as its idempotency key.
Failures of the caller's input are final (``failed``); anything else is
retried until the last attempt, which ends in ``dead``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hanrag.domain import SearchFilters
from hanrag.errors import (
    BackendError,
    ForbiddenError,
    HanragError,
    InvalidInputError,
    NotFoundError,
    ParseError,
)
from hanrag.jobs.base import FINAL_STATES, JobRecord, JobStore, now_iso
from hanrag.jobs.callbacks import deliver

if TYPE_CHECKING:
    from hanrag.engine import Engine

log = logging.getLogger("hanrag.jobs")

_PERMANENT = (InvalidInputError, NotFoundError, ParseError, ForbiddenError)
# A file the pipeline reports failed for one of these reasons failed because a backend was
# down, not because of the file: the attempt is retried (from that file) like any transient error.
_TRANSIENT_FILE_CODES = frozenset(
    {"embedding_backend_unavailable", "embedding_backend_error", "index_unavailable", "backend_error"}
)


class TransientJobError(Exception):
    """The attempt failed for a reason that may pass; the queue retries with backoff."""


def callback_secret(engine: Engine) -> str:
    configured = engine.settings.jobs.callback_secret
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value()
    path = engine.settings.data_dir / "callback-secret"
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


class _Paused:
    """What an ingestion attempt returns when it stopped for a pause."""


PAUSED = _Paused()

UPLOAD_BATCHES = "upload-batches"  # staging folders of uploaded ingestion batches, in the data dir


def discard_upload_batch(engine: Engine, record: JobRecord) -> None:
    """Remove an ended upload job's staging folder (each ingested document keeps its own
    copy for re-indexing, so nothing is lost)."""
    if record.state in FINAL_STATES:
        _remove_upload_staging(engine, record)


def _remove_upload_staging(engine: Engine, record: JobRecord) -> None:
    """Only a folder directly under the data directory's upload-batches folder is ever
    removed, whatever the payload says."""
    folder = record.payload.get("upload_dir") if record.kind == "ingest" else None
    if not folder:
        return
    root = (engine.settings.data_dir / UPLOAD_BATCHES).resolve()
    path = Path(folder).resolve()
    if path.parent == root:
        shutil.rmtree(path, ignore_errors=True)


async def _store(store: JobStore, job_id: str, **fields: Any) -> JobRecord | None:
    return await asyncio.to_thread(store.update, job_id, **fields)


async def _end(
    engine: Engine, store: JobStore, record: JobRecord, state: str, **fields: Any
) -> JobRecord | None:
    """Store how a job ended. An upload batch's staging folder goes first, so that a job
    seen ended never has one left (nothing reads it once the job ends this way)."""
    await asyncio.to_thread(_remove_upload_staging, engine, record)
    return await _store(store, record.id, state=state, finished_at=now_iso(), **fields)


async def _send_callback(engine: Engine, store: JobStore, record: JobRecord) -> None:
    if not record.callback_url:
        return
    if record.state == "succeeded":
        payload = {
            "status": 200,
            "message": "OK",
            "data": {"job_id": record.id, "state": record.state, "result": record.result},
        }
    else:
        message = (record.error or {}).get("message", record.state)
        payload = {
            "status": 500 if record.state == "dead" else 400,
            "message": message,
            "data": {"job_id": record.id, "state": record.state, "error": record.error},
        }
    # The destination is checked again (and pinned) at delivery; the configured headers go
    # only to jobs.callback_header_hosts, the caller's own headers to its own URL.
    report = await deliver(
        record.callback_url,
        payload,
        job_id=record.id,
        secret=await asyncio.to_thread(callback_secret, engine),
        headers=record.callback_headers,
        settings=engine.settings.jobs,
    )
    # The caller's callback credentials are kept no longer than needed: once delivery has
    # ended (delivered or given up) they are dropped from the stored record.
    await _store(store, record.id, callback=report, callback_headers={})


async def _ask(engine: Engine, record: JobRecord) -> dict[str, Any]:
    from hanrag.answer.engine import AskOptions
    from hanrag.api.schemas import FiltersIn

    payload = record.payload
    filters = (
        FiltersIn.model_validate(payload["filters"]).to_filters(record.principals)
        if payload.get("filters")
        else (SearchFilters(principals=record.principals) if record.principals is not None else None)
    )
    session_id = payload.get("session_id")
    result = await engine.ask_result(
        payload["question"],
        session_id=session_id,
        principal=record.principal,
        principals=record.principals,
        filters=filters,
        # Without a session the turn is not stored: a re-run after a crash then has no second effect.
        options=AskOptions(
            rag=payload.get("rag", True), k=payload.get("k"), history=None if session_id else []
        ),
    )
    return {
        **result.as_dict(),
        "references": [{k: v for k, v in ref.items() if k != "text"} for ref in result.references],
    }


async def _until_cancelled(
    store: JobStore, job_id: str, work: Coroutine[Any, Any, dict[str, Any]], poll_s: float
) -> dict[str, Any] | None:
    """Run ``work`` until it ends or the job's cancel is asked for (None). The stored job is
    polled, so a cancel from a client of any process reaches the worker running it."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            current = await asyncio.to_thread(store.get, job_id)
            if current is None or current.control == "cancel":
                return None  # the finally below stops the work
    finally:
        if not task.done():
            task.cancel()  # an answer cut off stores no turn; its LLM stream is closed
            await asyncio.gather(task, return_exceptions=True)


async def _ingest(engine: Engine, store: JobStore, record: JobRecord) -> dict[str, Any] | _Paused | None:
    """Files one by one with progress; pause and cancel are honoured between files
    (``None``: cancelled; :data:`PAUSED`: the attempt ended paused)."""
    from hanrag.auth.access import check_grant
    from hanrag.ingest.pipeline import discover

    payload = record.payload
    pipeline = engine.pipeline
    principals = record.principals
    acl = check_grant(principals, payload["acl"]) if payload.get("acl") else None
    upload_dir = Path(payload["upload_dir"]) if payload.get("upload_dir") else None
    if upload_dir is not None:
        files: list[Path] = (
            sorted(p for p in upload_dir.iterdir() if p.is_file()) if upload_dir.is_dir() else []
        )
        skipped: list[Path] = []
        missing: list[Path] = []
    else:
        files, skipped, missing = await asyncio.to_thread(
            discover,
            [Path(p) for p in payload["paths"]],
            payload.get("include") or engine.settings.ingest.include,
            [
                *(payload.get("exclude") or []),
                *engine.settings.ingest.exclude,
                engine.settings.ingest.acl_file_name,
            ],
        )
        if principals is not None:
            # Files the caller may not read are neither ingested nor reported: a named one
            # is told like a missing one, and the totals count only what they may read.
            def permitted(paths: list[Path]) -> list[Path]:
                return [p for p in paths if pipeline.permitted(p, principals)]

            all_files = files
            files = await asyncio.to_thread(permitted, all_files)
            skipped = await asyncio.to_thread(permitted, skipped)
            named = {Path(p).expanduser().resolve() for p in payload["paths"]}
            missing += [p for p in all_files if p.resolve() in named and p not in files]
    if missing and not files:
        raise InvalidInputError(
            f"no such file or directory: {', '.join(str(m) for m in missing)}", field="paths"
        )
    known = await asyncio.to_thread(engine.catalog.file_states)
    done_sources = set(record.progress.get("done_sources", []))
    counts: dict[str, int] = dict(record.progress.get("counts", {}))
    failures: list[dict[str, Any]] = list(record.progress.get("failures", []))
    chunks = int(record.progress.get("chunks", 0))
    started = time.monotonic()
    processed_now = 0
    for path in files:
        if str(path) in done_sources:  # finished by an earlier attempt of this job
            continue
        current = await asyncio.to_thread(store.get, record.id)
        if current is not None and current.control == "pause":
            # Pausing ends the attempt and frees the worker (and its time limit); the
            # progress is kept and a resume queues the job again. Only while the pause is
            # still asked for: a resume that came in between keeps the job running.
            paused, current = await asyncio.to_thread(
                store.update_if,
                record.id,
                lambda data: data.get("control") == "pause",
                state="paused",
                attempts=max(0, record.attempts - 1),
            )
            if paused:
                return PAUSED
        if current is None or current.control == "cancel":
            return None
        if upload_dir is not None:
            data = await asyncio.to_thread(path.read_bytes)
            name = payload.get("names", {}).get(path.name, path.name)
            outcome = await asyncio.to_thread(
                engine.ingest_upload, data, name, acl=acl, owner=record.principal, principals=principals
            )
        else:
            outcome = await asyncio.to_thread(
                pipeline.ingest_file, path, acl=acl, known=known, principals=principals
            )
        if outcome.status == "failed" and outcome.error_code in _TRANSIENT_FILE_CODES:
            raise BackendError(outcome.error or "a backend failed", code=outcome.error_code)
        processed_now += 1
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        chunks += outcome.chunks if outcome.status in ("added", "updated") else 0
        if outcome.status == "failed":
            failures.append({"source": outcome.source, "code": outcome.error_code, "error": outcome.error})
        done_sources.add(str(path))
        elapsed = time.monotonic() - started
        remaining = len(files) - len(done_sources)
        eta = elapsed / processed_now * remaining if processed_now else None
        await _store(
            store,
            record.id,
            progress={
                "files_done": len(done_sources),
                "files_total": len(files),
                "chunks": chunks,
                "counts": counts,
                "failures": failures[-100:],
                "skipped": len(skipped),
                "eta_seconds": None if eta is None else round(eta, 1),
                "done_sources": sorted(done_sources),
            },
        )
    await asyncio.to_thread(engine.index.refresh)
    return {
        "files": len(files),
        "counts": counts,
        "chunks": chunks,
        "failures": failures,
        "skipped": len(skipped),
    }


def _discarding_upload_batch(
    run: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., Coroutine[Any, Any, JobRecord | None]]:
    """After an attempt, an upload batch's staging folder goes if the job has ended,
    whichever way it ended. The attempt returns the job as it stands after it (None:
    the job is gone), so that the queue need not read it again."""

    @functools.wraps(run)
    async def attempt(engine: Engine, store: JobStore, job_id: str, **options: Any) -> JobRecord | None:
        record: JobRecord | None = None
        try:
            await run(engine, store, job_id, **options)
        finally:
            record = await asyncio.to_thread(store.get, job_id)
            if record is not None:
                await asyncio.to_thread(discard_upload_batch, engine, record)
        return record

    return attempt


@_discarding_upload_batch
async def run_job(
    engine: Engine,
    store: JobStore,
    job_id: str,
    *,
    attempt: int,
    max_attempts: int,
    timeout_s: float | None = None,
) -> None:
    """Run one attempt of a job. Raises :class:`TransientJobError` when it should be retried.

    ``timeout_s`` bounds the work only (not the callback delivery that follows it): an
    attempt that runs out of time is a transient failure with the code ``job_timeout``,
    retried like any other until the last attempt, which ends ``dead`` (with its callback).
    """
    record = await asyncio.to_thread(store.get, job_id)
    if record is None:
        log.warning("job vanished", extra={"job_id": job_id})
        return
    if record.state in FINAL_STATES:
        # Re-run of a finished job (at-least-once): only an undelivered callback is left to do.
        if record.callback_url and record.callback is None:
            await _send_callback(engine, store, record)
        return
    if record.state == "paused" and record.control == "pause":
        return  # queued again before its pause took effect (a restart): stays paused
    if record.control == "cancel":
        cancelled = await _end(engine, store, record, "cancelled")
        if cancelled is not None:
            await _send_callback(engine, store, cancelled)
        return
    record = await _store(
        store, job_id, state="running", attempts=attempt, started_at=record.started_at or now_iso()
    )
    assert record is not None
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            result = await (
                _until_cancelled(store, job_id, _ask(engine, record), engine.settings.jobs.cancel_poll_s)
                if record.kind == "ask"
                else _ingest(engine, store, record)
            )
    except _PERMANENT as exc:
        failed = await _end(engine, store, record, "failed", error={"code": exc.code, "message": exc.message})
        if failed is not None:
            await _send_callback(engine, store, failed)
        return
    except Exception as exc:  # anything else may pass: retried until the last attempt
        if not isinstance(exc, HanragError | OSError | TimeoutError) and not deadline.expired():
            log.error("job attempt crashed", exc_info=exc, extra={"job_id": job_id, "attempt": attempt})
        code = exc.code if isinstance(exc, HanragError) else type(exc).__name__
        message = exc.message if isinstance(exc, HanragError) else str(exc) or type(exc).__name__
        if deadline.expired():
            code, message = "job_timeout", f"the job took longer than {timeout_s:g} s"
        if attempt >= max_attempts:
            dead = await _end(
                engine, store, record, "dead", error={"code": code, "message": message, "attempts": attempt}
            )
            if dead is not None:
                await _send_callback(engine, store, dead)
            return
        await _store(
            store, job_id, state="queued", error={"code": code, "message": message, "attempts": attempt}
        )
        raise TransientJobError(code) from exc
    if result is PAUSED:
        return  # no end yet, no callback: a resume queues the job again
    if result is None:  # cancelled part-way: the receiver learns it like any other end
        cancelled = await _end(engine, store, record, "cancelled")
        if cancelled is not None:
            await _send_callback(engine, store, cancelled)
        return
    done = await _end(engine, store, record, "succeeded", result=result, error=None)
    if done is not None:
        await _send_callback(engine, store, done)


async def worker_lost(engine: Engine, store: JobStore, job_id: str, *, attempts: int) -> None:
    """The last attempt's worker died (no attempt is left): the job ends ``dead``."""
    record = await asyncio.to_thread(store.get, job_id)
    if record is None:
        return
    if record.state in FINAL_STATES:
        if record.callback_url and record.callback is None:
            await _send_callback(engine, store, record)
        return
    lost = {
        "code": "worker_lost",
        "message": "the worker running the last attempt stopped",
        "attempts": attempts,
    }
    dead = await _end(engine, store, record, "dead", error=lost)
    if dead is not None:
        await _send_callback(engine, store, dead)
