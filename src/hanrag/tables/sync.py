"""Sync a SQL source's rows into the index, one document per row.

Each row goes through :meth:`IngestPipeline.ingest_bytes` as source type ``sql`` with the
stable source ``sql:{source}/{table}/{pk}``: its document id never changes, so a changed
row replaces its document and an unchanged one (same text, metadata, date) is neither
parsed nor embedded again; a new ACL is applied in place.

* **incremental** (``full=False``): only rows past the table's watermark are read: its
  ``updated_at_column`` (``>=`` the last value seen: rows written in the same instant are
  read again and skipped as unchanged), else its single-column primary key (``>`` the last
  value: new rows only, updates are found by a full sync), else every row;
* **full** (``full=True``): every row is read, and the documents of rows that are gone (or
  no longer match the table's ``where``) are removed.

Rows are fetched in batches of ``SqlSource.batch_size`` with a server-side cursor where the
driver has one (``stream_results``). Watermarks live in the catalog (``sql_watermarks``), so
servers sharing a PostgreSQL catalog continue from the same point.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import MetaData, Table, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError

from hanrag.errors import BackendError, HanragError, InvalidInputError
from hanrag.ingest.model import FileOutcome
from hanrag.ingest.pipeline import IngestPipeline
from hanrag.store.sql_sources import SqlSourceStore
from hanrag.tables.rows import SOURCE_TYPE, row_document
from hanrag.tables.sources import SqlSource, TableConfig, account_can_write, describe

log = logging.getLogger("hanrag.tables")


@dataclass
class TableReport:
    table: str
    mode: str  # updated_at | pk | none
    rows: int = 0
    watermark: Any = None


# Row failures that say a backend is down (the row itself is fine): the sync stops there.
TRANSIENT_ROW_CODES = frozenset(
    {"embedding_backend_unavailable", "embedding_backend_error", "index_unavailable", "backend_error"}
)

# Outcomes kept in a report beyond the counts: a full sync of a large table must not hold one
# object per unchanged row.
MAX_KEPT_OUTCOMES = 1000


@dataclass
class SyncReport:
    source: str
    full: bool
    can_write: bool | None = None
    tables: list[TableReport] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    # The rows that changed, failed or were removed (the first MAX_KEPT_OUTCOMES).
    outcomes: list[FileOutcome] = field(default_factory=list)
    cancelled: bool = False

    def add(self, outcome: FileOutcome) -> None:
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        if outcome.status != "unchanged" and len(self.outcomes) < MAX_KEPT_OUTCOMES:
            self.outcomes.append(outcome)

    def count(self, status: str) -> int:
        return self.counts.get(status, 0)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def summary(self) -> dict[str, Any]:
        """What a job result, the API and the catalog's last-sync record show."""
        return {
            "source": self.source,
            "full": self.full,
            "can_write": self.can_write,
            "cancelled": self.cancelled,
            "rows": self.rows,
            "counts": dict(self.counts),
            "tables": [
                {"table": t.table, "mode": t.mode, "rows": t.rows, "watermark": _shown(t.watermark)}
                for t in self.tables
            ],
            "failures": [
                {"source": o.source, "code": o.error_code, "error": o.error}
                for o in self.outcomes
                if o.status == "failed"
            ][:100],
        }


@dataclass(frozen=True)
class SyncProgress:
    """Where a sync stands, after each batch: the table, its rows read so far and how many
    it will read (None: unknown), and the counts over the whole source."""

    table: str
    tables_done: int
    tables_total: int
    rows: int
    rows_total: int | None
    counts: dict[str, int]


ProgressFunction = Callable[[SyncProgress], None]
StopFunction = Callable[[], bool]


def _shown(value: Any) -> Any:
    encoded = _encode(value)
    return encoded.get("datetime", encoded.get("date")) if isinstance(encoded, dict) else encoded


# ------------------------------------------------------------------ watermarks


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if isinstance(value, int | float | str) or value is None:
        return value
    return str(value)


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "datetime" in value:
            return datetime.fromisoformat(value["datetime"])
        if "date" in value:
            return date.fromisoformat(value["date"])
    return value


class WatermarkStore:
    """Per-table watermarks of one source, in the catalog (``sql_watermarks``), so that every
    server sharing a catalog continues from the same point."""

    def __init__(self, store: SqlSourceStore, source: str) -> None:
        self.store = store
        self.source = source

    def get(self, table: str, mode: str) -> Any:
        entry = self.store.watermark(self.source, table)
        if entry is None or entry[0] != mode:
            return None  # none yet, or the table's watermark column changed
        return _decode(entry[1])

    def put(self, table: str, mode: str, value: Any) -> None:
        self.store.set_watermark(self.source, table, mode, _encode(value))


# ------------------------------------------------------------------------ sync


def _pipeline(target: object) -> IngestPipeline:
    pipeline = target if isinstance(target, IngestPipeline) else getattr(target, "pipeline", None)
    if not isinstance(pipeline, IngestPipeline):
        raise TypeError("sync_source needs an Engine or an IngestPipeline")
    return pipeline


def _later(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    try:
        return b if b > a else a
    except TypeError:  # naive and aware datetimes: keep the newer reading
        return b


def _sync_table(
    conn: Connection,
    pipeline: IngestPipeline,
    source: SqlSource,
    config: TableConfig,
    marks: WatermarkStore,
    report: SyncReport,
    *,
    full: bool,
    position: tuple[int, int],
    on_progress: ProgressFunction | None,
    should_stop: StopFunction | None,
) -> bool:
    """Sync one table; False when ``should_stop`` asked to stop (its watermark is kept up
    to the last whole batch, so the next sync continues from there)."""
    schema = describe(conn, config, samples=0)
    if not schema.primary_key:
        raise InvalidInputError(
            f"table {config.name!r} has no primary key: its rows cannot be tracked",
            code="sql_no_primary_key",
            field="table",
        )
    if config.updated_at_column:
        mode, mark_column = "updated_at", config.updated_at_column
    elif len(schema.primary_key) == 1:
        mode, mark_column = "pk", schema.primary_key[0]
    else:
        mode, mark_column = "none", None
    table = Table(config.name, MetaData(), autoload_with=conn)
    wanted = [c.name for c in schema.columns]
    for extra in (*schema.primary_key, config.date_column, config.updated_at_column, config.acl_column):
        if extra and extra not in wanted:
            wanted.append(extra)
    missing = [name for name in wanted if name not in table.c]
    if missing:
        raise InvalidInputError(
            f"table {config.name!r} has no column {missing[0]!r}", code="sql_column_unknown", field="table"
        )
    query = select(*(table.c[name] for name in wanted))
    if config.where:
        query = query.where(text(config.where))
    previous = None if full or mark_column is None else marks.get(config.name, mode)
    if previous is not None and mark_column is not None:
        column = table.c[mark_column]
        query = query.where(column >= previous if mode == "updated_at" else column > previous)
    order = [table.c[mark_column]] if mark_column else []
    query = query.order_by(*order, *(table.c[k] for k in schema.primary_key if k != mark_column))

    table_report = TableReport(config.name, mode, watermark=previous)
    report.tables.append(table_report)
    rows_total: int | None = None
    if on_progress is not None:
        rows_total = conn.execute(select(func.count()).select_from(query.order_by(None).subquery())).scalar()
    seen: set[str] = set()
    result = conn.execution_options(stream_results=True, yield_per=source.batch_size).execute(query)
    for batch in result.partitions():
        if should_stop is not None and should_stop():
            result.close()
            return False
        for raw in batch:
            row = dict(raw._mapping)
            table_report.rows += 1
            if mark_column is not None:
                table_report.watermark = _later(table_report.watermark, row[mark_column])
            try:
                doc = row_document(source, config, schema, row)
            except HanragError as exc:
                where = f"sql:{source.name}/{config.name}"
                report.add(FileOutcome(where, "failed", error_code=exc.code, error=exc.message))
                continue
            seen.add(doc.document_id)
            outcome = pipeline.ingest_bytes(
                doc.text.encode("utf-8"),
                doc.filename,
                source=doc.source,
                source_type=SOURCE_TYPE,
                acl=doc.acl,
                date_override=doc.date,
                metadata=doc.metadata,
            )
            if outcome.status == "failed" and outcome.error_code in TRANSIENT_ROW_CODES:
                # The embedding server or the index is down, not the row: stop before the
                # watermark passes this batch, so that the next sync (a job's retry) does it again.
                raise BackendError(outcome.error or "a backend failed", code=outcome.error_code)
            report.add(outcome)
        # Rows come in watermark order: everything up to here is done, even if a later
        # batch fails or the sync is stopped.
        if mark_column is not None and table_report.watermark is not None:
            marks.put(config.name, mode, table_report.watermark)
        if on_progress is not None:
            on_progress(
                SyncProgress(
                    config.name, position[0], position[1], table_report.rows, rows_total, dict(report.counts)
                )
            )
    if full:
        known = pipeline.catalog.documents_with_metadata(
            {"sql_source": source.name, "sql_table": config.name}
        )
        for document_id in known:
            if document_id not in seen:
                row_before = pipeline.catalog.get(document_id)
                removed = pipeline.delete_document(document_id)
                where = row_before.source if row_before is not None else document_id
                report.add(FileOutcome(where, "removed", document_id, removed))
    return True


def sync_source(
    target: object,
    source: SqlSource,
    *,
    full: bool = False,
    on_progress: ProgressFunction | None = None,
    should_stop: StopFunction | None = None,
) -> SyncReport:
    """Sync every configured table of ``source`` through an Engine's (or a bare) pipeline.

    An operator's action: rows are ingested unrestricted, with the ACL the source maps (the
    caller's right to run it is checked by :class:`hanrag.tables.service.SourceService`).
    ``on_progress`` hears after each batch; ``should_stop`` is asked before each batch (a
    cancelled job), and the report then says ``cancelled``.
    """
    pipeline = _pipeline(target)
    marks = WatermarkStore(SqlSourceStore(pipeline.catalog.engine), source.name)
    report = SyncReport(source.name, full)
    engine = source.connect()
    try:
        with engine.connect() as conn:
            report.can_write = account_can_write(conn, [t.name for t in source.tables])
            if report.can_write:
                log.warning(
                    "the SQL source's account can write; a read-only account is recommended",
                    extra={"sql_source": source.name, "url": source.display_url},
                )
            total = len(source.tables)
            for number, config in enumerate(source.tables):
                finished = _sync_table(
                    conn,
                    pipeline,
                    source,
                    config,
                    marks,
                    report,
                    full=full,
                    position=(number, total),
                    on_progress=on_progress,
                    should_stop=should_stop,
                )
                if not finished:
                    report.cancelled = True
                    break
    except (OperationalError, InterfaceError, DisconnectionError) as exc:
        # The database is unreachable or went away: worth a retry (a job retries it).
        raise BackendError(
            f"SQL source {source.name} ({source.display_url}) is unavailable: {type(exc).__name__}",
            code="sql_source_unavailable",
        ) from None
    except SQLAlchemyError as exc:
        raise InvalidInputError(
            f"SQL source {source.name} ({source.display_url}): {type(exc).__name__}",
            code="sql_source_error",
        ) from None
    finally:
        engine.dispose()
        # A sync that wrote nothing leaves the index as it was (refreshing would load it).
        if any(report.counts.get(k) for k in ("added", "updated", "removed", "acl_updated")):
            pipeline.index.refresh()
    log.info(
        "SQL source synced",
        extra={"sql_source": source.name, "url": source.display_url, "full": full, **report.counts},
    )
    return report
