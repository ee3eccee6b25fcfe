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
driver has one (``stream_results``). Watermarks live in
``<data_dir>/sql_sync/<source>.json``; the catalog would be a better home once a migration
for it exists (a shared catalog on PostgreSQL would then share them across servers).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from hanrag.errors import HanragError, InvalidInputError
from hanrag.ingest.model import FileOutcome
from hanrag.ingest.pipeline import IngestPipeline
from hanrag.tables.rows import SOURCE_TYPE, row_document
from hanrag.tables.sources import SqlSource, TableConfig, account_can_write, describe

log = logging.getLogger("hanrag.tables")


@dataclass
class TableReport:
    table: str
    mode: str  # updated_at | pk | none
    rows: int = 0
    watermark: Any = None


@dataclass
class SyncReport:
    source: str
    full: bool
    can_write: bool | None = None
    tables: list[TableReport] = field(default_factory=list)
    outcomes: list[FileOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts


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
    """Per-table watermarks of one source, in a small JSON file written atomically."""

    def __init__(self, data_dir: Path, source: str) -> None:
        self.path = Path(data_dir) / "sql_sync" / f"{source}.json"

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("unreadable SQL sync state, starting over", extra={"path": str(self.path)})
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, table: str, mode: str) -> Any:
        entry = self.load().get(table)
        if not isinstance(entry, dict) or entry.get("mode") != mode:
            return None  # none yet, or the table's watermark column changed
        return _decode(entry.get("value"))

    def put(self, table: str, mode: str, value: Any) -> None:
        data = self.load()
        data[table] = {"mode": mode, "value": _encode(value)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_suffix(".tmp")
        staged.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(staged, self.path)


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
) -> None:
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
    seen: set[str] = set()
    result = conn.execution_options(stream_results=True, yield_per=source.batch_size).execute(query)
    for batch in result.partitions():
        for raw in batch:
            row = dict(raw._mapping)
            table_report.rows += 1
            if mark_column is not None:
                table_report.watermark = _later(table_report.watermark, row[mark_column])
            try:
                doc = row_document(source, config, schema, row)
            except HanragError as exc:
                report.outcomes.append(
                    FileOutcome(
                        f"sql:{source.name}/{config.name}", "failed", error_code=exc.code, error=exc.message
                    )
                )
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
            report.outcomes.append(outcome)
    if full:
        known = pipeline.catalog.documents_with_metadata(
            {"sql_source": source.name, "sql_table": config.name}
        )
        for document_id in known:
            if document_id not in seen:
                row_before = pipeline.catalog.get(document_id)
                removed = pipeline.delete_document(document_id)
                where = row_before.source if row_before is not None else document_id
                report.outcomes.append(FileOutcome(where, "removed", document_id, removed))
    if mark_column is not None and table_report.watermark is not None:
        marks.put(config.name, mode, table_report.watermark)
    report.tables.append(table_report)


def sync_source(target: object, source: SqlSource, *, full: bool = False) -> SyncReport:
    """Sync every configured table of ``source`` through an Engine's (or a bare) pipeline.

    An operator's command: rows are ingested unrestricted, with the ACL the source maps.
    """
    pipeline = _pipeline(target)
    marks = WatermarkStore(pipeline.settings.data_dir, source.name)
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
            for config in source.tables:
                _sync_table(conn, pipeline, source, config, marks, report, full=full)
    except SQLAlchemyError as exc:
        raise InvalidInputError(
            f"SQL source {source.name} ({source.display_url}): {type(exc).__name__}",
            code="sql_source_error",
        ) from None
    finally:
        engine.dispose()
        pipeline.index.refresh()
    log.info(
        "SQL source synced",
        extra={"sql_source": source.name, "url": source.display_url, "full": full, **report.counts},
    )
    return report
