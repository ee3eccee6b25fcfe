"""Administration commands: db, user, group, apikey, audit, document ACLs."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from hanrag.auth.access import SYSTEM
from hanrag.cli.common import console, documents_app, engine_session, print_json, run
from hanrag.errors import InvalidInputError

db_app = typer.Typer(help="Database schema and the first administrator.", no_args_is_help=True)
user_app = typer.Typer(help="Users: create, list, disable, enable, reset passwords.", no_args_is_help=True)
group_app = typer.Typer(help="Groups and their members.", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys for services (shown once, stored hashed).", no_args_is_help=True)


def _password(env_name: str, prompt: str) -> str:
    """From the environment (scripts) or an interactive prompt; never echoed or printed."""
    value = os.environ.get(env_name)
    if value:
        return value
    if not os.isatty(0):
        raise InvalidInputError(f"no password: set {env_name} or run interactively", code="password_required")
    return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=True))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the catalog database (SQLite or PostgreSQL) to the newest schema."""
    from hanrag.store.db import make_engine
    from hanrag.store.migrate import head_revision, upgrade

    def work() -> tuple[str | None, str | None]:
        from hanrag.cli.common import settings

        loaded = settings()
        loaded.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(loaded.resolved_catalog_url)
        try:
            return upgrade(engine)
        finally:
            engine.dispose()

    before, after = run(work)
    if before == after:
        console.print(f"the catalog is up to date (revision {after}, head {head_revision()})")
    else:
        console.print(f"migrated the catalog from {before or 'empty'} to {after}")


@db_app.command("init")
def db_init() -> None:
    """Create the schema and the first administrator 'admin' (HANRAG_ADMIN_PASSWORD or a prompt)."""

    def work() -> str:
        with engine_session() as engine:
            existing = {u["username"] for u in engine.auth.list_users()}
            if "admin" in existing:
                return "the schema is up to date; user 'admin' already exists"
            engine.auth.create_user(
                "admin", _password("HANRAG_ADMIN_PASSWORD", "admin password"), role="admin"
            )
            engine.audit.record("cli", "user_create", target="admin", detail={"role": "admin"})
            return "created the schema and user 'admin'"

    console.print(run(work))


@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option("--role", help="viewer, editor or admin.")] = "viewer",
    group: Annotated[
        list[str] | None, typer.Option("--group", help="Group (repeatable; created if missing).")
    ] = None,
) -> None:
    """Create a user (password from HANRAG_NEW_PASSWORD or a prompt)."""

    def work() -> dict[str, Any]:
        with engine_session() as engine:
            password = _password("HANRAG_NEW_PASSWORD", f"password for {username}")
            engine.auth.create_user(username, password, role=role, groups=group or [])
            engine.audit.record(
                "cli", "user_create", target=username, detail={"role": role, "groups": group or []}
            )
            return engine.auth.user_info(username)

    info = run(work)
    console.print(
        f"created user {info['username']} ({info['role']}; groups: {', '.join(info['groups']) or '-'})"
    )


@user_app.command("list")
def user_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """All users with role, groups and state."""

    def work() -> list[dict[str, Any]]:
        with engine_session() as engine:
            return engine.auth.list_users()

    users = run(work)
    if as_json:
        print_json(users)
        return
    table = Table("user", "role", "groups", "disabled", title=f"{len(users)} users")
    for user in users:
        table.add_row(
            user["username"], user["role"], ", ".join(user["groups"]), "yes" if user["disabled"] else ""
        )
    console.print(table)


def _set_disabled(username: str, disabled: bool) -> None:
    def work() -> None:
        with engine_session() as engine:
            engine.auth.set_disabled(username, disabled)
            engine.audit.record("cli", "user_disable" if disabled else "user_enable", target=username)

    run(work)
    console.print(f"{'disabled' if disabled else 'enabled'} {username}")


@user_app.command("disable")
def user_disable(username: Annotated[str, typer.Argument()]) -> None:
    """Disable a user: their tokens and API keys stop working at once."""
    _set_disabled(username, True)


@user_app.command("enable")
def user_enable(username: Annotated[str, typer.Argument()]) -> None:
    """Enable a disabled user again."""
    _set_disabled(username, False)


@user_app.command("reset-password")
def user_reset_password(username: Annotated[str, typer.Argument()]) -> None:
    """Set a new password (HANRAG_NEW_PASSWORD or a prompt); open sessions end."""

    def work() -> None:
        with engine_session() as engine:
            engine.auth.get_user(username)
            engine.auth.reset_password(
                username, _password("HANRAG_NEW_PASSWORD", f"new password for {username}")
            )
            engine.audit.record("cli", "user_password_reset", target=username)

    run(work)
    console.print(f"password of {username} reset")


@group_app.command("create")
def group_create(name: Annotated[str, typer.Argument()]) -> None:
    def work() -> None:
        with engine_session() as engine:
            engine.auth.create_group(name)
            engine.audit.record("cli", "group_create", target=name)

    run(work)
    console.print(f"created group {name}")


@group_app.command("add")
def group_add(group: Annotated[str, typer.Argument()], username: Annotated[str, typer.Argument()]) -> None:
    def work() -> None:
        with engine_session() as engine:
            engine.auth.add_member(group, username)
            engine.audit.record("cli", "group_add", target=group, detail={"username": username})

    run(work)
    console.print(f"added {username} to {group}")


@group_app.command("remove")
def group_remove(group: Annotated[str, typer.Argument()], username: Annotated[str, typer.Argument()]) -> None:
    def work() -> None:
        with engine_session() as engine:
            engine.auth.remove_member(group, username)
            engine.audit.record("cli", "group_remove", target=group, detail={"username": username})

    run(work)
    console.print(f"removed {username} from {group}")


@group_app.command("list")
def group_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    def work() -> list[dict[str, Any]]:
        with engine_session() as engine:
            return engine.auth.list_groups()

    groups = run(work)
    if as_json:
        print_json(groups)
        return
    table = Table("group", "members", title=f"{len(groups)} groups")
    for group in groups:
        table.add_row(group["name"], ", ".join(group["members"]))
    console.print(table)


@apikey_app.command("create")
def apikey_create(
    username: Annotated[str, typer.Argument(help="The key acts as this user.")],
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "service",
    role: Annotated[str | None, typer.Option("--role", help="At most the owner's role.")] = None,
    delegate: Annotated[
        bool,
        typer.Option("--delegate", help="Trusted service: may act for the user named in legacy requests."),
    ] = False,
) -> None:
    """Create an API key; the key is printed once and only its hash is kept."""

    def work() -> dict[str, Any]:
        with engine_session() as engine:
            created = engine.auth.create_api_key(username, name, role=role, can_delegate=delegate)
            engine.audit.record(
                "cli", "api_key_create", target=created["prefix"], detail={"username": username}
            )
            return created

    created = run(work)
    console.print(f"API key for {created['username']} ({created['role']}), id {created['id']}:")
    # The key goes to stdout alone so scripts can capture it.
    typer.echo(created["key"])


@apikey_app.command("list")
def apikey_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    def work() -> list[dict[str, Any]]:
        with engine_session() as engine:
            return engine.auth.list_api_keys()

    keys = run(work)
    if as_json:
        print_json(keys)
        return
    table = Table(
        "id", "prefix", "name", "user", "role", "delegate", "revoked", "last used", title=f"{len(keys)} keys"
    )
    for key in keys:
        table.add_row(
            key["id"],
            key["prefix"],
            key["name"],
            key["username"],
            key["role"],
            "yes" if key["can_delegate"] else "",
            "yes" if key["revoked"] else "",
            key["last_used_at"] or "",
        )
    console.print(table)


@apikey_app.command("revoke")
def apikey_revoke(key_id: Annotated[str, typer.Argument(help="Key id or prefix.")]) -> None:
    def work() -> None:
        with engine_session() as engine:
            engine.auth.revoke_api_key(key_id)
            engine.audit.record("cli", "api_key_revoke", target=key_id)

    run(work)
    console.print(f"revoked {key_id}")


def audit(
    actor: Annotated[str | None, typer.Option("--actor", help="Only this user.")] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="login, question, acl_change, user_create ...")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="YYYY-MM-DD or an ISO time.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Query the audit log (logins, admin actions, ACL changes, questions)."""

    def work() -> list[dict[str, Any]]:
        start = None
        if since:
            try:
                start = datetime.fromisoformat(since)
            except ValueError:
                raise InvalidInputError(f"--since: {since!r} is not a date", field="since") from None
        with engine_session() as engine:
            return engine.audit.query(actor=actor, action=action, since=start, limit=limit)

    rows = run(work)
    if as_json:
        print_json(rows)
        return
    table = Table("time", "actor", "action", "target", "detail", title=f"{len(rows)} audit entries")
    for row in rows:
        table.add_row(
            row["at"][:19], row["actor"], row["action"], row["target"] or "", str(row["detail"])[:80]
        )
    console.print(table)


def documents_acl(
    document: Annotated[str, typer.Argument(help="Document id or source path.")],
    acl: Annotated[list[str], typer.Option("--acl", help="public, user:NAME, group:NAME (repeatable).")],
) -> None:
    """Change who may read a document (its chunks are updated, not re-embedded)."""

    def work() -> Any:
        with engine_session() as engine:
            return engine.set_document_acl(document, acl, caller=SYSTEM)

    row = run(work)
    console.print(f"{row.title}: readable by {', '.join(row.acl)}")


index_app = typer.Typer(help="Index maintenance.", no_args_is_help=True)


@index_app.command("migrate")
def index_migrate(
    to: Annotated[str, typer.Option("--to", help="Target backend: milvus.")],
    milvus_uri: Annotated[
        str | None, typer.Option("--milvus-uri", help="milvus-lite file or server URI (default: settings).")
    ] = None,
) -> None:
    """Copy the local index into Milvus without re-embedding (vectors and Kiwi tokens are reused)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from hanrag.cli.common import err_console, settings

    def work() -> dict[str, Any]:
        if to != "milvus":
            raise InvalidInputError(f"unknown target backend {to!r} (known: milvus)", field="to")
        source = settings()
        uri = milvus_uri or source.index.milvus_uri or str(source.data_dir / "milvus.db")
        target = source.model_copy(
            update={"index": source.index.model_copy(update={"backend": "milvus", "milvus_uri": uri})}
        )
        with (
            engine_session() as engine,
            Progress(
                TextColumn("[bold]migrate"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[chunks]} chunks"),
                TimeRemainingColumn(),
                console=err_console,
            ) as progress,
        ):
            task = progress.add_task("migrate", total=None, chunks=0)

            def on_progress(done: int, total: int, chunks: int) -> None:
                progress.update(task, completed=done, total=total, chunks=chunks)

            report = engine.migrate_index(target, on_progress)
            report["uri"] = uri
            return report

    report = run(work)
    console.print(
        f"copied {report['documents']} documents / {report['chunks']} chunks to {report['uri']} "
        f"in {report['seconds']} s ({report['chunks_per_second']} chunks/s); "
        f"switch with HANRAG_INDEX__BACKEND=milvus HANRAG_INDEX__MILVUS_URI={report['uri']}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
    app.add_typer(db_app, name="db")
    app.add_typer(user_app, name="user")
    app.add_typer(group_app, name="group")
    app.add_typer(apikey_app, name="apikey")
    app.command("audit")(audit)
    documents_app.command("acl")(documents_acl)
