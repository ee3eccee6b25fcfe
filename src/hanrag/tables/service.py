"""SQL sources as the CLI, the HTTP API and the jobs see them: add, list, show, sync, remove.

Who may do what (the rules themselves live in :mod:`hanrag.auth.access`):

* administrators (and the CLI) manage every source; editors add sources whose host the
  operator lists in ``tables.editor_hosts`` and manage only the sources they added;
  viewers manage none. A source someone may not manage is answered like a missing one.
* the ACLs a source gives its rows (``acl``) and its table-route grants (``query_acl``)
  are checked like any ACL a caller grants: editors grant only principals they hold.
* no source may point at hanrag's own catalog or at a file in its data directory (its
  users, keys and sessions would become documents).

The URL is a secret: every view shows :func:`masked_url` only, and logs never carry it.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from hanrag.auth.access import Caller, check_grant, may_add_sources, may_manage, may_query
from hanrag.errors import ForbiddenError, InvalidInputError, NotFoundError
from hanrag.netpolicy import offline_refusal
from hanrag.store.models import SqlSourceRow
from hanrag.store.sql_sources import SqlSourceStore
from hanrag.tables.sources import SqlSource, TableConfig, TableSchema, account_can_write, describe, parse_url
from hanrag.tables.sync import ProgressFunction, StopFunction, SyncReport, sync_source

if TYPE_CHECKING:
    from hanrag.auth.audit import AuditLog
    from hanrag.ingest.pipeline import IngestPipeline
    from hanrag.settings import Settings

log = logging.getLogger("hanrag.tables")

MAX_INTERVAL_MINUTES = 60 * 24 * 31


def source_not_found(name: str) -> NotFoundError:
    return NotFoundError(f"no SQL source {name!r}", code="sql_source_not_found", field="name")


def _same_file(a: str | None, b: Path) -> bool:
    if not a:
        return False
    try:
        return Path(a).resolve() == b.resolve()
    except OSError:
        return False


# How the same server may be spelled: a port left to the dialect's default, a loopback name.
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433, "oracle": 1521}
_LOOPBACK = {"", "localhost", "localhost.localdomain", "::1", "[::1]", "0.0.0.0"}


def _server(url: URL) -> tuple[str, str, int, str | None]:
    """(dialect, host, port, database) of a server URL, normalised for comparison."""
    backend = "mysql" if url.get_backend_name() == "mariadb" else url.get_backend_name()
    host = (url.host or "").lower().rstrip(".")
    if host in _LOOPBACK or host.startswith("127."):
        host = "localhost"
    return backend, host, url.port or _DEFAULT_PORTS.get(backend, 0), url.database


class SourceService:
    def __init__(
        self,
        store: SqlSourceStore,
        pipeline: Callable[[], IngestPipeline],
        settings: Settings,
        audit: Callable[[], AuditLog] | None = None,
    ) -> None:
        """``pipeline`` and ``audit`` are reached only when a sync or a change needs them (a
        listing never loads the embedding model)."""
        self.store = store
        self._pipeline = pipeline
        self.settings = settings
        self._audit = audit

    # ------------------------------------------------------------------ checks

    def _record(self, caller: Caller, action: str, name: str, detail: dict[str, Any] | None = None) -> None:
        if self._audit is not None:
            self._audit().record(caller.name or "system", action, target=f"sql:{name}", detail=detail or {})

    def _row(self, name: str, caller: Caller) -> SqlSourceRow:
        row = self.store.get(name)
        if row is None or not may_manage(caller, row.owner):
            raise source_not_found(name)
        return row

    def _check_offline(self, url: str) -> None:
        """Offline mode: a source on a host that is neither loopback nor in offline_allow."""
        allow = self.settings.offline_policy
        if allow is not None and (why := offline_refusal(url, allow)) is not None:
            raise InvalidInputError(
                f"the source's URL is refused: {why}", code="offline_refused", field="url"
            )

    def _check_url(self, url: URL, caller: Caller) -> None:
        """Refuse URLs that reach hanrag's own data, and editors' URLs outside the allowed hosts."""
        data_dir = self.settings.data_dir.resolve()
        catalog = parse_url(self.settings.resolved_catalog_url)
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if not (caller.unrestricted or caller.role == "admin"):
                raise ForbiddenError(
                    "only administrators may add SQLite sources (a path is a file on this server)",
                    code="sql_source_forbidden",
                    field="url",
                )
            if database in ("", ":memory:"):
                raise InvalidInputError(
                    "a SQLite source needs a file path", code="invalid_sql_url", field="url"
                )
            try:
                inside = Path(database).resolve().is_relative_to(data_dir)
            except OSError:
                inside = True
            if inside or _same_file(catalog.database, Path(database)):
                raise ForbiddenError(
                    "a SQL source may not read hanrag's own data directory",
                    code="sql_source_forbidden",
                    field="url",
                )
            return
        if catalog.get_backend_name() != "sqlite" and _server(catalog) == _server(url):
            raise ForbiddenError(
                "a SQL source may not read hanrag's own catalog", code="sql_source_forbidden", field="url"
            )
        if caller.unrestricted or caller.role == "admin":
            return
        allowed = {h.lower() for h in self.settings.tables.editor_hosts}
        if (url.host or "").lower() not in allowed:
            raise ForbiddenError(
                "editors may add SQL sources only on the hosts the operator allows (tables.editor_hosts)",
                code="sql_source_forbidden",
                field="url",
            )

    def _check_grants(self, source: SqlSource, caller: Caller) -> SqlSource:
        def granted(acl: tuple[str, ...] | None, field: str) -> tuple[str, ...] | None:
            return None if acl is None else tuple(check_grant(caller.principals, list(acl), field=field))

        tables = tuple(replace(t, query_acl=granted(t.query_acl, "query_acl")) for t in source.tables)
        return replace(
            source,
            acl=granted(source.acl, "acl"),
            query_acl=granted(source.query_acl, "query_acl"),
            tables=tables,
        )

    # ----------------------------------------------------------------- actions

    def add(
        self,
        source: SqlSource,
        *,
        caller: Caller,
        interval_minutes: int | None = None,
        replace_existing: bool = False,
    ) -> dict[str, Any]:
        """Check, connect, describe and store a source (nothing is synced yet). Returns its
        view, with ``warnings`` (an account that can write)."""
        if not may_add_sources(caller):
            raise ForbiddenError("adding SQL sources needs the editor role", code="forbidden")
        if interval_minutes is not None and not 1 <= interval_minutes <= MAX_INTERVAL_MINUTES:
            raise InvalidInputError(
                f"the sync interval must be 1-{MAX_INTERVAL_MINUTES} minutes",
                code="invalid_sql_source",
                field="interval_minutes",
            )
        if not source.tables:
            raise InvalidInputError("name at least one table", code="invalid_sql_source", field="tables")
        existing = self.store.get(source.name)
        if existing is not None and (not replace_existing or not may_manage(caller, existing.owner)):
            raise InvalidInputError(
                f"a SQL source named {source.name!r} exists", code="sql_source_exists", field="name"
            )
        self._check_offline(source.url)
        self._check_url(parse_url(source.url), caller)
        source = self._check_grants(source, caller)
        can_write = self._verify(source)
        row = self.store.put(
            source.name,
            url=source.url,
            config=source.config(),
            owner=caller.name if existing is None else existing.owner,
            sync_interval_minutes=interval_minutes,
        )
        self._record(caller, "sql_source_add", source.name, {"url": source.display_url})
        view = self.view(row)
        view["warnings"] = (
            ["the account can write to these tables: a read-only account is recommended"] if can_write else []
        )
        return view

    def _verify(self, source: SqlSource) -> bool | None:
        """Connect and describe every table (unknown tables or columns fail here, not at the
        first sync); whether the account can write."""
        engine = source.connect()
        try:
            with engine.connect() as conn:
                for config in source.tables:
                    schema = describe(conn, config, samples=0)
                    columns = {c["name"] for c in inspect(conn).get_columns(config.name)}
                    for name in (
                        *(config.include or ()),
                        config.date_column,
                        config.updated_at_column,
                        config.acl_column,
                    ):
                        if name and name not in columns:
                            raise InvalidInputError(
                                f"table {config.name!r} has no column {name!r}",
                                code="sql_column_unknown",
                                field="columns",
                            )
                    if not schema.primary_key:
                        raise InvalidInputError(
                            f"table {config.name!r} has no primary key: its rows cannot be tracked",
                            code="sql_no_primary_key",
                            field="tables",
                        )
                    if config.where:
                        check_where(conn.dialect.name, config.name, columns, config.where)
                return account_can_write(conn, [t.name for t in source.tables])
        except SQLAlchemyError as exc:
            raise InvalidInputError(
                f"cannot reach the SQL source ({source.display_url}): {type(exc).__name__}",
                code="sql_source_unreachable",
                field="url",
            ) from None
        finally:
            engine.dispose()

    def source(self, name: str, *, caller: Caller) -> SqlSource:
        row = self._row(name, caller)
        return SqlSource.from_config(row.name, row.url, row.config)

    def list(self, *, caller: Caller) -> builtins.list[dict[str, Any]]:
        return [self.view(row) for row in self.store.all() if may_manage(caller, row.owner)]

    def show(self, name: str, *, caller: Caller, schema: bool = True) -> dict[str, Any]:
        """A source's view, with its tables' live schemas and sample values when ``schema``."""
        row = self._row(name, caller)
        view = self.view(row)
        if schema:
            source = SqlSource.from_config(row.name, row.url, row.config)
            view["schema"] = [schema_view(s) for s in self.describe(source)]
        return view

    def describe(self, source: SqlSource) -> builtins.list[TableSchema]:
        from hanrag.tables.sources import introspect

        return introspect(source)

    def sync(
        self,
        name: str,
        *,
        caller: Caller,
        full: bool = False,
        on_progress: ProgressFunction | None = None,
        should_stop: StopFunction | None = None,
    ) -> SyncReport:
        source = self.source(name, caller=caller)
        self._check_offline(source.url)
        report = sync_source(
            self._pipeline(), source, full=full, on_progress=on_progress, should_stop=should_stop
        )
        self.store.record_sync(name, report.summary())
        self._record(caller, "sql_source_sync", name, {"full": full, "counts": report.counts})
        return report

    def remove(self, name: str, *, caller: Caller, keep_documents: bool = False) -> dict[str, Any]:
        """Forget a source and (unless ``keep_documents``) delete its rows' documents."""
        self._row(name, caller)
        removed = 0
        if not keep_documents:
            pipeline = self._pipeline()
            for document_id in pipeline.catalog.documents_with_metadata({"sql_source": name}):
                pipeline.delete_document(document_id)
                removed += 1
            pipeline.index.refresh()
        self.store.remove(name)
        self._record(caller, "sql_source_remove", name, {"documents_removed": removed})
        return {"name": name, "removed": True, "documents_removed": removed}

    def claim_due(self) -> builtins.list[str]:
        """The sources whose scheduled sync is due now, claimed for this process."""
        return self.store.claim_due()

    # ------------------------------------------------------------ table route

    def queryable(
        self, principals: tuple[str, ...] | None
    ) -> builtins.list[tuple[SqlSource, builtins.list[TableConfig]]]:
        """The sources and tables whose SQL a caller's questions may run (the table route)."""
        found: builtins.list[tuple[SqlSource, builtins.list[TableConfig]]] = []
        for row in self.store.all():
            source = SqlSource.from_config(row.name, row.url, row.config)
            tables = [t for t in source.tables if may_query(principals, source.query_grant(t.name))]
            if tables:
                found.append((source, tables))
        return found

    # ------------------------------------------------------------------- views

    @staticmethod
    def view(row: SqlSourceRow) -> dict[str, Any]:
        source = SqlSource.from_config(row.name, row.url, row.config)
        return {
            "name": row.name,
            "url": source.display_url,
            "dialect": parse_url(row.url).get_backend_name(),
            "owner": row.owner,
            **source.config(),
            "interval_minutes": row.sync_interval_minutes,
            "next_sync_at": row.next_sync_at.isoformat() if row.next_sync_at else None,
            "last_sync_at": row.last_sync_at.isoformat() if row.last_sync_at else None,
            "last_sync": row.last_sync,
        }


def check_where(dialect_name: str, table: str, columns: set[str], where: str) -> None:
    """A table's ``where`` goes into every sync and every table-route query on it: it must be a
    plain condition on that table's own columns (the validator's rules: no subqueries into
    other tables, no sleeping, file or writing functions)."""
    from hanrag.tables.execute import sqlglot_dialect
    from hanrag.tables.sql_guard import validate_select

    try:
        dialect = sqlglot_dialect(dialect_name)
    except InvalidInputError:
        return  # Oracle, SQL Server: synced only; the operator's condition runs as written
    try:
        validate_select(
            f"SELECT 1 FROM {table} WHERE {where}",
            dialect=dialect,
            allowed={table.lower(): {c.lower() for c in columns}},
            max_rows=1,
        )
    except InvalidInputError as exc:
        raise InvalidInputError(f"where: {exc.message}", code="invalid_sql_source", field="where") from None


def schema_view(schema: TableSchema) -> dict[str, Any]:
    return {
        "table": schema.name,
        "comment": schema.comment,
        "primary_key": schema.primary_key,
        "foreign_keys": [
            {"columns": fk.columns, "table": fk.referred_table, "referred_columns": fk.referred_columns}
            for fk in schema.foreign_keys
        ],
        "columns": [
            {
                "name": c.name,
                "type": c.type,
                "nullable": c.nullable,
                "comment": c.comment,
                "samples": c.samples,
            }
            for c in schema.columns
        ],
    }
