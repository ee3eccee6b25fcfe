"""Conversations: list, messages, rename, delete."""

from __future__ import annotations

import asyncio
import unicodedata
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from hanrag.api.deps import CallerDep, get_engine
from hanrag.api.schemas import MessageOut, SessionOut
from hanrag.errors import InvalidInputError

# Larger offsets overflow the database's 64-bit integers (that was a 500); no listing is that long.
MAX_OFFSET = 1_000_000_000

router = APIRouter(tags=["sessions"])


@router.get("/sessions", response_model=list[SessionOut], summary="Recent conversations")
async def list_sessions(
    request: Request,
    caller: CallerDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Any:
    rows = await asyncio.to_thread(
        get_engine(request).list_sessions, caller=caller, offset=offset, limit=limit
    )
    return [r.as_dict() for r in rows]


@router.get(
    "/sessions/{session_id}/messages", response_model=list[MessageOut], summary="Messages of a conversation"
)
async def session_messages(session_id: str, request: Request, caller: CallerDep) -> Any:
    engine = get_engine(request)

    def messages() -> list[dict[str, Any]]:
        rows = engine.session_messages(session_id, caller=caller)
        return [
            {**r.as_dict(), "references": engine.readable_references(list(r.references or []), caller=caller)}
            for r in rows
        ]

    return await asyncio.to_thread(messages)


class SessionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(..., min_length=1, max_length=200)


@router.patch("/sessions/{session_id}", response_model=SessionOut, summary="Rename a conversation")
async def rename_session(session_id: str, body: SessionPatch, request: Request, caller: CallerDep) -> Any:
    """The caller's own conversation only; anyone else's is answered like a missing one (404)."""
    title = body.title.strip()
    if not title or any(unicodedata.category(ch) == "Cc" for ch in title):
        raise InvalidInputError(
            "the title is blank or holds control characters", code="invalid_title", field="title"
        )
    row = await asyncio.to_thread(get_engine(request).rename_session, session_id, title, caller=caller)
    return row.as_dict()


@router.delete("/sessions/{session_id}", summary="Delete a conversation")
async def delete_session(session_id: str, request: Request, caller: CallerDep) -> dict[str, Any]:
    await asyncio.to_thread(get_engine(request).delete_session, session_id, caller=caller)
    return {"session_id": session_id, "deleted": True}
