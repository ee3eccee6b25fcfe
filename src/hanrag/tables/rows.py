"""A table row as a document: its stable source, title, text, metadata, date and ACL.

The default text is the table's title, then one ``label: value`` line per included column
(labels from the column comments, Korean ones typically, else the column names; empty
values are left out)::

    배송 내역 (id=3)
    배송상태: 출고 완료
    도착지: 부산광역시 해운대구

A table's ``template`` (``str.format`` over the included columns' values) replaces the
lines. Excluded columns are never in the text, the metadata or the title.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import quote

from hanrag.auth.access import validate_acl
from hanrag.errors import InvalidInputError
from hanrag.ingest.pipeline import document_id_for
from hanrag.tables.sources import SqlSource, TableConfig, TableSchema, sample_text

SOURCE_TYPE = "sql"


@dataclass
class RowDocument:
    source: str  # sql:{source}/{table}/{pk}
    document_id: str
    filename: str
    title: str
    text: str
    metadata: dict[str, str]
    date: datetime | None
    acl: list[str] | None


def row_key(schema: TableSchema, row: Mapping[str, Any]) -> str:
    """The primary key as one path segment (each value URL-quoted, joined by ``,``)."""
    if not schema.primary_key:
        raise InvalidInputError(
            f"table {schema.name!r} has no primary key: its rows cannot be tracked",
            code="sql_no_primary_key",
            field="table",
        )
    return ",".join(quote(str(row[col]), safe="") for col in schema.primary_key)


def row_source(source: SqlSource, table: str, key: str) -> str:
    return f"{SOURCE_TYPE}:{source.name}/{table}/{key}"


def table_title(config: TableConfig, schema: TableSchema) -> str:
    return (config.title or schema.comment or "").strip() or schema.name


def as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            return as_datetime(datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def row_acl(source: SqlSource, config: TableConfig, row: Mapping[str, Any]) -> list[str] | None:
    """The row's ACL: mapped from its ACL column, else the source's; None: the default."""
    if config.acl_column is not None:
        raw = row.get(config.acl_column)
        values = [v.strip() for v in str(raw or "").split(",") if v.strip()]
        if not values:  # never falls back to a wider ACL: the row is not ingested
            raise InvalidInputError(
                f"{config.name}: the row's ACL column {config.acl_column!r} is empty",
                code="sql_acl_missing",
                field="acl_column",
            )
        return validate_acl([config.acl_template.format(value=v) for v in values], field="acl_column")
    if source.acl is not None:
        return validate_acl(source.acl)
    return None


def row_text(config: TableConfig, schema: TableSchema, row: Mapping[str, Any], title: str) -> str:
    shown = {c.name: sample_text(row.get(c.name)) for c in schema.columns if config.allows(c.name)}
    if config.template is not None:
        try:
            body = config.template.format_map({k: v if v is not None else "" for k, v in shown.items()})
        except (KeyError, IndexError, ValueError) as exc:
            raise InvalidInputError(
                f"table {schema.name!r}: the template names an unknown or excluded column ({exc})",
                code="sql_template_invalid",
                field="template",
            ) from None
    else:
        labels = schema.labels
        body = "\n".join(
            f"{labels[name]}: {' '.join(value.split())}"
            for name, value in shown.items()
            if value not in (None, "")
        )
    return f"{title}\n{body.strip()}\n"


def row_document(
    source: SqlSource, config: TableConfig, schema: TableSchema, row: Mapping[str, Any]
) -> RowDocument:
    key = row_key(schema, row)
    where = row_source(source, schema.name, key)
    shown_key = ", ".join(f"{col}={row[col]}" for col in schema.primary_key)
    title = f"{table_title(config, schema)} ({shown_key})"
    metadata = {"sql_source": source.name, "sql_table": schema.name, "sql_key": key}
    return RowDocument(
        source=where,
        document_id=document_id_for(SOURCE_TYPE, where),
        filename=f"{schema.name}.txt",
        title=title,
        text=row_text(config, schema, row, title),
        metadata=metadata,
        date=as_datetime(row.get(config.date_column)) if config.date_column else None,
        acl=row_acl(source, config, row),
    )
