"""Running one validated SELECT read-only and with a deadline (issue P10, the table route).

:func:`hanrag.tables.sql_guard.validate_select` is the first gate an LLM-written query
passes. This module is the second, for defence in depth: even if the validator let a
write through (a parser gap, a dialect quirk, a function with side effects), the database
itself refuses it, because the query runs in a read-only transaction (PostgreSQL,
MySQL/MariaDB) or on a connection with ``PRAGMA query_only`` (SQLite); and a runaway
query (a huge join, a sleep) is stopped by the database's own statement timeout (SQLite:
a progress handler) instead of holding a connection and a worker.

Per dialect, :func:`run_read_only` does:

- PostgreSQL: ``SET TRANSACTION READ ONLY`` and ``statement_timeout`` local to the
  transaction (checked: an engine in autocommit mode would silently ignore both, so it is
  refused), a server-side cursor (so at most ``max_rows + 1`` rows ever reach us; a
  statement that is not a query fails there already, as a syntax error), then ``ROLLBACK``.
- MariaDB: ``START TRANSACTION READ ONLY``, then ``SET STATEMENT tx_read_only=1,
  max_statement_time=<s> FOR <sql>`` (both scoped to that one statement: a DDL statement
  commits the READ ONLY transaction implicitly and would run outside it without the
  statement's own flag), then ``ROLLBACK``. MySQL proper has no ``SET STATEMENT``: the
  session's ``max_execution_time`` (ms) and ``TRANSACTION READ ONLY`` are set and put back.
- SQLite: ``PRAGMA query_only = ON`` and a progress handler on the DB-API connection that
  interrupts the statement after the deadline; both are undone afterwards.

Nothing is left on the pooled connection: one that cannot be restored is invalidated.

Errors: :class:`SqlTimeoutError` (``sql_timeout``, 504), :class:`SqlExecutionError`
(``sql_execution_failed``, 400; the message is the database's own first line, short and
safe to give back to an LLM for a retry: never the URL, never parameters), a
:class:`~hanrag.errors.BackendError` ``sql_source_unreachable`` (503) when the source
cannot be reached (``sql_read_only_unavailable``: cannot be made read-only), and
``sql_dialect_unsupported`` (400) for a source whose dialect the table route does not query
(Oracle, SQL Server ...). Never a bare ``SQLAlchemyError``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as clock_time
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from hanrag.errors import BackendError, InvalidInputError, RequestTimeoutError

MAX_MESSAGE_CHARS = 300

# SQLAlchemy dialect name -> sqlglot dialect (one of sql_guard.DIALECTS).
_SQLGLOT_DIALECTS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}
_PG_QUERY_CANCELED = "57014"
# MariaDB ER_STATEMENT_TIMEOUT, MySQL ER_QUERY_TIMEOUT, ER_QUERY_INTERRUPTED.
_MYSQL_TIMEOUT_ERRNOS = frozenset({1969, 3024, 1317})
_SQLITE_PROGRESS_STEPS = 1000  # VM instructions between two deadline checks


class SqlTimeoutError(RequestTimeoutError):
    """The query ran longer than its timeout and was stopped by the database (504)."""

    code = "sql_timeout"


class SqlExecutionError(InvalidInputError):
    """The database refused or failed the query (400); the message says why, in one line."""

    code = "sql_execution_failed"


def sqlglot_dialect(name: str) -> str:
    """The sqlglot dialect (of ``sql_guard.DIALECTS``) for a SQLAlchemy dialect name."""
    try:
        return _SQLGLOT_DIALECTS[name]
    except KeyError:
        raise InvalidInputError(
            f"the table route cannot query a {name} source (only PostgreSQL, MySQL/MariaDB, SQLite)",
            code="sql_dialect_unsupported",
            field="dialect",
        ) from None


def json_value(value: Any) -> Any:
    """A database value as JSON can carry it: int, float, str, bool or None."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date | clock_time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return None
    return str(value)


def unique_names(names: list[str]) -> list[str]:
    """Result column names made unique (``name``, ``name_2``...): a join such as
    ``SELECT p.name, c.name`` must not lose a column where rows become objects."""
    seen: set[str] = set()
    unique: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate)
        unique.append(candidate)
    return unique


@dataclass
class QueryResult:
    """At most ``max_rows`` rows of JSON-safe values; ``truncated``: the query had more."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    elapsed_ms: float

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=False)) for row in self.rows]

    def as_dict(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "rows": [list(row) for row in self.rows],
            "truncated": self.truncated,
            "row_count": len(self.rows),
        }


@dataclass
class _Deadline:
    hit: bool = False  # set when the SQLite progress handler interrupted the statement


def _restore(conn: Connection, *steps: Callable[[], object]) -> None:
    """Undo the session changes; a connection that cannot be undone is never reused."""
    try:
        for step in steps:
            step()
    except Exception:
        conn.invalidate()


@contextmanager
def _postgresql(conn: Connection, sql: str, timeout_s: float, deadline: _Deadline) -> Iterator[str]:
    ms = max(1, round(timeout_s * 1000))
    try:
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")  # the transaction's first statement
        read_only = conn.exec_driver_sql(
            f"SELECT current_setting('transaction_read_only'), set_config('statement_timeout', '{ms}', true)"
        ).scalar()
        if read_only != "on":  # e.g. an AUTOCOMMIT engine: SET TRANSACTION did nothing
            raise BackendError(
                "the SQL source's connection cannot be made read-only (is it in autocommit mode?)",
                code="sql_read_only_unavailable",
            )
        yield sql
    finally:
        _restore(conn, conn.rollback)  # ends READ ONLY and the local timeout


def _is_mariadb(conn: Connection) -> bool:
    dialect = conn.dialect
    if dialect.name == "mariadb" or getattr(dialect, "_is_mariadb", False):
        return True
    version = conn.exec_driver_sql("SELECT VERSION()").scalar()
    return "mariadb" in str(version).lower()


@contextmanager
def _mysql(conn: Connection, sql: str, timeout_s: float, deadline: _Deadline) -> Iterator[str]:
    # A READ ONLY transaction alone does not stop DDL, which commits it implicitly first.
    steps: list[Callable[[], object]] = [conn.rollback]
    try:
        if _is_mariadb(conn):
            version = tuple(getattr(conn.dialect, "server_version_info", None) or ())
            flag = "transaction_read_only" if version >= (11, 1) else "tx_read_only"
            sql = f"SET STATEMENT {flag}=1, max_statement_time={max(timeout_s, 0.001):.3f} FOR {sql}"
        else:  # MySQL has no SET STATEMENT
            limit, read_only = conn.exec_driver_sql(
                "SELECT @@SESSION.max_execution_time, @@SESSION.transaction_read_only"
            ).one()
            conn.exec_driver_sql(f"SET SESSION max_execution_time = {max(1, round(timeout_s * 1000))}")
            conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
            mode = "ONLY" if read_only else "WRITE"
            steps.append(lambda: conn.exec_driver_sql(f"SET SESSION max_execution_time = {int(limit or 0)}"))
            steps.append(lambda: conn.exec_driver_sql(f"SET SESSION TRANSACTION READ {mode}"))
        conn.exec_driver_sql("START TRANSACTION READ ONLY")
        yield sql
    finally:
        _restore(conn, *steps)


@contextmanager
def _sqlite(conn: Connection, sql: str, timeout_s: float, deadline: _Deadline) -> Iterator[str]:
    raw = conn.connection.driver_connection
    ends = time.monotonic() + timeout_s

    def progress() -> int:
        if time.monotonic() > ends:
            deadline.hit = True
            return 1  # non-zero: SQLite interrupts the statement
        return 0

    steps: list[Callable[[], object]] = [conn.rollback]
    try:
        previous = int(conn.exec_driver_sql("PRAGMA query_only").scalar() or 0)
        conn.exec_driver_sql("PRAGMA query_only = ON")
        steps.append(lambda: conn.exec_driver_sql(f"PRAGMA query_only = {previous}"))
        if raw is not None and hasattr(raw, "set_progress_handler"):
            raw.set_progress_handler(progress, _SQLITE_PROGRESS_STEPS)
            steps.insert(0, lambda: raw.set_progress_handler(None, 0))
        yield sql
    finally:
        _restore(conn, *steps)


_Guard = Callable[[Connection, str, float, _Deadline], AbstractContextManager[str]]
_GUARDS: dict[str, _Guard] = {"postgres": _postgresql, "mysql": _mysql, "sqlite": _sqlite}


def _orig(exc: BaseException) -> BaseException:
    """The DB-API error behind a SQLAlchemy one."""
    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc


def _db_message(orig: BaseException, password: str | None) -> str:
    """The database's own reason, first line only, short, without the password."""
    primary = getattr(getattr(orig, "diag", None), "message_primary", None)  # psycopg
    args: tuple[Any, ...] = getattr(orig, "args", ())
    if primary:
        text = str(primary)
    elif len(args) >= 2 and isinstance(args[0], int) and isinstance(args[1], str):
        text = f"({args[0]}) {args[1]}"  # PyMySQL: (errno, message)
    else:
        text = str(orig)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    message = lines[0] if lines else type(orig).__name__
    if password:
        message = message.replace(password, "***")
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return message


def _is_timeout(orig: BaseException, deadline: _Deadline) -> bool:
    if deadline.hit:
        return True
    if _PG_QUERY_CANCELED in (getattr(orig, "sqlstate", None), getattr(orig, "pgcode", None)):
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in _MYSQL_TIMEOUT_ERRNOS


def _translate(exc: BaseException, engine: Engine, timeout_s: float, deadline: _Deadline) -> Exception:
    orig = _orig(exc)
    if _is_timeout(orig, deadline):
        return SqlTimeoutError(
            f"the query was stopped after {timeout_s:g} s: make it simpler or more selective"
        )
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return BackendError(
            f"the connection to the SQL source was lost ({type(orig).__name__})",
            code="sql_source_unreachable",
        )
    message = _db_message(orig, engine.url.password)
    return SqlExecutionError(f"the database refused the query: {message}", field="sql")


def run_read_only(engine: Engine, sql: str, *, max_rows: int, timeout_s: float) -> QueryResult:
    """Run ONE already-validated SELECT read-only, stopped after ``timeout_s``, and return
    at most ``max_rows`` rows (``truncated`` when there were more). See the module docstring."""
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    if not timeout_s > 0:
        raise ValueError("timeout_s must be positive")
    guard = _GUARDS[sqlglot_dialect(engine.dialect.name)]
    try:
        conn = engine.connect()
    except SQLAlchemyError as exc:
        raise BackendError(
            f"cannot connect to the SQL source ({type(_orig(exc)).__name__})", code="sql_source_unreachable"
        ) from None
    deadline = _Deadline()
    started = time.perf_counter()
    with conn:
        try:
            with guard(conn, sql, timeout_s, deadline) as statement:
                # no_parameters: the driver gets the text as is ('%' in LIKE stays '%');
                # stream_results: a server-side cursor where there is one (PostgreSQL).
                result = conn.exec_driver_sql(
                    statement,
                    execution_options={"no_parameters": True, "stream_results": guard is _postgresql},
                )
                rows_back = result.returns_rows  # False only for a write the database allowed
                columns = unique_names(list(map(str, result.keys()))) if rows_back else []
                fetched = result.fetchmany(max_rows + 1) if rows_back else []
                result.close()
        except SQLAlchemyError as exc:
            raise _translate(exc, engine, timeout_s, deadline) from exc
    rows = [[json_value(value) for value in row] for row in fetched[:max_rows]]
    elapsed_ms = (time.perf_counter() - started) * 1000
    return QueryResult(columns, rows, truncated=len(fetched) > max_rows, elapsed_ms=elapsed_ms)
