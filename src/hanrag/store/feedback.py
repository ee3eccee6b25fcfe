"""Feedback on answers (issue P12): one row per caller and rated answer, kept in the catalog.

The rows hold copies of what was rated (question, answer, citations, model, timings), so
they outlive the conversation; :mod:`hanrag.answer.feedback` decides who may write and
read them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ColumnElement

from hanrag.store.db import create_schema, session_factory
from hanrag.store.models import FeedbackRow, utcnow

# Rows read per round trip by :meth:`FeedbackStore.each`.
EXPORT_BATCH = 500


class FeedbackStore:
    def __init__(self, engine: Engine) -> None:
        create_schema(engine)
        self._sessions = session_factory(engine)

    def save(self, principal: str, session_id: str, message_id: int, **fields: Any) -> FeedbackRow:
        """The caller's feedback on one answer, replacing what they gave before (the row
        keeps its id; ``created_at`` becomes now). Two racing writes both end as one row."""
        for attempt in range(3):
            try:
                with self._sessions.begin() as db:
                    row = db.scalars(
                        select(FeedbackRow).where(
                            FeedbackRow.principal == principal,
                            FeedbackRow.session_id == session_id,
                            FeedbackRow.message_id == message_id,
                        )
                    ).first()
                    if row is None:
                        row = FeedbackRow(
                            id=uuid.uuid4().hex,
                            principal=principal,
                            session_id=session_id,
                            message_id=message_id,
                        )
                        db.add(row)
                    for key, value in fields.items():
                        setattr(row, key, value)
                    row.created_at = utcnow()
                return row
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _where(rating: str | None, since: datetime | None) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if rating:
            conditions.append(FeedbackRow.rating == rating)
        if since is not None:
            conditions.append(FeedbackRow.created_at >= since)
        return conditions

    def page(
        self,
        *,
        rating: str | None = None,
        since: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[FeedbackRow], int]:
        """The newest feedback first, and how much there is in all (with the same filters)."""
        with self._sessions() as db:
            rows = db.scalars(
                select(FeedbackRow)
                .where(*self._where(rating, since))
                .order_by(FeedbackRow.created_at.desc(), FeedbackRow.id)
                .offset(offset)
                .limit(limit)
            )
            total = db.scalar(
                select(func.count()).select_from(FeedbackRow).where(*self._where(rating, since))
            )
            return list(rows), int(total or 0)

    def each(self, *, rating: str | None = None, since: datetime | None = None) -> Iterator[FeedbackRow]:
        """Every row, oldest first, read in batches (for exports of any size)."""
        last: tuple[datetime, str] | None = None
        while True:
            with self._sessions() as db:
                query = select(FeedbackRow).where(*self._where(rating, since))
                if last is not None:
                    query = query.where(
                        (FeedbackRow.created_at > last[0])
                        | ((FeedbackRow.created_at == last[0]) & (FeedbackRow.id > last[1]))
                    )
                batch = list(
                    db.scalars(query.order_by(FeedbackRow.created_at, FeedbackRow.id).limit(EXPORT_BATCH))
                )
            yield from batch
            if len(batch) < EXPORT_BATCH:
                return
            last = (batch[-1].created_at, batch[-1].id)

    def rating_counts(self, since: datetime | None = None) -> dict[str, int]:
        """rating -> how many (since ``since``)."""
        with self._sessions() as db:
            query = (
                select(FeedbackRow.rating, func.count())
                .where(*self._where(None, since))
                .group_by(FeedbackRow.rating)
            )
            return {rating: int(n) for rating, n in db.execute(query)}
