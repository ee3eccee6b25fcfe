"""Conversations: list, messages, delete."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from hanrag.api.deps import CallerDep, get_engine
from hanrag.api.schemas import MessageOut, SessionOut

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
    rows = await asyncio.to_thread(get_engine(request).session_messages, session_id, caller=caller)
    return [r.as_dict() for r in rows]


@router.delete("/sessions/{session_id}", summary="Delete a conversation")
async def delete_session(session_id: str, request: Request, caller: CallerDep) -> dict[str, Any]:
    await asyncio.to_thread(get_engine(request).delete_session, session_id, caller=caller)
    return {"session_id": session_id, "deleted": True}
