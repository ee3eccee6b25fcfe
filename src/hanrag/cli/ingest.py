"""``hanrag ingest`` and ``hanrag sync``: the pipeline's one ingestion loop with a Rich progress bar
and a summary table, or a background job."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from hanrag.cli.common import (
    app,
    console,
    engine_session,
    err_console,
    parse_date,
    parse_pairs,
    print_json,
    run,
)
from hanrag.ingest.model import FileOutcome, IngestReport, IngestRequest

# ------------------------------------------------------------------ ingest


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}", style="dim"),
        console=err_console,
        transient=False,
    )


def run_with_progress(label: str, work: Callable[[Callable[[int], None], Any], IngestReport]) -> IngestReport:
    started = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(label, total=None, rate="", current="")

        def on_start(total: int) -> None:
            progress.update(task, total=total)

        def on_progress(done: int, total: int, outcome: FileOutcome) -> None:
            elapsed = max(time.perf_counter() - started, 1e-6)
            progress.update(
                task,
                completed=done,
                rate=f"{done / elapsed:.1f} files/s",
                current=Path(outcome.source).name[:40],
            )

        return work(on_start, on_progress)


def print_report(report: IngestReport) -> None:
    counts = report.counts()
    summary = Table(title="ingest summary")
    for column in (
        "added",
        "updated",
        "unchanged",
        "acl_updated",
        "removed",
        "skipped",
        "failed",
        "chunks",
        "seconds",
    ):
        summary.add_column(column, justify="right")
    summary.add_row(
        *(
            str(counts.get(c, 0))
            for c in ("added", "updated", "unchanged", "acl_updated", "removed", "skipped")
        ),
        f"[red]{counts.get('failed', 0)}[/]" if counts.get("failed") else "0",
        str(sum(o.chunks for o in report.outcomes if o.status in ("added", "updated"))),
        f"{report.seconds:.1f}",
    )
    console.print(summary)
    if report.failures:
        failures = Table("file", "code", "reason", title="failures", title_style="red")
        for outcome in report.failures:
            failures.add_row(Path(outcome.source).name, outcome.error_code or "", outcome.error or "")
        console.print(failures)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories (recursive).")],
    include: Annotated[list[str] | None, typer.Option("--include", help="Only paths matching GLOB.")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Skip paths matching GLOB.")] = None,
    acl: Annotated[
        list[str] | None,
        typer.Option("--acl", help="Who may read: public, user:NAME, group:NAME (repeatable)."),
    ] = None,
    date: Annotated[
        str | None, typer.Option("--date", help="Override the document date (YYYY-MM-DD).")
    ] = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="Metadata KEY=VALUE (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    background: Annotated[
        bool, typer.Option("--background", help="Queue an ingestion job (run by the server or workers).")
    ] = False,
) -> None:
    """Ingest files and directories: parse, chunk, embed and index; unchanged files are skipped."""

    def request() -> IngestRequest:
        return IngestRequest(
            paths=paths,
            include=include,
            exclude=exclude,
            acl=acl,
            date_override=parse_date(date, "date"),
            metadata=parse_pairs(meta, "meta"),
        )

    if background:
        _ingest_in_background(request)
        return

    def work() -> IngestReport:
        wanted = request()
        with engine_session() as engine:
            return run_with_progress(
                "ingest",
                lambda on_start, on_progress: engine.ingest(
                    wanted, on_start=on_start, on_progress=on_progress
                ),
            )

    report = run(work)
    _show_report(report, as_json)
    if report.outcomes and all(o.status in ("failed", "skipped") for o in report.outcomes):
        raise typer.Exit(code=1)


def _show_report(report: IngestReport, as_json: bool) -> None:
    if as_json:
        print_json(report.as_dict())
    else:
        print_report(report)


def _ingest_in_background(request: Callable[[], IngestRequest]) -> None:
    """Queue the request as a job, its paths made absolute (the worker may run elsewhere)."""
    from dataclasses import replace

    from hanrag.auth.access import validate_acl
    from hanrag.cli.jobs import enqueue
    from hanrag.jobs.base import JobRecord

    def work() -> Any:
        wanted = request()
        payload = replace(
            wanted,
            paths=[p.expanduser().resolve() for p in wanted.paths],
            acl=validate_acl(wanted.acl) if wanted.acl else None,
        ).as_payload()
        with engine_session() as engine:
            return enqueue(engine, JobRecord(kind="ingest", payload=payload, principal="cli"))

    record = run(work)
    console.print(f"queued ingestion job [bold]{record.id}[/]; follow it with: hanrag jobs show {record.id}")


@app.command()
def sync(
    directory: Annotated[Path, typer.Argument(help="Directory to mirror.")],
    include: Annotated[list[str] | None, typer.Option("--include")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude")] = None,
    acl: Annotated[list[str] | None, typer.Option("--acl")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Mirror a directory: add new files, update changed ones, remove documents whose files are gone."""

    def work() -> IngestReport:
        wanted = IngestRequest(paths=[directory], include=include, exclude=exclude, acl=acl)
        with engine_session() as engine:
            return run_with_progress(
                "sync",
                lambda on_start, on_progress: engine.sync(wanted, on_start=on_start, on_progress=on_progress),
            )

    report = run(work)
    _show_report(report, as_json)
