"""The earlier in-house service's protocol, field for field (see LEGACY_API.md).

Existing chat front ends and the Spring backend switch over unchanged: the same
paths, envelope, Korean labels and timestamp format. These routes answer in the
legacy shapes (not problem+json), because that is what those clients parse.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hanrag.answer.engine import AskOptions
from hanrag.api.auth import identity_of
from hanrag.api.deps import (
    current_caller,
    get_engine,
    observe_done,
    tracked_stream,
    with_timeout,
)
from hanrag.api.legacy_format import answer_item, envelope, error_format, now_text, retrieval_item
from hanrag.api.problems import stream_error
from hanrag.api.schemas import FlexibleDateTime
from hanrag.auth.access import Caller
from hanrag.domain import (
    AnswerEvent,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    IncompleteAnswerError,
    ReferencesEvent,
    fold_answer,
)
from hanrag.errors import HanragError, RequestTimeoutError

log = logging.getLogger("hanrag.legacy")
router = APIRouter(tags=["legacy"])

PUSH_RETRIES = 4


class LegacyQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    qry_id: str | None = None
    user_id: str | None = None
    page_id: str | None = None
    qry_contents: str = Field(..., min_length=1)
    qry_time: FlexibleDateTime | str | None = None
    rag: bool = True
    # Accepted for compatibility; images are not analysed by this service.
    image_data: str | None = None


def _legacy_error(message: str, status: int, qry_id: str | None) -> JSONResponse:
    return JSONResponse(error_format(message, status, qry_id), status_code=status)


async def _parse(request: Request) -> LegacyQuery | JSONResponse:
    try:
        raw = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _legacy_error("잘못된 요청 형식입니다 (JSON이 아닙니다).", 400, None)
    qry_id = raw.get("qry_id") if isinstance(raw, dict) else None
    try:
        return LegacyQuery.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) for err in exc.errors())
        return _legacy_error(f"잘못된 요청입니다: {fields}", 400, qry_id if isinstance(qry_id, str) else None)


@dataclass(frozen=True, slots=True)
class _Acting:
    """Who a legacy request acts for, and the stored conversation of its page."""

    caller: Caller
    room: str


def _acting_identity(request: Request, query: LegacyQuery, page_id: str) -> _Acting:
    """A trusted service key (``can_delegate``) acts for the end user named in ``user_id``,
    within the key's own principals (see :meth:`AuthService.act_for`), and each delegated
    request is audited; anyone else acts as themselves, whatever ``user_id`` says. Rooms
    are named in the authenticated caller's namespace (the service's, when delegating)."""
    engine = get_engine(request)
    authenticated = current_caller(request)
    room = engine.room_id(page_id, caller=authenticated)
    identity = identity_of(request)
    if identity.can_delegate and query.user_id:
        delegated = engine.auth.act_for(identity, query.user_id)
        engine.audit.record(
            identity.username,
            "delegate",
            target=f"user:{delegated.username}",
            detail={"api_key_id": identity.api_key_id, "route": request.url.path},
        )
        return _Acting(Caller.of(delegated.username, delegated.principals, delegated.role), room)
    return _Acting(authenticated, room)


async def _parse_and_act(request: Request) -> tuple[LegacyQuery, _Acting] | JSONResponse:
    """The request body and who it acts for, both settled before any response starts (a
    stream that has begun cannot turn into an error object); else the legacy error."""
    query = await _parse(request)
    if isinstance(query, JSONResponse):
        return query
    try:
        acting = await asyncio.to_thread(_acting_identity, request, query, query.page_id or uuid.uuid4().hex)
    except HanragError as exc:
        return _legacy_error(exc.message, exc.http_status, query.qry_id)
    return query, acting


def _readable_messages(request: Request, page_id: str) -> list[Any]:
    """The page's messages in the caller's namespace (none when there is no such room)."""
    return get_engine(request).room_messages(page_id, caller=current_caller(request))


def _events(query: LegacyQuery, request: Request, acting: _Acting) -> AsyncIterator[AnswerEvent]:
    return get_engine(request).ask(
        query.qry_contents,
        caller=acting.caller,
        session_id=acting.room,
        options=AskOptions(rag=query.rag, create_missing_session=True),
    )


def _label(request: Request) -> str:
    return str(request.app.state.settings.api.legacy_corpus_label)


@router.post("/query", summary="Legacy: non-streaming answer")
async def legacy_query(request: Request) -> Any:
    parsed = await _parse_and_act(request)
    if isinstance(parsed, JSONResponse):
        return parsed
    query, acting = parsed

    async def answer() -> JSONResponse:
        failed: list[ErrorEvent] = []

        def observe(event: AnswerEvent) -> None:
            if isinstance(event, ErrorEvent):
                failed.append(event)
            elif isinstance(event, DoneEvent):
                observe_done(event.data)

        try:
            result = await fold_answer(_events(query, request, acting), on_event=observe)
        except IncompleteAnswerError:
            return _legacy_error("답변을 만들지 못했습니다.", 500, query.qry_id)
        except HanragError as exc:
            if not failed:
                raise  # not the answer's error event: answered by the app's handlers, as before
            return _legacy_error(exc.message, min(exc.http_status, 500), query.qry_id)
        data_list = [retrieval_item(_label(request), result.references)] if result.references else []
        data_list.append(answer_item(result.answer))
        return JSONResponse(envelope(query.qry_id, data_list))

    try:
        return await with_timeout(request, answer())
    except RequestTimeoutError as exc:  # the answer was cancelled; 504 in the legacy object
        return _legacy_error(exc.message, exc.http_status, query.qry_id)


def _reference_event(label: str, references: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "reference",
        "status_code": 200,
        "result": "OK",
        "detail": "Reference data",
        "evt_time": datetime.now().astimezone().isoformat(),
        "data_list": [retrieval_item(label, references)],
    }


@router.post("/query_stream", summary="Legacy: Server-Sent Events, one `data:` line per event")
async def legacy_query_stream(request: Request) -> Any:
    parsed = await _parse_and_act(request)
    if isinstance(parsed, JSONResponse):
        return parsed
    query, acting = parsed
    label = _label(request)

    def line(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for event in _events(query, request, acting):
                if isinstance(event, ReferencesEvent) and event.references:
                    yield line(_reference_event(label, event.references))
                elif isinstance(event, DeltaEvent):
                    yield line({"type": "answer", "answer": event.text})
                elif isinstance(event, ErrorEvent):
                    yield line({"type": "error", "message": event.message})
                    return
                elif isinstance(event, DoneEvent):
                    observe_done(event.data)
        except Exception as exc:  # e.g. a full disk while storing the turn: said, not cut off
            yield line({"type": "error", "message": stream_error(request, exc).message})

    return StreamingResponse(tracked_stream(stream()), media_type="text/event-stream")


async def _post_with_retry(
    client: httpx.AsyncClient, url: str, payload: dict[str, Any], qry_id: str | None
) -> bool:
    delay = 0.5
    for attempt in range(1, PUSH_RETRIES + 1):
        try:
            response = await client.post(url, json=payload)
            if response.status_code < 500 and response.status_code != 429:
                if response.status_code >= 400:
                    log.warning("push rejected", extra={"qry_id": qry_id, "status": response.status_code})
                return response.status_code < 400
            log.warning(
                "push failed", extra={"qry_id": qry_id, "status": response.status_code, "attempt": attempt}
            )
        except httpx.HTTPError as exc:
            log.warning(
                "push failed", extra={"qry_id": qry_id, "error_type": type(exc).__name__, "attempt": attempt}
            )
        if attempt < PUSH_RETRIES:
            await asyncio.sleep(delay)
            delay *= 2
    return False


async def _push(
    events: AsyncIterator[AnswerEvent], url: str, qry_id: str | None, label: str, batch_seconds: float
) -> None:
    """Reference at once, then answer text at most once per ``batch_seconds``, last batch marked E."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        buffer: list[str] = []
        batch = 0
        last_sent = time.monotonic()
        async for event in events:
            if isinstance(event, ReferencesEvent):
                reference = _reference_event(label, event.references)
                reference.update(
                    {"qry_id": qry_id, "continue": "C", "rsp_time": now_text(), "rsp_tit": "Reference"}
                )
                await _post_with_retry(client, url, reference, qry_id)
            elif isinstance(event, DeltaEvent):
                buffer.append(event.text)
                if time.monotonic() - last_sent >= batch_seconds:
                    batch += 1
                    await _post_with_retry(
                        client, url, envelope(qry_id, [answer_item("".join(buffer), batch)]), qry_id
                    )
                    buffer.clear()
                    last_sent = time.monotonic()
            elif isinstance(event, ErrorEvent):
                await _post_with_retry(client, url, error_format(event.message, 500, qry_id), qry_id)
                return
            elif isinstance(event, DoneEvent):
                observe_done(event.data)
                batch += 1
                final = envelope(qry_id, [answer_item("".join(buffer), batch)], last=True)
                await _post_with_retry(client, url, final, qry_id)


@router.post("/queryToSLLM", summary="Legacy: push mode to the configured response URL")
async def legacy_query_push(request: Request) -> Any:
    settings = request.app.state.settings
    url = settings.api.legacy_response_url
    parsed = await _parse_and_act(request)
    if isinstance(parsed, JSONResponse):
        return parsed
    query, acting = parsed
    if not url:
        return _legacy_error(
            "응답을 보낼 주소(legacy_response_url)가 설정되지 않았습니다.", 500, query.qry_id
        )
    task = asyncio.create_task(
        _push(
            _events(query, request, acting),
            url,
            query.qry_id,
            _label(request),
            settings.api.legacy_batch_seconds,
        )
    )
    # Keep a reference until it finishes (a bare task may be garbage-collected mid-run).
    tasks: set[asyncio.Task[None]] = request.app.state.__dict__.setdefault("legacy_tasks", set())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return JSONResponse(error_format("수신양호", 200, query.qry_id))


@router.get("/history", summary="Legacy: conversation history of a page")
async def legacy_history(request: Request) -> Any:
    page_id = request.query_params.get("request_id")
    if not page_id:
        return _legacy_error("request_id가 필요합니다.", 400, None)
    raw_index = request.query_params.get("last_index")
    try:
        last_index = int(raw_index) if raw_index not in (None, "") else None
    except ValueError:
        return _legacy_error("last_index는 정수여야 합니다.", 400, None)
    rows = await asyncio.to_thread(_readable_messages, request, page_id)
    history: list[dict[str, Any]] = []
    for row in rows:
        if row.role == "user":
            history.append({"role": "human", "content": row.content})
        else:
            history.append(
                {"role": "ai", "content": row.content, "references": list(row.cited_chunk_ids or [])}
            )
    if last_index is not None:
        history = history[last_index + 1 :]
    return {"history": history}


@router.get("/reference", summary="Legacy: the references of one AI message")
async def legacy_reference(request: Request) -> Any:
    page_id = request.query_params.get("request_id")
    if not page_id:
        return _legacy_error("request_id가 필요합니다.", 400, None)
    try:
        index = int(request.query_params.get("msg_index", ""))
    except ValueError:
        return JSONResponse({"error": "유효하지 않은 메시지 인덱스"}, status_code=400)
    rows = await asyncio.to_thread(_readable_messages, request, page_id)
    if not 0 <= index < len(rows):
        return JSONResponse({"error": "유효하지 않은 메시지 인덱스"}, status_code=400)
    row = rows[index]
    if row.role != "assistant":
        return JSONResponse({"error": "해당 메시지는 AI 응답이 아닙니다."}, status_code=400)
    return {
        "references": [
            {
                "file_name": ref.get("file_name") or Path(ref.get("source", "")).name,
                "title": ref.get("title", ""),
                "text": ref.get("text", ""),
                "date": ref.get("date", ""),
            }
            for ref in (row.references or [])
        ]
    }
