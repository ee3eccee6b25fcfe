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
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from hanrag.answer.engine import AskOptions
from hanrag.api.auth import identity_of
from hanrag.api.deps import (
    current_caller,
    get_engine,
    observe_done,
    tracked_stream,
    with_timeout,
)
from hanrag.api.images_input import image_values, question_images, vision_available
from hanrag.api.legacy_format import (
    answer_item,
    chart_item,
    envelope,
    now_text,
    retrieval_item,
    table_retrieval_item,
)
from hanrag.api.problems import legacy_error, stream_error
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
from hanrag.llm.base import ImageInput

log = logging.getLogger("hanrag.legacy")
router = APIRouter(tags=["legacy"])

PUSH_RETRIES = 4


def _as_text(value: Any) -> Any:
    """Numbers where strings are expected are taken as their text (a Java ``Long`` id)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


LenientText = Annotated[str | None, BeforeValidator(_as_text)]
NO_VISION = (
    "이미지 분석 모델(비전 모델)이 설정되어 있지 않아 이미지(image_data)가 포함된 질문에는 "
    "답할 수 없습니다. 이미지 없이 질문해 주세요."
)


class LegacyQuery(BaseModel):
    """Any JSON object: unknown fields are ignored, ``null`` takes the default, numbers
    are taken as text; only an empty question (or a value of the wrong kind) is refused."""

    model_config = ConfigDict(extra="ignore")

    qry_id: LenientText = None
    user_id: LenientText = None
    page_id: LenientText = None
    qry_contents: LenientText = None
    qry_time: FlexibleDateTime | str | None = None
    auth_class: Any = None  # accepted, ignored
    # `rag` (/query_stream, /queryToSLLM) or `use_rag` (/query), on every route: false
    # answers without retrieval; true, null or absent retrieve.
    rag: bool | None = None
    use_rag: bool | None = None
    # base64, a data: URL or an http(s) URL, or a list of them (hanrag.api.images_input).
    image_data: Any = None

    @property
    def retrieval(self) -> bool:
        return self.rag is not False and self.use_rag is not False

    @property
    def question(self) -> str:
        return self.qry_contents or ""


def _legacy_error(request: Request, message: str, status: int, qry_id: str | None) -> JSONResponse:
    return legacy_error(message, status, qry_id, request=request)


async def _parse(request: Request) -> LegacyQuery | JSONResponse:
    try:
        raw = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _legacy_error(request, "잘못된 요청 형식입니다 (JSON이 아닙니다).", 400, None)
    if not isinstance(raw, dict):
        return _legacy_error(request, "잘못된 요청 형식입니다 (JSON 객체가 아닙니다).", 400, None)
    qry_id = _as_text(raw.get("qry_id"))
    qry_id = qry_id if isinstance(qry_id, str) else None
    try:
        query = LegacyQuery.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) for err in exc.errors())
        return _legacy_error(request, f"잘못된 요청입니다: {fields}", 400, qry_id)
    if not query.qry_contents:
        return _legacy_error(request, "질문(qry_contents)이 비어 있습니다.", 400, qry_id)
    if image_values(query.image_data) and not vision_available(get_engine(request)):
        return _legacy_error(request, NO_VISION, 400, qry_id)
    return query


@dataclass(frozen=True, slots=True)
class _Acting:
    """Who a legacy request acts for, the stored conversation of its page, and the
    (checked) images it asks about."""

    caller: Caller
    room: str
    images: tuple[ImageInput, ...] = ()


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
        images = await question_images(
            image_values(query.image_data),
            engine=get_engine(request),
            settings=request.app.state.settings.images,
        )
    except HanragError as exc:
        return _legacy_error(request, exc.message, exc.http_status, query.qry_id)
    return query, replace(acting, images=tuple(images))


def _readable_messages(request: Request, page_id: str) -> list[Any]:
    """The page's messages in the caller's namespace (none when there is no such room)."""
    return get_engine(request).room_messages(page_id, caller=current_caller(request))


def _events(query: LegacyQuery, request: Request, acting: _Acting) -> AsyncIterator[AnswerEvent]:
    """The answer's events; the room's recent messages are the memory on every route."""
    return get_engine(request).ask(
        query.question,
        caller=acting.caller,
        session_id=acting.room,
        options=AskOptions(rag=query.retrieval, create_missing_session=True, images=list(acting.images)),
    )


async def _until_idle(events: AsyncIterator[AnswerEvent], idle_s: float) -> AsyncIterator[AnswerEvent]:
    """``events``, ending with an error event when none comes for ``idle_s`` seconds (the
    answer is cancelled then: its generator is interrupted where it waits)."""
    iterator = aiter(events)
    while True:
        try:
            async with asyncio.timeout(idle_s):
                event = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            yield ErrorEvent(RequestTimeoutError(f"{idle_s:g}초 동안 답변이 오지 않아 중단했습니다."))
            return
        yield event


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
            return _legacy_error(request, "답변을 만들지 못했습니다.", 500, query.qry_id)
        except HanragError as exc:
            if not failed:
                raise  # not the answer's error event: answered by the app's handlers, as before
            return _legacy_error(request, exc.message, min(exc.http_status, 500), query.qry_id)
        data_list = [_retrieval(_label(request), result.references, result.table)] if query.retrieval else []
        data_list.append(answer_item(result.answer, extra=_chart(result.table)))
        return JSONResponse(envelope(query.qry_id, data_list, last=True))

    try:
        return await with_timeout(request, answer())
    except RequestTimeoutError as exc:  # the answer was cancelled; 504 in the legacy object
        return _legacy_error(request, exc.message, exc.http_status, query.qry_id)


def _retrieval(label: str, references: list[dict[str, Any]], table: dict[str, Any] | None) -> dict[str, Any]:
    """The R item: the numbered passages, or on the table route the rows (TB)."""
    return retrieval_item(label, references) if table is None else table_retrieval_item(label, table)


def _chart(table: dict[str, Any] | None) -> list[dict[str, Any]]:
    chart = None if table is None else chart_item(table)
    return [] if chart is None else [chart]


def _reference_event(
    label: str, references: list[dict[str, Any]], table: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Sent also when nothing was found (an ``R`` item with an empty ``rsp_data``). On the
    table route the R item holds the rows (TB) and the chart (CT) follows it: a stream has
    no final answer item to carry it."""
    return {
        "type": "reference",
        "status_code": 200,
        "result": "OK",
        "detail": "Reference data",
        "evt_time": datetime.now().isoformat(),  # local, no offset: LocalDateTime.parse reads it
        "data_list": [_retrieval(label, references, table), *_chart(table)],
    }


@router.post("/query_stream", summary="Legacy: Server-Sent Events, one `data:` line per event")
async def legacy_query_stream(request: Request) -> Any:
    parsed = await _parse_and_act(request)
    if isinstance(parsed, JSONResponse):
        return parsed
    query, acting = parsed
    label = _label(request)
    idle_s = request.app.state.settings.api.legacy_idle_timeout_s

    def line(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for event in _until_idle(_events(query, request, acting), idle_s):
                if isinstance(event, ReferencesEvent):
                    if query.retrieval:
                        yield line(_reference_event(label, event.references, event.table))
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


@dataclass(frozen=True, slots=True)
class _PushTarget:
    url: str
    qry_id: str | None
    label: str
    batch_seconds: float
    idle_s: float
    retrieval: bool


async def _push(events: AsyncIterator[AnswerEvent], target: _PushTarget) -> None:
    """Reference at once, then answer text at most once per ``batch_seconds``; the last
    envelope is marked E, also when the answer fails (then it carries the error)."""
    qry_id = target.qry_id
    buffer: list[str] = []
    chart: list[dict[str, Any]] = []  # the table route's CT, on the last answer item
    batch = 0
    last_sent = time.monotonic()
    async with httpx.AsyncClient(timeout=10.0) as client:

        async def send_batch(text: str, *, last: bool = False, error: str | None = None) -> None:
            nonlocal batch, last_sent
            batch += 1
            payload = envelope(qry_id, [answer_item(text, batch, extra=chart if last else None)], last=last)
            if error is not None:
                payload.update({"status_code": 500, "result": error})
            await _post_with_retry(client, target.url, payload, qry_id)
            last_sent = time.monotonic()

        failure: str | None = None
        try:
            async for event in _until_idle(events, target.idle_s):
                if isinstance(event, ReferencesEvent):
                    chart = _chart(event.table)
                    if target.retrieval:
                        reference = _reference_event(target.label, event.references, event.table)
                        reference["data_list"] = reference["data_list"][:1]  # the CT ends the answer
                        reference.update(
                            {
                                "qry_id": qry_id,
                                "continue": "C",
                                "rsp_time": now_text(),
                                "rsp_tit": "Reference",
                            }
                        )
                        await _post_with_retry(client, target.url, reference, qry_id)
                elif isinstance(event, DeltaEvent):
                    buffer.append(event.text)
                    if time.monotonic() - last_sent >= target.batch_seconds:
                        await send_batch("".join(buffer))
                        buffer.clear()
                elif isinstance(event, ErrorEvent):
                    failure = event.message
                    break
                elif isinstance(event, DoneEvent):
                    observe_done(event.data)
                    await send_batch("".join(buffer), last=True)
                    return
            else:
                failure = "답변을 만들지 못했습니다."
        except Exception as exc:  # the receiver still gets its end ("E"), never silence
            log.error("push answer failed", exc_info=exc, extra={"qry_id": qry_id})
            failure = exc.message if isinstance(exc, HanragError) else "답변을 만드는 중 오류가 발생했습니다."
        if buffer:
            await send_batch("".join(buffer))
        chart = []  # a failed answer's last envelope carries the error only
        await send_batch(failure, last=True, error=failure)


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
            request, "응답을 보낼 주소(legacy_response_url)가 설정되지 않았습니다.", 500, query.qry_id
        )
    target = _PushTarget(
        url,
        query.qry_id,
        _label(request),
        settings.api.legacy_batch_seconds,
        settings.api.legacy_idle_timeout_s,
        query.retrieval,
    )
    task = asyncio.create_task(_push(_events(query, request, acting), target))
    # Keep a reference until it finishes (a bare task may be garbage-collected mid-run).
    tasks: set[asyncio.Task[None]] = request.app.state.__dict__.setdefault("legacy_tasks", set())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return legacy_error("수신양호", 200, query.qry_id, request=request)


@router.get("/history", summary="Legacy: conversation history of a page")
async def legacy_history(request: Request) -> Any:
    page_id = request.query_params.get("request_id")
    if not page_id:
        return _legacy_error(request, "request_id가 필요합니다.", 400, None)
    raw_index = request.query_params.get("last_index")
    try:
        last_index = int(raw_index) if raw_index not in (None, "") else None
    except ValueError:
        return _legacy_error(request, "last_index는 정수여야 합니다.", 400, None)
    rows = await asyncio.to_thread(_readable_messages, request, page_id)
    history: list[dict[str, Any]] = []
    for row in rows:
        if row.role == "user":
            history.append({"role": "human", "content": row.content})
        else:
            # Every chunk shown in the answer's reference event, in order (as /reference).
            shown = [ref.get("chunk_id", "") for ref in (row.references or [])]
            history.append({"role": "ai", "content": row.content, "references": shown})
    if last_index is not None:
        history = history[last_index + 1 :]
    return {"history": history}


def _date_time(value: str) -> str:
    """``YYYY-MM-DD HH:MM:SS``, as the earlier service wrote its dates."""
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S") if value else ""
    except ValueError:
        return value


@router.get("/reference", summary="Legacy: the references of one AI message")
async def legacy_reference(request: Request) -> Any:
    page_id = request.query_params.get("request_id")
    raw_index = request.query_params.get("msg_index")
    if not page_id or raw_index in (None, ""):
        return _legacy_error(request, "request_id와 msg_index가 필요합니다.", 400, None)
    try:
        index = int(raw_index)
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
                "date": _date_time(str(ref.get("date") or "")),
            }
            for ref in (row.references or [])
        ]
    }
