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

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from hanrag.errors import WorkCancelled


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
