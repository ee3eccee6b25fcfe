"""RFC 9457 problem+json responses with stable codes; never a stack trace."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hanrag.errors import HanragError

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
}


# The earlier service's routes (LEGACY_API.md): their clients parse its error object only.
LEGACY_PATHS = frozenset({"/query", "/query_stream", "/queryToSLLM", "/history", "/reference"})


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
        from hanrag.api.routers.legacy import error_format  # the router imports this module

        return JSONResponse(error_format(detail, status, None), status_code=status, headers=headers)
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


async def hanrag_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HanragError)
    extra = {"field": exc.field} if exc.field else None
    return problem(exc.http_status, exc.code, exc.message, request=request, extra=extra)


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


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    import logging

    logging.getLogger("hanrag.api").error(
        "unhandled error", exc_info=exc, extra={"path": request.url.path, "error_type": type(exc).__name__}
    )
    return problem(500, "internal_error", "an internal error occurred; see the server log", request=request)
