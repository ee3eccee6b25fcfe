"""Native API: ask (JSON or SSE), search, model status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from hanrag.answer.engine import AskOptions
from hanrag.api import metrics
from hanrag.api.deps import (
    CallerDep,
    current_caller,
    get_engine,
    observe_done,
    primed,
    sse,
    tracked_stream,
    with_timeout,
)
from hanrag.api.images_input import question_images
from hanrag.api.problems import stream_error
from hanrag.api.schemas import AskIn, AskOut, SearchIn, SearchOut
from hanrag.domain import AnswerEvent, AnswerResult, DoneEvent, ErrorEvent, fold_answer
from hanrag.llm.base import ImageInput

router = APIRouter(tags=["native"])

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _events(request: Request, body: AskIn, images: list[ImageInput]) -> AsyncIterator[AnswerEvent]:
    options = AskOptions(rag=body.rag, k=body.k, images=images, mode=body.mode, candidates=body.candidates)
    return get_engine(request).ask(
        body.question,
        caller=current_caller(request),
        session_id=body.session_id,
        filters=body.filters.to_filters() if body.filters else None,
        options=options,
    )


def _observe(event: AnswerEvent) -> None:
    if isinstance(event, DoneEvent):
        observe_done(event.data)
    elif isinstance(event, ErrorEvent):
        metrics.ANSWER_ERRORS.labels(event.code).inc()


async def _sse_body(request: Request, events: AsyncIterator[AnswerEvent]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            _observe(event)
            yield sse(event.type, event.data)
    except Exception as exc:
        # The response has started: what went wrong (a full disk while storing the turn...)
        # is the stream's last event, not a cut connection.
        error = stream_error(request, exc)
        metrics.ANSWER_ERRORS.labels(error.code).inc()
        yield sse("error", {"code": error.code, "message": error.message})


@router.post(
    "/ask",
    response_model=AskOut,
    summary="Answer a question with cited sources",
    description="JSON result, or Server-Sent Events (`event: references|delta|done|error`) when `stream` "
    "is true or the client sends `Accept: text/event-stream`.",
    responses={200: {"content": {"text/event-stream": {}}}, 400: {"description": "bad input"}},
)
async def ask(body: AskIn, request: Request) -> Any:
    wants_stream = body.stream or "text/event-stream" in request.headers.get("accept", "")
    # Checked (and fetched, where allowed) before the answer starts: a bad image is a 400.
    settings = request.app.state.settings.images
    images = await question_images(body.images, engine=get_engine(request), settings=settings)
    if wants_stream:
        # Up to the first event (session, planning, retrieval) within the request timeout;
        # the stream itself is bounded by the generator's timeouts.
        events = await with_timeout(request, primed(_events(request, body, images)))
        return StreamingResponse(
            tracked_stream(_sse_body(request, events)), media_type="text/event-stream", headers=_SSE_HEADERS
        )

    async def answer() -> AnswerResult:
        return await fold_answer(await primed(_events(request, body, images)), on_event=_observe)

    result = await with_timeout(request, answer())
    out = AskOut.model_validate({**result.as_dict(), "references": result.references})
    # "table" only on the table route and "ensemble" only in ensemble mode, as in the events.
    absent = {name for name in ("table", "ensemble") if getattr(out, name) is None}
    return JSONResponse(out.model_dump(mode="json", exclude=absent or None))


@router.post(
    "/search", response_model=SearchOut, summary="Hybrid search (same hits as `hanrag search --json`)"
)
async def search(body: SearchIn, request: Request, caller: CallerDep) -> Any:
    engine = get_engine(request)
    filters = body.filters.to_filters() if body.filters else None
    result = await with_timeout(
        request,
        asyncio.to_thread(
            engine.search, body.query, caller=caller, k=body.k, filters=filters, fusion=body.fusion
        ),
    )
    # Exactly the object `hanrag search --json` prints (the model above documents it).
    return JSONResponse(result.as_dict())
