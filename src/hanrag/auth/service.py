"""Users, groups, roles, passwords, JWTs, API keys, and who may read what.

* Passwords: Argon2id (argon2-cffi), rehashed on login when parameters change.
* Access tokens: short-lived HS256 JWTs with a ``jti``; logout revokes them.
* Refresh tokens: JWTs whose ``jti`` is stored; each use rotates (the old one is
  revoked), and logout revokes it.
* API keys: ``hrk_<random>``; only the SHA-256 is stored, the key is shown once.
* Every request re-reads the user, so disabling a user stops their tokens and
  keys at once.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine

from hanrag.auth.access import check_name, scope_principals
from hanrag.domain import PUBLIC
from hanrag.errors import AuthError, ForbiddenError, HanragError, InvalidInputError, NotFoundError
from hanrag.settings import AuthSettings
from hanrag.store.db import create_schema, session_factory
from hanrag.store.models import (
    ApiKeyRow,
    GroupRow,
    MembershipRow,
    RefreshTokenRow,
    RevokedAccessTokenRow,
    UserRow,
    utcnow,
)

ROLES = ("viewer", "editor", "admin")
_ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
API_KEY_PREFIX = "hrk_"


class ConflictError(HanragError):
    code = "conflict"
    http_status = 409


@dataclass(slots=True)
class Identity:
    """Who is calling, and the principals whose documents they may read."""

    username: str
    role: str
    user_id: str | None = None
    groups: list[str] = field(default_factory=list)
    via: str = "token"  # token | api_key | none
    api_key_id: str | None = None
    can_delegate: bool = False
    # None = unrestricted (administrators, and auth mode "none").
    principals: list[str] | None = None

    @property
    def principal(self) -> str:
        return f"user:{self.username}"

    def at_least(self, role: str) -> bool:
        return _ROLE_RANK.get(self.role, -1) >= _ROLE_RANK[role]


ANONYMOUS = Identity(username="anonymous", role="admin", via="none", principals=None)


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInputError(
            f"unknown role {role!r} (known: {', '.join(ROLES)})", code="invalid_role", field="role"
        )
    return role


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class AuthService:
    def __init__(self, engine: Engine, settings: AuthSettings, data_dir: Path) -> None:
        create_schema(engine)
        self._sessions = session_factory(engine)
        self.settings = settings
        self._secret = self._load_secret(settings, data_dir)
        from argon2 import PasswordHasher

        self._hasher = PasswordHasher()

    @staticmethod
    def _load_secret(settings: AuthSettings, data_dir: Path) -> str:
        if settings.jwt_secret is not None and settings.jwt_secret.get_secret_value():
            return settings.jwt_secret.get_secret_value()
        # One secret per data directory, so tokens survive restarts and every process agrees.
        path = data_dir / "jwt-secret"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            candidate = secrets.token_urlsafe(48)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it first; read theirs
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(candidate)
        return path.read_text().strip()

    # -------------------------------------------------------------- passwords

    def _hash(self, password: str) -> str:
        if len(password) < self.settings.min_password_length:
            raise InvalidInputError(
                f"the password must have at least {self.settings.min_password_length} characters",
                code="weak_password",
                field="password",
            )
        return self._hasher.hash(password)

    # ------------------------------------------------------------------ users

    def _require_user(self, db: Any, username: str) -> UserRow:
        user = self._user_by_name(db, username)
        if user is None:
            raise NotFoundError(f"no user {username!r}", code="user_not_found", field="username")
        return user

    def _user_by_name(self, db: Any, username: str) -> UserRow | None:
        return db.scalars(select(UserRow).where(UserRow.username == username.strip().lower())).first()

    def create_user(
        self, username: str, password: str, *, role: str = "viewer", groups: list[str] | None = None
    ) -> UserRow:
        name = check_name(username, "username")
        _check_role(role)
        password_hash = self._hash(password)
        with self._sessions.begin() as db:
            if self._user_by_name(db, name) is not None:
                raise ConflictError(f"user {name!r} already exists", code="user_exists", field="username")
            user = UserRow(id=uuid.uuid4().hex, username=name, password_hash=password_hash, role=role)
            db.add(user)
            db.flush()
            for group in groups or []:
                group_row = self._group(db, group, create=True)
                db.add(MembershipRow(user_id=user.id, group_id=group_row.id))
        return user

    def get_user(self, username: str) -> UserRow:
        with self._sessions() as db:
            user = self._require_user(db, username)
        return user

    def list_users(self) -> list[dict[str, Any]]:
        with self._sessions() as db:
            users = list(db.scalars(select(UserRow).order_by(UserRow.username)))
            return [self._user_dict(db, u) for u in users]

    def _groups_of(self, db: Any, user_id: str) -> list[str]:
        rows = db.execute(
            select(GroupRow.name)
            .join(MembershipRow, MembershipRow.group_id == GroupRow.id)
            .where(MembershipRow.user_id == user_id)
        )
        return sorted(name for (name,) in rows)

    def _user_dict(self, db: Any, user: UserRow) -> dict[str, Any]:
        return {
            "username": user.username,
            "role": user.role,
            "disabled": user.disabled,
            "groups": self._groups_of(db, user.id),
            "created_at": user.created_at.isoformat(),
        }

    def user_info(self, username: str) -> dict[str, Any]:
        with self._sessions() as db:
            user = self._require_user(db, username)
            return self._user_dict(db, user)

    def set_disabled(self, username: str, disabled: bool) -> None:
        with self._sessions.begin() as db:
            user = self._require_user(db, username)
            user.disabled = disabled
            user.updated_at = utcnow()
            if disabled:
                self._revoke_refresh_tokens(db, user.id)

    @staticmethod
    def _revoke_refresh_tokens(db: Any, user_id: str) -> None:
        db.execute(
            update(RefreshTokenRow)
            .where(RefreshTokenRow.user_id == user_id, RefreshTokenRow.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )

    def set_role(self, username: str, role: str) -> None:
        _check_role(role)
        with self._sessions.begin() as db:
            user = self._require_user(db, username)
            user.role = role
            user.updated_at = utcnow()

    def reset_password(self, username: str, password: str) -> None:
        password_hash = self._hash(password)
        with self._sessions.begin() as db:
            user = self._require_user(db, username)
            user.password_hash = password_hash
            user.updated_at = utcnow()
            # A new password ends every session opened with the old one: refresh tokens
            # are revoked, and access tokens of the old token version are refused.
            user.token_version = (user.token_version or 0) + 1
            self._revoke_refresh_tokens(db, user.id)

    # ----------------------------------------------------------------- groups

    def _group(self, db: Any, name: str, *, create: bool = False) -> GroupRow:
        clean = check_name(name, "group")
        group = db.scalars(select(GroupRow).where(GroupRow.name == clean)).first()
        if group is None:
            if not create:
                raise NotFoundError(f"no group {clean!r}", code="group_not_found", field="group")
            group = GroupRow(id=uuid.uuid4().hex, name=clean)
            db.add(group)
            db.flush()
        return group

    def create_group(self, name: str) -> None:
        with self._sessions.begin() as db:
            clean = check_name(name, "group")
            if db.scalars(select(GroupRow).where(GroupRow.name == clean)).first() is not None:
                raise ConflictError(f"group {clean!r} already exists", code="group_exists", field="group")
            db.add(GroupRow(id=uuid.uuid4().hex, name=clean))

    def list_groups(self) -> list[dict[str, Any]]:
        with self._sessions() as db:
            groups = list(db.scalars(select(GroupRow).order_by(GroupRow.name)))
            out = []
            for group in groups:
                members = db.execute(
                    select(UserRow.username)
                    .join(MembershipRow, MembershipRow.user_id == UserRow.id)
                    .where(MembershipRow.group_id == group.id)
                )
                out.append({"name": group.name, "members": sorted(name for (name,) in members)})
            return out

    def add_member(self, group: str, username: str) -> None:
        with self._sessions.begin() as db:
            group_row = self._group(db, group)
            user = self._require_user(db, username)
            if db.get(MembershipRow, (user.id, group_row.id)) is None:
                db.add(MembershipRow(user_id=user.id, group_id=group_row.id))

    def remove_member(self, group: str, username: str) -> None:
        with self._sessions.begin() as db:
            group_row = self._group(db, group)
            user = self._require_user(db, username)
            db.execute(
                delete(MembershipRow).where(
                    MembershipRow.user_id == user.id, MembershipRow.group_id == group_row.id
                )
            )

    # --------------------------------------------------------------- identity

    def _identity(self, db: Any, user: UserRow, *, via: str, role: str | None = None) -> Identity:
        groups = self._groups_of(db, user.id)
        effective = role if role is not None else user.role
        principals = (
            None
            if effective == "admin"
            else [PUBLIC, f"user:{user.username}", *(f"group:{g}" for g in groups)]
        )
        return Identity(
            username=user.username,
            role=effective,
            user_id=user.id,
            groups=groups,
            via=via,
            principals=principals,
        )

    def identity_for(self, username: str) -> Identity:
        """The identity of an enabled user (used when a trusted service names the end user)."""
        with self._sessions() as db:
            user = self._user_by_name(db, username)
            if user is None or user.disabled:
                raise AuthError(f"unknown or disabled user {username!r}", code="unknown_user")
            return self._identity(db, user, via="delegated")

    def act_for(self, caller: Identity, username: str) -> Identity:
        """The identity a delegating key (``can_delegate``) uses for the end user it names.

        Delegation never widens what the key may read: the user's principals are cut to
        those the key itself holds (so a service account reaches a group's documents only
        as a member of that group), and only an administrator's key may act for an
        administrator. The role is the lower of the two.
        """
        if not caller.can_delegate:
            raise ForbiddenError("this key may not act for other users", code="delegation_not_allowed")
        target = self.identity_for(username)
        principals = scope_principals(
            caller.principals, target.principals, caller_is_admin=caller.principals is None
        )
        role = min(caller.role, target.role, key=lambda r: _ROLE_RANK.get(r, -1))
        return Identity(
            username=target.username,
            role=role,
            user_id=target.user_id,
            groups=[g for g in target.groups if principals is None or f"group:{g}" in principals],
            via="delegated",
            api_key_id=caller.api_key_id,
            principals=principals,
        )

    # ------------------------------------------------------------------ login

    def login(self, username: str, password: str) -> dict[str, Any]:
        from argon2.exceptions import InvalidHashError, VerificationError

        with self._sessions.begin() as db:
            user = self._user_by_name(db, username)
            if user is None:
                # Spend the same time as a real check, so names cannot be probed by timing.
                self._hasher.hash(password or "x")
                raise AuthError("wrong username or password", code="invalid_credentials")
            try:
                self._hasher.verify(user.password_hash, password)
            except (VerificationError, InvalidHashError):
                raise AuthError("wrong username or password", code="invalid_credentials") from None
            if user.disabled:
                raise AuthError("this account is disabled", code="account_disabled")
            if self._hasher.check_needs_rehash(user.password_hash):
                user.password_hash = self._hasher.hash(password)
            return self._issue(db, user)

    def _issue(self, db: Any, user: UserRow) -> dict[str, Any]:
        import jwt

        now = datetime.now(UTC)
        access_expires = now + timedelta(minutes=self.settings.access_token_minutes)
        refresh_expires = now + timedelta(days=self.settings.refresh_token_days)
        refresh_jti = uuid.uuid4().hex
        access = jwt.encode(
            {
                "sub": user.id,
                "name": user.username,
                "typ": "access",
                "jti": uuid.uuid4().hex,
                "ver": user.token_version or 0,
                "iat": now,
                "exp": access_expires,
            },
            self._secret,
            algorithm="HS256",
        )
        refresh = jwt.encode(
            {"sub": user.id, "typ": "refresh", "jti": refresh_jti, "iat": now, "exp": refresh_expires},
            self._secret,
            algorithm="HS256",
        )
        db.add(RefreshTokenRow(jti=refresh_jti, user_id=user.id, expires_at=refresh_expires))
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "bearer",
            "expires_in": self.settings.access_token_minutes * 60,
        }

    def _decode(self, token: str, expected_type: str) -> dict[str, Any]:
        import jwt

        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._secret, algorithms=["HS256"], options={"require": ["exp", "sub", "jti", "typ"]}
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired", code="token_expired") from None
        except jwt.PyJWTError:
            raise AuthError("the token is not valid", code="invalid_token") from None
        if claims.get("typ") != expected_type:
            raise AuthError(f"a {expected_type} token is required", code="invalid_token")
        return claims

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        claims = self._decode(refresh_token, "refresh")
        with self._sessions.begin() as db:
            stored = db.get(RefreshTokenRow, claims["jti"])
            if stored is None or stored.revoked_at is not None:
                raise AuthError("the refresh token has been revoked", code="token_revoked")
            user = db.get(UserRow, claims["sub"])
            if user is None or user.disabled:
                raise AuthError("this account is disabled", code="account_disabled")
            stored.revoked_at = utcnow()  # rotation: each refresh token works once
            return self._issue(db, user)

    def logout(self, access_token: str | None, refresh_token: str | None) -> None:
        with self._sessions.begin() as db:
            if access_token:
                claims = self._decode(access_token, "access")
                expires = datetime.fromtimestamp(int(claims["exp"]), tz=UTC)
                if db.get(RevokedAccessTokenRow, claims["jti"]) is None:
                    db.add(RevokedAccessTokenRow(jti=claims["jti"], expires_at=expires))
            if refresh_token:
                claims = self._decode(refresh_token, "refresh")
                stored = db.get(RefreshTokenRow, claims["jti"])
                if stored is not None and stored.revoked_at is None:
                    stored.revoked_at = utcnow()
            db.execute(delete(RevokedAccessTokenRow).where(RevokedAccessTokenRow.expires_at < utcnow()))

    def authenticate(self, credential: str) -> Identity:
        """An access token or an API key -> the caller's identity (or AuthError)."""
        if credential.startswith(API_KEY_PREFIX):
            return self._authenticate_key(credential)
        claims = self._decode(credential, "access")
        with self._sessions() as db:
            if db.get(RevokedAccessTokenRow, claims["jti"]) is not None:
                raise AuthError("the token has been revoked", code="token_revoked")
            user = db.get(UserRow, claims["sub"])
            if user is None or user.disabled:
                raise AuthError("this account is disabled", code="account_disabled")
            if claims.get("ver", 0) != (user.token_version or 0):
                raise AuthError("the password has changed since this token was issued", code="token_revoked")
            return self._identity(db, user, via="token")

    # --------------------------------------------------------------- API keys

    @staticmethod
    def _key_hash(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def create_api_key(
        self, username: str, name: str, *, role: str | None = None, can_delegate: bool = False
    ) -> dict[str, Any]:
        with self._sessions.begin() as db:
            user = self._require_user(db, username)
            key_role = _check_role(role or user.role)
            if _ROLE_RANK[key_role] > _ROLE_RANK[user.role]:
                raise ForbiddenError(
                    f"a key cannot have more rights ({key_role}) than its owner ({user.role})"
                )
            key = API_KEY_PREFIX + secrets.token_urlsafe(32)
            row = ApiKeyRow(
                id=uuid.uuid4().hex,
                name=name.strip()[:100] or "key",
                prefix=key[:12],
                key_hash=self._key_hash(key),
                user_id=user.id,
                role=key_role,
                can_delegate=can_delegate,
            )
            db.add(row)
            return {
                "id": row.id,
                "key": key,
                "name": row.name,
                "prefix": row.prefix,
                "role": key_role,
                "username": user.username,
                "can_delegate": can_delegate,
            }

    def list_api_keys(self, username: str | None = None) -> list[dict[str, Any]]:
        with self._sessions() as db:
            query = select(ApiKeyRow, UserRow.username).join(UserRow, UserRow.id == ApiKeyRow.user_id)
            if username:
                query = query.where(UserRow.username == username.strip().lower())
            return [
                {
                    "id": key.id,
                    "name": key.name,
                    "prefix": key.prefix,
                    "role": key.role,
                    "username": owner,
                    "can_delegate": key.can_delegate,
                    "created_at": key.created_at.isoformat(),
                    "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
                    "revoked": key.revoked_at is not None,
                }
                for key, owner in db.execute(query.order_by(ApiKeyRow.created_at))
            ]

    def revoke_api_key(self, key_id: str) -> None:
        with self._sessions.begin() as db:
            row = db.get(ApiKeyRow, key_id)
            if row is None:
                row = db.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == key_id)).first()
            if row is None:
                raise NotFoundError(f"no API key {key_id!r}", code="api_key_not_found", field="key")
            row.revoked_at = row.revoked_at or utcnow()

    def _authenticate_key(self, key: str) -> Identity:
        with self._sessions.begin() as db:
            row = db.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == self._key_hash(key))).first()
            if row is None:
                raise AuthError("the API key is not valid", code="invalid_api_key")
            if row.revoked_at is not None:
                raise AuthError("the API key has been revoked", code="api_key_revoked")
            user = db.get(UserRow, row.user_id)
            if user is None or user.disabled:
                raise AuthError("the key's owner is disabled", code="account_disabled")
            # Never more than the owner has now (a demoted owner demotes the key).
            role = row.role if _ROLE_RANK[row.role] <= _ROLE_RANK[user.role] else user.role
            last_used = row.last_used_at
            if last_used is None or _aware(last_used) < datetime.now(UTC) - timedelta(minutes=1):
                row.last_used_at = utcnow()
            identity = self._identity(db, user, via="api_key", role=role)
            identity.api_key_id = row.id
            identity.can_delegate = row.can_delegate
            return identity
