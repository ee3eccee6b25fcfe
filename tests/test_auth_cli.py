"""Administration from the command line (``hanrag db|user|group|apikey|audit``) through Typer's
runner on a temporary data directory; an API key made here is then used against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from api_server import start_server
from hanrag.auth.service import AuthError
from hanrag.cli.main import app
from hanrag.engine import Engine
from hanrag.settings import Settings

ADMIN_PASSWORD = "admin-password-123"
NEW_PASSWORD = "user-password-456"
OTHER_PASSWORD = "changed-password-789"


def invoke(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["--data-dir", str(data_dir), *args], env=env, catch_exceptions=False)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def one_line_error(result: Result, code: str, exit_code: int | None = None) -> str:
    assert result.exit_code != 0, result.stdout
    if exit_code is not None:
        assert result.exit_code == exit_code, (result.exit_code, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error [{code}] "), lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def never_printed(result: Result, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.stdout and secret not in result.stderr


def login_works(data_dir: Path, username: str, password: str) -> bool:
    engine = Engine(Settings(data_dir=data_dir))
    try:
        engine.auth.login(username, password)
        return True
    except AuthError:
        return False
    finally:
        engine.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with the schema and the administrator (``db init``)."""
    directory = tmp_path_factory.mktemp("auth-cli") / "data"
    ok(invoke(directory, "db", "init", env={"HANRAG_ADMIN_PASSWORD": ADMIN_PASSWORD}))
    return directory


def test_db_init_takes_the_password_from_the_environment(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # No terminal and no variable: refused, nothing created.
    one_line_error(invoke(data, "db", "init"), "password_required", 2)
    one_line_error(invoke(data, "db", "init", env={"HANRAG_ADMIN_PASSWORD": "short"}), "weak_password", 2)

    first = ok(invoke(data, "db", "init", env={"HANRAG_ADMIN_PASSWORD": ADMIN_PASSWORD}))
    assert "created the schema and user 'admin'" in first.stdout
    never_printed(first, ADMIN_PASSWORD)
    again = ok(invoke(data, "db", "init", env={"HANRAG_ADMIN_PASSWORD": "another-admin-password"}))
    assert "already exists" in again.stdout
    never_printed(again, "another-admin-password")

    assert login_works(data, "admin", ADMIN_PASSWORD)
    assert not login_works(data, "admin", "another-admin-password")  # the second init changed nothing
    (admin,) = as_json(invoke(data, "user", "list", "--json"))
    assert (admin["username"], admin["role"], admin["disabled"]) == ("admin", "admin", False)


def test_users_create_list_disable_enable_reset(data_dir: Path) -> None:
    env = {"HANRAG_NEW_PASSWORD": NEW_PASSWORD}
    created = ok(
        invoke(
            data_dir, "user", "create", "alice", "--role", "editor", "--group", "a", "--group", "b", env=env
        )
    )
    assert "created user alice (editor; groups: a, b)" in created.stdout
    never_printed(created, NEW_PASSWORD)
    users = {u["username"]: u for u in as_json(invoke(data_dir, "user", "list", "--json"))}
    assert users["alice"]["role"] == "editor" and users["alice"]["groups"] == ["a", "b"]
    assert users["alice"]["disabled"] is False
    assert "password" not in json.dumps(users)
    table = ok(invoke(data_dir, "user", "list"))
    assert "alice" in table.stdout and "editor" in table.stdout
    assert login_works(data_dir, "alice", NEW_PASSWORD)

    assert "disabled alice" in ok(invoke(data_dir, "user", "disable", "alice")).stdout
    disabled = {u["username"]: u["disabled"] for u in as_json(invoke(data_dir, "user", "list", "--json"))}
    assert disabled["alice"] is True and disabled["admin"] is False
    assert not login_works(data_dir, "alice", NEW_PASSWORD)
    assert "enabled alice" in ok(invoke(data_dir, "user", "enable", "alice")).stdout
    assert login_works(data_dir, "alice", NEW_PASSWORD)

    reset = ok(
        invoke(data_dir, "user", "reset-password", "alice", env={"HANRAG_NEW_PASSWORD": OTHER_PASSWORD})
    )
    assert "password of alice reset" in reset.stdout
    never_printed(reset, OTHER_PASSWORD, NEW_PASSWORD)
    assert not login_works(data_dir, "alice", NEW_PASSWORD)
    assert login_works(data_dir, "alice", OTHER_PASSWORD)


def test_groups_create_add_remove_list(data_dir: Path) -> None:
    ok(invoke(data_dir, "user", "create", "gina", env={"HANRAG_NEW_PASSWORD": NEW_PASSWORD}))
    assert "created group legal" in ok(invoke(data_dir, "group", "create", "legal")).stdout
    one_line_error(invoke(data_dir, "group", "create", "legal"), "group_exists", 1)
    assert "added gina to legal" in ok(invoke(data_dir, "group", "add", "legal", "gina")).stdout
    groups = {g["name"]: g["members"] for g in as_json(invoke(data_dir, "group", "list", "--json"))}
    assert groups["legal"] == ["gina"]
    assert "legal" in ok(invoke(data_dir, "group", "list")).stdout
    assert "removed gina from legal" in ok(invoke(data_dir, "group", "remove", "legal", "gina")).stdout
    groups = {g["name"]: g["members"] for g in as_json(invoke(data_dir, "group", "list", "--json"))}
    assert groups["legal"] == []
    one_line_error(invoke(data_dir, "group", "add", "nope", "gina"), "group_not_found", 1)
    one_line_error(invoke(data_dir, "group", "add", "legal", "ghost"), "user_not_found", 1)


@pytest.fixture
def api(data_dir: Path) -> Iterator[str]:
    """A token-mode server over the CLI's data directory (it keeps running across CLI commands)."""
    engine = Engine(Settings(data_dir=data_dir, auth={"mode": "token"}))
    live = start_server(engine)
    try:
        yield live.url
    finally:
        live.stop()
        engine.close()


def test_apikey_create_works_against_the_api_until_revoked(data_dir: Path, api: str) -> None:
    ok(
        invoke(
            data_dir, "user", "create", "svc", "--role", "editor", env={"HANRAG_NEW_PASSWORD": NEW_PASSWORD}
        )
    )
    one_line_error(invoke(data_dir, "apikey", "create", "svc", "--role", "admin"), "forbidden", 1)
    created = ok(
        invoke(data_dir, "apikey", "create", "svc", "--name", "etl", "--role", "viewer", "--delegate")
    )
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("hrk_") and len(key) > 40
    assert created.stdout.count(key) == 1  # printed once
    keys = as_json(invoke(data_dir, "apikey", "list", "--json"))
    (entry,) = [k for k in keys if k["username"] == "svc"]
    assert (entry["name"], entry["role"], entry["can_delegate"], entry["revoked"]) == (
        "etl",
        "viewer",
        True,
        False,
    )
    assert key.startswith(entry["prefix"]) and entry["id"] in created.stdout
    listing = ok(invoke(data_dir, "apikey", "list"))
    assert key not in listing.stdout + json.dumps(keys)

    with httpx.Client(base_url=api, timeout=30) as client:
        me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200, me.text
        assert (me.json()["username"], me.json()["role"], me.json()["via"]) == ("svc", "viewer", "api_key")
        assert client.get("/api/v1/auth/me", headers={"X-API-Key": key}).status_code == 200

        assert f"revoked {entry['id']}" in ok(invoke(data_dir, "apikey", "revoke", entry["id"])).stdout
        # Refused at once by the running server: no restart.
        refused = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
        assert refused.status_code == 401 and refused.json()["code"] == "api_key_revoked"
    after = as_json(invoke(data_dir, "apikey", "list", "--json"))
    assert [k["revoked"] for k in after if k["username"] == "svc"] == [True]

    # A disabled owner's key stops too.
    second = ok(invoke(data_dir, "apikey", "create", "svc")).stdout.strip().splitlines()[-1]
    with httpx.Client(base_url=api, timeout=30, headers={"Authorization": f"Bearer {second}"}) as client:
        assert client.get("/api/v1/auth/me").status_code == 200
        ok(invoke(data_dir, "user", "disable", "svc"))
        assert client.get("/api/v1/auth/me").json()["code"] == "account_disabled"
        ok(invoke(data_dir, "user", "enable", "svc"))
        assert client.get("/api/v1/auth/me").status_code == 200


def test_bad_input_is_one_line_and_non_zero(data_dir: Path) -> None:
    env = {"HANRAG_NEW_PASSWORD": NEW_PASSWORD}
    one_line_error(invoke(data_dir, "user", "disable", "ghost"), "user_not_found", 1)
    one_line_error(invoke(data_dir, "user", "enable", "ghost"), "user_not_found", 1)
    one_line_error(invoke(data_dir, "user", "reset-password", "ghost", env=env), "user_not_found", 1)
    one_line_error(
        invoke(data_dir, "user", "create", "weakling", env={"HANRAG_NEW_PASSWORD": "abc"}), "weak_password", 2
    )
    one_line_error(invoke(data_dir, "user", "create", "rooted", "--role", "root", env=env), "invalid_role", 2)
    one_line_error(invoke(data_dir, "user", "create", "bad name", env=env), "invalid_username", 2)
    one_line_error(invoke(data_dir, "user", "create", "nopass"), "password_required", 2)
    one_line_error(invoke(data_dir, "user", "create", "admin", env=env), "user_exists", 1)
    one_line_error(invoke(data_dir, "apikey", "create", "ghost"), "user_not_found", 1)
    one_line_error(invoke(data_dir, "apikey", "revoke", "no-such-key"), "api_key_not_found", 1)
    one_line_error(invoke(data_dir, "audit", "--since", "yesterday-ish"), "invalid_input", 2)
    names = {u["username"] for u in as_json(invoke(data_dir, "user", "list", "--json"))}
    assert not names & {"weakling", "rooted", "bad name", "nopass", "ghost"}


def test_audit_json_filters(data_dir: Path) -> None:
    ok(invoke(data_dir, "group", "create", "audited"))
    everything = as_json(invoke(data_dir, "audit", "--json", "--limit", "1000"))
    assert {"user_create", "group_create"} <= {r["action"] for r in everything}
    assert all(r["actor"] == "cli" for r in everything)

    creates = as_json(invoke(data_dir, "audit", "--json", "--action", "user_create", "--limit", "1000"))
    assert creates and {r["action"] for r in creates} == {"user_create"}
    assert "admin" in {r["target"] for r in creates}
    latest = as_json(invoke(data_dir, "audit", "--json", "--action", "group_create", "--limit", "1"))
    assert len(latest) == 1 and latest[0]["target"] == "audited"
    assert as_json(invoke(data_dir, "audit", "--json", "--actor", "somebody-else")) == []
    assert as_json(invoke(data_dir, "audit", "--json", "--since", "2999-01-01")) == []
    since = as_json(
        invoke(data_dir, "audit", "--json", "--since", everything[-1]["at"][:10], "--limit", "1000")
    )
    assert len(since) == len(everything)
    table = ok(invoke(data_dir, "audit", "--action", "group_create"))
    assert "audited" in table.stdout
    # Passwords never reach the audit log.
    assert ADMIN_PASSWORD not in json.dumps(everything) and NEW_PASSWORD not in json.dumps(everything)
