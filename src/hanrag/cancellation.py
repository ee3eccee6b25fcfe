"""Cooperative cancellation of work that runs in threads.

asyncio cancels coroutines, not threads: work handed to a thread
(``asyncio.to_thread``) would keep running — embedding, searching, writing — after
the request it serves has been answered with a timeout. A request's deadline is a
:class:`CancelToken` in a context variable; ``asyncio.to_thread`` copies the context
into the thread, so long work calls :func:`raise_if_cancelled` between its stages
and stops before starting the next one (never half-way through a write).

Outside a :func:`cancel_scope` (the CLI, jobs, tests) the checks do nothing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from hanrag.errors import RequestTimeoutError, WorkCancelled

T = TypeVar("T")


class CancelToken:
    """Set once, when the work's caller gives up; read from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


_current: ContextVar[CancelToken | None] = ContextVar("hanrag_cancel_token", default=None)


def current_token() -> CancelToken | None:
    return _current.get()


def raise_if_cancelled() -> None:
    """Raise :class:`~hanrag.errors.WorkCancelled` when the current work was given up."""
    token = _current.get()
    if token is not None and token.cancelled:
        raise WorkCancelled(token.reason or "the request was given up")


@contextmanager
def cancel_scope() -> Iterator[CancelToken]:
    """A token for the work started inside the block (threads started there see it)."""
    token = CancelToken()
    reset = _current.set(token)
    try:
        yield token
    finally:
        _current.reset(reset)


async def within_deadline(work: Awaitable[T], seconds: float) -> T:
    """``work`` within ``seconds``, or :class:`~hanrag.errors.RequestTimeoutError`.

    When the deadline passes (or the awaiting caller goes away) the work is cancelled:
    its coroutine at once, and work it handed to threads at its next
    :func:`raise_if_cancelled` check (``asyncio.to_thread`` copies the context). One
    deadline for every entry point: the HTTP API and the MCP server.
    """
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
