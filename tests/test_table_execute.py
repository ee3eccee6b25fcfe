"""Running validated SELECTs read-only with a deadline (P10, the table route).

Runs against SQLite, a real PostgreSQL (127.0.0.1:5432, trust authentication) and a real
MariaDB (127.0.0.1:3306, root without password): each module run creates scratch databases
``hanrag_sqlexec_<random>`` and drops them afterwards; a server that is not reachable skips
its cases. Writes are passed to ``run_read_only`` directly, bypassing the validator, to show
that the database itself refuses them. Every engine has a pool of ONE connection, so the
normal write after each case runs on the very connection the guarded query used.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import date, datetime
from datetime import time as clock_time
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from hanrag.errors import BackendError, HanragError, InvalidInputError
from hanrag.tables.execute import (
    QueryResult,
    SqlExecutionError,
    SqlTimeoutError,
    json_value,
    run_read_only,
    sqlglot_dialect,
)
from sql_support import reachable  # (tests/ is on sys.path)

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/?charset=utf8mb4"
PASSWORD = "s3cret-Pw-never-shown"

ROWS = [
    (1, "서울", "배송 완료", "1000.50", date(2025, 3, 1)),
    (2, "서울", "배송 중", "2000.50", date(2025, 3, 2)),
    (3, "부산", "배송 완료", "1500.25", date(2025, 3, 3)),
    (4, "부산", "반송", "500.00", date(2025, 3, 4)),
    (5, "제주", "배송 완료", "700.00", date(2025, 3, 5)),
    (6, "대전", "배송 준비", "300.00", date(2025, 3, 6)),
]
SLOW = {
    "postgresql": "SELECT pg_sleep(5)",
    "mysql": "SELECT SLEEP(5)",
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500000000) "
    "SELECT COUNT(*) FROM c",
}
WRITES = [
    "DELETE FROM shipments",
    "UPDATE shipments SET region = '해킹'",
    "INSERT INTO shipments (id, region, status, amount, shipped_at) VALUES (99, '해킹', 'x', 1, NULL)",
    "DROP TABLE shipments",
    "CREATE TABLE hacked (a INTEGER)",
]


# A function that writes, called from a SELECT: what a validator gap could let through.
PURGE = {
    "postgresql": "CREATE FUNCTION hanrag_purge() RETURNS integer LANGUAGE sql AS "
    "$$ DELETE FROM shipments; SELECT 1 $$",
    "mysql": "CREATE FUNCTION hanrag_purge() RETURNS INTEGER MODIFIES SQL DATA "
    "BEGIN DELETE FROM shipments; RETURN 1; END",
}


def _admin(url: str, sql: str) -> None:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(sql))
    admin.dispose()


def _populate(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE shipments (id INTEGER PRIMARY KEY, region VARCHAR(20), status VARCHAR(20), "
                "amount NUMERIC(12, 2), shipped_at DATE)"
            )
        )
        if engine.dialect.name in PURGE:
            conn.execute(text(PURGE[engine.dialect.name]))
        for i, region, status, amount, shipped in ROWS:  # literals: every driver takes them
            conn.execute(
                text(f"INSERT INTO shipments VALUES ({i}, '{region}', '{status}', {amount}, '{shipped}')")
            )
    engine.dispose()


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str | None]]:
    """backend -> SQLAlchemy URL of a populated scratch database (None: server unreachable)."""
    name = f"hanrag_sqlexec_{uuid.uuid4().hex[:10]}"
    urls: dict[str, str | None] = {}
    urls["sqlite"] = f"sqlite:///{tmp_path_factory.mktemp('sqlexec') / 'shop.db'}"
    _populate(urls["sqlite"])
    pg_up, maria_up = reachable(PG_ADMIN), reachable(MARIADB_ADMIN)
    urls["postgresql"] = urls["mariadb"] = None
    try:  # dropped even when populating fails
        if pg_up:
            _admin(PG_ADMIN, f'CREATE DATABASE "{name}"')
            # Trust authentication ignores the password: it is there to be hidden.
            urls["postgresql"] = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:5432/{name}"
            _populate(urls["postgresql"])
        if maria_up:
            _admin(
                MARIADB_ADMIN, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
            urls["mariadb"] = f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
            _populate(urls["mariadb"])
        yield urls
    finally:
        if pg_up:
            _admin(PG_ADMIN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if maria_up:
            _admin(MARIADB_ADMIN, f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def engine(request: pytest.FixtureRequest, databases: dict[str, str | None]) -> Iterator[Engine]:
    """An engine as SqlSource.connect makes it, with a pool of exactly one connection."""
    url = databases[request.param]
    if url is None:
        pytest.skip(f"no {request.param} server reachable")
    made = create_engine(url, hide_parameters=True, pool_pre_ping=True, pool_size=1, max_overflow=0)
    yield made
    made.dispose()


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM shipments")).scalar_one())


def _session_is_clean(engine: Engine) -> None:
    """The pooled connection is writable again and has no timeout left on it."""
    with engine.connect() as conn:
        name = engine.dialect.name
        if name == "postgresql":
            assert conn.execute(text("SHOW transaction_read_only")).scalar() == "off"
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
        elif name == "sqlite":
            assert conn.execute(text("PRAGMA query_only")).scalar() == 0
        else:
            assert conn.execute(text("SELECT @@max_statement_time, @@tx_read_only")).one() == (0, 0)
    before = _count(engine)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO shipments (id, region, status) VALUES (:i, '광주', '배송 준비')"),
            {"i": 1000 + before},
        )
    assert _count(engine) == before + 1
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM shipments WHERE id >= 1000"))


def test_dialect_names_map_to_sqlglot() -> None:
    assert sqlglot_dialect("postgresql") == "postgres"
    assert sqlglot_dialect("mysql") == sqlglot_dialect("mariadb") == "mysql"
    assert sqlglot_dialect("sqlite") == "sqlite"
    for name in ("oracle", "mssql"):
        with pytest.raises(InvalidInputError) as err:
            sqlglot_dialect(name)
        assert err.value.code == "sql_dialect_unsupported"


def test_values_are_json_safe() -> None:
    assert json_value(Decimal("3001.00")) == 3001 and isinstance(json_value(Decimal("3001.00")), int)
    assert json_value(Decimal("1500.25")) == 1500.25
    assert json_value(Decimal("NaN")) is None and json_value(float("inf")) is None
    assert json_value(datetime(2025, 3, 1, 9, 30)) == "2025-03-01T09:30:00"
    assert json_value(date(2025, 3, 1)) == "2025-03-01"
    assert json_value(clock_time(9, 30)) == "09:30:00"
    assert json_value(b"\x00\x01") is None and json_value(memoryview(b"x")) is None
    assert json_value(True) is True and json_value("서울") == "서울" and json_value(None) is None
    assert json_value(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    result = QueryResult(["지역", "건수"], [["서울", 2], ["부산", 2]], truncated=False, elapsed_ms=1.0)
    assert result.records() == [{"지역": "서울", "건수": 2}, {"지역": "부산", "건수": 2}]
    expected = {"columns": result.columns, "rows": result.rows, "truncated": False, "row_count": 2}
    assert result.as_dict() == expected
    assert SqlTimeoutError("x").http_status == 504 and SqlExecutionError("x").http_status == 400


def test_aggregate_query_returns_columns_and_rows(engine: Engine) -> None:
    result = run_read_only(
        engine,
        "SELECT region, COUNT(*) AS cnt, SUM(amount) AS total FROM shipments "
        "WHERE status LIKE '%배송%' GROUP BY region ORDER BY cnt DESC, region",
        max_rows=10,
        timeout_s=5,
    )
    assert result.columns == ["region", "cnt", "total"]
    assert result.rows == [["서울", 2, 3001], ["대전", 1, 300], ["부산", 1, 1500.25], ["제주", 1, 700]]
    assert result.truncated is False and result.elapsed_ms > 0
    dated = run_read_only(engine, "SELECT shipped_at FROM shipments WHERE id = 1", max_rows=1, timeout_s=5)
    assert dated.rows == [["2025-03-01"]]
    _session_is_clean(engine)


def test_max_rows_caps_and_sets_truncated(engine: Engine) -> None:
    capped = run_read_only(engine, "SELECT id, region FROM shipments ORDER BY id", max_rows=4, timeout_s=5)
    assert [row[0] for row in capped.rows] == [1, 2, 3, 4] and capped.truncated is True
    exact = run_read_only(engine, "SELECT id FROM shipments ORDER BY id", max_rows=6, timeout_s=5)
    assert len(exact.rows) == 6 and exact.truncated is False
    empty = run_read_only(engine, "SELECT id FROM shipments WHERE id < 0", max_rows=6, timeout_s=5)
    assert empty.columns == ["id"] and empty.rows == [] and empty.truncated is False


def test_writes_are_refused_by_the_database(engine: Engine) -> None:
    writes = list(WRITES)
    if engine.dialect.name == "postgresql":
        writes.append("WITH d AS (DELETE FROM shipments RETURNING *) SELECT * FROM d")
    before = _count(engine)
    for sql in writes:
        with pytest.raises(SqlExecutionError) as err:
            run_read_only(engine, sql, max_rows=10, timeout_s=5)
        assert err.value.code == "sql_execution_failed" and err.value.field == "sql"
        assert "\n" not in err.value.message and len(err.value.message) < 400
        assert _count(engine) == before, sql
    if engine.dialect.name in PURGE:  # refused as a write in a read-only transaction
        with pytest.raises(SqlExecutionError) as err:
            run_read_only(engine, "SELECT hanrag_purge()", max_rows=10, timeout_s=5)
        assert "read only" in err.value.message.lower().replace("-", " "), err.value.message
        assert _count(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT region FROM shipments WHERE id = 1")).scalar() == "서울"
    _session_is_clean(engine)


def test_slow_query_times_out(engine: Engine) -> None:
    started = time.monotonic()
    with pytest.raises(SqlTimeoutError) as err:
        run_read_only(engine, SLOW[engine.dialect.name], max_rows=10, timeout_s=0.5)
    assert time.monotonic() - started < 3
    assert err.value.code == "sql_timeout" and err.value.http_status == 504
    _session_is_clean(engine)
    assert run_read_only(engine, "SELECT COUNT(*) AS n FROM shipments", max_rows=1, timeout_s=5).rows == [[6]]


def test_errors_are_short_and_never_show_the_url(engine: Engine) -> None:
    with pytest.raises(SqlExecutionError) as err:
        run_read_only(engine, "SELEC region FROM shipments", max_rows=10, timeout_s=5)
    shown = f"{err.value} {err.value!r} {err.value.message}"
    assert PASSWORD not in shown and "://" not in shown and "127.0.0.1" not in shown
    assert "\n" not in err.value.message and len(err.value.message) <= 400
    assert "SELEC" in err.value.message  # the database's own words, to retry with
    with pytest.raises(SqlExecutionError) as err:
        run_read_only(engine, "SELECT no_such_column FROM shipments", max_rows=10, timeout_s=5)
    assert "no_such_column" in err.value.message
    _session_is_clean(engine)


def test_unreachable_source_is_a_backend_error() -> None:
    engine = create_engine(
        f"postgresql+psycopg://reader:{PASSWORD}@127.0.0.1:1/nothing", hide_parameters=True
    )
    with pytest.raises(BackendError) as err:
        run_read_only(engine, "SELECT 1", max_rows=1, timeout_s=1)
    assert err.value.code == "sql_source_unreachable" and PASSWORD not in str(err.value)
    unsupported = create_engine("sqlite://")
    unsupported.dialect.name = "oracle"  # as a source of another dialect would be
    with pytest.raises(HanragError) as refused:
        run_read_only(unsupported, "SELECT 1", max_rows=1, timeout_s=1)
    assert refused.value.code == "sql_dialect_unsupported"


def test_autocommit_postgres_engine_is_refused(databases: dict[str, str | None]) -> None:
    url = databases["postgresql"]
    if url is None:
        pytest.skip("no postgresql server reachable")
    engine = create_engine(url, hide_parameters=True, isolation_level="AUTOCOMMIT")
    try:
        with pytest.raises(BackendError) as err:
            run_read_only(engine, "DELETE FROM shipments", max_rows=1, timeout_s=1)
        assert err.value.code == "sql_read_only_unavailable"
        assert _count(engine) == len(ROWS)
    finally:
        engine.dispose()
