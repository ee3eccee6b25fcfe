"""Conversation memory: sessions and their messages, bounded by settings."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from hanrag.errors import InvalidInputError, NotFoundError
from hanrag.store.db import create_schema, session_factory
from hanrag.store.models import ChatSessionRow, MessageRow, utcnow


class SessionStore:
    def __init__(self, engine: Engine, *, max_messages: int = 200) -> None:
        create_schema(engine)
        self._sessions = session_factory(engine)
        self.max_messages = max_messages

    def exists(self, session_id: str) -> bool:
        with self._sessions() as db:
            return db.get(ChatSessionRow, session_id) is not None

    def owner(self, session_id: str) -> str | None:
        """The principal that owns a session (None: unknown session or no owner)."""
        with self._sessions() as db:
            row = db.get(ChatSessionRow, session_id)
            return row.principal if row is not None else None

    def get(self, session_id: str) -> ChatSessionRow:
        with self._sessions() as db:
            row = db.get(ChatSessionRow, session_id)
        if row is None:
            raise NotFoundError(f"no session {session_id!r}", code="session_not_found", field="session_id")
        return row

    def create(self, session_id: str, *, principal: str | None = None, title: str = "") -> ChatSessionRow:
        try:
            with self._sessions.begin() as db:
                row = ChatSessionRow(id=session_id, principal=principal, title=title[:200])
                db.add(row)
        except IntegrityError as exc:
            raise InvalidInputError(
                f"session {session_id!r} already exists", code="session_exists", field="session_id"
            ) from exc
        return row

    def list_sessions(
        self, *, principal: str | None = None, offset: int = 0, limit: int = 100
    ) -> list[ChatSessionRow]:
        with self._sessions() as db:
            query = select(ChatSessionRow).order_by(ChatSessionRow.updated_at.desc())
            if principal is not None:
                query = query.where(ChatSessionRow.principal == principal)
            return list(db.scalars(query.offset(offset).limit(limit)))

    def messages(self, session_id: str, *, last: int | None = None) -> list[MessageRow]:
        with self._sessions() as db:
            query = select(MessageRow).where(MessageRow.session_id == session_id).order_by(MessageRow.id)
            rows = list(db.scalars(query))
        return rows[-last:] if last else rows

    def append_turn(
        self,
        session_id: str,
        *,
        question: str,
        answer: str,
        cited_chunk_ids: list[str],
        references: list[dict[str, Any]],
        create: bool = False,
        principal: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Store a complete turn (question and answer together, never half of one).

        ``create``: the session is new; it is created (owned by ``principal``) in the
        same transaction as its first turn. ``meta``: kept with the answer (its generator
        and timings)."""
        with self._sessions.begin() as db:
            if create:
                db.add(ChatSessionRow(id=session_id, principal=principal, title=question[:200]))
                db.flush()
            session = db.get(ChatSessionRow, session_id)
            if session is None:
                raise NotFoundError(
                    f"no session {session_id!r}", code="session_not_found", field="session_id"
                )
            db.add(MessageRow(session_id=session_id, role="user", content=question))
            db.add(
                MessageRow(
                    session_id=session_id,
                    role="assistant",
                    content=answer,
                    cited_chunk_ids=cited_chunk_ids,
                    references=references,
                    meta=meta,
                )
            )
            session.updated_at = utcnow()
            if not session.title:
                session.title = question[:200]
            db.flush()
            count = db.scalar(
                select(func.count()).select_from(MessageRow).where(MessageRow.session_id == session_id)
            )
            excess = int(count or 0) - self.max_messages
            if excess > 0:
                # Keep turns whole: drop an even number of the oldest messages.
                excess += excess % 2
                oldest = (
                    select(MessageRow.id)
                    .where(MessageRow.session_id == session_id)
                    .order_by(MessageRow.id)
                    .limit(excess)
                )
                db.execute(delete(MessageRow).where(MessageRow.id.in_(oldest)))

    def rename(self, session_id: str, title: str) -> ChatSessionRow:
        """Give a conversation a title of its own (at most 200 characters are kept)."""
        with self._sessions.begin() as db:
            row = db.get(ChatSessionRow, session_id)
            if row is None:
                raise NotFoundError(
                    f"no session {session_id!r}", code="session_not_found", field="session_id"
                )
            row.title = title[:200]
        return row

    def delete(self, session_id: str) -> None:
        with self._sessions.begin() as db:
            row = db.get(ChatSessionRow, session_id)
            if row is None:
                raise NotFoundError(
                    f"no session {session_id!r}", code="session_not_found", field="session_id"
                )
            db.execute(delete(MessageRow).where(MessageRow.session_id == session_id))
            db.delete(row)
