"""Who may read, grant and replace what: the one place the access rules live.

A caller is described by the principals whose documents they may read
(``public``, ``user:NAME``, ``group:NAME``), or ``None`` for an unrestricted
caller (administrators, auth mode ``none`` and the CLI). Every rule here is a
pure function of those principals and a document's ACL, so the routers, the
ingestion pipeline, the job runner and the engine all apply the same rule.

Names (of users, groups and the principals in ACLs) follow one rule too:
NFKC-normalised (so a full-width ``ａ`` typed by an IME is the ASCII ``a``),
lower-cased, 1-100 letters or digits of any script plus ``. _ - @``. Anything
else — zero-width or control characters, NUL, commas, spaces — is refused
instead of being stored as a principal nobody can ever hold.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from hanrag.domain import PUBLIC, SearchFilters
from hanrag.errors import ForbiddenError, InvalidInputError

if TYPE_CHECKING:
    from hanrag.auth.service import Identity

NAME_MAX_CHARS = 100
# Letters and digits of any script (group names such as "영업" appear in ACLs built from
# metadata, e.g. ``ingest.acl_from_metadata``), plus these separators.
NAME_PUNCTUATION = frozenset("._-@")
# More principals than this in one ACL is a mistake (or an attack on the ACL bitmaps).
ACL_MAX_ENTRIES = 1000
PRINCIPAL_KINDS = ("user", "group")


def check_name(value: str, what: str) -> str:
    """A user or group name in its stored form, or ``invalid_<what>``."""
    name = unicodedata.normalize("NFKC", value).strip().lower() if isinstance(value, str) else ""
    if (
        not name
        or len(name) > NAME_MAX_CHARS
        or not all(ch.isalnum() or ch in NAME_PUNCTUATION for ch in name)
    ):
        shown = value if isinstance(value, str) and len(value) <= 120 else f"{str(value)[:120]}…"
        raise InvalidInputError(
            f"invalid {what} {shown!r}: use 1-{NAME_MAX_CHARS} letters, digits, '.', '_', '-', '@'",
            code=f"invalid_{what}",
            field=what,
        )
    return name


def validate_acl(acl: Iterable[str], *, field: str = "acl") -> list[str]:
    """An ACL in its stored form: ``public``, ``user:NAME`` or ``group:NAME`` entries,
    de-duplicated, in order; ``invalid_acl`` naming the bad entry otherwise."""
    cleaned: list[str] = []
    for raw in acl:
        if not isinstance(raw, str):
            raise InvalidInputError(
                "ACL entries are strings: 'public', 'user:NAME' or 'group:NAME'",
                code="invalid_acl",
                field=field,
            )
        entry = unicodedata.normalize("NFKC", raw).strip()
        if entry.lower() == PUBLIC:
            principal = PUBLIC
        else:
            kind, sep, name = entry.partition(":")
            kind = kind.strip().lower()
            if not sep or kind not in PRINCIPAL_KINDS:
                raise _bad_entry(raw, field)
            try:
                principal = f"{kind}:{check_name(name, kind)}"
            except InvalidInputError:
                raise _bad_entry(raw, field) from None
        if principal not in cleaned:
            cleaned.append(principal)
        if len(cleaned) > ACL_MAX_ENTRIES:
            raise InvalidInputError(
                f"an ACL has at most {ACL_MAX_ENTRIES} principals", code="invalid_acl", field=field
            )
    if not cleaned:
        raise InvalidInputError(
            "the ACL is empty: give at least one principal", code="invalid_acl", field=field
        )
    return cleaned


def _bad_entry(raw: str, field: str) -> InvalidInputError:
    shown = raw if len(raw) <= 120 else f"{raw[:120]}…"
    return InvalidInputError(
        f"invalid ACL entry {shown!r}: use 'public', 'user:NAME' or 'group:NAME' "
        f"(NAME: 1-{NAME_MAX_CHARS} letters, digits, '.', '_', '-', '@')",
        code="invalid_acl",
        field=field,
    )


def may_read(principals: Iterable[str] | None, acl: Iterable[str] | None) -> bool:
    """Whether a caller with these principals may read a document with this ACL."""
    if principals is None:
        return True
    return not set(principals).isdisjoint(acl or ())


def check_grant(principals: Iterable[str] | None, acl: list[str], *, field: str = "acl") -> list[str]:
    """The validated ACL a caller asks to give a document. An unrestricted caller
    (administrator) may grant anything; anyone else only principals they hold
    themselves, so an editor cannot open a document to, or hand it over to, others."""
    cleaned = validate_acl(acl, field=field)
    if principals is not None:
        held = set(principals)
        foreign = [p for p in cleaned if p not in held]
        if foreign:
            raise ForbiddenError(
                f"you may only grant principals you hold; not {', '.join(foreign[:5])}",
                code="acl_not_permitted",
                field=field,
            )
    return cleaned


def scope_principals(
    caller: list[str] | None, target: list[str] | None, *, caller_is_admin: bool
) -> list[str] | None:
    """The principals a delegating caller may use on behalf of a target user: never more
    than the caller itself holds. A caller that is not an administrator cannot act for an
    unrestricted (administrator) target at all."""
    if target is None:
        if not caller_is_admin:
            raise ForbiddenError(
                "this key may not act for an administrator", code="delegation_not_allowed", field="user_id"
            )
        return caller
    if caller is None:
        return list(target)
    held = set(caller)
    return [p for p in target if p in held]


# ------------------------------------------------------------------ callers


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a read is for, as the engine sees it. Every engine method that reads takes
    one, so an unscoped read cannot happen by omission: the CLI and auth mode ``none``
    pass :data:`SYSTEM` explicitly.

    ``name``: the user (None: the implicit single user or the system); ``principals``:
    whose documents they may read (None: everything); ``role``: viewer, editor or admin.
    """

    name: str | None
    principals: tuple[str, ...] | None
    role: str = "viewer"

    @classmethod
    def of(cls, name: str | None, principals: Iterable[str] | None, role: str = "viewer") -> Caller:
        return cls(name, None if principals is None else tuple(principals), role)

    @property
    def unrestricted(self) -> bool:
        return self.principals is None

    @property
    def principal_list(self) -> list[str] | None:
        """The principals as the index filters take them (None: no restriction)."""
        return None if self.principals is None else list(self.principals)


SYSTEM = Caller(name=None, principals=None, role="admin")


def caller_of(identity: Identity | None) -> Caller:
    """The caller an authenticated identity reads as, for every entry point (HTTP API,
    MCP server): no identity or auth mode ``none`` is the implicit single user, who
    reads everything."""
    if identity is None or identity.via == "none":
        return Caller(name=None, principals=None, role="admin")
    return Caller.of(identity.username, identity.principals, identity.role)


def scope(filters: SearchFilters | None, caller: Caller) -> SearchFilters:
    """The one place a search is limited to what its caller may read: the caller's
    principals replace whatever the filters held (clients cannot set them)."""
    return replace(filters or SearchFilters(), principals=caller.principal_list)


def owns(caller: Caller, owner: str | None) -> bool:
    """Whether a caller may see a private record (a conversation) owned by ``owner``:
    their own or an unowned one. Conversations stay private from administrators too;
    only the implicit single user (no name) sees every one."""
    return owner is None or caller.name is None or owner == caller.name


def may_review(caller: Caller) -> bool:
    """Whether a caller may read what every user leaves behind — the feedback on answers
    (with their questions and answers) and the usage statistics: administrators, the CLI
    and the implicit single user (unrestricted callers with the admin role) only."""
    return caller.unrestricted and caller.role == "admin"


def may_manage(caller: Caller, owner: str | None) -> bool:
    """Whether a caller may see and control an operational record (a job) owned by
    ``owner``: their own, or any when unrestricted (administrators, the CLI). Unowned
    jobs (queued by the CLI) are the operators'."""
    return caller.unrestricted or (owner is not None and owner == caller.name)


# Session ids are at most this long in the catalog; longer page ids are stored by digest.
ROOM_ID_MAX = 64


def room_id(caller: Caller, page_id: str, owner_of: Callable[[str], str | None]) -> str:
    """The stored conversation of a client-named room (a legacy ``page_id``).

    Each named caller names rooms in a namespace of their own: another caller's page id
    is simply a different room, so page ids can be neither probed nor claimed ahead of
    their owner. A conversation the caller already owns under that very id (one of their
    native sessions, or a room from before namespaces) is used as it is. The implicit
    single user (no name) uses the page id itself, as the earlier service did.
    """
    if len(page_id) <= ROOM_ID_MAX and (caller.name is None or owner_of(page_id) == caller.name):
        return page_id
    digest = hashlib.sha256(f"{caller.name or ''}\x00{page_id}".encode()).hexdigest()[:40]
    return f"lg_{digest}"


# ---------------------------------------------------------------- SQL sources


def may_query(principals: Iterable[str] | None, grant: Iterable[str] | None) -> bool:
    """Whether a caller may run SQL on a table through the table route: unrestricted
    callers always; anyone else when they hold a principal of the table's query grant
    (None: nobody but administrators)."""
    if principals is None:
        return True
    return grant is not None and not set(principals).isdisjoint(grant)


def may_add_sources(caller: Caller) -> bool:
    """Administrators add SQL sources; editors too, within the hosts the operator allows
    (checked where the URL is known)."""
    return caller.unrestricted or caller.role in ("admin", "editor")
