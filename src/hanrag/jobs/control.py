"""Pause, resume and cancel, as asked by a client (HTTP or CLI) of any queue adapter.

Every change is a conditional update of the stored job, so a client and the worker
running the job never undo each other: a pause takes effect at the job's next
checkpoint only if it is still asked for then, and a resume either clears a pause
not yet taken (the job goes on) or queues a paused job again (it holds no worker
while paused).
"""

from __future__ import annotations

import asyncio

from hanrag.errors import InvalidInputError
from hanrag.jobs.base import FINAL_STATES, JobQueue, JobRecord, now_iso


def _finished(record: JobRecord) -> InvalidInputError:
    return InvalidInputError(f"job {record.id} has already ended ({record.state})", code="job_finished")


async def apply_control(queue: JobQueue, record: JobRecord, control: str | None) -> JobRecord:
    """``control``: "pause", "cancel", or None to resume. Returns the job as it is now."""
    if record.state in FINAL_STATES:
        raise _finished(record)
    if control == "pause" and record.kind != "ingest":
        raise InvalidInputError("only ingestion jobs can be paused", code="not_pausable")
    store = queue.store
    job_id = record.id
    current: JobRecord | None = record
    for _ in range(3):  # each round is two atomic checks; a race moves the job on by one state
        if control == "cancel":
            # A job no worker holds (queued, paused) ends here; a running one at its next checkpoint.
            changed, current = await asyncio.to_thread(
                store.update_if,
                job_id,
                lambda data: data["state"] in ("queued", "paused"),
                control="cancel",
                state="cancelled",
                finished_at=now_iso(),
            )
            if changed and current is not None and current.callback_url:
                await queue.requeue(job_id)  # a worker sees it ended and calls back
            if changed or current is None:
                break
            changed, current = await asyncio.to_thread(
                store.update_if, job_id, lambda data: data["state"] == "running", control="cancel"
            )
        elif control == "pause":
            changed, current = await asyncio.to_thread(
                store.update_if, job_id, lambda data: data["state"] not in FINAL_STATES, control="pause"
            )
        else:
            changed, current = await asyncio.to_thread(
                store.update_if, job_id, lambda data: data["state"] == "paused", control=None, state="queued"
            )
            if changed:
                await queue.requeue(job_id)
                break
            if current is None:
                break
            changed, current = await asyncio.to_thread(
                store.update_if,
                job_id,
                lambda data: data["state"] in ("queued", "running"),
                control=None,
            )
        if changed or current is None:
            break
        if current.state in FINAL_STATES:
            raise _finished(current)
    if current is None:
        raise InvalidInputError(f"job {job_id} vanished", code="job_not_found")
    return current
