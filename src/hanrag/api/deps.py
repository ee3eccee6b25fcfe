"""Request-scoped helpers shared by the routers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from hanrag.api import metrics
from hanrag.auth.access import Caller, caller_of
from hanrag.cancellation import within_deadline
from hanrag.domain import AnswerEvent, ErrorEvent
from hanrag.engine import Engine

T = TypeVar("T")


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def current_caller(request: Request) -> Caller:
    """The caller of a request, as every engine read takes it: from the identity the
    authentication layer put on the request (auth mode ``none``: the implicit single
    user, who reads everything)."""
    return caller_of(getattr(request.state, "identity", None))


# The caller as a typed route dependency: ``caller: CallerDep``.
CallerDep = Annotated[Caller, Depends(current_caller)]


async def with_timeout(request: Request, work: Awaitable[T]) -> T:
    """``work`` within ``api.request_timeout_s``, or 504 ``timeout``; the work stops (see
    :func:`hanrag.cancellation.within_deadline`)."""
    return await within_deadline(work, request.app.state.settings.api.request_timeout_s)


async def primed(events: AsyncIterator[AnswerEvent]) -> AsyncIterator[AnswerEvent]:
    """Pull the first event before any response starts, so bad input still gets a 4xx
    problem+json instead of a 200 stream that carries an error."""
    first = await anext(events)
    if isinstance(first, ErrorEvent):
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
        raise first.exception

    async def chained() -> AsyncIterator[AnswerEvent]:
        yield first
        async for event in events:
            yield event

    return chained()


def observe_done(data: dict[str, Any]) -> None:
    timings = data.get("timings") or {}
    if "time_to_first_token_ms" in timings:
        metrics.TIME_TO_FIRST_TOKEN.observe(timings["time_to_first_token_ms"] / 1000)
    if "retrieval_ms" in timings:
        metrics.RETRIEVAL_SECONDS.observe(timings["retrieval_ms"] / 1000)
    generation = timings.get("generation_ms", 0) / 1000
    usage = data.get("usage") or {}
    pieces = usage.get("completion_tokens") or len(data.get("answer", "").split())
    if generation > 0 and pieces:
        metrics.GENERATED_TOKENS_PER_SECOND.observe(pieces / generation)


async def tracked_stream(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Counts the stream as active while it runs; closing it (client gone) cancels generation."""
    metrics.ACTIVE_STREAMS.inc()
    try:
        async for chunk in stream:
            yield chunk
    finally:
        metrics.ACTIVE_STREAMS.dec()
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
