"""The SQL validator (P10): 30 Korean table questions accepted, 30 malicious or invalid strings refused.

The cases live in ``tests/sql_cases.py`` (the bench reuses them). The accepted SQL is also run
against an in-memory SQLite with the sample schema, before and after validation, to prove it is
valid SQL; the rendered query never reads a column or table outside the allow-list.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from hanrag.errors import InvalidInputError
from hanrag.tables import validate_select
from sql_cases import ACCEPTED, ALLOWED, REFUSED, SCHEMA_DDL, Accepted, Refused


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA_DDL)
    yield conn
    conn.close()


def refusal(sql: str, dialect: str = "sqlite", max_rows: int = 100) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as info:
        validate_select(sql, dialect=dialect, allowed=ALLOWED, max_rows=max_rows)
    assert info.value.field == "sql"
    return info.value


def test_case_counts() -> None:
    assert len(ACCEPTED) == 30
    assert len(REFUSED) == 30


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.question for c in ACCEPTED])
def test_accepted_questions_validate_and_run(case: Accepted, db: sqlite3.Connection) -> None:
    original = db.execute(case.sql).fetchall()
    rendered = validate_select(case.sql, dialect="sqlite", allowed=ALLOWED, max_rows=1000)
    assert rendered.rstrip().upper().split()[-2] == "LIMIT"

    # Same rows (a star expands in allow-list order, so compare each row's values as a set).
    def rows(found: list[tuple[object, ...]]) -> list[list[str]]:
        return sorted(sorted(map(repr, row)) for row in found)

    assert rows(db.execute(rendered).fetchall()) == rows(original)


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.question for c in ACCEPTED])
@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_accepted_questions_validate_in_other_dialects(case: Accepted, dialect: str) -> None:
    rendered = validate_select(case.sql, dialect=dialect, allowed=ALLOWED, max_rows=1000)
    assert "LIMIT" in rendered.upper()


@pytest.mark.parametrize("case", REFUSED, ids=[c.sql[:60] for c in REFUSED])
def test_refused_strings(case: Refused) -> None:
    assert refusal(case.sql, case.dialect).code == case.code


def test_star_expands_to_allowed_columns_only(db: sqlite3.Connection) -> None:
    rendered = validate_select("SELECT * FROM customers", dialect="sqlite", allowed=ALLOWED, max_rows=10)
    assert "phone" not in rendered and "*" not in rendered
    names = [d[0] for d in db.execute(rendered).description]
    assert sorted(names) == sorted(ALLOWED["customers"])


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT id FROM shipments", "LIMIT 50"),  # added
        ("SELECT id FROM shipments LIMIT 100000", "LIMIT 50"),  # lowered
        ("SELECT id FROM shipments LIMIT 7", "LIMIT 7"),  # kept
        ("SELECT id FROM shipments LIMIT -1", "LIMIT 50"),  # SQLite's "no limit"
        ("SELECT id FROM shipments LIMIT (SELECT 1000000)", "LIMIT 50"),
        ("SELECT id FROM shipments LIMIT 100 OFFSET 5", "LIMIT 50 OFFSET 5"),
        ("SELECT id FROM shipments UNION SELECT id FROM products LIMIT 900", "LIMIT 50"),
    ],
)
def test_limit_enforced(sql: str, expected: str) -> None:
    rendered = validate_select(sql, dialect="sqlite", allowed=ALLOWED, max_rows=50)
    assert rendered.endswith(expected)


def test_fetch_first_becomes_a_limit() -> None:
    sql = "SELECT id FROM shipments FETCH FIRST 500 ROWS ONLY"
    assert validate_select(sql, dialect="postgres", allowed=ALLOWED, max_rows=50).endswith("LIMIT 50")


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        ("postgres", 'SELECT "출하".region AS region FROM shipments AS "출하" LIMIT 5'),
        ("mysql", "SELECT `출하`.region AS region FROM shipments AS `출하` LIMIT 5"),
        ("sqlite", 'SELECT "출하".region AS region FROM shipments AS "출하" LIMIT 5'),
    ],
)
def test_rendering_per_dialect(dialect: str, expected: str) -> None:
    sql = (
        'SELECT "출하".region FROM shipments AS "출하"'
        if dialect != "mysql"
        else "SELECT `출하`.region FROM shipments AS `출하`"
    )
    assert validate_select(sql, dialect=dialect, allowed=ALLOWED, max_rows=5) == expected


def test_semicolons_and_comments_do_not_count() -> None:
    sql = "SELECT id FROM shipments WHERE region = 'a; DROP TABLE x' -- ; DELETE FROM shipments\n"
    rendered = validate_select(sql, dialect="sqlite", allowed=ALLOWED, max_rows=5)
    assert "DROP TABLE x" in rendered and "DELETE" not in rendered and "--" not in rendered
    # MySQL runs /*! ... */ comments; the rendered query has no comments at all.
    rendered = validate_select(
        "SELECT id /*!, SLEEP(5) */ FROM shipments", dialect="mysql", allowed=ALLOWED, max_rows=5
    )
    assert "SLEEP" not in rendered.upper() and "/*" not in rendered


def test_names_are_case_insensitive_and_schema_qualified() -> None:
    assert validate_select("SELECT ID FROM Shipments", dialect="postgres", allowed=ALLOWED, max_rows=5)
    qualified = {"public.shipments": {"id", "region"}}
    rendered = validate_select(
        "SELECT id FROM public.shipments", dialect="postgres", allowed=qualified, max_rows=5
    )
    assert "public.shipments" in rendered
    assert refusal("SELECT id FROM public.shipments", "postgres").code == "sql_table_not_allowed"


def test_cte_names_are_tables_only_where_visible() -> None:
    ok = "WITH users AS (SELECT id FROM shipments) SELECT id FROM users"
    assert validate_select(ok, dialect="sqlite", allowed=ALLOWED, max_rows=5)
    leaked = "SELECT u.id FROM (WITH users AS (SELECT id FROM shipments) SELECT id FROM users) t, users u"
    assert refusal(leaked).code == "sql_table_not_allowed"


@pytest.mark.parametrize(
    ("sql", "dialect", "code"),
    [
        ("", "sqlite", "sql_parse_error"),
        ("SELEC id FROM shipments", "sqlite", "sql_parse_error"),
        ("SELECT (" * 3, "sqlite", "sql_parse_error"),
        ("SELECT id FROM shipments;;SELECT 1", "sqlite", "sql_multiple_statements"),
        ("TRUNCATE TABLE shipments", "postgres", "sql_not_select"),
        ("CREATE TABLE x AS SELECT id FROM shipments", "sqlite", "sql_not_select"),
        ("GRANT ALL ON shipments TO public", "postgres", "sql_not_select"),
        ("SET statement_timeout = 0", "postgres", "sql_not_select"),
        ("CALL evil()", "postgres", "sql_not_select"),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r",
            "sqlite",
            "sql_clause_not_allowed",
        ),
        ("SELECT id FROM shipments FOR SHARE", "postgres", "sql_clause_not_allowed"),
        ("SELECT @@version", "mysql", "sql_clause_not_allowed"),
        ("SELECT id FROM shipments WHERE id = $1", "postgres", "sql_clause_not_allowed"),
        ("SELECT version()", "postgres", "sql_function_not_allowed"),
        ("SELECT current_user", "postgres", "sql_function_not_allowed"),
        ("SELECT pg_catalog.pg_sleep(1)", "postgres", "sql_clause_not_allowed"),
        ("SELECT xp_cmdshell('dir')", "mysql", "sql_function_not_allowed"),
        ("SELECT s.nope FROM shipments s", "sqlite", "sql_column_not_allowed"),
        ("SELECT t.nope FROM (SELECT id FROM shipments) t", "sqlite", "sql_column_not_allowed"),
        ("SELECT name FROM customers ORDER BY phone", "sqlite", "sql_column_not_allowed"),
    ],
)
def test_error_codes(sql: str, dialect: str, code: str) -> None:
    assert refusal(sql, dialect).code == code


def test_unknown_dialect_and_bad_arguments() -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_select("SELECT 1", dialect="oracle", allowed=ALLOWED, max_rows=5)
    assert (info.value.code, info.value.field) == ("sql_dialect_unknown", "dialect")
    with pytest.raises(ValueError):
        validate_select("SELECT 1", dialect="sqlite", allowed=ALLOWED, max_rows=0)
    with pytest.raises(ValueError):
        validate_select("SELECT 1", dialect="sqlite", allowed={"a": {"x"}, "s.b": {"y"}}, max_rows=5)


def test_too_long_is_refused() -> None:
    assert (
        refusal("SELECT id FROM shipments WHERE " + " OR ".join(["id = 1"] * 5000)).code == "sql_parse_error"
    )
