"""A SQL source from the flat options of ``hanrag source add-sql`` and ``POST /api/v1/sources``.

``columns`` and ``exclude`` entries, and the date, updated-at and ACL columns, are
``COLUMN`` (every listed table) or ``TABLE.COLUMN`` (that table only). The other per-table options apply to every listed table; ``tables``
may instead be given as full per-table objects (the fields of
:class:`hanrag.tables.sources.TableConfig`), the flat options then being their defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from hanrag.auth.access import validate_acl
from hanrag.errors import InvalidInputError
from hanrag.tables.sources import SqlSource, TableConfig

# Table and column names as databases report them (no quoting games in configuration).
_NAME = re.compile(r"^[A-Za-z_\u00c0-\uffff][\w$\u00c0-\uffff]{0,127}$")
MAX_TABLES = 200
MAX_TEMPLATE_CHARS = 20_000
MAX_WHERE_CHARS = 2000


def _name(value: str, field: str) -> str:
    value = value.strip()
    if not _NAME.match(value):
        raise InvalidInputError(
            f"{field}: {value[:80]!r} is not a table or column name", code="invalid_sql_source", field=field
        )
    return value


def _split(values: Sequence[str] | None) -> list[str]:
    return [part.strip() for value in values or () for part in str(value).split(",") if part.strip()]


def _per_table(values: Sequence[str] | None, tables: list[str], field: str) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = {t: [] for t in tables}
    for item in _split(values):
        table, dot, column = item.rpartition(".")
        targets = [table] if dot else tables
        if dot and table not in chosen:
            raise InvalidInputError(
                f"{field}: {item!r} names a table that is not listed", code="invalid_sql_source", field=field
            )
        for target in targets:
            chosen[target].append(_name(column, field))
    return chosen


def _check_where(where: str | None) -> str | None:
    if where is None or not where.strip():
        return None
    if len(where) > MAX_WHERE_CHARS or ";" in where:
        raise InvalidInputError("where: one condition, without ';'", code="invalid_sql_source", field="where")
    return where.strip()


def table_from_mapping(raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> TableConfig:
    known = {f.name for f in fields(TableConfig)}
    unknown = set(raw) - known
    if unknown:
        raise InvalidInputError(
            f"tables: unknown field(s) {', '.join(sorted(unknown))}",
            code="invalid_sql_source",
            field="tables",
        )
    data: dict[str, Any] = {**defaults, **raw}
    data["name"] = _name(str(data.get("name") or ""), "tables")
    for key in ("include", "query_acl"):
        if data.get(key) is not None:
            data[key] = tuple(_split(data[key]))
    data["exclude"] = tuple(_split(data.get("exclude")))
    for key in ("date_column", "updated_at_column", "acl_column"):
        if data.get(key):
            data[key] = _name(str(data[key]), key)
    for column in (*(data.get("include") or ()), *data["exclude"]):
        _name(column, "columns")
    data["where"] = _check_where(data.get("where"))
    if data.get("template") is not None and len(str(data["template"])) > MAX_TEMPLATE_CHARS:
        raise InvalidInputError("template: too long", code="invalid_sql_source", field="template")
    if data.get("query_acl") is not None:
        data["query_acl"] = tuple(validate_acl(data["query_acl"], field="query_acl"))
    template = str(data.get("acl_template") or "{value}")
    if "{value}" not in template:
        raise InvalidInputError(
            "acl_template must contain {value}", code="invalid_sql_source", field="acl_template"
        )
    data["acl_template"] = template
    return TableConfig(**data)


def source_from_options(
    name: str,
    url: str,
    *,
    tables: Sequence[str | Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    where: str | None = None,
    acl: Sequence[str] | None = None,
    query_acl: Sequence[str] | None = None,
    template: str | None = None,
    title: str | None = None,
    date_column: str | None = None,
    updated_at_column: str | None = None,
    acl_column: str | None = None,
    acl_template: str | None = None,
    batch_size: int = 200,
) -> SqlSource:
    if not re.fullmatch(r"[A-Za-z0-9_.\-\uac00-\ud7a3]{1,64}", name or ""):
        raise InvalidInputError(
            "a source name is 1-64 letters, digits, '.', '_' or '-'", code="invalid_sql_source", field="name"
        )
    if not 1 <= batch_size <= 10_000:
        raise InvalidInputError("batch_size must be 1-10000", code="invalid_sql_source", field="batch_size")
    plain = [_name(t, "tables") for item in tables if isinstance(item, str) for t in _split([item])]
    objects = [item for item in tables if not isinstance(item, str)]
    if not plain and not objects:
        raise InvalidInputError("name at least one table", code="invalid_sql_source", field="tables")
    if len(plain) + len(objects) > MAX_TABLES:
        raise InvalidInputError(f"at most {MAX_TABLES} tables", code="invalid_sql_source", field="tables")
    included = _per_table(columns, plain, "columns") if columns else {}
    excluded = _per_table(exclude, plain, "exclude")
    defaults: dict[str, Any] = {
        "where": where,
        "template": template,
        "title": title,
        "date_column": date_column,
        "updated_at_column": updated_at_column,
        "acl_column": acl_column,
        "acl_template": acl_template or "{value}",
    }
    per_table: dict[str, dict[str, Any]] = {t: {} for t in plain}
    for key in ("date_column", "updated_at_column", "acl_column"):
        value = defaults[key]
        table, dot, column = (value or "").rpartition(".")
        if dot:
            if table not in per_table:
                raise InvalidInputError(
                    f"{key}: {value!r} names a table that is not listed", code="invalid_sql_source", field=key
                )
            per_table[table][key] = column
            defaults[key] = None
    configs = [
        table_from_mapping(
            {"name": t, "include": included.get(t) or None, "exclude": excluded.get(t, []), **per_table[t]},
            defaults,
        )
        for t in plain
    ]
    configs += [table_from_mapping(dict(item), defaults) for item in objects]
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise InvalidInputError("a table is listed twice", code="invalid_sql_source", field="tables")
    return SqlSource(
        name=name,
        url=url,
        tables=tuple(configs),
        acl=None if acl is None else tuple(validate_acl(_split(acl))),
        batch_size=batch_size,
        query_acl=None if query_acl is None else tuple(validate_acl(_split(query_acl), field="query_acl")),
    )
