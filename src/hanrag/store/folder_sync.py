"""The catalog's schedule of the folders in ``sources.folders`` (P14).

The folders are settings; the catalog keeps, per folder (its absolute path), when the
scheduler syncs it next, the job of its last run and that run's report. :meth:`claim_due`
claims a due folder the way :meth:`hanrag.store.sql_sources.SqlSourceStore.claim_due`
claims a SQL source: ``next_sync_at`` moves one interval on in a conditional update, so of
several processes polling one catalog only one gets the folder back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from hanrag.store.db import create_schema, session_factory
from hanrag.store.models import FolderSyncRow, utcnow


class FolderSyncStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_schema(engine)
        self._sessions = session_factory(engine)

    def all(self) -> dict[str, FolderSyncRow]:
        with self._sessions() as session:
            return {row.path: row for row in session.scalars(select(FolderSyncRow))}

    def _ensure(self, folders: Sequence[tuple[str, int]], now: datetime) -> None:
        """A row for every configured folder (due at once when new); a changed interval
        applies from now on (a shorter one brings the next run forward)."""
        known = self.all()
        for path, minutes in folders:
            row = known.get(path)
            if row is None:
                try:
                    with self._sessions.begin() as session:
                        session.add(FolderSyncRow(path=path, interval_minutes=minutes, next_sync_at=now))
                except IntegrityError:
                    pass  # another process added it at the same moment
            elif row.interval_minutes != minutes:
                soonest = now + timedelta(minutes=minutes)
                next_at = row.next_sync_at
                if next_at is not None and next_at.tzinfo is None:
                    next_at = next_at.replace(tzinfo=soonest.tzinfo)
                with self._sessions.begin() as session:
                    session.execute(
                        update(FolderSyncRow)
                        .where(FolderSyncRow.path == path)
                        .values(
                            interval_minutes=minutes,
                            next_sync_at=soonest
                            if next_at is None or next_at > soonest
                            else row.next_sync_at,
                        )
                    )

    def claim_due(self, folders: Sequence[tuple[str, int]], now: datetime | None = None) -> list[str]:
        """The configured folders (path, interval in minutes) whose sync is due, each
        claimed for this caller only."""
        now = now or utcnow()
        if not folders:
            return []
        self._ensure(folders, now)
        wanted = {path: minutes for path, minutes in folders}
        with self._sessions() as session:
            due = session.execute(
                select(FolderSyncRow.path, FolderSyncRow.next_sync_at).where(
                    FolderSyncRow.path.in_(list(wanted)),
                    FolderSyncRow.next_sync_at <= now,
                )
            ).all()
        claimed: list[str] = []
        for path, next_at in due:
            with self._sessions.begin() as session:
                changed = session.execute(
                    update(FolderSyncRow)
                    .where(FolderSyncRow.path == path, FolderSyncRow.next_sync_at == next_at)
                    .values(next_sync_at=now + timedelta(minutes=wanted[path]))
                ).rowcount
            if changed:
                claimed.append(path)
        return claimed

    def set_job(self, path: str, job_id: str) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(FolderSyncRow).where(FolderSyncRow.path == path).values(last_job_id=job_id)
            )

    def record(self, path: str, report: dict[str, Any]) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(FolderSyncRow)
                .where(FolderSyncRow.path == path)
                .values(last_sync_at=utcnow(), last_sync=report)
            )
