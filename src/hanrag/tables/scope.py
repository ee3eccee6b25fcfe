"""What one caller's table question may touch: the tables granted to them, described to
the model, allow-listed for the validator, and narrowed to the rows they may see.

* The schema summary names only granted tables and their *included* columns. Sample
  values are left out of tables whose rows carry their own ACL (``acl_column``) for a
  restricted caller: a sample could come from a row they may not read.
* :func:`restrict_rows` rewrites a validated query so that each table reference reads
  ``(SELECT * FROM t WHERE <conditions>) AS t``: the table's configured ``where`` (rows
  the operator excluded are excluded here too) and, for a restricted caller, the rows
  whose ACL column grants one of their principals. The conditions are the operator's
  configuration and values derived from the caller's principals, never the model's text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import cast

import sqlglot
from sqlglot import exp

from hanrag.tables.sources import SqlSource, TableConfig, TableSchema

_LIKE_ESCAPE = "!"


@dataclass
class ScopedTable:
    config: TableConfig
    schema: TableSchema  # the included columns only


@dataclass
class ScopedSource:
    source: SqlSource
    dialect: str  # sqlglot's
    tables: list[ScopedTable]

    def allowed(self) -> dict[str, list[str]]:
        return {t.schema.name.lower(): [c.name.lower() for c in t.schema.columns] for t in self.tables}

    def summary(self, *, restricted: bool) -> str:
        """The tables as the model sees them (one line per column)."""
        lines = [f"[데이터 원본: {self.source.name} ({self.dialect})]"]
        in_scope = {t.schema.name.lower() for t in self.tables}
        for table in self.tables:
            schema, config = table.schema, table.config
            title = (config.title or schema.comment or "").strip()
            lines.append(f"테이블 {schema.name}" + (f" -- {title}" if title else ""))
            # Keys into tables outside the caller's scope are not mentioned (not even by name).
            foreign = {
                c: f"{fk.referred_table}.{r}"
                for fk in schema.foreign_keys
                if fk.referred_table.lower() in in_scope
                for c, r in zip(fk.columns, fk.referred_columns, strict=False)
            }
            hide_samples = restricted and config.acl_column is not None
            for column in schema.columns:
                parts = [f"  - {column.name} {column.type}"]
                if column.name in schema.primary_key:
                    parts.append("(기본키)")
                if column.comment:
                    parts.append(f"-- {column.comment.strip()}")
                if column.name in foreign:
                    parts.append(f"→ {foreign[column.name]}")
                if column.samples and not hide_samples:
                    parts.append(f"(예: {', '.join(column.samples)})")
                lines.append(" ".join(parts))
        return "\n".join(lines)

    def row_conditions(self, principals: tuple[str, ...] | None) -> dict[str, exp.Expression]:
        """Per table name (lower case): the condition its rows must meet for this caller."""
        conditions: dict[str, exp.Expression] = {}
        for table in self.tables:
            config = table.config
            parts: list[exp.Expression] = []
            if config.where:
                parts.append(exp.paren(sqlglot.parse_one(config.where, read=self.dialect), copy=False))
            if principals is not None and config.acl_column is not None:
                parts.append(_acl_condition(config, principals))
            if parts:
                conditions[table.schema.name.lower()] = cast(exp.Expression, exp.and_(*parts))
        return conditions


def _acl_values(template: str, principals: tuple[str, ...]) -> list[str]:
    """The ACL-column values that map to one of the caller's principals."""
    if "{value}" not in template:
        return []
    prefix, _, suffix = template.partition("{value}")
    values = []
    for principal in principals:
        if principal.startswith(prefix) and principal.endswith(suffix):
            value = principal[len(prefix) : len(principal) - len(suffix) if suffix else None]
            if value and value not in values:
                values.append(value)
    return values


def _acl_condition(config: TableConfig, principals: tuple[str, ...]) -> exp.Expression:
    """Rows whose ACL column is one of the caller's values, alone or in a comma-separated list
    (without spaces around the commas)."""
    assert config.acl_column is not None
    values = _acl_values(config.acl_template, principals)
    if not values:
        return exp.false()
    column = exp.column(config.acl_column)
    options: list[exp.Expression] = [column.isin(*(exp.Literal.string(v) for v in values))]
    for value in values:
        escaped = re.sub(r"([!%_])", r"!\1", value)
        for pattern in (f"{escaped},%", f"%,{escaped}", f"%,{escaped},%"):
            like = exp.Like(this=column.copy(), expression=exp.Literal.string(pattern))
            options.append(exp.Escape(this=like, expression=exp.Literal.string(_LIKE_ESCAPE)))
    return exp.paren(exp.or_(*options), copy=False)


def restrict_rows(sql: str, dialect: str, conditions: dict[str, exp.Expression]) -> str:
    """``sql`` (already validated) with every reference to a conditioned table replaced by
    a filtered derived table of the same name."""
    if not conditions:
        return sql
    tree = sqlglot.parse_one(sql, read=dialect)
    cte_names = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in list(tree.find_all(exp.Table)):
        name = table.name.lower()
        if name not in conditions or name in cte_names or table.args.get("db"):
            continue
        alias = table.alias or table.name
        inner = exp.select("*").from_(exp.to_table(table.name)).where(conditions[name].copy())
        table.replace(exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(alias))))
    return tree.sql(dialect=dialect)
