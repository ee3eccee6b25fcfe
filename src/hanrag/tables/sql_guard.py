"""The gate for LLM-written SQL: one read-only SELECT over allow-listed tables and columns.

``validate_select`` parses the query with sqlglot for the target dialect, refuses anything
that is not exactly one read-only query, and returns the SQL to run: the *re-rendered*
tree, never the caller's text. Run only the returned string: it has no comments (so MySQL's
executable ``/*! ... */`` comments and ``;`` hidden in comments are gone), its stars are
expanded to the allow-listed columns, every column is qualified with its table, and it
carries a ``LIMIT`` of at most ``max_rows``.

Rules, each refused with an ``InvalidInputError`` (field ``sql``) with a stable code:

- ``sql_parse_error``: empty, longer than ``MAX_SQL_CHARS``, or not parseable in the dialect.
- ``sql_multiple_statements``: more than one statement (``;`` inside strings or comments
  does not count: the tokenizer sees them as part of the literal or comment).
- ``sql_not_select``: the root is not a SELECT or a set operation (UNION, INTERSECT,
  EXCEPT) of SELECTs, or any writing, DDL or command node appears anywhere (INSERT,
  UPDATE, DELETE, MERGE, CREATE, DROP, ALTER, TRUNCATE, GRANT, COPY, CALL, EXECUTE, SET,
  PRAGMA, ATTACH, ... including data-modifying CTEs).
- ``sql_clause_not_allowed``: ``SELECT ... INTO``, locking clauses (``FOR UPDATE/SHARE``),
  ``WITH RECURSIVE``, parameters and session variables (``@x``, ``@@version``, ``$1``), and
  every syntax node outside a fixed allow-list (LATERAL, VALUES, table functions ...).
- ``sql_function_not_allowed``: any function outside ``ALLOWED_FUNCTIONS`` (typed sqlglot
  functions: aggregates, window ranking/offset, date, string, math, CASE, CAST, COALESCE
  ...) and ``ALLOWED_ANONYMOUS`` (plain names sqlglot does not type). Unknown means
  refused: ``sleep``, ``pg_sleep``, ``benchmark``, ``load_file``, ``pg_read_file``,
  ``lo_import``, ``dblink``, ``xp_cmdshell``, ``set_config``, ``nextval``, ``version``,
  ``current_user`` ... are all refused.
- ``sql_table_not_allowed``: a table reference (FROM, JOIN, subquery, CTE body) that is not
  a key of ``allowed`` and not a CTE visible at that point. Names compare case-insensitively;
  a schema-qualified reference (``public.shipments``) must match a qualified key, an
  unqualified one an unqualified key, so system catalogs (``information_schema``,
  ``pg_catalog``, ``mysql.user``, ``sqlite_master``) are refused unless allow-listed.
- ``sql_column_not_allowed``: a column that does not resolve to an allow-listed column of a
  table in scope, to an output column of a CTE or derived table, or to a select alias.
  ``*`` and ``t.*`` are expanded to the allow-listed columns (never to the real table's).
- ``sql_dialect_unknown`` (field ``dialect``): a dialect other than ``DIALECTS``.

Names in ``allowed`` should be the lowercase names the database reports; all keys are either
unqualified (``shipments``) or all schema-qualified (``public.shipments``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import cast

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope

from hanrag.errors import InvalidInputError

DIALECTS: frozenset[str] = frozenset({"postgres", "mysql", "sqlite"})
MAX_SQL_CHARS = 20_000


def _classes(names: str) -> tuple[type[exp.Expression], ...]:
    """The sqlglot expression classes of these space-separated names that this sqlglot has."""
    found = (getattr(exp, name, None) for name in names.split())
    return tuple(cls for cls in found if isinstance(cls, type) and issubclass(cls, exp.Expression))


# Writing, DDL, transaction and session commands: never anywhere in the tree.
_WRITES = _classes(
    "Insert Update Delete Merge Create Drop Alter AlterTable TruncateTable Command Set SetItem "
    "Pragma Copy Attach Detach Grant Revoke Use Transaction Commit Rollback LoadData Cache "
    "Uncache Describe Show Kill Returning Refresh Analyze"
)
# Read-only constructs that still must not run: a write target, locks, variables.
_REFUSED_CLAUSES = _classes("Into Lock Parameter Placeholder SessionParameter RawString")
# Every other non-function node must be one of these.
_SAFE_NODES = _classes(
    """Select From Join Where Group Having Order Ordered Limit Offset Fetch LimitOptions Column
    Identifier Table TableAlias Alias Literal Star Boolean Null Paren Subquery CTE With Union
    Intersect Except Distinct EQ NEQ GT GTE LT LTE NullSafeEQ NullSafeNEQ And Or Not Xor Add
    Sub Mul Div IntDiv Mod Neg DPipe BitwiseAnd BitwiseOr BitwiseXor BitwiseNot Like ILike Glob
    SimilarTo In Between Is Window WindowSpec Interval IntervalSpan DataType DataTypeParam Var
    Tuple Any All Filter WithinGroup Escape Cube Rollup GroupingSets Qualify"""
)
_ALLOWED_FUNCTION_NAMES = """
Count Sum Avg Min Max CountIf SumIf AvgIf Stddev StddevPop StddevSamp Variance VariancePop
Median PercentileCont PercentileDisc ApproxDistinct GroupConcat ArrayAgg StringAgg BoolAnd BoolOr
RowNumber Rank DenseRank PercentRank CumeDist Ntile NthValue Lag Lead FirstValue LastValue
Case If Cast TryCast Coalesce Nullif Greatest Least Exists
Abs Round Floor Ceil Sqrt Pow Exp Ln Log Log2 Log10 Sign SafeDivide Mod Trunc
Upper Lower Length Substring Trim Concat ConcatWs Replace StrPosition Left Right Initcap Lpad
Rpad Pad Reverse Repeat RegexpLike StartsWith Chr Ascii
Extract DateTrunc TimestampTrunc TimeTrunc DatetimeTrunc Date DateAdd DateSub DateDiff
DatetimeAdd DatetimeSub DatetimeDiff TimestampAdd TimestampSub TimestampDiff TsOrDsAdd
TsOrDsDiff TsOrDsToDate TsOrDsToTimestamp TimeToStr StrToTime StrToDate TimeStrToTime
TimeStrToDate TimeToTimeStr DateToDateStr DateStrToDate UnixToTime TimeToUnix UnixToStr
StrToUnix CurrentDate CurrentTimestamp CurrentTime CurrentDatetime Year Month Day Quarter Week
DayOfWeek DayOfWeekIso DayOfMonth DayOfYear WeekOfYear MonthsBetween LastDay AddMonths
Hour Minute Second ToChar Time Datetime Timestamp
"""
ALLOWED_FUNCTIONS: tuple[type[exp.Expression], ...] = _classes(_ALLOWED_FUNCTION_NAMES)
# Functions sqlglot leaves untyped (exp.Anonymous), by lowercase name: harmless ones only.
_ALLOWED_ANONYMOUS_NAMES = """julianday printf instr ifnull nvl total char_length character_length datetime date time
    unixepoch to_char to_date date_part datediff timestampdiff last_day weekday yearweek
    dayname monthname lpad rpad strftime date_format trunc ceiling log10 log2 sign mod power
    string_agg group_concat age make_date substr isnull"""
ALLOWED_ANONYMOUS: frozenset[str] = frozenset(_ALLOWED_ANONYMOUS_NAMES.split())


def _refuse(code: str, message: str) -> InvalidInputError:
    return InvalidInputError(message, code=code, field="sql")


def _table_key(table: exp.Table) -> str:
    parts = [table.catalog, table.db, table.name]
    return ".".join(part.lower() for part in parts if part)


def _normalize_allowed(allowed: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    normalized = {
        name.strip().lower(): frozenset(col.strip().lower() for col in cols) for name, cols in allowed.items()
    }
    if len({key.count(".") for key in normalized}) > 1:
        raise ValueError("allowed mixes schema-qualified and unqualified table names")
    return normalized


def _schema(allowed: dict[str, frozenset[str]]) -> dict[str, object]:
    """sqlglot's nested mapping schema ({db: {table: {column: type}}}); types are unknown."""
    schema: dict[str, object] = {}
    for key, cols in allowed.items():
        *outer, name = key.split(".")
        level = schema
        for part in outer:
            nested = level.setdefault(part, {})
            assert isinstance(nested, dict)
            level = nested
        level[name] = {col: "TEXT" for col in sorted(cols)}
    return schema


def _parse_one(sql: str, dialect: str) -> exp.Expression:
    if not isinstance(sql, str) or not sql.strip():
        raise _refuse("sql_parse_error", "the SQL query is empty")
    if len(sql) > MAX_SQL_CHARS:
        raise _refuse("sql_parse_error", f"the SQL query is longer than {MAX_SQL_CHARS} characters")
    try:
        statements = [stmt for stmt in sqlglot.parse(sql, read=dialect) if stmt is not None]
    except SqlglotError as err:
        raise _refuse("sql_parse_error", f"the SQL query does not parse as {dialect}: {err}") from None
    except RecursionError:
        raise _refuse("sql_parse_error", "the SQL query is nested too deeply") from None
    if not statements:
        raise _refuse("sql_parse_error", "the SQL query has no statement")
    if len(statements) > 1:
        raise _refuse("sql_multiple_statements", f"expected one statement, got {len(statements)}")
    root = cast(exp.Expression, statements[0])
    while isinstance(root, exp.Subquery) and not root.alias and isinstance(root.this, exp.Query):
        root = cast(exp.Expression, root.this)  # a parenthesized query: (SELECT ...)
    return root


def _check_nodes(root: exp.Expression) -> None:
    if not isinstance(root, exp.Select | exp.Union | exp.Intersect | exp.Except):
        raise _refuse("sql_not_select", f"only a SELECT may run, not {root.key.upper()}")
    nodes = list(root.walk())
    for node in nodes:
        if isinstance(node, _WRITES):
            raise _refuse("sql_not_select", f"{node.key.upper()} is not allowed: the query must only read")
    for node in nodes:
        if isinstance(node, _REFUSED_CLAUSES):
            raise _refuse("sql_clause_not_allowed", f"{node.key.upper()} is not allowed in a query")
        if isinstance(node, exp.With) and node.args.get("recursive"):
            raise _refuse("sql_clause_not_allowed", "WITH RECURSIVE is not allowed")
        if isinstance(node, _SAFE_NODES):
            continue  # operators such as AND/OR are Func subclasses in sqlglot
        if isinstance(node, exp.Func):
            _check_function(node)
        else:
            raise _refuse("sql_clause_not_allowed", f"the construct {node.key.upper()} is not allowed")


def _check_function(node: exp.Func) -> None:
    if isinstance(node, exp.Anonymous):
        name = str(node.name).lower()
        if name not in ALLOWED_ANONYMOUS:
            raise _refuse("sql_function_not_allowed", f"the function {name}() is not allowed")
    elif type(node) not in ALLOWED_FUNCTIONS:
        raise _refuse("sql_function_not_allowed", f"the function {node.sql_name()}() is not allowed")


def _check_tables(root: exp.Expression, allowed: dict[str, frozenset[str]]) -> None:
    cte_names = {str(cte.alias).lower() for cte in root.find_all(exp.CTE)}
    for table in root.find_all(exp.Table):
        key = _table_key(table)
        if key not in allowed and not (key in cte_names and not table.db):
            raise _refuse("sql_table_not_allowed", f"the table {key} may not be queried")
    # A CTE name only shadows a table where the CTE is visible: the scopes know where.
    for scope in traverse_scope(root):
        for source in scope.sources.values():
            if isinstance(source, exp.Table) and _table_key(source) not in allowed:
                raise _refuse("sql_table_not_allowed", f"the table {_table_key(source)} may not be queried")


def _output_names(scope: Scope) -> set[str]:
    expression = scope.expression
    if isinstance(expression, exp.Query):
        return {name.lower() for name in expression.named_selects}
    return set()


def _check_columns(root: exp.Expression, allowed: dict[str, frozenset[str]]) -> None:
    for scope in traverse_scope(root):
        for node in scope.expression.find_all(exp.Star):
            parent = node.parent
            if isinstance(parent, exp.Select) or (
                isinstance(parent, exp.Column) and isinstance(parent.parent, exp.Select)
            ):
                raise _refuse("sql_column_not_allowed", "a * could not be expanded to allow-listed columns")
        for column in scope.columns:
            name = column.name.lower()
            if not column.table:
                if name in _output_names(scope):
                    continue  # ORDER BY / GROUP BY a select alias
                raise _refuse("sql_column_not_allowed", f"the column {name} is not an allowed column")
            source = _find_source(scope, column.table)
            if isinstance(source, exp.Table):
                key = _table_key(source)
                if name not in allowed.get(key, frozenset()):
                    raise _refuse("sql_column_not_allowed", f"the column {key}.{name} may not be queried")
            elif isinstance(source, Scope):
                if name not in _output_names(source):
                    raise _refuse(
                        "sql_column_not_allowed", f"the column {column.table}.{name} does not exist"
                    )
            else:
                raise _refuse("sql_column_not_allowed", f"the column {column.table}.{name} has no table")


def _find_source(scope: Scope | None, name: str) -> object:
    while scope is not None:
        if name in scope.sources:
            return scope.sources[name]
        scope = scope.parent
    return None


def _enforce_limit(root: exp.Expression, max_rows: int) -> None:
    limit = root.args.get("limit")
    if isinstance(limit, exp.Limit):
        value = limit.expression
        if isinstance(value, exp.Literal) and value.is_int and int(value.this) <= max_rows:
            return
        limit.set("expression", exp.Literal.number(max_rows))
        return
    root.set("limit", exp.Limit(expression=exp.Literal.number(max_rows)))


def validate_select(sql: str, *, dialect: str, allowed: Mapping[str, Iterable[str]], max_rows: int) -> str:
    """Return ``sql`` re-rendered for ``dialect`` with ``LIMIT <= max_rows``, or refuse it.

    See the module docstring for the rules and the error codes.
    """
    if dialect not in DIALECTS:
        raise InvalidInputError(
            f"unknown SQL dialect {dialect!r}; use one of {sorted(DIALECTS)}",
            code="sql_dialect_unknown",
            field="dialect",
        )
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    tables = _normalize_allowed(allowed)
    root = _parse_one(sql, dialect)
    _check_nodes(root)
    _check_tables(root, tables)
    try:
        qualified = qualify(
            root.copy(),
            schema=_schema(tables),
            dialect=dialect,
            expand_stars=True,
            validate_qualify_columns=True,
            quote_identifiers=True,
            identify=False,
        )
    except SqlglotError as err:
        raise _refuse(
            "sql_column_not_allowed", f"a column does not resolve to an allowed column: {err}"
        ) from None
    _check_tables(qualified, tables)
    _check_columns(qualified, tables)
    _enforce_limit(qualified, max_rows)
    return qualified.sql(dialect=dialect, comments=False)
