"""Errors with stable codes.

Every error a user, operator or integrator can see carries a ``code`` that never
changes between releases (HTTP maps it to problem+json, the CLI prints it on one
line), plus a human message that names the offending file or field.
"""

from __future__ import annotations

import re
from typing import Any


class HanragError(Exception):
    """Base class: ``code`` is stable, ``message`` is for people."""

    code: str = "internal_error"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class InvalidInputError(HanragError):
    """The caller sent something we cannot use (empty query, unknown filter field...)."""

    code = "invalid_input"
    http_status = 400


class NotFoundError(HanragError):
    code = "not_found"
    http_status = 404


class ConfigError(HanragError):
    code = "config_error"
    http_status = 500


class ParseError(HanragError):
    """A single file could not be turned into text.

    Codes: ``unsupported_format``, ``corrupt_file``, ``encrypted_file``,
    ``empty_file``, ``file_too_large``, ``encoding_error``, ``no_text``.
    """

    code = "parse_error"
    http_status = 422


class BackendError(HanragError):
    """A dependency (embedding server, index, database) failed."""

    code = "backend_error"
    http_status = 503


class AuthError(HanragError):
    """The caller could not be authenticated (missing, wrong, expired or revoked credentials)."""

    code = "unauthorized"
    http_status = 401


class ForbiddenError(HanragError):
    """The caller is known but may not do this."""

    code = "forbidden"
    http_status = 403


class StorageFullError(HanragError):
    """Nothing more can be written: the disk, the database's disk or a quota is full.

    Raised by :func:`translate_error` for the storage layers' own "no space" errors
    (SQLite ``SQLITE_FULL``, ``ENOSPC``/``EDQUOT``, PostgreSQL ``53100 disk_full``);
    what was stored before is intact, and the same request succeeds once space is back.
    """

    code = "storage_full"
    http_status = 507


class RequestTimeoutError(HanragError):
    """The request took longer than ``api.request_timeout_s``; its work was cancelled."""

    code = "timeout"
    http_status = 504


class WorkCancelled(Exception):
    """Raised inside work running in a thread when the request it serves was given up
    (see :mod:`hanrag.cancellation`).

    Deliberately not a :class:`HanragError`: code that records a failed document for a
    ``HanragError`` must not record one for work that was merely abandoned.
    """


# errno values of "no space left": ENOSPC, and EDQUOT (disk quota exceeded).
_NO_SPACE_ERRNOS = frozenset({28, 122})
_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what is behind it: the DB-API error a SQLAlchemy error wraps
    (``orig``), ``__cause__`` and ``__context__``, each once."""
    seen: set[int] = set()
    found: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(found) < 32:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        for nxt in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(nxt, BaseException):
                pending.append(nxt)
    return found


def _is_no_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE_ERRNOS:
        return True
    if getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL:
        return True
    if _PG_DISK_FULL in (getattr(exc, "sqlstate", None), getattr(exc, "pgcode", None)):
        return True
    message = str(exc).lower()
    return type(exc).__module__.startswith("sqlite3") and "database or disk is full" in message


def storage_full_error(exc: BaseException) -> StorageFullError | None:
    """A :class:`StorageFullError` when ``exc`` (or what caused it) is a storage layer
    reporting that it is out of space; None otherwise."""
    if isinstance(exc, StorageFullError):
        return exc
    if not any(_is_no_space(cause) for cause in _causes(exc)):
        return None
    full = StorageFullError(
        "the server's storage is full: nothing was saved for this request; "
        "try again when an operator has freed space"
    )
    full.__cause__ = exc
    return full


_TOO_LONG = re.compile(r"character varying\((\d+)\)|char(?:acter)?\((\d+)\)")
_TABLE = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE)\s+\"?(\w+)\"?", re.IGNORECASE)
_PARAM_SUFFIX = re.compile(r"(?:_m?\d+)+$")


def _parameter_rows(params: Any) -> list[dict[str, Any]]:
    if isinstance(params, dict):
        return [params]
    if isinstance(params, list | tuple):
        return [p for p in params if isinstance(p, dict)]
    return []


def _offending_column(exc: BaseException, message: str) -> str | None:
    """The column a "value too long / out of range" error is about, when it can be told:
    from the database's own diagnostics, else from the statement's parameters."""
    for cause in _causes(exc):
        diag = getattr(cause, "diag", None)
        column = getattr(diag, "column_name", None)
        if column:
            table = getattr(diag, "table_name", None)
            return f"{table}.{column}" if table else str(column)
    statement = getattr(exc, "statement", None) or ""
    match = _TABLE.match(statement)
    table = match.group(1) if match else None
    rows = _parameter_rows(getattr(exc, "params", None))
    limit = _TOO_LONG.search(message)
    candidates: list[str] = []
    for row in rows:
        for key, value in row.items():
            if limit is not None:
                bound = int(limit.group(1) or limit.group(2))
                hit = isinstance(value, str) and len(value) > bound
            else:
                hit = isinstance(value, int) and not isinstance(value, bool) and not -(2**31) <= value < 2**31
            name = _PARAM_SUFFIX.sub("", str(key))
            if hit and name not in candidates:
                candidates.append(name)
    if len(candidates) != 1:
        return None
    return f"{table}.{candidates[0]}" if table else candidates[0]


def _is_data_error(exc: BaseException) -> bool:
    sqlstate = str(getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None) or "")
    if sqlstate.startswith("22") or type(exc).__name__ == "DataError":
        return True
    # SQLite takes integers up to 64 bits; a larger one fails while binding.
    return isinstance(exc, OverflowError) and "sqlite" in str(exc).lower()


_WRAPPER_PREFIX = re.compile(r"^\([\w.]+\)\s*")


def data_error(exc: BaseException) -> InvalidInputError | None:
    """An :class:`InvalidInputError` (400) when the database refused a value of the request
    as such: a string longer than its column, a number or a date out of the column's range
    (SQLAlchemy ``DataError``, SQLSTATE class 22, SQLite's integer overflow). The column is
    named when it can be found. None for anything else."""
    found = [cause for cause in _causes(exc) if _is_data_error(cause)]
    if not found:
        return None
    # The driver's own error says it best (SQLAlchemy's wrapper adds the SQL text).
    own = [cause for cause in found if not type(cause).__module__.startswith("sqlalchemy")]
    source = (own or found)[0]
    primary = getattr(getattr(source, "diag", None), "message_primary", None)
    lines = str(source).strip().splitlines()
    reason = _WRAPPER_PREFIX.sub("", str(primary or (lines[0] if lines else type(source).__name__)))
    column = _offending_column(exc, reason)
    where = f" ({column})" if column else ""
    return InvalidInputError(f"a value of the request cannot be stored{where}: {reason[:200]}", field=column)


def translate_error(exc: BaseException) -> HanragError | None:
    """The one mapping of exceptions from storage and cancellation to stable errors.

    Used by the HTTP exception handlers and the streams' error paths, so every route
    answers the same way: storage out of space -> :class:`StorageFullError` (507),
    a value the database cannot hold -> :class:`InvalidInputError` (400), work given up
    after the request's deadline -> :class:`RequestTimeoutError` (504). A
    :class:`HanragError` stays what it is, unless it is a server-side one (5xx) caused
    by a full disk. None: not something this mapping knows (an internal error).
    """
    full = storage_full_error(exc)
    if isinstance(exc, HanragError) and (exc.http_status < 500 or full is None):
        return exc
    if full is not None:
        return full
    if isinstance(exc, WorkCancelled):
        return RequestTimeoutError(str(exc) or "the request was given up after its deadline")
    return data_error(exc)


class RateLimitedError(HanragError):
    """Too many requests from one principal; ``retry_after`` seconds until the next window."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests; try again in {retry_after} s")
        self.retry_after = retry_after


class ModelUnavailableError(BackendError):
    """A model the request needs cannot be loaded (a missing model file, a missing extra,
    an embedding server that does not answer its first request): 503, so load balancers
    and clients retry elsewhere or later instead of seeing an internal error. The reason
    is in the message and in ``/api/v1/models/status`` (``error_message``)."""

    code = "model_unavailable"
    http_status = 503
