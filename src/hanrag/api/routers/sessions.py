"""Conversations: list, messages, delete."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from hanrag.api.deps import caller_name, get_engine
from hanrag.api.schemas import MessageOut, SessionOut
from hanrag.errors import NotFoundError
from hanrag.store.models import ChatSessionRow

# Larger offsets overflow the database's 64-bit integers (that was a 500); no listing is that long.
MAX_OFFSET = 1_000_000_000

router = APIRouter(tags=["sessions"])


def _owned(request: Request, session_id: str) -> ChatSessionRow:
    row = get_engine(request).sessions.get(session_id)
    caller = caller_name(request)
    if caller is not None and row.principal not in (None, caller):
        raise NotFoundError(f"no session {session_id!r}", code="session_not_found", field="session_id")
    return row


@router.get("/sessions", response_model=list[SessionOut], summary="Recent conversations")
async def list_sessions(
    request: Request,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Any:
    engine = get_engine(request)
    rows = await asyncio.to_thread(
        engine.sessions.list_sessions, principal=caller_name(request), offset=offset, limit=limit
    )
    return [r.as_dict() for r in rows]


@router.get(
    "/sessions/{session_id}/messages", response_model=list[MessageOut], summary="Messages of a conversation"
)
async def session_messages(session_id: str, request: Request) -> Any:
    await asyncio.to_thread(_owned, request, session_id)
    rows = await asyncio.to_thread(get_engine(request).sessions.messages, session_id)
    return [r.as_dict() for r in rows]


@router.delete("/sessions/{session_id}", summary="Delete a conversation")
async def delete_session(session_id: str, request: Request) -> dict[str, Any]:
    await asyncio.to_thread(_owned, request, session_id)
    await asyncio.to_thread(get_engine(request).sessions.delete, session_id)
    return {"session_id": session_id, "deleted": True}
