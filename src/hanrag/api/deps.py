"""Request-scoped helpers shared by the routers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from hanrag.api import metrics
from hanrag.auth.access import Caller, caller_of
from hanrag.cancellation import cancel_scope
from hanrag.domain import AnswerEvent, ErrorEvent
from hanrag.engine import Engine
from hanrag.errors import RequestTimeoutError

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


def caller_principals(request: Request) -> list[str] | None:
    """The principals whose documents the caller may read (None: no restriction).

    Set on ``request.state`` by the authentication layer; without one (auth mode
    ``none``, the embedded default) nothing is restricted.
    """
    return getattr(request.state, "principals", None)


def caller_name(request: Request) -> str | None:
    return getattr(request.state, "principal", None)


async def with_timeout(request: Request, work: Awaitable[T]) -> T:
    """``work`` within ``api.request_timeout_s``, or 504 ``timeout``.

    On timeout (or when the client goes away) the work is cancelled: its coroutine at
    once, and work it handed to threads at its next :func:`raise_if_cancelled` check —
    such threads see this request's token (``asyncio.to_thread`` copies the context).
    """
    seconds = request.app.state.settings.api.request_timeout_s
    finished = False
    with cancel_scope() as token:
        try:
            async with asyncio.timeout(seconds) as deadline:
                result = await work
            finished = True
            return result
        except TimeoutError as exc:
            if not deadline.expired():
                raise  # a timeout of the work itself, not of this request
            raise RequestTimeoutError(f"the request took longer than {seconds:g} s") from exc
        finally:
            if not finished:
                token.cancel(f"the request was given up (timeout {seconds:g} s or client gone)")


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
