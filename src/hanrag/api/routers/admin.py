"""Administration: users, groups, API keys, audit log; document ACL changes (editors)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from hanrag.api.auth import client_ip, require
from hanrag.api.deps import CallerDep, get_engine
from hanrag.auth.service import Identity

router = APIRouter(tags=["admin"])

Role = Literal["viewer", "editor", "admin"]


class UserIn(BaseModel):
    username: str = Field(..., min_length=1, max_length=100)
    password: str = Field(..., min_length=1, max_length=1000)
    role: Role = "viewer"
    groups: list[str] = Field(default_factory=list, max_length=100)


class UserPatch(BaseModel):
    role: Role | None = None
    disabled: bool | None = None
    password: str | None = Field(None, min_length=1, max_length=1000)


class GroupIn(BaseModel):
    name: str = Field(..., min_length=1, max_length=100)


class ApiKeyIn(BaseModel):
    username: str = Field(..., min_length=1, max_length=100)
    name: str = Field("service", max_length=100)
    role: Role | None = None
    can_delegate: bool = False


class AclIn(BaseModel):
    acl: list[str] = Field(..., min_length=1, max_length=1000)


async def _audit(
    request: Request, actor: Identity, action: str, target: str, detail: dict[str, Any] | None = None
) -> None:
    await asyncio.to_thread(
        get_engine(request).audit.record,
        actor.username,
        action,
        target=target,
        detail=detail,
        ip=client_ip(request),
    )


@router.get("/admin/users", summary="All users")
async def list_users(request: Request, _: Identity = require("admin")) -> list[dict[str, Any]]:
    return await asyncio.to_thread(get_engine(request).auth.list_users)


@router.post("/admin/users", status_code=201, summary="Create a user")
async def create_user(body: UserIn, request: Request, actor: Identity = require("admin")) -> dict[str, Any]:
    auth = get_engine(request).auth
    await asyncio.to_thread(
        auth.create_user, body.username, body.password, role=body.role, groups=body.groups
    )
    await _audit(request, actor, "user_create", body.username, {"role": body.role, "groups": body.groups})
    return await asyncio.to_thread(auth.user_info, body.username)


@router.patch("/admin/users/{username}", summary="Change a user's role, enable/disable, reset the password")
async def patch_user(
    username: str, body: UserPatch, request: Request, actor: Identity = require("admin")
) -> Any:
    auth = get_engine(request).auth
    await asyncio.to_thread(auth.get_user, username)
    if body.role is not None:
        await asyncio.to_thread(auth.set_role, username, body.role)
        await _audit(request, actor, "user_role", username, {"role": body.role})
    if body.disabled is not None:
        await asyncio.to_thread(auth.set_disabled, username, body.disabled)
        await _audit(request, actor, "user_disable" if body.disabled else "user_enable", username)
    if body.password is not None:
        await asyncio.to_thread(auth.reset_password, username, body.password)
        await _audit(request, actor, "user_password_reset", username)
    return await asyncio.to_thread(auth.user_info, username)


@router.get("/admin/groups", summary="Groups and their members")
async def list_groups(request: Request, _: Identity = require("admin")) -> list[dict[str, Any]]:
    return await asyncio.to_thread(get_engine(request).auth.list_groups)


@router.post("/admin/groups", status_code=201, summary="Create a group")
async def create_group(body: GroupIn, request: Request, actor: Identity = require("admin")) -> dict[str, Any]:
    await asyncio.to_thread(get_engine(request).auth.create_group, body.name)
    await _audit(request, actor, "group_create", body.name)
    return {"name": body.name.strip().lower(), "members": []}


@router.put("/admin/groups/{group}/members/{username}", summary="Add a user to a group")
async def add_member(group: str, username: str, request: Request, actor: Identity = require("admin")) -> Any:
    await asyncio.to_thread(get_engine(request).auth.add_member, group, username)
    await _audit(request, actor, "group_add", group, {"username": username})
    return {"group": group, "username": username, "member": True}


@router.delete("/admin/groups/{group}/members/{username}", summary="Remove a user from a group")
async def remove_member(
    group: str, username: str, request: Request, actor: Identity = require("admin")
) -> Any:
    await asyncio.to_thread(get_engine(request).auth.remove_member, group, username)
    await _audit(request, actor, "group_remove", group, {"username": username})
    return {"group": group, "username": username, "member": False}


@router.get("/admin/api-keys", summary="API keys (never the keys themselves)")
async def list_keys(request: Request, _: Identity = require("admin")) -> list[dict[str, Any]]:
    return await asyncio.to_thread(get_engine(request).auth.list_api_keys)


@router.post("/admin/api-keys", status_code=201, summary="Create an API key (shown once)")
async def create_key(body: ApiKeyIn, request: Request, actor: Identity = require("admin")) -> dict[str, Any]:
    created = await asyncio.to_thread(
        get_engine(request).auth.create_api_key,
        body.username,
        body.name,
        role=body.role,
        can_delegate=body.can_delegate,
    )
    await _audit(request, actor, "api_key_create", created["prefix"], {"username": body.username})
    return created


@router.delete("/admin/api-keys/{key_id}", summary="Revoke an API key")
async def revoke_key(key_id: str, request: Request, actor: Identity = require("admin")) -> dict[str, Any]:
    await asyncio.to_thread(get_engine(request).auth.revoke_api_key, key_id)
    await _audit(request, actor, "api_key_revoke", key_id)
    return {"id": key_id, "revoked": True}


@router.get("/admin/audit", summary="Query the audit log")
async def audit(
    request: Request,
    _: Identity = require("admin"),
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> list[dict[str, Any]]:
    return await asyncio.to_thread(
        get_engine(request).audit.query, actor=actor, action=action, since=since, limit=limit
    )


@router.put("/documents/{document_id}/acl", tags=["documents"], summary="Change who may read a document")
async def set_acl(
    document_id: str, body: AclIn, request: Request, caller: CallerDep, _: Identity = require("editor")
) -> Any:
    updated = await asyncio.to_thread(
        get_engine(request).set_document_acl, document_id, body.acl, caller=caller
    )
    return updated.as_dict()


@router.get("/admin/stats", summary="Dashboard: questions per day, latency, feedback, documents")
async def stats(
    request: Request,
    caller: CallerDep,
    _: Identity = require("admin"),
    days: Annotated[int, Query(ge=1, le=366)] = 30,
    tz: Annotated[str, Query(min_length=1, max_length=64, description="IANA time zone of the days.")] = "UTC",
) -> dict[str, Any]:
    """``{"days", "tz", "from", "to", "questions_per_day": [{"date", "count"}], "questions",
    "latency_ms": {"p50", "p95", "count"}, "ttft_ms": {...}, "feedback": {"up", "down",
    "ratio"}, "documents": {"indexed", "indexing", "failed", "total"}}`` from hanrag's own
    tables (see :meth:`hanrag.answer.feedback.FeedbackService.stats`)."""
    return await asyncio.to_thread(get_engine(request).feedback.stats, caller=caller, days=days, tz=tz)


# The evaluation runs' pages (admins only, /admin/eval/...) ride on this router, so that
# registering the administration registers them too.
from hanrag.api.routers import evaluation  # noqa: E402

router.include_router(evaluation.router)
