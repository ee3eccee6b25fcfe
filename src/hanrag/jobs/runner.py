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
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from hanrag.auth.access import Caller
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
from hanrag.jobs.folder_sync import finish_sync, recorded
from hanrag.jobs.sql_sync import KIND as SQL_SYNC
from hanrag.jobs.sql_sync import run_sql_sync
from hanrag.jobs.vocab_reindex import KIND as VOCAB_REINDEX
from hanrag.jobs.vocab_reindex import run_vocab_reindex

if TYPE_CHECKING:
    from hanrag.engine import Engine

log = logging.getLogger("hanrag.jobs")

_PERMANENT = (InvalidInputError, NotFoundError, ParseError, ForbiddenError)
# A file the pipeline reports failed for one of these reasons failed because a backend was
# down, not because of the file: the attempt is retried (from that file) like any transient error.
_TRANSIENT_FILE_CODES = frozenset(
    {"embedding_backend_unavailable", "embedding_backend_error", "index_unavailable", "backend_error"}
)


def caller_of(record: JobRecord) -> Caller:
    """The caller a job runs for: who submitted it, with the principals they had then."""
    return Caller.of(record.principal, record.principals)


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


def discard_upload_batch(engine: Engine, record: JobRecord) -> None:
    """Remove an ended upload job's staging folder (each ingested document keeps its own
    copy for re-indexing, so nothing is lost)."""
    if record.state in FINAL_STATES:
        _remove_upload_staging(engine, record)


def _remove_upload_staging(engine: Engine, record: JobRecord) -> None:
    if record.kind == "ingest":
        engine.uploads.discard_batch(record.payload.get("upload_dir"))


async def _store(store: JobStore, job_id: str, **fields: Any) -> JobRecord | None:
    return await asyncio.to_thread(store.update, job_id, **fields)


async def _end(
    engine: Engine, store: JobStore, record: JobRecord, state: str, **fields: Any
) -> JobRecord | None:
    """Store how a job ended. An upload batch's staging folder goes first, so that a job
    seen ended never has one left (nothing reads it once the job ends this way)."""
    await asyncio.to_thread(_remove_upload_staging, engine, record)
    return await _store(store, record.id, state=state, finished_at=now_iso(), **fields)


def callback_data(record: JobRecord, key: str, value: Any) -> dict[str, Any]:
    """The callback's ``data``: the job's id, state and result (or error), then the caller's
    correlation fields at the top level and its ``client_data`` (each only when given)."""
    data: dict[str, Any] = {"job_id": record.id, "state": record.state, key: value}
    for name, field_value in record.correlation.items():
        data.setdefault(name, field_value)
    if record.client_data is not None:
        data["client_data"] = record.client_data
    return data


async def _send_callback(engine: Engine, store: JobStore, record: JobRecord) -> None:
    if not record.callback_url:
        return
    if record.state == "succeeded":
        payload = {"status": 200, "message": "OK", "data": callback_data(record, "result", record.result)}
    else:
        message = (record.error or {}).get("message", record.state)
        payload = {
            "status": 500 if record.state == "dead" else 400,
            "message": message,
            "data": callback_data(record, "error", record.error),
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
        offline=engine.settings.offline_policy,
    )
    # The caller's callback credentials are kept no longer than needed: once delivery has
    # ended (delivered or given up) they are dropped from the stored record.
    await _store(store, record.id, callback=report, callback_headers={})


async def _ask(engine: Engine, record: JobRecord) -> dict[str, Any]:
    from hanrag.answer.engine import AskOptions

    payload = record.payload
    session_id = payload.get("session_id")
    result = await engine.ask_result(
        payload["question"],
        caller=caller_of(record),
        session_id=session_id,
        filters=SearchFilters.from_payload(payload.get("search_filters")),
        # Without a session the turn is not stored: a re-run after a crash then has no second effect.
        options=AskOptions(
            rag=payload.get("rag", True),
            k=payload.get("k"),
            history=None if session_id else [],
            mode=payload.get("mode"),
            candidates=bool(payload.get("candidates", False)),
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
    """The job's request run by the one ingestion loop, with progress after each file; pause
    and cancel are honoured between files (``None``: cancelled; :data:`PAUSED`: the attempt
    ended paused). Files an earlier attempt finished are not done again."""
    from hanrag.ingest.model import IngestPlan, IngestRequest

    request = IngestRequest.from_payload(record.payload)
    done_sources = set(record.progress.get("done_sources", []))
    counts: dict[str, int] = dict(record.progress.get("counts", {}))
    failures: list[dict[str, Any]] = list(record.progress.get("failures", []))
    chunks = int(record.progress.get("chunks", 0))
    stopped: list[_Paused | None] = []

    def should_stop() -> bool:
        """Asked in the run's thread before each file."""
        current = store.get(record.id)
        if current is not None and current.control == "pause":
            # Pausing ends the attempt and frees the worker (and its time limit); the
            # progress is kept and a resume queues the job again. Only while the pause is
            # still asked for: a resume that came in between keeps the job running.
            paused, current = store.update_if(
                record.id,
                lambda data: data.get("control") == "pause",
                state="paused",
                attempts=max(0, record.attempts - 1),
            )
            if paused:
                stopped.append(PAUSED)
                return True
        if current is None or current.control == "cancel":
            stopped.append(None)
            return True
        return False

    run = engine.pipeline.run(
        request, caller=caller_of(record), should_stop=should_stop, done=frozenset(done_sources)
    )
    plan = await asyncio.to_thread(next, run, None)
    assert isinstance(plan, IngestPlan)
    if plan.missing and not plan.files:
        raise InvalidInputError(
            f"no such file or directory: {', '.join(str(m) for m in plan.missing)}", field="paths"
        )
    started = time.monotonic()
    processed_now = 0
    while (outcome := await asyncio.to_thread(next, run, None)) is not None:
        assert not isinstance(outcome, IngestPlan)
        if outcome.status == "failed" and outcome.error_code in _TRANSIENT_FILE_CODES:
            raise BackendError(outcome.error or "a backend failed", code=outcome.error_code)
        processed_now += 1
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        chunks += outcome.chunks if outcome.status in ("added", "updated") else 0
        if outcome.status == "failed":
            failures.append({"source": outcome.source, "code": outcome.error_code, "error": outcome.error})
        done_sources.add(outcome.path or outcome.source)
        elapsed = time.monotonic() - started
        remaining = len(plan.files) - len(done_sources)
        eta = elapsed / processed_now * remaining if processed_now else None
        await _store(
            store,
            record.id,
            progress={
                "files_done": len(done_sources),
                "files_total": len(plan.files),
                "chunks": chunks,
                "counts": counts,
                "failures": failures[-100:],
                "skipped": len(plan.skipped),
                "eta_seconds": None if eta is None else round(eta, 1),
                "done_sources": sorted(done_sources),
            },
        )
    if stopped:
        return stopped[0]
    warnings: list[str] = []
    if request.sync:  # a folder sync: then the documents of vanished files go
        removed, warnings = await asyncio.to_thread(finish_sync, engine.pipeline, request, plan)
        if removed:
            counts["removed"] = removed
    return {
        "files": len(plan.files),
        "counts": counts,
        "chunks": chunks,
        "failures": failures,
        "skipped": len(plan.skipped),
        **({"warnings": warnings} if warnings else {}),
    }


def _attempt(
    engine: Engine, store: JobStore, record: JobRecord
) -> Coroutine[Any, Any, dict[str, Any] | _Paused | None]:
    """The work of one attempt, by the job's kind."""
    if record.kind == "ask":
        return _until_cancelled(store, record.id, _ask(engine, record), engine.settings.jobs.cancel_poll_s)
    if record.kind == SQL_SYNC:
        return run_sql_sync(engine, store, record, caller_of(record))
    if record.kind == VOCAB_REINDEX:
        return run_vocab_reindex(engine, store, record)
    if record.payload.get("folder"):  # a scheduled folder sync: its end is the folder's last run
        return recorded(engine, record, _ingest(engine, store, record))
    return _ingest(engine, store, record)


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
            result = await _attempt(engine, store, record)
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
