"""RFC 9457 problem+json responses with stable codes; never a stack trace."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hanrag.api.legacy_format import error_format
from hanrag.errors import HanragError, StorageFullError, translate_error

log = logging.getLogger("hanrag.api")

PROBLEM_TYPE = "https://hanrag.dev/problems/"
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
    507: "storage_full",
}


# The earlier service's routes (LEGACY_API.md): their clients parse its error object only.
LEGACY_PATHS = frozenset({"/query", "/query_stream", "/queryToSLLM", "/history", "/reference"})
# ``api.legacy_http_status`` of the app serving this request, set by the request-context
# middleware: the auth, rate-limit and body-size refusals have no request object to ask.
LEGACY_HTTP_STATUS: ContextVar[bool] = ContextVar("legacy_http_status", default=False)


def legacy_error(
    message: str,
    status: int,
    qry_id: str | None,
    *,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The legacy error object. Sent with HTTP 200 (the status is in ``status_code``: the
    earlier clients' ``RestTemplate`` throws on 4xx/5xx) unless ``api.legacy_http_status``."""
    real = LEGACY_HTTP_STATUS.get()
    if request is not None:
        settings = getattr(request.app.state, "settings", None)
        real = bool(settings.api.legacy_http_status) if settings is not None else real
    return JSONResponse(
        error_format(message, status, qry_id), status_code=status if real else 200, headers=headers
    )


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    request: Request | None = None,
    path: str | None = None,
    title: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An RFC 9457 problem response; on a legacy route, the legacy error object instead
    (``path`` names the route when there is no request object yet, as in middleware)."""
    path = request.url.path if request is not None else path
    if path in LEGACY_PATHS:
        return legacy_error(detail, status, None, request=request, headers=headers)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + code,
        "title": title or code.replace("_", " "),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if request is not None:
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["request_id"] = request_id
    if extra:
        body.update(extra)
    if path is not None and path.startswith("/v1/"):
        # OpenAI client libraries read the message from an "error" object.
        body["error"] = {
            "message": detail,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "code": code,
        }
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def mapped_error(request: Request, exc: BaseException) -> HanragError | None:
    """``exc`` as a stable error (see :func:`hanrag.errors.translate_error`), or None;
    a full disk is remembered for ``/readyz``."""
    error = translate_error(exc)
    if isinstance(error, StorageFullError):
        from hanrag.api.storage import monitor_of

        monitor_of(request.app).note_full(request.app.state.settings)
        log.error(
            "storage full",
            exc_info=exc,
            extra={"path": request.url.path, "error_type": type(exc).__name__},
        )
    return error


def stream_error(request: Request, exc: BaseException) -> HanragError:
    """What a stream that has already started says in its last (error) event."""
    error = mapped_error(request, exc)
    if error is None:
        log.error(
            "unhandled error in a stream",
            exc_info=exc,
            extra={"path": request.url.path, "error_type": type(exc).__name__},
        )
        error = HanragError("an internal error occurred; see the server log")
    return error


def _error_response(request: Request, error: HanragError) -> JSONResponse:
    extra = {"field": error.field} if error.field else None
    return problem(error.http_status, error.code, error.message, request=request, extra=extra)


async def hanrag_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HanragError)
    return _error_response(request, mapped_error(request, exc) or exc)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"), "message": err.get("msg", "")}
        for err in exc.errors()
    ]
    first = errors[0] if errors else {"field": "", "message": "invalid request"}
    code = (
        "malformed_json"
        if any("json" in str(err.get("type", "")) for err in exc.errors())
        else "invalid_request"
    )
    detail = f"{first['field'] or 'body'}: {first['message']}"
    return problem(
        422 if code == "invalid_request" else 400, code, detail, request=request, extra={"errors": errors}
    )


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return problem(exc.status_code, code, detail, request=request, headers=getattr(exc, "headers", None))


async def mapped_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Storage and database exceptions raised by a route: their stable answer when they
    have one; anything else goes on to the catch-all (500) unchanged."""
    error = mapped_error(request, exc)
    if error is None:
        raise exc
    return _error_response(request, error)


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Any other exception: a storage, database-value or cancellation error gets its stable
    answer (507, 400, 504), anything else a 500 that names no internals."""
    error = mapped_error(request, exc)
    if error is not None:
        return _error_response(request, error)
    log.error(
        "unhandled error", exc_info=exc, extra={"path": request.url.path, "error_type": type(exc).__name__}
    )
    return problem(500, "internal_error", "an internal error occurred; see the server log", request=request)
