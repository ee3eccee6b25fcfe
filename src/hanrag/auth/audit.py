"""Audit log: logins, admin actions, ACL changes and questions, with retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from hanrag.store.db import create_schema, session_factory
from hanrag.store.models import AuditRow


class AuditLog:
    def __init__(self, engine: Engine, *, retention_days: int = 365) -> None:
        create_schema(engine)
        self._sessions = session_factory(engine)
        self.retention_days = retention_days
        self._writes = 0

    def record(
        self,
        actor: str,
        action: str,
        *,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
        ip: str | None = None,
    ) -> None:
        with self._sessions.begin() as db:
            db.add(AuditRow(actor=actor, action=action, target=target, detail=detail or {}, ip=ip))
        self._writes += 1
        if self._writes % 500 == 1:  # prune now and then, not on every write
            self.prune()

    def prune(self) -> int:
        cutoff = datetime.now(UTC) - timedelta(days=self.retention_days)
        with self._sessions.begin() as db:
            result = db.execute(delete(AuditRow).where(AuditRow.at < cutoff))
            return int(getattr(result, "rowcount", 0) or 0)

    def query(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        with self._sessions() as db:
            query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
            if actor:
                query = query.where(AuditRow.actor == actor)
            if action:
                query = query.where(AuditRow.action == action)
            if since:
                query = query.where(AuditRow.at >= since)
            if until:
                query = query.where(AuditRow.at <= until)
            return [row.as_dict() for row in db.scalars(query)]
