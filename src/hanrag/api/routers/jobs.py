"""Async jobs: ask with a callback, ingestion with progress; the feedback service's body shape.

Every response of this router uses ``{"status", "message", "data"}`` like the
earlier feedback service (202 accepted, 400 for validation failures, and the 4xx
of an unknown job, a refused path or a finished job, with the stable error code
in ``data.code``). When the queue's backend (Redis) is down the routes answer 503
problem+json, while the synchronous routes keep working; authentication errors
are problem+json like everywhere else.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.datastructures import UploadFile as StarletteUploadFile

from hanrag.api.auth import require
from hanrag.api.deps import current_caller, get_engine
from hanrag.api.schemas import FiltersIn
from hanrag.auth.access import Caller, check_grant, may_manage
from hanrag.auth.service import Identity
from hanrag.domain import SearchFilters
from hanrag.errors import ForbiddenError, HanragError, InvalidInputError, NotFoundError
from hanrag.ingest.model import IngestRequest
from hanrag.ingest.uploads import upload_file_name
from hanrag.jobs.base import JobQueue, JobRecord
from hanrag.jobs.callbacks import check_callback
from hanrag.jobs.control import apply_control
from hanrag.jobs.runner import discard_upload_batch

router = APIRouter(tags=["jobs"])

MAX_CLIENT_DATA_BYTES = 8192
# Body fields that are the job's own, never the caller's correlation data.
_NOT_PAYLOAD = {"callback_url", "callback_headers", "client_data"}


def _serialised_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _bounded(value: dict[str, Any]) -> dict[str, Any]:
    if _serialised_size(value) > MAX_CLIENT_DATA_BYTES:
        raise ValueError(f"at most {MAX_CLIENT_DATA_BYTES} bytes of JSON")
    return value


ClientData = Annotated[
    dict[str, Any] | None,
    AfterValidator(lambda value: None if value is None else _bounded(value)),
    Field(
        description="Any JSON object of the caller's (at most 8 KiB serialised): stored with "
        "the job and echoed in its callback's data.client_data."
    ),
]


class AskJobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., min_length=1, max_length=100_000)
    session_id: str | None = Field(None, max_length=64)
    filters: FiltersIn | None = None
    rag: bool = True
    k: int | None = Field(None, ge=1, le=50)
    mode: Literal["single", "ensemble"] | None = None
    candidates: bool = False
    # Not queued (several MB in every stored job): a 400 images_not_supported_in_jobs.
    images: list[Any] | None = Field(
        None, exclude=True, description="Not supported in jobs: ask with images at POST /api/v1/ask."
    )
    callback_url: AnyHttpUrl | None = None
    callback_headers: dict[str, str] = Field(default_factory=dict)
    client_data: ClientData = None


class IngestJobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(
        ..., min_length=1, max_length=1000, description="Server-side files or directories."
    )
    acl: list[str] | None = None
    include: list[str] | None = None
    exclude: list[str] | None = None
    callback_url: AnyHttpUrl | None = None
    callback_headers: dict[str, str] = Field(default_factory=dict)
    client_data: ClientData = None


def envelope(status: int, message: str, data: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse({"status": status, "message": message, "data": data or {}}, status_code=status)


def _enveloped(route: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Client errors (4xx) of a route in the envelope; 5xx stay problem+json."""

    @functools.wraps(route)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await route(*args, **kwargs)
        except HanragError as exc:
            if exc.http_status >= 500:
                raise
            data: dict[str, Any] = {"code": exc.code}
            if exc.field:
                data["field"] = exc.field
            return envelope(exc.http_status, exc.message, data)

    return wrapper


def queue_of(request: Request) -> JobQueue:
    state = request.app.state
    if not hasattr(state, "jobs"):  # an app used without its lifespan (embedded, tests)
        from hanrag.jobs.factory import build_queue

        state.jobs = build_queue(get_engine(request))
    queue: JobQueue = state.jobs
    return queue


def _invalid(errors: list[dict[str, str]]) -> JSONResponse:
    return envelope(400, f"invalid request: {errors[0]['field']}: {errors[0]['message']}", {"errors": errors})


def _correlation(request: Request, raw: Any, model: type[BaseModel]) -> dict[str, Any]:
    """Take the flat fields named by ``jobs.correlation_fields`` out of the body (the others
    stay refused as unknown)."""
    names = get_engine(request).settings.jobs.correlation_fields
    if not isinstance(raw, dict) or not names:
        return {}
    return {name: raw.pop(name) for name in names if name in raw and name not in model.model_fields}


async def _json_body(
    request: Request, model: type[BaseModel]
) -> tuple[BaseModel, dict[str, Any]] | JSONResponse:
    """The body as ``model`` and the caller's correlation fields, or a 400 in the envelope."""
    try:
        raw = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return envelope(400, "the body is not valid JSON")
    correlation = _correlation(request, raw, model)
    if correlation and _serialised_size(correlation) > MAX_CLIENT_DATA_BYTES:
        message = f"the correlation fields take at most {MAX_CLIENT_DATA_BYTES} bytes of JSON together"
        return _invalid([{"field": name, "message": message} for name in correlation])
    try:
        return model.model_validate(raw), correlation
    except ValidationError as exc:
        return _invalid(
            [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        )


def _owned(request: Request, record: JobRecord | None, job_id: str) -> JobRecord:
    """The job, when the caller may manage it; anyone else's is answered like a missing one."""
    if record is None or not may_manage(current_caller(request), record.principal):
        raise NotFoundError(f"no job {job_id!r}", code="job_not_found", field="job_id")
    return record


def _documented_body(model: type[BaseModel], *, multipart: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its JSON itself (to answer in the
    envelope): documented for clients and for the schema-driven fuzz run (bench/fuzz_api.py)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(dict(definitions[node["$ref"].rsplit("/", 1)[1]]))
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    content: dict[str, Any] = {"application/json": {"schema": inline(schema)}}
    if multipart is not None:
        content["multipart/form-data"] = {"schema": multipart}
    return {"requestBody": {"required": True, "content": content}}


_UPLOAD_FORM = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "acl": {"type": "array", "items": {"type": "string"}},
        "client_data": {"type": "string", "description": "A JSON object, as in the JSON body."},
    },
}
_CLIENT_DATA: TypeAdapter[dict[str, Any] | None] = TypeAdapter(ClientData)


@router.post(
    "/jobs/ask",
    status_code=202,
    summary="Queue a question; the answer is POSTed to callback_url",
    openapi_extra=_documented_body(AskJobIn),
)
@_enveloped
async def ask_job(request: Request) -> Any:
    parsed = await _json_body(request, AskJobIn)
    if isinstance(parsed, JSONResponse):
        return parsed
    body, correlation = parsed
    assert isinstance(body, AskJobIn)
    if body.images:
        raise InvalidInputError(
            "jobs do not take images; ask with images at POST /api/v1/ask",
            code="images_not_supported_in_jobs",
            field="images",
        )
    # The checks a synchronous ask runs first, now: a job is refused at submit time for
    # the same reasons (and codes) as the same question asked directly.
    filters = body.filters.to_filters() if body.filters else SearchFilters()
    await asyncio.to_thread(
        get_engine(request).check_ask,
        body.question,
        caller=current_caller(request),
        session_id=body.session_id,
        filters=filters,
    )
    # The runner reads domain types (the filters as epochs, in "search_filters"); the
    # request's own form stays in "filters", as the job's readers have always seen it.
    payload = body.model_dump(mode="json", exclude=_NOT_PAYLOAD)
    payload["search_filters"] = filters.as_payload()
    return await accept_job(request, "ask", body, payload=payload, correlation=correlation)


def server_path(raw: str, roots: list[Path]) -> Path:
    """A server-side path a job may read: under a configured root, or a 4xx naming it."""
    if "\x00" in raw or not raw.strip():
        raise InvalidInputError("a path is empty or contains a NUL byte", code="invalid_path", field="paths")
    try:
        path = Path(raw).expanduser().resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise InvalidInputError(
            f"{raw[:200]}: not a usable path", code="invalid_path", field="paths"
        ) from exc
    if not any(path == root or path.is_relative_to(root) for root in roots):
        raise ForbiddenError(
            f"{raw[:200]}: not under a configured server root (ingest.server_roots)",
            code="path_not_allowed",
            field="paths",
        )
    return path


@router.post(
    "/ingest",
    status_code=202,
    summary="Queue an ingestion of server-side paths (JSON) or uploaded files",
    openapi_extra=_documented_body(IngestJobIn, multipart=_UPLOAD_FORM),
)
@_enveloped
async def ingest_job(request: Request, _editor: Annotated[Identity, require("editor")]) -> Any:
    engine = get_engine(request)
    caller = current_caller(request)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/"):
        return await _ingest_uploads(request, caller)
    parsed = await _json_body(request, IngestJobIn)
    if isinstance(parsed, JSONResponse):
        return parsed
    body, correlation = parsed
    assert isinstance(body, IngestJobIn)
    roots = [root.resolve() for root in engine.settings.ingest.server_roots]
    for raw in body.paths:
        server_path(raw, roots)
    wanted = IngestRequest(
        paths=[Path(raw) for raw in body.paths],
        include=body.include,
        exclude=body.exclude,
        acl=None if body.acl is None else check_grant(caller.principals, body.acl),
    )
    return await accept_job(request, "ingest", body, payload=wanted.as_payload(), correlation=correlation)


class JobBody(Protocol):
    """The fields every job request has: where and how to call back, the caller's data."""

    @property
    def callback_url(self) -> AnyHttpUrl | None: ...

    @property
    def callback_headers(self) -> dict[str, str]: ...

    @property
    def client_data(self) -> dict[str, Any] | None: ...


async def accept_job(
    request: Request,
    kind: str,
    body: JobBody,
    *,
    payload: dict[str, Any],
    correlation: dict[str, Any],
) -> JSONResponse:
    """Queue a job for the caller and answer 202 with its id (every job route, the SQL
    sources' sync included)."""
    caller = current_caller(request)
    # A refused callback destination or header is a 400 now, not a failed delivery later;
    # the URL is stored as checked (runs of "/" in its path collapsed).
    settings = get_engine(request).settings
    callback_url = await asyncio.to_thread(
        check_callback,
        str(body.callback_url) if body.callback_url else None,
        body.callback_headers,
        settings.jobs,
        settings.offline_policy,
    )
    record = JobRecord(
        kind=kind,
        payload=payload,
        principal=caller.name,
        principals=caller.principal_list,
        callback_url=callback_url,
        callback_headers=body.callback_headers,
        client_data=body.client_data,
        correlation=correlation,
    )
    record = await queue_of(request).enqueue(record)
    return envelope(202, "accepted", {"job_id": record.id, "state": record.state})


async def _ingest_uploads(request: Request, caller: Caller) -> Any:
    engine = get_engine(request)
    form = await request.form()
    files = [f for f in form.getlist("files") if isinstance(f, StarletteUploadFile)]
    if not files:
        return envelope(400, "no files: send them as the multipart field 'files'")
    acl = [str(a) for a in form.getlist("acl")] or None
    if acl is not None:
        acl = check_grant(caller.principals, acl)
    raw_client_data = form.get("client_data")
    try:
        client_data = (
            _CLIENT_DATA.validate_json(raw_client_data) if isinstance(raw_client_data, str) else None
        )
    except ValidationError as exc:
        return _invalid([{"field": "client_data", "message": e["msg"]} for e in exc.errors()])
    names = engine.settings.jobs.correlation_fields
    correlation = {name: form[name] for name in names if isinstance(form.get(name), str)}
    if correlation and _serialised_size(correlation) > MAX_CLIENT_DATA_BYTES:
        message = f"the correlation fields take at most {MAX_CLIENT_DATA_BYTES} bytes of JSON together"
        return _invalid([{"field": name, "message": message} for name in correlation])
    names = [upload_file_name(upload.filename or "upload") for upload in files]
    job_id = uuid.uuid4().hex
    batch = engine.uploads.open_batch(job_id)
    try:
        # Staged under names the filesystem takes; the uploaded names travel in the payload.
        for upload, name in zip(files, names, strict=True):
            engine.uploads.stage(batch, name, await upload.read())
        record = JobRecord(
            kind="ingest",
            payload=IngestRequest(upload=batch, acl=acl).as_payload(),
            id=job_id,
            principal=caller.name,
            principals=caller.principal_list,
            client_data=client_data,
            correlation=correlation,
        )
        record = await queue_of(request).enqueue(record)
    except (HanragError, OSError):
        engine.uploads.discard_batch(batch.directory)
        raise
    return envelope(202, "accepted", {"job_id": record.id, "state": record.state, "files": len(files)})


@router.get("/jobs/{job_id}", summary="A job's state, progress, result or error")
@_enveloped
async def get_job(job_id: str, request: Request) -> Any:
    record = _owned(request, await asyncio.to_thread(queue_of(request).store.get, job_id), job_id)
    return envelope(200, "OK", record.public())


async def _control(request: Request, job_id: str, control: str | None) -> Any:
    queue = queue_of(request)
    record = _owned(request, await asyncio.to_thread(queue.store.get, job_id), job_id)
    updated = await apply_control(queue, record, control)
    await asyncio.to_thread(discard_upload_batch, get_engine(request), updated)
    return envelope(200, "OK", updated.public())


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel a job (a running one stops at its next file, or within jobs.cancel_poll_s of its answer)",
)
@_enveloped
async def cancel_job(job_id: str, request: Request) -> Any:
    return await _control(request, job_id, "cancel")


@router.post("/jobs/{job_id}/pause", summary="Pause an ingestion job between files")
@_enveloped
async def pause_job(job_id: str, request: Request) -> Any:
    return await _control(request, job_id, "pause")


@router.post("/jobs/{job_id}/resume", summary="Resume a paused ingestion job")
@_enveloped
async def resume_job(job_id: str, request: Request) -> Any:
    return await _control(request, job_id, None)
