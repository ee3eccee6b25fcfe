"""SQL sources (issue P10): a database reached through a SQLAlchemy URL, its tables, and
what of each table becomes searchable.

Real targets: PostgreSQL (``postgresql+psycopg://``), MySQL/MariaDB (``mysql+pymysql://``,
extra ``sql``) and SQLite (``sqlite:///path``). Read-only accounts are recommended;
:func:`account_can_write` tells whether the account could write, so that a sync can warn.

The URL is a secret: it is never part of a ``repr`` or a log record in full, only as
:attr:`SqlSource.display_url` (``URL.render_as_string(hide_password=True)``).

:func:`introspect` describes the configured tables with SQLAlchemy's inspector: columns,
types, comments, primary and foreign keys, and a few distinct sample values of each
*included* column (an excluded column is not described at all, and nothing is ever read
from it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import MetaData, Table, create_engine, inspect, select, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from hanrag.errors import InvalidInputError

log = logging.getLogger("hanrag.tables")

SAMPLE_VALUES = 3
SAMPLE_MAX_CHARS = 80


@dataclass(frozen=True)
class TableConfig:
    """One table of a source and how its rows become documents.

    ``include``: the columns that may be read and shown (None: all but ``exclude``);
    ``exclude``: never read into texts, samples or metadata; ``where``: an operator's SQL
    condition limiting the rows (configuration, never user input); ``title``: the table's
    title over each row (default: its comment, else its name); ``template``: a
    ``str.format`` template of the row text over the included columns (default: one
    ``label: value`` line per included column, labels from column comments);
    ``date_column``: the documents' date; ``updated_at_column``: the incremental-sync
    watermark (else the single-column primary key, which finds new rows but not updates);
    ``acl_column``/``acl_template``: the row's ACL from a column (``group:{value}``; a
    comma-separated value gives several entries), instead of the source's ACL;
    ``query_acl``: who may query the table through the table route (None: the source's).
    """

    name: str
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    where: str | None = None
    title: str | None = None
    template: str | None = None
    date_column: str | None = None
    updated_at_column: str | None = None
    acl_column: str | None = None
    acl_template: str = "{value}"
    query_acl: tuple[str, ...] | None = None

    def allows(self, column: str) -> bool:
        """Whether a column may be read into texts, samples and metadata."""
        if column in self.exclude:
            return False
        return self.include is None or column in self.include


@dataclass(frozen=True)
class SqlSource:
    """A named SQL source. ``acl``: every row's ACL, unless a table maps it from a column
    (neither: the ingest default). ``query_acl``: the principals whose questions may run SQL
    on its tables (the table route; a table's own ``query_acl`` wins; None: administrators
    only, since row ACLs cannot be enforced inside an aggregate). ``batch_size``: rows
    fetched per round trip."""

    name: str
    url: str = field(repr=False)
    tables: tuple[TableConfig, ...] = ()
    acl: tuple[str, ...] | None = None
    batch_size: int = 200
    query_acl: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise InvalidInputError(
                "a SQL source needs a name without '/'", code="invalid_sql_source", field="name"
            )
        parse_url(self.url)  # fails early, without echoing the URL
        if self.batch_size < 1:
            raise InvalidInputError(
                "batch_size must be positive", code="invalid_sql_source", field="batch_size"
            )

    @property
    def display_url(self) -> str:
        return masked_url(self.url)

    def __repr__(self) -> str:
        tables = ", ".join(t.name for t in self.tables)
        return f"SqlSource(name={self.name!r}, url={self.display_url!r}, tables=[{tables}])"

    def table(self, name: str) -> TableConfig:
        for config in self.tables:
            if config.name == name:
                return config
        raise InvalidInputError(f"{self.name}: no table {name!r}", code="sql_table_unknown", field="table")

    def query_grant(self, table: str) -> tuple[str, ...] | None:
        """Who may query ``table`` with the table route (None: administrators only)."""
        config = self.table(table)
        return config.query_acl if config.query_acl is not None else self.query_acl

    def config(self) -> dict[str, Any]:
        """Everything but the name and the URL, as stored in the catalog."""
        return {
            "tables": [
                {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(t).items()} for t in self.tables
            ],
            "acl": None if self.acl is None else list(self.acl),
            "query_acl": None if self.query_acl is None else list(self.query_acl),
            "batch_size": self.batch_size,
        }

    @classmethod
    def from_config(cls, name: str, url: str, config: Mapping[str, Any]) -> SqlSource:
        def tupled(value: Any) -> tuple[str, ...] | None:
            return None if value is None else tuple(str(v) for v in value)

        known = {f.name for f in fields(TableConfig)}
        tables = []
        for raw in config.get("tables") or []:
            data = {k: v for k, v in dict(raw).items() if k in known}
            for key in ("include", "query_acl"):
                if key in data:
                    data[key] = tupled(data[key])
            if "exclude" in data:
                data["exclude"] = tuple(data["exclude"] or ())
            tables.append(TableConfig(**data))
        return cls(
            name=name,
            url=url,
            tables=tuple(tables),
            acl=tupled(config.get("acl")),
            batch_size=int(config.get("batch_size") or 200),
            query_acl=tupled(config.get("query_acl")),
        )

    def connect(self) -> Engine:
        """A SQLAlchemy engine that never echoes parameters into its errors."""
        try:
            return create_engine(parse_url(self.url), hide_parameters=True, pool_pre_ping=True)
        except (ArgumentError, ImportError) as exc:  # an unknown driver, a SQLite URL with a host
            raise InvalidInputError(
                f"cannot use the URL {self.display_url}: {type(exc).__name__}",
                code="invalid_sql_url",
                field="url",
            ) from None


def parse_url(url: str | URL) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise InvalidInputError(
            "not a SQLAlchemy URL (dialect+driver://user:password@host/database)",
            code="invalid_sql_url",
            field="url",
        ) from None


def masked_url(url: str | URL) -> str:
    return parse_url(url).render_as_string(hide_password=True)


# ---------------------------------------------------------------- introspection


@dataclass
class ColumnSchema:
    name: str
    type: str
    nullable: bool
    comment: str | None = None
    samples: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The comment (a Korean label, typically) when there is one, else the name."""
        return (self.comment or "").strip() or self.name


@dataclass
class ForeignKey:
    columns: list[str]
    referred_table: str
    referred_columns: list[str]


@dataclass
class TableSchema:
    name: str
    comment: str | None
    columns: list[ColumnSchema]
    primary_key: list[str]
    foreign_keys: list[ForeignKey]

    def column(self, name: str) -> ColumnSchema | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def labels(self) -> dict[str, str]:
        return {c.name: c.label for c in self.columns}


def sample_text(value: Any) -> str | None:
    """A value as shown in samples and row texts (None: not shown)."""
    if value is None or isinstance(value, bytes | bytearray | memoryview):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _configs(tables: Sequence[TableConfig | str]) -> list[TableConfig]:
    return [TableConfig(name=t) if isinstance(t, str) else t for t in tables]


def describe(conn: Connection, config: TableConfig, *, samples: int = SAMPLE_VALUES) -> TableSchema:
    """One table's schema (included columns only) with up to ``samples`` sample values each."""
    inspector = inspect(conn)
    if not inspector.has_table(config.name):
        raise InvalidInputError(
            f"no table {config.name!r} in the source", code="sql_table_unknown", field="table"
        )
    try:
        comment = inspector.get_table_comment(config.name).get("text")
    except NotImplementedError:  # SQLite has no comments
        comment = None
    columns = [
        ColumnSchema(
            name=col["name"],
            type=str(col["type"]),
            nullable=bool(col.get("nullable", True)),
            comment=col.get("comment"),
        )
        for col in inspector.get_columns(config.name)
        if config.allows(col["name"])
    ]
    pk = list(inspector.get_pk_constraint(config.name).get("constrained_columns") or [])
    fks = [
        ForeignKey(list(fk["constrained_columns"]), fk["referred_table"], list(fk["referred_columns"]))
        for fk in inspector.get_foreign_keys(config.name)
    ]
    schema = TableSchema(config.name, comment, columns, pk, fks)
    if samples > 0 and columns:
        table = Table(config.name, MetaData(), autoload_with=conn)
        for column in columns:
            sql_column = table.c[column.name]
            query = select(sql_column).where(sql_column.is_not(None)).distinct().limit(samples * 2)
            if config.where:
                query = query.where(text(config.where))
            values: list[str] = []
            for (value,) in conn.execute(query):
                shown = sample_text(value)
                if shown is not None and shown not in values:
                    values.append(shown[:SAMPLE_MAX_CHARS])
                if len(values) >= samples:
                    break
            column.samples = values
    return schema


def introspect(
    url: str | URL | SqlSource,
    tables: Sequence[TableConfig | str] | None = None,
    *,
    samples: int = SAMPLE_VALUES,
) -> list[TableSchema]:
    """The schemas of ``tables`` (default: a source's configured tables, else every table)."""
    if isinstance(url, SqlSource):
        source = url
        tables = tables if tables is not None else source.tables
        engine = source.connect()
    else:
        engine = create_engine(parse_url(url), hide_parameters=True)
    try:
        with engine.connect() as conn:
            configs = _configs(tables) if tables else _configs(inspect(conn).get_table_names())
            return [describe(conn, config, samples=samples) for config in configs]
    except SQLAlchemyError as exc:
        raise InvalidInputError(
            f"cannot read the source {masked_url(engine.url)}: {type(exc).__name__}",
            code="sql_source_unreachable",
        ) from None
    finally:
        engine.dispose()


# ------------------------------------------------------------------ credentials

_WRITE_GRANTS = ("ALL PRIVILEGES", "INSERT", "UPDATE", "DELETE")


def account_can_write(conn: Connection, tables: Sequence[str]) -> bool | None:
    """Whether the account could change any of ``tables`` (None: cannot tell)."""
    dialect = conn.dialect.name
    try:
        if dialect == "postgresql":
            query = text(
                "SELECT has_table_privilege(current_user, :t, 'INSERT') "
                "OR has_table_privilege(current_user, :t, 'UPDATE') "
                "OR has_table_privilege(current_user, :t, 'DELETE')"
            )
            return any(bool(conn.execute(query, {"t": t}).scalar()) for t in tables)
        if dialect in ("mysql", "mariadb"):
            grants = " ".join(str(row[0]).upper() for row in conn.execute(text("SHOW GRANTS")))
            return any(word in grants for word in _WRITE_GRANTS)
        if dialect == "sqlite":
            return not bool(conn.execute(text("PRAGMA query_only")).scalar()) and "mode=ro" not in str(
                conn.engine.url
            )
    except SQLAlchemyError:
        return None
    return None
