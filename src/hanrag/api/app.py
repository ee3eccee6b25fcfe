"""FastAPI application factory: the engine behind REST + SSE, OpenAI-compatible and legacy routes."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hanrag import __version__
from hanrag.api import metrics
from hanrag.api.problems import (
    LEGACY_HTTP_STATUS,
    LEGACY_PATHS,
    hanrag_error_handler,
    http_error_handler,
    mapped_error_handler,
    problem,
    unhandled_error_handler,
    validation_error_handler,
)
from hanrag.auth.ratelimit import RateLimiter
from hanrag.engine import Engine
from hanrag.errors import HanragError, WorkCancelled
from hanrag.logs import configure_logging
from hanrag.settings import Settings, load_settings

log = logging.getLogger("hanrag.api")

REQUEST_ID_HEADER = "x-request-id"


class _BodyTooLarge(Exception):
    pass


# The other routes whose questions may carry base64 images.
IMAGE_PATHS = frozenset({"/api/v1/ask", "/v1/chat/completions"})


class RequestContextMiddleware:
    """Request id on every response and log line, body size limits, per-route metrics.

    Pure ASGI (not BaseHTTPMiddleware) so streaming responses pass straight through.
    """

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int, max_legacy_body_bytes: int
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.max_legacy_body_bytes = max_legacy_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        incoming = headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        content_type = headers.get("content-type", "")
        limit = self.max_upload_bytes if content_type.startswith("multipart/") else self.max_body_bytes
        if scope.get("path") in LEGACY_PATHS or scope.get("path") in IMAGE_PATHS:
            # Image-bearing bodies (legacy image_data, native images, OpenAI image parts): the
            # image checks themselves cap each image at images.max_mb.
            limit = self.max_legacy_body_bytes
            settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
            LEGACY_HTTP_STATUS.set(bool(settings is not None and settings.api.legacy_http_status))
        started = time.perf_counter()
        status_holder = {"status": 500}
        method = scope.get("method", "GET")

        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send, limit, request_id, started)
            return

        received = 0
        too_large = answered = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal answered
            if too_large:
                # FastAPI turns an error while reading the body into its own 400; the
                # answer to a body that was cut off is the 413 sent below instead.
                return
            if message["type"] == "http.response.start":
                answered = True
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER.encode(), request_id.encode("latin-1")),
                ]
                self._observe(scope, method, message["status"], started)
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except Exception:
            if not too_large:
                raise
        if too_large and not answered:
            await self._too_large(scope, receive, send, limit, request_id, started)

    async def _too_large(
        self, scope: Scope, receive: Receive, send: Send, limit: int, request_id: str, started: float
    ) -> None:
        response = problem(
            413,
            "payload_too_large",
            f"the request body is larger than {limit:,} bytes",
            path=scope.get("path"),
            extra={"request_id": request_id},
        )
        response.headers[REQUEST_ID_HEADER] = request_id
        await response(scope, receive, send)
        self._observe(scope, scope.get("method", "GET"), 413, started)

    @staticmethod
    def _route_label(scope: Scope) -> str:
        """The matched route's full path template, e.g. ``/api/v1/documents/{document_id}``."""
        route = scope.get("route")
        template = getattr(route, "path", None)
        if not template:
            return "unmatched"
        regex = getattr(route, "path_regex", None)
        path = scope.get("path", "")
        root_path = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        # Recent FastAPI versions put the route of an included router in the scope without
        # the router's prefix ("/ask" for /api/v1/ask); put the prefix back.
        if regex is not None and not regex.match(path):
            for i, char in enumerate(path):
                if char == "/" and i and regex.match(path[i:]):
                    return path[:i] + template
        return str(template)

    @classmethod
    def _observe(cls, scope: Scope, method: str, status: int, started: float) -> None:
        path = cls._route_label(scope)
        metrics.REQUESTS.labels(path, method, str(status)).inc()
        metrics.REQUEST_SECONDS.labels(path, method).observe(time.perf_counter() - started)


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """The ASGI app. ``engine`` may be given (tests, embedding); otherwise one is built from settings."""
    settings = settings or (engine.settings if engine else load_settings())
    if settings.api.static_dir is None:
        # The packaged web app (hanrag.web) is the UI served at / (its files load before
        # sign-in, as the auth middleware allows for a static directory).
        from hanrag.web import WEB_DIR

        settings = settings.model_copy(
            update={"api": settings.api.model_copy(update={"static_dir": WEB_DIR})}
        )
    owns_engine = engine is None
    from hanrag.ops.offline import check_offline

    check_offline(settings)  # offline mode: a configured URL pointing elsewhere stops the start
    if owns_engine:  # a server process of its own (e.g. a uvicorn worker): log as the settings say
        configure_logging(
            settings.log_level,
            settings.log_json,
            file=settings.log_file,
            max_mb=settings.log_max_mb,
            backups=settings.log_backups,
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = engine or Engine(settings)
        # The operator's prompt files are checked now: a bad one stops the start, not a question.
        app.state.prompts = app.state.engine.prompts
        app.state.settings = settings
        app.state.rate_limiter = RateLimiter(settings.auth.rate_limit_per_minute, settings.redis_url)
        from hanrag.jobs.factory import build_queue
        from hanrag.jobs.scheduler import scheduler_for

        if owns_engine:
            # Each server process is ready (models loaded) before it takes its first request.
            await asyncio.to_thread(app.state.engine.warm_up)
        app.state.jobs = build_queue(app.state.engine)
        await app.state.jobs.start()
        # Queues the due SQL sources' syncs (tables.scheduler); safe in every process.
        scheduler = app.state.scheduler = scheduler_for(app.state.engine, app.state.jobs)
        try:
            yield
        finally:
            if scheduler is not None:
                await scheduler.stop()
            await app.state.jobs.stop()
            if owns_engine:
                app.state.engine.close()

    app = FastAPI(
        title="hanrag",
        version=__version__,
        description="Korean-first retrieval-augmented generation: native REST + SSE, OpenAI-compatible "
        "endpoints and the earlier in-house service's legacy protocol.",
        lifespan=lifespan,
    )
    if engine is not None:  # usable before the lifespan runs (e.g. TestClient without context)
        app.state.engine = engine
        app.state.settings = settings
        app.state.rate_limiter = RateLimiter(settings.auth.rate_limit_per_minute, settings.redis_url)

    app.add_exception_handler(HanragError, hanrag_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    # Storage and database errors with a stable answer (507 storage_full, 400 for a value a
    # column cannot hold, 504 for work given up) get it here; the catch-all maps the same
    # errors when a middleware raises them.
    for storage_error in (SQLAlchemyError, sqlite3.Error, OSError, OverflowError, WorkCancelled):
        app.add_exception_handler(storage_error, mapped_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)

    from hanrag.api import auth
    from hanrag.api.routers import (
        admin,
        documents,
        feedback,
        health,
        jobs,
        legacy,
        models,
        native,
        openai_compat,
        sessions,
        sources,
        vocab,
    )

    app.include_router(health.router)
    app.include_router(auth.router, prefix="/api/v1")
    # Before native: its /models/status (embedder and generator only) is superseded.
    app.include_router(models.router, prefix="/api/v1")
    app.include_router(admin.router, prefix="/api/v1")
    app.include_router(native.router, prefix="/api/v1")
    app.include_router(documents.router, prefix="/api/v1")
    app.include_router(sessions.router, prefix="/api/v1")
    app.include_router(feedback.router, prefix="/api/v1")
    app.include_router(jobs.router, prefix="/api/v1")
    app.include_router(sources.router, prefix="/api/v1")
    app.include_router(vocab.router, prefix="/api/v1")
    app.include_router(openai_compat.router, prefix="/v1")
    app.include_router(legacy.router)

    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=[REQUEST_ID_HEADER],
        )
    # Added before the request-context middleware so that one wraps it: auth errors get request ids.
    app.add_middleware(auth.AuthMiddleware)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=int(settings.api.max_body_mb * 2**20),
        max_upload_bytes=int(settings.api.max_upload_mb * 2**20),
        max_legacy_body_bytes=int(settings.api.legacy_max_body_mb * 2**20),
    )
    # After every other route, GET/HEAD only: the API, OpenAI-compatible and legacy routes win.
    from hanrag.web import web_mount

    app.router.routes.append(web_mount(settings.api.static_dir, app.router.routes))
    return app
