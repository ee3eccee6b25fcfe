"""The catalog's SQL sources and their sync watermarks (issue P10).

Rows only: the tables layer turns a row's configuration into a ``SqlSource``. The URL is
stored as given (the catalog is the operator's own database, like the users' password
hashes); nothing here logs it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.engine import Engine

from hanrag.store.db import create_schema, session_factory
from hanrag.store.models import SqlSourceRow, SqlWatermarkRow, utcnow


class SqlSourceStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_schema(engine)
        self._sessions = session_factory(engine)

    # ------------------------------------------------------------------ sources

    def get(self, name: str) -> SqlSourceRow | None:
        with self._sessions() as session:
            return session.get(SqlSourceRow, name)

    def all(self) -> list[SqlSourceRow]:
        with self._sessions() as session:
            return list(session.scalars(select(SqlSourceRow).order_by(SqlSourceRow.name)))

    def put(
        self,
        name: str,
        *,
        url: str,
        config: dict[str, Any],
        owner: str | None,
        sync_interval_minutes: int | None,
    ) -> SqlSourceRow:
        """Add a source or replace its definition (its sync history and owner are kept)."""
        with self._sessions.begin() as session:
            row = session.get(SqlSourceRow, name)
            if row is None:
                row = SqlSourceRow(name=name, owner=owner)
                session.add(row)
            row.url = url
            row.config = config
            row.sync_interval_minutes = sync_interval_minutes
            row.next_sync_at = utcnow() if sync_interval_minutes else None
            session.flush()
            return row

    def remove(self, name: str) -> bool:
        with self._sessions.begin() as session:
            session.execute(delete(SqlWatermarkRow).where(SqlWatermarkRow.source == name))
            return session.execute(delete(SqlSourceRow).where(SqlSourceRow.name == name)).rowcount > 0

    def record_sync(self, name: str, summary: dict[str, Any]) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(SqlSourceRow)
                .where(SqlSourceRow.name == name)
                .values(last_sync_at=utcnow(), last_sync=summary)
            )

    def claim_due(self, now: datetime | None = None) -> list[str]:
        """The sources whose scheduled sync is due, each claimed for this caller only: its
        next time moves one interval on in the same conditional update, so several server
        processes polling at once never queue the same sync twice."""
        now = now or utcnow()
        claimed: list[str] = []
        with self._sessions() as session:
            due = session.execute(
                select(
                    SqlSourceRow.name, SqlSourceRow.next_sync_at, SqlSourceRow.sync_interval_minutes
                ).where(
                    SqlSourceRow.sync_interval_minutes.is_not(None),
                    or_(SqlSourceRow.next_sync_at.is_(None), SqlSourceRow.next_sync_at <= now),
                )
            ).all()
        for name, next_at, minutes in due:
            condition = (
                SqlSourceRow.next_sync_at.is_(None)
                if next_at is None
                else SqlSourceRow.next_sync_at == next_at
            )
            with self._sessions.begin() as session:
                changed = session.execute(
                    update(SqlSourceRow)
                    .where(SqlSourceRow.name == name, condition)
                    .values(next_sync_at=now + timedelta(minutes=int(minutes)))
                ).rowcount
            if changed:
                claimed.append(name)
        return claimed

    # --------------------------------------------------------------- watermarks

    def watermark(self, source: str, table: str) -> tuple[str, Any] | None:
        with self._sessions() as session:
            row = session.get(SqlWatermarkRow, (source, table))
            return None if row is None else (row.mode, row.value)

    def set_watermark(self, source: str, table: str, mode: str, value: Any) -> None:
        with self._sessions.begin() as session:
            row = session.get(SqlWatermarkRow, (source, table))
            if row is None:
                session.add(SqlWatermarkRow(source=source, table_name=table, mode=mode, value=value))
            else:
                row.mode, row.value = mode, value

    def clear_watermarks(self, source: str) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(SqlWatermarkRow).where(SqlWatermarkRow.source == source))
