"""Job state in the catalog database (in-process queue)."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from hanrag.jobs.base import Condition, JobRecord, now_iso
from hanrag.store.db import create_schema, session_factory
from hanrag.store.models import JobRow, utcnow


class SqlJobStore:
    def __init__(self, engine: Engine) -> None:
        create_schema(engine)
        self._sessions = session_factory(engine)
        self._lock = threading.Lock()

    def create(self, record: JobRecord) -> None:
        with self._sessions.begin() as db:
            db.add(JobRow(id=record.id, record=record.to_dict(), state=record.state))

    def get(self, job_id: str) -> JobRecord | None:
        with self._sessions() as db:
            row = db.get(JobRow, job_id)
            return JobRecord.from_dict(row.record) if row is not None else None

    def update(self, job_id: str, **fields: Any) -> JobRecord | None:
        return self.update_if(job_id, lambda _data: True, **fields)[1]

    def update_if(self, job_id: str, when: Condition, **fields: Any) -> tuple[bool, JobRecord | None]:
        # The row is locked for the read-modify-write (FOR UPDATE on PostgreSQL; SQLite
        # serialises writers), so another process cannot change it between check and write.
        with self._lock, self._sessions.begin() as db:
            row = db.get(JobRow, job_id, with_for_update=True)
            if row is None:
                return False, None
            data = dict(row.record)
            if not when(data):
                return False, JobRecord.from_dict(data)
            data.update(fields, updated_at=now_iso())
            row.record = data
            row.state = data["state"]
            row.updated_at = utcnow()
            return True, JobRecord.from_dict(data)

    def list_jobs(self, *, limit: int = 50, state: str | None = None) -> list[JobRecord]:
        with self._sessions() as db:
            query = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
            if state:
                query = query.where(JobRow.state == state)
            return [JobRecord.from_dict(row.record) for row in db.scalars(query)]

    def unfinished(self) -> list[JobRecord]:
        """Jobs to resume after a restart (queued, or running when the process stopped)."""
        with self._sessions() as db:
            rows = db.scalars(select(JobRow).where(JobRow.state.in_(("queued", "running", "paused"))))
            return [JobRecord.from_dict(row.record) for row in rows]
