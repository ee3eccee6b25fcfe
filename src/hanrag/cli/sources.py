"""``hanrag source``: SQL sources (issue P10) — add, list, show, sync and remove.

The CLI is the operator's: it acts as the system caller. A URL may be given as
``env:VARIABLE`` so that its password stays out of the shell history; every output shows
the URL with its password masked.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hanrag.auth.access import SYSTEM
from hanrag.cli.common import app, console, engine_session, err_console, print_json, run
from hanrag.errors import InvalidInputError
from hanrag.jobs.folder_sync import folder_views
from hanrag.tables.options import source_from_options
from hanrag.tables.sync import SyncProgress, SyncReport

source_app = typer.Typer(help="SQL sources: database tables kept in sync as documents.", no_args_is_help=True)
app.add_typer(source_app, name="source")

MAX_CONFIG_BYTES = 1_000_000


def _url(value: str) -> str:
    if value.startswith("env:"):
        name = value[4:]
        found = os.environ.get(name)
        if not found:
            raise InvalidInputError(
                f"the environment variable {name} is not set", code="invalid_sql_url", field="url"
            )
        return found
    return value


def _read_text(path: Path, what: str) -> str:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise InvalidInputError(f"{what}: {path} is larger than 1 MB", field=what)
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{what}: cannot read {path} ({type(exc).__name__})", field=what) from None


def _table_objects(path: Path | None) -> list[dict[str, Any]]:
    """Per-table objects from a YAML or JSON file: a list, or a mapping with ``tables``."""
    if path is None:
        return []
    import yaml

    try:
        data = yaml.safe_load(_read_text(path, "config"))
    except yaml.YAMLError as exc:
        raise InvalidInputError(
            f"config: {path} is not YAML or JSON ({exc.__class__.__name__})", field="config"
        ) from None
    tables = data.get("tables") if isinstance(data, dict) else data
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise InvalidInputError(
            "config: expected a list of table objects (or {tables: [...]})", field="config"
        )
    return tables


@source_app.command("add-sql")
def add_sql(
    name: Annotated[str, typer.Argument(help="A name for the source.")],
    url: Annotated[str, typer.Argument(help="SQLAlchemy URL, or env:VARIABLE holding it.")],
    tables: Annotated[
        list[str] | None, typer.Option("--tables", help="Tables (comma-separated, repeatable).")
    ] = None,
    columns: Annotated[
        list[str] | None, typer.Option("--columns", help="Only these columns: COLUMN or TABLE.COLUMN.")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Never read these columns: COLUMN or TABLE.COLUMN.")
    ] = None,
    where: Annotated[str | None, typer.Option("--where", help="SQL condition limiting the rows.")] = None,
    acl: Annotated[list[str] | None, typer.Option("--acl", help="Who may read the rows' documents.")] = None,
    query_acl: Annotated[
        list[str] | None, typer.Option("--query-acl", help="Who may query the tables with SQL (table route).")
    ] = None,
    template: Annotated[Path | None, typer.Option("--template", help="Row-to-text template file.")] = None,
    title: Annotated[
        str | None, typer.Option("--title", help="Title over each row (default: table comment).")
    ] = None,
    date_column: Annotated[str | None, typer.Option("--date-column", help="The documents' date.")] = None,
    updated_at_column: Annotated[
        str | None, typer.Option("--updated-at-column", help="Incremental-sync watermark column.")
    ] = None,
    acl_column: Annotated[
        str | None, typer.Option("--acl-column", help="Each row's ACL from a column.")
    ] = None,
    acl_template: Annotated[str | None, typer.Option("--acl-template", help="e.g. 'group:{value}'.")] = None,
    interval: Annotated[
        int | None, typer.Option("--interval", help="Sync every N minutes (the job scheduler).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML/JSON file of per-table objects.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per round trip.")] = 200,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace an existing source's definition.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Add a SQL source (PostgreSQL, MySQL/MariaDB, SQLite; Oracle and SQL Server untested)."""

    def add() -> dict[str, Any]:
        source = source_from_options(
            name,
            _url(url),
            tables=[*(tables or []), *_table_objects(config)],
            columns=columns,
            exclude=exclude,
            where=where,
            acl=acl,
            query_acl=query_acl,
            template=_read_text(template, "template") if template else None,
            title=title,
            date_column=date_column,
            updated_at_column=updated_at_column,
            acl_column=acl_column,
            acl_template=acl_template,
            batch_size=batch_size,
        )
        with engine_session() as engine:
            return engine.sources.add(
                source, caller=SYSTEM, interval_minutes=interval, replace_existing=replace
            )

    view = run(add)
    if as_json:
        print_json(view)
        return
    for warning in view.get("warnings", []):
        err_console.print(f"[yellow]warning[/] {warning}")
    console.print(
        f"added SQL source [bold]{view['name']}[/] ({view['url']}); run `hanrag source sync {view['name']}`"
    )


@source_app.command("list")
def list_sources(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the SQL sources (URLs masked) and the scheduled folders (sources.folders)."""

    def listing() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with engine_session() as engine:
            return [{**v, "kind": "sql"} for v in engine.sources.list(caller=SYSTEM)], folder_views(engine)

    views, folders = run(listing)
    if as_json:
        print_json([*views, *folders])
        return
    if folders:
        print_folders(folders)
    table = Table("name", "url", "tables", "interval", "last sync", "rows", title="SQL sources")
    for view in views:
        last = view.get("last_sync") or {}
        table.add_row(
            view["name"],
            view["url"],
            ", ".join(t["name"] for t in view["tables"]),
            f"{view['interval_minutes']} min" if view["interval_minutes"] else "-",
            (view.get("last_sync_at") or "-")[:19],
            str(last.get("rows", "-")),
        )
    console.print(table)


def print_folders(folders: list[dict[str, Any]]) -> None:
    table = Table("folder", "interval", "next sync", "last sync", "last run", title="Scheduled folders")
    for view in folders:
        last = view.get("last_sync") or {}
        counts = ", ".join(f"{k} {v}" for k, v in sorted((last.get("counts") or {}).items()))
        error = (last.get("error") or {}).get("code")
        outcome = (
            f"{last.get('state', '-')}" + (f" [{error}]" if error else "") + (f": {counts}" if counts else "")
        )
        table.add_row(
            view["path"],
            f"{view['interval_minutes']} min",
            (view.get("next_sync_at") or "-")[:19],
            (view.get("last_sync_at") or "-")[:19],
            outcome,
        )
    console.print(table)


@source_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The source's name.")],
    schema: Annotated[bool, typer.Option("--schema/--no-schema", help="Describe the live tables.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a source (URL masked) and its tables' columns, keys and sample values."""

    def showing() -> dict[str, Any]:
        with engine_session() as engine:
            return engine.sources.show(name, caller=SYSTEM, schema=schema)

    view = run(showing)
    if as_json:
        print_json(view)
        return
    shown = {k: v for k, v in view.items() if k not in ("schema", "tables")}
    console.print_json(json.dumps(shown, ensure_ascii=False, default=str))
    for described in view.get("schema", []):
        table = Table(
            "column",
            "type",
            "comment",
            "samples",
            title=f"{described['table']} — {described['comment'] or ''}",
        )
        for column in described["columns"]:
            key = " (PK)" if column["name"] in described["primary_key"] else ""
            table.add_row(
                column["name"] + key, column["type"], column["comment"] or "", ", ".join(column["samples"])
            )
        console.print(table)


def print_sync(report: SyncReport) -> None:
    table = Table(
        "table",
        "watermark",
        "rows read",
        title=f"sync of {report.source}" + (" (full)" if report.full else ""),
    )
    for item in report.summary()["tables"]:
        table.add_row(item["table"], f"{item['mode']}: {item['watermark']}", str(item["rows"]))
    console.print(table)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) or "nothing to do"
    console.print(f"documents: {counts}")
    if report.can_write:
        err_console.print("[yellow]warning[/] the account can write: a read-only account is recommended")
    for failure in report.summary()["failures"][:10]:
        err_console.print(f"[red]failed[/] {failure['source']}: [{failure['code']}] {failure['error']}")


@source_app.command("sync")
def sync(
    name: Annotated[str, typer.Argument(help="The source's name.")],
    full: Annotated[
        bool, typer.Option("--full", help="Read every row and remove the rows that are gone.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Sync a source's rows into the index (incremental unless --full)."""
    started = time.perf_counter()

    def syncing() -> SyncReport:
        with engine_session() as engine:
            if as_json:
                return engine.sources.sync(name, caller=SYSTEM, full=full)
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn())
            with Progress(
                *columns, TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), console=err_console
            ) as bar:
                tasks: dict[str, Any] = {}

                def on_progress(step: SyncProgress) -> None:
                    if step.table not in tasks:
                        tasks[step.table] = bar.add_task(step.table, total=step.rows_total, counts="")
                    counts = " ".join(f"{k}:{v}" for k, v in sorted(step.counts.items()))
                    bar.update(tasks[step.table], completed=step.rows, counts=counts)

                return engine.sources.sync(name, caller=SYSTEM, full=full, on_progress=on_progress)

    report = run(syncing)
    if as_json:
        print_json({**report.summary(), "seconds": round(time.perf_counter() - started, 2)})
        return
    print_sync(report)


@source_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The source's name.")],
    keep_documents: Annotated[
        bool, typer.Option("--keep-documents", help="Keep the rows' documents in the index.")
    ] = False,
) -> None:
    """Remove a source (and, unless --keep-documents, its rows' documents)."""

    def removing() -> dict[str, Any]:
        with engine_session() as engine:
            return engine.sources.remove(name, caller=SYSTEM, keep_documents=keep_documents)

    result = run(removing)
    console.print(f"removed SQL source {name} ({result['documents_removed']} documents removed)")
