"""What the admin dashboard counts, read from hanrag's own tables (issue P12): the
questions of the audit log, the timings kept with the answers, the documents' states."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from hanrag.store.db import create_schema, session_factory
from hanrag.store.models import AuditRow, DocumentRow, MessageRow

# Rows read per round trip.
_BATCH = 5000


class UsageStore:
    def __init__(self, engine: Engine) -> None:
        create_schema(engine)
        self._sessions = session_factory(engine)

    def question_times(self, since: datetime) -> Iterator[datetime]:
        """When each question since ``since`` was asked (the audit log's ``question`` rows)."""
        query = select(AuditRow.at).where(AuditRow.action == "question", AuditRow.at >= since)
        with self._sessions() as db:
            yield from db.execute(query.execution_options(yield_per=_BATCH)).scalars()

    def answer_timings(self, since: datetime) -> Iterator[dict[str, Any]]:
        """The timings of each stored answer since ``since`` (answers stored before P12 have none)."""
        query = select(MessageRow.meta).where(
            MessageRow.role == "assistant", MessageRow.created_at >= since, MessageRow.meta.is_not(None)
        )
        with self._sessions() as db:
            for meta in db.execute(query.execution_options(yield_per=_BATCH)).scalars():
                timings = (meta or {}).get("timings") if isinstance(meta, dict) else None
                if isinstance(timings, dict):
                    yield timings

    def document_states(self) -> dict[str, int]:
        """status -> how many documents."""
        with self._sessions() as db:
            rows = db.execute(select(DocumentRow.status, func.count()).group_by(DocumentRow.status))
            return {status: int(n) for status, n in rows}
