"""SQL sources (issue P10): add, list, show, sync (a job) and remove, for editors and up.

Who may do what is :class:`hanrag.tables.service.SourceService`'s (its rules live in
:mod:`hanrag.auth.access`): administrators manage every source; editors add sources on
the hosts of ``tables.editor_hosts`` (never SQLite files) and manage only their own,
anyone else's being answered like a missing one (404); viewers get 403 on every route.
Errors are problem+json with stable codes; the sync route answers like the other job
routes (``202 {"status", "message", "data": {"job_id", "state"}}``) and the job is then
followed, cancelled and called back through ``/api/v1/jobs/{id}``.

The URL is a secret: it is read into a ``SecretStr``, and every response shows it masked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr

from hanrag.api.auth import require
from hanrag.api.deps import CallerDep, get_engine, with_timeout
from hanrag.api.routers.jobs import ClientData, accept_job
from hanrag.auth.service import Identity
from hanrag.jobs.folder_sync import folder_views
from hanrag.jobs.sql_sync import KIND, sync_payload
from hanrag.tables.options import source_from_options

if TYPE_CHECKING:
    from hanrag.tables.service import SourceService

router = APIRouter(tags=["sources"])

T = TypeVar("T")
Editor = Annotated[Identity, require("editor")]


class TableIn(BaseModel):
    """One table with options of its own (the flat options of the source are its defaults)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=128)
    include: list[str] | None = Field(None, max_length=1000, description="Only these columns.")
    exclude: list[str] | None = Field(None, max_length=1000, description="Never read these columns.")
    where: str | None = Field(None, max_length=2000)
    title: str | None = Field(None, max_length=500)
    template: str | None = Field(None, max_length=20_000)
    date_column: str | None = Field(None, max_length=128)
    updated_at_column: str | None = Field(None, max_length=128)
    acl_column: str | None = Field(None, max_length=128)
    acl_template: str | None = Field(None, max_length=500)
    query_acl: list[str] | None = Field(None, max_length=1000)


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=64)
    url: SecretStr = Field(
        ...,
        min_length=1,
        max_length=4000,
        description="SQLAlchemy URL (dialect+driver://user:password@host/database); never shown unmasked.",
    )
    tables: list[str | TableIn] = Field(..., min_length=1, max_length=200)
    columns: list[str] | None = Field(None, max_length=1000, description="COLUMN or TABLE.COLUMN.")
    exclude: list[str] | None = Field(None, max_length=1000, description="COLUMN or TABLE.COLUMN.")
    where: str | None = Field(None, max_length=2000)
    acl: list[str] | None = Field(None, max_length=1000, description="Who may read the rows' documents.")
    query_acl: list[str] | None = Field(
        None, max_length=1000, description="Who may query the tables with SQL (the table route)."
    )
    template: str | None = Field(None, max_length=20_000)
    title: str | None = Field(None, max_length=500)
    date_column: str | None = Field(None, max_length=128)
    updated_at_column: str | None = Field(None, max_length=128)
    acl_column: str | None = Field(None, max_length=128)
    acl_template: str | None = Field(None, max_length=500)
    batch_size: int = 200
    interval_minutes: int | None = Field(None, description="Sync every N minutes (the scheduler).")
    replace: bool = False


class SyncIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    full: bool = Field(False, description="Read every row and remove the documents of rows that are gone.")
    callback_url: AnyHttpUrl | None = None
    callback_headers: dict[str, str] = Field(default_factory=dict)
    client_data: ClientData = None


async def _service(request: Request, work: Callable[[SourceService], T], *, timed: bool = False) -> T:
    """``work`` on the engine's sources, in a thread (within the request's deadline when
    ``timed``: the work connects to the source's database)."""
    engine = get_engine(request)
    running = asyncio.to_thread(lambda: work(engine.sources))
    return await (with_timeout(request, running) if timed else running)


@router.get(
    "/sources",
    summary="The SQL sources the caller manages (URLs masked, kind sql), and for administrators "
    "the scheduled folders of sources.folders (kind folder), each with its last run",
)
async def list_sources(request: Request, caller: CallerDep, _editor: Editor) -> list[dict[str, Any]]:
    views = [{**view, "kind": "sql"} for view in await _service(request, lambda s: s.list(caller=caller))]
    if caller.unrestricted or caller.role == "admin":  # folders are the operator's settings
        views.extend(await asyncio.to_thread(folder_views, get_engine(request)))
    return views


@router.post("/sources", status_code=201, summary="Add (or replace) a SQL source; nothing is synced yet")
async def add_source(body: SourceIn, request: Request, caller: CallerDep, _editor: Editor) -> dict[str, Any]:
    def add(sources: SourceService) -> dict[str, Any]:
        source = source_from_options(
            body.name,
            body.url.get_secret_value(),
            tables=[t if isinstance(t, str) else t.model_dump(exclude_unset=True) for t in body.tables],
            columns=body.columns,
            exclude=body.exclude,
            where=body.where,
            acl=body.acl,
            query_acl=body.query_acl,
            template=body.template,
            title=body.title,
            date_column=body.date_column,
            updated_at_column=body.updated_at_column,
            acl_column=body.acl_column,
            acl_template=body.acl_template,
            batch_size=body.batch_size,
        )
        return sources.add(
            source, caller=caller, interval_minutes=body.interval_minutes, replace_existing=body.replace
        )

    return await _service(request, add, timed=True)


@router.get("/sources/{name}", summary="A SQL source, with its tables' live schemas and sample values")
async def show_source(
    name: str,
    request: Request,
    caller: CallerDep,
    _editor: Editor,
    schema: Annotated[bool, Query(description="Describe the live tables (connects to the source).")] = True,
) -> dict[str, Any]:
    return await _service(
        request, lambda sources: sources.show(name, caller=caller, schema=schema), timed=schema
    )


@router.post(
    "/sources/{name}/sync",
    status_code=202,
    summary="Queue a sync of the source (a job: follow or cancel it at /api/v1/jobs/{id})",
)
async def sync_source(
    name: str,
    request: Request,
    caller: CallerDep,
    _editor: Editor,
    body: Annotated[SyncIn | None, Body()] = None,
) -> JSONResponse:
    body = body or SyncIn()
    # Refused now (404 like a missing source) rather than as a failed job later.
    await _service(request, lambda sources: sources.source(name, caller=caller))
    return await accept_job(request, KIND, body, payload=sync_payload(name, full=body.full), correlation={})


@router.delete("/sources/{name}", summary="Remove a source and (unless keep_documents) its rows' documents")
async def remove_source(
    name: str,
    request: Request,
    caller: CallerDep,
    _editor: Editor,
    keep_documents: Annotated[bool, Query(description="Keep the rows' documents in the index.")] = False,
) -> dict[str, Any]:
    return await _service(
        request,
        lambda sources: sources.remove(name, caller=caller, keep_documents=keep_documents),
        timed=True,
    )
