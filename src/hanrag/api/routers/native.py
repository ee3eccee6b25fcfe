"""Native API: ask (JSON or SSE), search, model status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from hanrag.answer.engine import AnswerEvent, AskOptions
from hanrag.api import metrics
from hanrag.api.deps import (
    caller_name,
    caller_principals,
    get_engine,
    observe_done,
    primed,
    sse,
    tracked_stream,
    with_timeout,
)
from hanrag.api.problems import stream_error
from hanrag.api.schemas import AskIn, AskOut, SearchIn, SearchOut
from hanrag.errors import HanragError

router = APIRouter(tags=["native"])

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _events(request: Request, body: AskIn) -> AsyncIterator[AnswerEvent]:
    principals = caller_principals(request)
    filters = body.filters.to_filters(principals) if body.filters else None
    return get_engine(request).ask(
        body.question,
        session_id=body.session_id,
        principal=caller_name(request),
        principals=principals,
        filters=filters,
        options=AskOptions(rag=body.rag, k=body.k),
    )


async def _sse_body(request: Request, events: AsyncIterator[AnswerEvent]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            if event.type == "done":
                observe_done(event.data)
            elif event.type == "error":
                metrics.ANSWER_ERRORS.labels(event.data["code"]).inc()
            yield sse(event.type, event.data)
    except Exception as exc:
        # The response has started: what went wrong (a full disk while storing the turn...)
        # is the stream's last event, not a cut connection.
        error = stream_error(request, exc)
        metrics.ANSWER_ERRORS.labels(error.code).inc()
        yield sse("error", {"code": error.code, "message": error.message})


async def _collect(events: AsyncIterator[AnswerEvent]) -> dict[str, Any]:
    references: list[dict[str, Any]] = []
    async for event in events:
        if event.type == "references":
            references = event.data["references"]
        elif event.type == "error":
            metrics.ANSWER_ERRORS.labels(event.data["code"]).inc()
            raise event.exception or HanragError(event.data["message"], code=event.data["code"])
        elif event.type == "done":
            observe_done(event.data)
            return {**event.data, "references": references}
    raise HanragError("the answer stream ended without a result")


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
    if wants_stream:
        # Up to the first event (session, planning, retrieval) within the request timeout;
        # the stream itself is bounded by the generator's timeouts.
        events = await with_timeout(request, primed(_events(request, body)))
        return StreamingResponse(
            tracked_stream(_sse_body(request, events)), media_type="text/event-stream", headers=_SSE_HEADERS
        )

    async def answer() -> dict[str, Any]:
        return await _collect(await primed(_events(request, body)))

    result = await with_timeout(request, answer())
    return JSONResponse(AskOut.model_validate(result).model_dump(mode="json"))


@router.post(
    "/search", response_model=SearchOut, summary="Hybrid search (same hits as `hanrag search --json`)"
)
async def search(body: SearchIn, request: Request) -> Any:
    engine = get_engine(request)
    principals = caller_principals(request)
    filters = body.filters.to_filters(principals) if body.filters else None
    if filters is None and principals is not None:
        from hanrag.domain import SearchFilters

        filters = SearchFilters(principals=principals)
    result = await with_timeout(
        request, asyncio.to_thread(engine.search, body.query, k=body.k, filters=filters, fusion=body.fusion)
    )
    # Exactly the object `hanrag search --json` prints (the model above documents it).
    return JSONResponse(result.as_dict())


@router.get("/models/status", summary="Embedding model and generator status")
async def models_status(request: Request) -> dict[str, Any]:
    engine = get_engine(request)
    return {
        "embedder": engine.shared_embedder.status().as_dict(),
        "generator": engine.generator.status(),
    }
