"""Feedback on answers (issue P12): anyone rates the answers of their own conversations;
administrators read all of it.

* ``POST /api/v1/feedback`` ``{"session_id", "message_index", "rating": "up"|"down",
  "reason"?: "wrong_source"|"outdated"|"incomplete"|"other"|null, "comment"?: str (<= 2000)}``
  -> ``201 {"feedback_id"}``. ``message_index`` is the answer's 0-based position in
  ``GET /api/v1/sessions/{id}/messages``; a message that is not an answer is ``400
  feedback_not_an_answer``; someone else's conversation is ``404 session_not_found``, like a
  missing one. One feedback per caller and answer: posting again replaces it (same id).
* ``GET /api/v1/feedback?rating=up|down&since=ISO&limit=&offset=`` (administrators) ->
  ``{"items": [{"feedback_id", "principal", "session_id", "message_index", "rating",
  "reason", "comment", "question", "answer", "citations": [{"chunk_id", "document_id",
  "title"}], "model", "timings", "created_at"}], "total", "offset", "limit"}``, newest first.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from hanrag.api import metrics
from hanrag.api.auth import require
from hanrag.api.deps import CallerDep, get_engine
from hanrag.auth.service import Identity

# Larger offsets overflow the database's 64-bit integers; no listing is that long.
MAX_OFFSET = 1_000_000_000

router = APIRouter(tags=["feedback"])


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(..., min_length=1, max_length=200)
    message_index: int = Field(
        ..., ge=0, le=1_000_000, description="0-based, as the messages route lists them."
    )
    rating: Literal["up", "down"]
    reason: Literal["wrong_source", "outdated", "incomplete", "other"] | None = None
    comment: str | None = Field(None, max_length=2000)


class FeedbackCreated(BaseModel):
    feedback_id: str


@router.post("/feedback", status_code=201, response_model=FeedbackCreated, summary="Rate an answer")
async def post_feedback(body: FeedbackIn, request: Request, caller: CallerDep) -> Any:
    row = await asyncio.to_thread(
        get_engine(request).feedback.record,
        body.session_id,
        body.message_index,
        body.rating,
        reason=body.reason,
        comment=body.comment,
        caller=caller,
    )
    metrics.FEEDBACK.labels(body.rating, body.reason or "none").inc()
    return {"feedback_id": row.id}


@router.get("/feedback", summary="Feedback on answers, newest first (administrators)")
async def list_feedback(
    request: Request,
    caller: CallerDep,
    _admin: Annotated[Identity, require("admin")],
    rating: Annotated[Literal["up", "down"] | None, Query()] = None,
    since: Annotated[datetime | None, Query()] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    rows, total = await asyncio.to_thread(
        get_engine(request).feedback.page,
        caller=caller,
        rating=rating,
        since=since,
        offset=offset,
        limit=limit,
    )
    return {"items": [row.as_dict() for row in rows], "total": total, "offset": offset, "limit": limit}
