"""Authentication middleware, role checks, and the /api/v1/auth routes.

Auth mode ``none`` (embedded default): every caller is one implicit user who may
read everything. Mode ``token``: every route except the configured open ones
needs ``Authorization: Bearer <access token or API key>`` (legacy clients may send
the key as ``X-API-Key``). The identity is re-read on every request, so disabling
a user or revoking a key takes effect at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from hanrag.api.problems import problem
from hanrag.auth.service import ANONYMOUS, AuthError, ForbiddenError, Identity
from hanrag.errors import HanragError

router = APIRouter(tags=["auth"])


def _credential(headers: dict[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None


class AuthMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def _is_open(path: str, method: str, settings: Any) -> bool:
        for open_path in settings.auth.open_paths:
            if path == open_path or path.startswith(open_path.rstrip("/") + "/"):
                return True
        # The web UI's static files load before anyone has logged in.
        api_paths = ("/api/", "/v1/", "/query", "/history", "/reference", "/metrics")
        return settings.api.static_dir is not None and method == "GET" and not path.startswith(api_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app = scope["app"]
        settings = app.state.settings
        engine = app.state.engine
        state = scope.setdefault("state", {})
        identity: Identity = ANONYMOUS
        path, method = scope["path"], scope.get("method", "GET")
        if (
            settings.auth.mode == "token"
            and method != "OPTIONS"
            and not self._is_open(path, method, settings)
        ):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            credential = _credential(headers)
            error: HanragError | None = None
            if credential is None:
                error = AuthError(
                    "this route needs 'Authorization: Bearer <token or API key>'", code="unauthorized"
                )
            else:
                try:
                    identity = await asyncio.to_thread(engine.auth.authenticate, credential)
                except HanragError as exc:
                    error = exc
            if error is not None:
                response = problem(
                    error.http_status,
                    error.code,
                    error.message,
                    path=path,
                    extra={"request_id": state.get("request_id")} if state.get("request_id") else None,
                    headers={"WWW-Authenticate": 'Bearer realm="hanrag"'},
                )
                await response(scope, receive, send)
                return
        state["identity"] = identity
        limiter = app.state.rate_limiter
        login = path == "/api/v1/auth/login"
        if limiter.per_minute and (login or not self._is_open(path, method, settings)):
            client = scope.get("client") or ("unknown", 0)
            # Password guessing is limited per client address, before anyone is authenticated.
            key = (
                f"login:{client[0]}"
                if login
                else (identity.principal if identity is not ANONYMOUS else f"ip:{client[0]}")
            )
            retry_after = await asyncio.to_thread(limiter.hit, key)
            if retry_after is not None:
                response = problem(
                    429,
                    "rate_limited",
                    f"too many requests; try again in {retry_after} s",
                    path=path,
                    headers={"Retry-After": str(retry_after)},
                    extra={"request_id": state.get("request_id")} if state.get("request_id") else None,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def identity_of(request: Request) -> Identity:
    identity: Identity = getattr(request.state, "identity", ANONYMOUS)
    return identity


def require(role: str) -> Any:
    def check(request: Request) -> Identity:
        identity = identity_of(request)
        if not identity.at_least(role):
            raise ForbiddenError(f"this action needs the {role} role", code="forbidden")
        return identity

    return Depends(check)


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


class LoginIn(BaseModel):
    username: str = Field(..., min_length=1, max_length=100)
    password: str = Field(..., min_length=1, max_length=1000)


class RefreshIn(BaseModel):
    refresh_token: str = Field(..., min_length=1, max_length=4096)


class LogoutIn(BaseModel):
    refresh_token: str | None = Field(None, max_length=4096)


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


@router.post("/auth/login", response_model=TokenOut, summary="Exchange a username and password for tokens")
async def login(body: LoginIn, request: Request) -> Any:
    engine = request.app.state.engine
    try:
        tokens = await asyncio.to_thread(engine.auth.login, body.username, body.password)
    except HanragError as exc:
        await asyncio.to_thread(
            engine.audit.record,
            body.username.strip().lower(),
            "login_failed",
            detail={"code": exc.code},
            ip=client_ip(request),
        )
        raise
    await asyncio.to_thread(
        engine.audit.record, body.username.strip().lower(), "login", ip=client_ip(request)
    )
    return tokens


@router.post("/auth/refresh", response_model=TokenOut, summary="New tokens for a refresh token (rotates it)")
async def refresh(body: RefreshIn, request: Request) -> Any:
    return await asyncio.to_thread(request.app.state.engine.auth.refresh, body.refresh_token)


@router.post("/auth/logout", summary="Revoke the current access token and a refresh token")
async def logout(request: Request, body: LogoutIn | None = None) -> dict[str, Any]:
    credential = _credential({k.lower(): v for k, v in request.headers.items()})
    access = credential if credential and not credential.startswith("hrk_") else None
    engine = request.app.state.engine
    await asyncio.to_thread(engine.auth.logout, access, body.refresh_token if body else None)
    await asyncio.to_thread(
        engine.audit.record, identity_of(request).username, "logout", ip=client_ip(request)
    )
    return {"logged_out": True}


@router.get("/auth/me", summary="Who am I: name, role, groups, readable principals")
async def me(request: Request) -> dict[str, Any]:
    identity = identity_of(request)
    return {
        "username": identity.username,
        "role": identity.role,
        "groups": identity.groups,
        "principals": identity.principals,
        "via": identity.via,
    }
