"""The MCP server: tools ``search``, ``ask`` and ``get_document``, and the documents as
resources (``hanrag://documents/{id}``), all through the one :class:`~hanrag.engine.Engine`.

Who is calling decides what is seen, exactly as on the HTTP API (the same
:func:`~hanrag.auth.access.caller_of` mapping, the same engine reads):

* **stdio**: one API key for the whole process (``--api-key`` or ``HANRAG_MCP_API_KEY``),
  checked at start and again on every request, so a revoked key or a disabled user stops
  at once;
* **streamable HTTP**: ``Authorization: Bearer <API key or access token>`` on every HTTP
  request, checked by :class:`BearerAuth` in front of the SDK's app (401 otherwise);
  the caller travels to the handlers on the request's ASGI scope.

In auth mode ``none`` every caller is the implicit single user. A document the caller
may not read is answered exactly like a missing one (the engine's ``document_not_found``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from functools import partial
from typing import Any, Literal, TypeVar
from urllib.parse import quote, unquote

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    ListToolsResult,
    PaginatedRequestParams,
    ReadResourceRequestParams,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
    TextContent,
    TextResourceContents,
    Tool,
    ToolAnnotations,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from hanrag.auth.access import Caller, caller_of
from hanrag.auth.ratelimit import RateLimiter
from hanrag.cancellation import within_deadline
from hanrag.domain import SearchFilters, epoch_bound
from hanrag.engine import Engine, document_not_found
from hanrag.errors import AuthError, HanragError, RateLimitedError, RequestTimeoutError, WorkCancelled

log = logging.getLogger("hanrag.mcp")

T = TypeVar("T")

SERVER_NAME = "hanrag"
URI_PREFIX = "hanrag://documents/"
URI_TEMPLATE = URI_PREFIX + "{document_id}"
# The ASGI scope key under which BearerAuth hands the request's caller to the handlers.
CALLER_SCOPE_KEY = "hanrag.caller"
# Text of one document a tool or a resource read returns at most (characters).
DOCUMENT_CHARS_DEFAULT = 20_000
DOCUMENT_CHARS_MAX = 200_000
# Documents per page of resources/list.
RESOURCE_PAGE = 100


# ------------------------------------------------------------------ arguments


class FiltersArg(BaseModel):
    """Restrict what is searched (who may read what is added by the engine)."""

    model_config = ConfigDict(extra="forbid")

    date_from: datetime | date | None = Field(None, description="Inclusive; ISO 8601 date or datetime.")
    date_to: datetime | date | None = Field(None, description="Inclusive; a bare date covers the whole day.")
    document_ids: list[str] | None = Field(None, max_length=1000, description="Only these documents.")
    metadata: dict[str, str] = Field(default_factory=dict, description="Equality on metadata keys.")

    def to_filters(self) -> SearchFilters:
        return SearchFilters(
            date_from=epoch_bound(self.date_from, end=False),
            date_to=epoch_bound(self.date_to, end=True),
            document_ids=self.document_ids,
            metadata=dict(self.metadata),
        )


class SearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, max_length=10_000, description="Keywords or a question (Korean).")
    k: int | None = Field(None, ge=1, le=50, description="How many hits (default from settings).")
    filters: FiltersArg | None = None


class AskArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., min_length=1, max_length=100_000, description="The question (Korean).")
    session_id: str | None = Field(None, max_length=64, description="Continue this conversation.")
    filters: FiltersArg | None = None
    mode: Literal["single", "ensemble"] | None = Field(
        None, description="`ensemble`: several models answer, the best-grounded wins (default: settings)."
    )


class GetDocumentArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document: str = Field(
        ..., min_length=1, max_length=4096, description="A document id, its source path or its file name."
    )
    max_chars: int = Field(
        DOCUMENT_CHARS_DEFAULT,
        ge=100,
        le=DOCUMENT_CHARS_MAX,
        description="At most this many characters of chunk text.",
    )


TOOLS: dict[str, tuple[type[BaseModel], str]] = {
    "search": (
        SearchArgs,
        "Hybrid search (dense + Korean BM25) over the documents you may read; returns the "
        "hits with their text, source, page and scores.",
    ),
    "ask": (
        AskArgs,
        "Answer a question from the documents you may read, with numbered citations "
        "([1], [2], ...) and their sources; pass session_id back to continue a conversation.",
    ),
    "get_document": (
        GetDocumentArgs,
        "A document's catalog entry (title, source, ACL, metadata, date) and the text of "
        "its chunks, in order, up to max_chars.",
    ),
}


# ------------------------------------------------------------------ helpers


def document_uri(document_id: str) -> str:
    return URI_PREFIX + quote(document_id, safe="")


def _json(payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=False, default=str)


def _error_text(exc: HanragError) -> str:
    return f"[{exc.code}] {exc.message}"


class HanragMCP:
    """The handlers of one MCP server over one engine.

    ``stdio_key``: the credential of a stdio server (ignored in auth mode ``none``).
    Over HTTP the caller comes from each request (see :class:`BearerAuth`).
    """

    def __init__(self, engine: Engine, *, stdio_key: str | None = None) -> None:
        self.engine = engine
        self.stdio_key = stdio_key
        self.server: Server[Any] = Server(
            SERVER_NAME,
            version=_version(),
            instructions=(
                "hanrag: Korean document search and cited answers. Use `search` for passages, "
                "`ask` for an answer with citations, `get_document` or the hanrag://documents/{id} "
                "resources for a whole document."
            ),
            get_tool_input_schema=self._input_schema,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_templates,
            on_read_resource=self._read_resource,
        )

    # ---------------------------------------------------------------- callers

    def stdio_caller(self) -> Caller:
        """The caller of a stdio server: the implicit single user in auth mode ``none``,
        else the identity of its key (``AuthError`` when it is missing or not valid)."""
        if self.engine.settings.auth.mode != "token":
            return caller_of(None)
        if not self.stdio_key:
            raise AuthError(
                "auth mode is token: give an API key (HANRAG_MCP_API_KEY or --api-key)", code="unauthorized"
            )
        return caller_of(self.engine.auth.authenticate(self.stdio_key))

    async def _caller(self, ctx: ServerRequestContext[Any, Any]) -> Caller:
        request = ctx.request
        scope = getattr(request, "scope", None)
        if isinstance(scope, dict):
            caller = scope.get(CALLER_SCOPE_KEY)
            if isinstance(caller, Caller):
                return caller
            # An HTTP request that did not pass BearerAuth: never fall back to anything wider.
            raise AuthError("this request was not authenticated", code="unauthorized")
        return await anyio.to_thread.run_sync(self.stdio_caller)

    async def _work(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call`` within ``api.request_timeout_s``; threads it starts stop at their next check."""
        try:
            return await within_deadline(call(), self.engine.settings.api.request_timeout_s)
        except WorkCancelled as exc:
            raise RequestTimeoutError(str(exc)) from None

    async def _thread(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(partial(function, *args, **kwargs))

    # ------------------------------------------------------------------ tools

    def _input_schema(self, name: str) -> dict[str, Any] | None:
        entry = TOOLS.get(name)
        return None if entry is None else entry[0].model_json_schema()

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(
            tools=[
                Tool(
                    name=name,
                    description=description,
                    input_schema=model.model_json_schema(),
                    annotations=ToolAnnotations(read_only_hint=name != "ask", open_world_hint=False),
                )
                for name, (model, description) in TOOLS.items()
            ]
        )

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams
    ) -> CallToolResult:
        try:
            entry = TOOLS.get(params.name)
            if entry is None:
                raise HanragError(f"no tool {params.name!r}", code="unknown_tool")
            try:
                args = entry[0].model_validate(params.arguments or {})
            except ValidationError as exc:
                fields = sorted({".".join(str(p) for p in err["loc"]) or "arguments" for err in exc.errors()})
                raise HanragError(
                    f"invalid arguments for {params.name}: {', '.join(fields)}", code="invalid_input"
                ) from None
            caller = await self._caller(ctx)
            payload = await self._work(partial(self._run_tool, params.name, args, caller))
        except HanragError as exc:
            return CallToolResult(content=[TextContent(text=_error_text(exc))], is_error=True)
        except Exception as exc:
            log.exception("MCP tool %r failed", params.name)
            return CallToolResult(
                content=[TextContent(text=f"[internal_error] the tool failed ({type(exc).__name__})")],
                is_error=True,
            )
        return CallToolResult(content=[TextContent(text=_json(payload))], structured_content=payload)

    async def _run_tool(self, name: str, args: BaseModel, caller: Caller) -> dict[str, Any]:
        engine = self.engine
        if isinstance(args, SearchArgs):
            filters = args.filters.to_filters() if args.filters else None
            result = await self._thread(engine.search, args.query, caller=caller, k=args.k, filters=filters)
            return result.as_dict()
        if isinstance(args, AskArgs):
            from hanrag.answer.engine import AskOptions

            filters = args.filters.to_filters() if args.filters else None
            answer = await engine.ask_result(
                args.question,
                caller=caller,
                session_id=args.session_id,
                filters=filters,
                options=AskOptions(mode=args.mode) if args.mode else None,
            )
            return answer.as_dict()
        if isinstance(args, GetDocumentArgs):
            return await self._thread(self._document, args.document, caller, args.max_chars)
        raise HanragError(f"no tool {name!r}", code="unknown_tool")

    def _document(self, key: str, caller: Caller, max_chars: int) -> dict[str, Any]:
        """A readable document's catalog entry and its chunks' text, cut at ``max_chars``."""
        row = self.engine.get_document(key, caller=caller)
        chunks = self.engine.document_chunks(row.id, caller=caller)
        shown: list[dict[str, Any]] = []
        used = 0
        truncated = False
        for chunk in chunks:
            room = max_chars - used
            if room <= 0:
                truncated = True
                break
            text = chunk.text if len(chunk.text) <= room else chunk.text[:room]
            truncated = truncated or len(text) < len(chunk.text)
            used += len(text)
            shown.append({"position": chunk.position, "text": text, "page": chunk.page, "sheet": chunk.sheet})
        return {
            "document": row.as_dict(),
            "uri": document_uri(row.id),
            "chunks": shown,
            "chunks_total": len(chunks),
            "truncated": truncated,
        }

    # -------------------------------------------------------------- resources

    async def _list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        caller = await self._resource_caller(ctx)
        cursor = params.cursor if params is not None else None
        try:
            offset = max(0, int(cursor)) if cursor else 0
        except ValueError:
            raise MCPError(code=INVALID_PARAMS, message="[invalid_input] invalid cursor") from None
        rows, total = await self._thread(
            self.engine.document_page, caller=caller, offset=offset, limit=RESOURCE_PAGE, status="indexed"
        )
        resources = [
            Resource(
                uri=document_uri(row.id),
                name=row.id,
                title=row.title or None,
                description=row.source,
                mime_type="text/plain",
                size=row.size,
            )
            for row in rows
        ]
        following = offset + len(rows)
        return ListResourcesResult(
            resources=resources, next_cursor=str(following) if following < total and rows else None
        )

    async def _list_templates(
        self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> ListResourceTemplatesResult:
        return ListResourceTemplatesResult(
            resource_templates=[
                ResourceTemplate(
                    uri_template=URI_TEMPLATE,
                    name="document",
                    title="A document's text",
                    description="The text of a document you may read, its catalog entry in _meta.",
                    mime_type="text/plain",
                )
            ]
        )

    async def _read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: ReadResourceRequestParams
    ) -> ReadResourceResult:
        caller = await self._resource_caller(ctx)
        uri = str(params.uri)
        key = unquote(uri[len(URI_PREFIX) :]) if uri.startswith(URI_PREFIX) else ""
        try:
            if not key:
                raise document_not_found(uri)
            data = await self._work(partial(self._thread, self._document, key, caller, DOCUMENT_CHARS_MAX))
        except HanragError as exc:
            raise MCPError(code=INVALID_PARAMS, message=_error_text(exc), data={"uri": uri}) from None
        document = data["document"]
        text = "\n\n".join(chunk["text"] for chunk in data["chunks"])
        meta = {"document": document, "chunks_total": data["chunks_total"], "truncated": data["truncated"]}
        return ReadResourceResult(
            contents=[TextResourceContents(uri=uri, text=text, mime_type="text/plain", _meta=meta)]
        )

    async def _resource_caller(self, ctx: ServerRequestContext[Any, Any]) -> Caller:
        try:
            return await self._caller(ctx)
        except HanragError as exc:
            raise MCPError(code=INVALID_PARAMS, message=_error_text(exc)) from None

    # ------------------------------------------------------------- transports

    async def run_stdio(self) -> None:
        async with stdio_server() as (read_stream, write_stream):
            await self.server.run(read_stream, write_stream, self.server.create_initialization_options())

    def http_app(self, *, host: str = "127.0.0.1", path: str = "/mcp") -> ASGIApp:
        """The streamable-HTTP app (stateless: each request carries its own credential)."""
        app = self.server.streamable_http_app(streamable_http_path=path, stateless_http=True, host=host)
        return BearerAuth(app, self.engine)


class BearerAuth:
    """Authenticates every HTTP request before the SDK sees it: in auth mode ``token``
    the ``Authorization: Bearer`` credential (an API key or an access token) must be
    valid, else ``401``; the caller goes to the handlers on the ASGI scope."""

    def __init__(self, app: ASGIApp, engine: Engine) -> None:
        self.app = app
        self.engine = engine
        # The same per-principal limit as the HTTP API (shared through Redis when set).
        self.limiter = RateLimiter(engine.settings.auth.rate_limit_per_minute, engine.settings.redis_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.pop(CALLER_SCOPE_KEY, None)  # only this layer sets it
        if self.engine.settings.auth.mode != "token":
            scope[CALLER_SCOPE_KEY] = caller_of(None)
            await self.app(scope, receive, send)
            return
        credential = _bearer(scope)
        try:
            if credential is None:
                raise AuthError("send 'Authorization: Bearer <API key or token>'", code="unauthorized")
            identity = await anyio.to_thread.run_sync(self.engine.auth.authenticate, credential)
            retry_after = await anyio.to_thread.run_sync(self.limiter.hit, identity.principal)
            if retry_after is not None:
                raise RateLimitedError(retry_after)
        except HanragError as exc:
            await _problem(send, exc)
            return
        scope[CALLER_SCOPE_KEY] = caller_of(identity)
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
    return None


async def _problem(send: Send, exc: HanragError) -> None:
    status = exc.http_status
    body = json.dumps({"status": status, "code": exc.code, "detail": exc.message}).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    if isinstance(exc, RateLimitedError):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    else:
        headers.append((b"www-authenticate", b'Bearer realm="hanrag"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hanrag")
    except PackageNotFoundError:
        return "0"
