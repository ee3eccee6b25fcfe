"""The table route (issue P10): a question -> one validated SQL query -> rows, a chart spec.

A language model writes the SQL from a compact schema summary of the tables the asker's
query grants cover (:mod:`hanrag.tables.scope`). The SQL runs only after
:func:`hanrag.tables.sql_guard.validate_select` accepted it and
:func:`hanrag.tables.scope.restrict_rows` narrowed it to the rows the asker may see, on a
read-only transaction with a statement timeout (:func:`hanrag.tables.execute.run_read_only`).
A refused or failing query is given back to the model once, with the reason; a second
failure raises, and the answer engine answers from documents instead.

Schemas are read once per source configuration and kept for ``SCHEMA_TTL_S`` (a question
must not pay for introspection), and each source keeps one small connection pool.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy.engine import Engine

from hanrag.answer.prompts import (
    TABLE_EMPTY_ANSWER,
    TABLE_ROWS_ANSWER,
    TABLE_TITLE,
    TABLE_VALUE_ANSWER,
    PromptSet,
    table_sql_messages,
)
from hanrag.errors import HanragError, InvalidInputError
from hanrag.llm.base import GenerationOptions, Generator, Turn
from hanrag.settings import TableSettings
from hanrag.tables.chart import chart_spec
from hanrag.tables.execute import QueryResult, run_read_only, sqlglot_dialect
from hanrag.tables.render import markdown_table
from hanrag.tables.scope import ScopedSource, ScopedTable, restrict_rows
from hanrag.tables.sources import SqlSource, TableConfig, TableSchema, describe
from hanrag.tables.sql_guard import validate_select

log = logging.getLogger("hanrag.tables")

SCHEMA_TTL_S = 300.0
SQL_MAX_TOKENS = 512

Grants = Callable[[tuple[str, ...] | None], list[tuple[SqlSource, list[TableConfig]]]]

_SOURCE_TAG = re.compile(r"<source>(.*?)</source>", re.DOTALL)
_SQL_TAG = re.compile(r"<sql>(.*?)</sql>", re.DOTALL | re.IGNORECASE)
_SQL_FENCE = re.compile(r"```(?:sql)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


class TableRouteError(HanragError):
    """No query could be run for the question (the answer falls back to documents)."""

    code = "table_route_failed"


@dataclass
class TableAnswer:
    source: str
    sql: str
    result: QueryResult
    chart: dict[str, Any]
    title: str
    attempts: int
    timings: dict[str, float] = field(default_factory=dict)

    def rows_markdown(self, max_rows: int) -> str:
        return markdown_table(self.result, max_rows=max_rows)

    def plain_answer(self) -> str:
        """What the rows show, said without a model (when it fails after the query ran)."""
        rows, columns = self.result.rows, self.result.columns
        if not rows:
            return TABLE_EMPTY_ANSWER
        if len(rows) == 1 and len(columns) == 1:
            return TABLE_VALUE_ANSWER.format(label=columns[0], value=rows[0][0])
        shown = f"{len(rows)}+" if self.result.truncated else str(len(rows))
        return TABLE_ROWS_ANSWER.format(rows=shown)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "source": self.source,
            "sql": self.sql,
            **self.result.as_dict(),
            "chart": self.chart,
        }


def parse_sql_reply(text: str) -> tuple[str | None, str]:
    """(source name or None, SQL) from a model's reply: tags, else a fenced block, else the
    reply itself when it reads like a query."""
    source_match = _SOURCE_TAG.search(text)
    source = source_match.group(1).strip() if source_match else None
    for pattern in (_SQL_TAG, _SQL_FENCE):
        match = pattern.search(text)
        if match and match.group(1).strip():
            return source, match.group(1).strip()
    bare = _SOURCE_TAG.sub("", text).strip()
    if re.match(r"(?is)^\s*(select|with)\b", bare):
        return source, bare
    raise InvalidInputError("the reply holds no <sql> query", code="sql_parse_error", field="sql")


def chart_title(question: str) -> str:
    title = " ".join(question.split()).rstrip("?？ ")
    return title if len(title) <= 60 else title[:59] + "…"


class TableRoute:
    def __init__(self, grants: Grants, settings: TableSettings, *, prompts: PromptSet | None = None) -> None:
        """``grants``: the sources and tables a caller's principals may query; ``prompts``:
        the operator's prompts (none: the Korean defaults)."""
        self.grants = grants
        self.settings = settings
        self.prompts = prompts
        self._lock = threading.Lock()
        self._engines: dict[tuple[str, str], Engine] = {}
        self._schemas: dict[tuple[str, str], tuple[float, list[TableSchema]]] = {}

    # ----------------------------------------------------------- the caller's scope

    def available(self, principals: tuple[str, ...] | None) -> bool:
        return bool(self.grants(principals))

    def _engine(self, source: SqlSource) -> Engine:
        key = (source.name, source.url)
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                for old in [k for k in self._engines if k[0] == source.name]:
                    self._engines.pop(old).dispose()  # the source's URL changed
                engine = self._engines[key] = source.connect()
            return engine

    def _describe(self, source: SqlSource, tables: list[TableConfig]) -> list[TableSchema]:
        key = (source.name, repr(source.config()) + source.url)
        cached = self._schemas.get(key)
        if cached is not None and time.monotonic() - cached[0] < SCHEMA_TTL_S:
            wanted = {t.name for t in tables}
            return [s for s in cached[1] if s.name in wanted]
        with self._engine(source).connect() as conn:
            schemas = [describe(conn, config) for config in source.tables]
        self._schemas[key] = (time.monotonic(), schemas)
        wanted = {t.name for t in tables}
        return [s for s in schemas if s.name in wanted]

    def scope(self, principals: tuple[str, ...] | None) -> list[ScopedSource]:
        """The caller's sources and tables, described (at most ``max_summary_tables``)."""
        scoped: list[ScopedSource] = []
        budget = self.settings.max_summary_tables
        for source, tables in self.grants(principals):
            if budget <= 0:
                break
            tables = tables[:budget]
            try:
                dialect = sqlglot_dialect(self._engine(source).dialect.name)
                schemas = {s.name: s for s in self._describe(source, tables)}
            except HanragError as exc:
                log.warning("SQL source skipped", extra={"sql_source": source.name, "code": exc.code})
                continue
            except Exception as exc:  # an unreachable database must not break every question
                log.warning(
                    "SQL source unreachable", extra={"sql_source": source.name, "error": type(exc).__name__}
                )
                continue
            items = [ScopedTable(t, schemas[t.name]) for t in tables if t.name in schemas]
            if items:
                scoped.append(ScopedSource(source, dialect, items))
                budget -= len(items)
        return scoped

    # ---------------------------------------------------------------- the query

    def prepare(
        self, reply: str, scoped: list[ScopedSource], principals: tuple[str, ...] | None
    ) -> tuple[ScopedSource, str]:
        """The source and the SQL to run for a model's reply, or an InvalidInputError saying why not."""
        name, sql = parse_sql_reply(reply)
        if name is None and len(scoped) == 1:
            target = scoped[0]
        else:
            target = next((s for s in scoped if s.source.name == name), None)  # type: ignore[assignment]
            if target is None:
                raise InvalidInputError(
                    f"unknown data source {name!r}; use one of: {', '.join(s.source.name for s in scoped)}",
                    code="sql_source_unknown",
                    field="sql",
                )
        # One row past the cap, so that the runner can tell the result was cut (``truncated``).
        checked = validate_select(
            sql, dialect=target.dialect, allowed=target.allowed(), max_rows=self.settings.max_rows + 1
        )
        return target, restrict_rows(checked, target.dialect, target.row_conditions(principals))

    def run(self, target: ScopedSource, sql: str) -> QueryResult:
        return run_read_only(
            self._engine(target.source),
            sql,
            max_rows=self.settings.max_rows,
            timeout_s=self.settings.statement_timeout_s,
        )

    async def answer(
        self,
        question: str,
        *,
        principals: tuple[str, ...] | None,
        generator: Generator,
        history: list[Turn],
        today: date,
    ) -> TableAnswer:
        """Ask the model for SQL, check and run it (one retry with the reason); raises
        :class:`TableRouteError` when nothing could run."""
        started = time.perf_counter()
        scoped = await asyncio.to_thread(self.scope, principals)
        if not scoped:
            raise TableRouteError("no table is available to this question", code="table_route_unavailable")
        restricted = principals is not None
        summary = "\n\n".join(s.summary(restricted=restricted) for s in scoped)
        timings = {"table_schema_ms": round((time.perf_counter() - started) * 1000, 2)}
        options = GenerationOptions(max_tokens=SQL_MAX_TOKENS, temperature=0.0)
        retry: tuple[str, str] | None = None
        problem = ""
        for attempt in (1, 2):
            messages = table_sql_messages(
                question, summary, today.isoformat(), history, retry, prompts=self.prompts
            )
            llm_started = time.perf_counter()
            reply = await generator.complete(messages, options)
            timings["table_sql_llm_ms"] = timings.get("table_sql_llm_ms", 0.0) + round(
                (time.perf_counter() - llm_started) * 1000, 2
            )
            run_started = time.perf_counter()
            try:
                target, sql = self.prepare(reply, scoped, principals)
                result = await asyncio.to_thread(self.run, target, sql)
            except HanragError as exc:
                problem = f"{exc.code}: {exc.message}"
                log.info("table route query refused", extra={"attempt": attempt, "code": exc.code})
                retry = (reply[:4000], problem[:500])
                continue
            timings["table_query_ms"] = round((time.perf_counter() - run_started) * 1000, 2)
            title = chart_title(question)
            return TableAnswer(
                source=target.source.name,
                sql=sql,
                result=result,
                chart=chart_spec(result, title),
                title=title or TABLE_TITLE,
                attempts=attempt,
                timings=timings,
            )
        raise TableRouteError(f"no runnable SQL for the question ({problem})")

    def close(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()
