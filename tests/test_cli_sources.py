"""``hanrag source add-sql|list|show|sync|remove`` through Typer's runner, on the real
PostgreSQL and MariaDB (and SQLite) sample shop databases of :mod:`sql_support`.

Passwords never reach the output; bad input ends with one line, a stable code and a
non-zero exit, and nothing stored is lost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner, Result

from answer_fixtures import seed_embedding_cache
from hanrag.cli.main import app
from sql_support import PASSWORD, SECRET_MEMO


def invoke(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["--data-dir", str(data_dir), *args], env=env, catch_exceptions=False)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def one_line_error(result: Result, code: str) -> None:
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error [{code}] "), result.stderr


@pytest.fixture
def data_dir(tmp_path: Path, shared_cache_path: Path) -> Path:
    target = tmp_path / "data"
    seed_embedding_cache(shared_cache_path, target)
    return target


def test_add_list_show_sync_remove(data_dir: Path, db_url: str) -> None:
    added = as_json(
        invoke(
            data_dir,
            "source",
            "add-sql",
            "shop",
            "env:SHOP_URL",
            "--tables",
            "shipments,products",
            "--exclude",
            "shipments.memo",
            "--updated-at-column",
            "shipments.updated_at",
            "--acl",
            "group:logistics",
            "--query-acl",
            "group:logistics",
            "--interval",
            "60",
            "--json",
            env={"SHOP_URL": db_url},
        )
    )
    assert added["name"] == "shop" and [t["name"] for t in added["tables"]] == ["shipments", "products"]
    assert added["interval_minutes"] == 60 and added["next_sync_at"] is not None
    listed = invoke(data_dir, "source", "list")
    assert listed.exit_code == 0 and "shop" in listed.stdout
    shown = as_json(invoke(data_dir, "source", "show", "shop", "--json"))
    shipments = next(s for s in shown["schema"] if s["table"] == "shipments")
    assert "memo" not in [c["name"] for c in shipments["columns"]] and SECRET_MEMO not in json.dumps(shown)
    assert shipments["primary_key"] == ["id"]
    every = (added, shown, listed.stdout)
    assert all(PASSWORD not in json.dumps(x, ensure_ascii=False) for x in every)

    synced = as_json(invoke(data_dir, "source", "sync", "shop", "--json"))
    assert synced["counts"] == {"added": 5} and synced["rows"] == 5  # 3 shipments + 2 products
    again = invoke(data_dir, "source", "sync", "shop")  # the Rich table and bar
    assert again.exit_code == 0 and "documents:" in again.stdout
    docs = as_json(invoke(data_dir, "documents", "list", "--json"))
    assert len([d for d in docs if d["source"].startswith("sql:shop/")]) == 5

    removed = invoke(data_dir, "source", "remove", "shop")
    assert removed.exit_code == 0 and "5 documents removed" in removed.stdout
    assert as_json(invoke(data_dir, "source", "list", "--json")) == []
    assert not [
        d for d in as_json(invoke(data_dir, "documents", "list", "--json")) if d["source"].startswith("sql:")
    ]


def test_bad_input_is_one_line_with_a_stable_code(data_dir: Path, databases: dict[str, str | None]) -> None:
    url = databases["sqlite"]
    assert url is not None
    ok = invoke(data_dir, "source", "add-sql", "shop", url, "--tables", "products")
    assert ok.exit_code == 0
    cases = [
        (["add-sql", "shop", url, "--tables", "products"], "sql_source_exists"),
        (["add-sql", "other", url, "--tables", "nope"], "sql_table_unknown"),
        (["add-sql", "other", url, "--tables", "products", "--columns", "nope"], "sql_column_unknown"),
        (["add-sql", "other", url, "--tables", "products; DROP TABLE x"], "invalid_sql_source"),
        (["add-sql", "other", "nota url", "--tables", "products"], "invalid_sql_url"),
        (["add-sql", "other", "env:HANRAG_NOT_SET_ANYWHERE", "--tables", "products"], "invalid_sql_url"),
        (["add-sql", "bad/name", url, "--tables", "products"], "invalid_sql_source"),
        (["add-sql", "other", url, "--tables", "products", "--acl", "root!"], "invalid_acl"),
        (["add-sql", "other", url, "--tables", "products", "--interval", "0"], "invalid_sql_source"),
        (
            ["add-sql", "other", f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/x", "--tables", "t"],
            "sql_source_unreachable",
        ),
        (
            ["add-sql", "own", f"sqlite:///{data_dir / 'catalog.db'}", "--tables", "documents"],
            "sql_source_forbidden",
        ),
        (
            ["add-sql", "other", url, "--tables", "products", "--where", "id IN (SELECT id FROM customers)"],
            "invalid_sql_source",
        ),
        (
            ["add-sql", "other", url, "--tables", "products", "--where", "1=1; DELETE FROM products"],
            "invalid_sql_source",
        ),
        (["sync", "missing"], "sql_source_not_found"),
        (["show", "missing"], "sql_source_not_found"),
        (["remove", "missing"], "sql_source_not_found"),
    ]
    for args, code in cases:
        result = invoke(data_dir, "source", *args)
        one_line_error(result, code)
        assert PASSWORD not in result.stderr
    # Nothing stored was lost: the one good source is still there, unchanged.
    [only] = as_json(invoke(data_dir, "source", "list", "--json"))
    assert only["name"] == "shop" and [t["name"] for t in only["tables"]] == ["products"]


def test_a_writable_account_is_warned_about(data_dir: Path, databases: dict[str, str | None]) -> None:
    url = databases["postgresql"]
    if url is None:
        pytest.skip("no PostgreSQL server reachable")
    result = invoke(data_dir, "source", "add-sql", "shop", url, "--tables", "products")
    assert result.exit_code == 0 and "read-only account is recommended" in " ".join(result.stderr.split())
    # A read-only role is not warned about.
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    database = engine.url.database
    with engine.connect() as conn:
        conn.execute(text("DROP ROLE IF EXISTS hanrag_reader"))
        conn.execute(text("CREATE ROLE hanrag_reader LOGIN"))
        conn.execute(text("GRANT SELECT ON products TO hanrag_reader"))
    try:
        reader = f"postgresql+psycopg://hanrag_reader@127.0.0.1:5432/{database}"
        quiet = invoke(data_dir, "source", "add-sql", "reader", reader, "--tables", "products")
        assert quiet.exit_code == 0 and "read-only account" not in quiet.stderr
    finally:
        invoke(data_dir, "source", "remove", "reader")
        with engine.connect() as conn:
            conn.execute(text("REVOKE ALL ON products FROM hanrag_reader"))
            conn.execute(text("DROP ROLE hanrag_reader"))
        engine.dispose()
