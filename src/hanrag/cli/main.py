"""``hanrag`` command line (Typer + Rich). Every command calls the one :class:`Engine`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
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

from hanrag.domain import Hit, SearchFilters, to_epoch
from hanrag.engine import Engine
from hanrag.errors import ConfigError, HanragError, InvalidInputError
from hanrag.ingest.pipeline import FileOutcome, IngestReport
from hanrag.logs import configure_logging
from hanrag.settings import Settings, load_settings

app = typer.Typer(
    name="hanrag",
    help="Korean-first retrieval-augmented generation: ingest documents, search and answer in Korean.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Show and check the effective settings.", no_args_is_help=True)
documents_app = typer.Typer(help="List, show and delete ingested documents.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(documents_app, name="documents")

console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")


class _State:
    data_dir: Path | None = None
    config_file: Path | None = None


state = _State()


@app.callback()
def main(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data directory (default ./hanrag-data or HANRAG_DATA_DIR)."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings file.")] = None,
) -> None:
    state.data_dir = data_dir
    state.config_file = config


def fail(exc: HanragError) -> None:
    """One line on stderr, a non-zero exit; nothing already stored is touched."""
    err_console.print(
        f"[bold red]error[/] {escape(f'[{exc.code}]')} {escape(exc.message)}", highlight=False, soft_wrap=True
    )
    raise typer.Exit(code=2 if isinstance(exc, InvalidInputError) else 1)


def settings() -> Settings:
    overrides: dict[str, Any] = {}
    if state.data_dir is not None:
        overrides["data_dir"] = state.data_dir
    loaded = load_settings(state.config_file, **overrides)
    configure_logging(loaded.log_level, loaded.log_json)
    return loaded


@contextmanager
def engine_session() -> Iterator[Engine]:
    engine = Engine(settings())
    try:
        yield engine
    finally:
        engine.close()


def run(action: Callable[[], T]) -> T:
    from sqlalchemy.exc import SQLAlchemyError

    from hanrag.errors import BackendError

    try:
        return action()
    except HanragError as exc:
        fail(exc)
        raise  # unreachable: fail() exits
    except SQLAlchemyError as exc:
        # Driver messages can hold connection details: show the kind of failure only.
        fail(
            BackendError(
                f"the catalog database failed ({type(getattr(exc, 'orig', None) or exc).__name__})",
                code="database_error",
            )
        )
        raise
    except OSError as exc:
        fail(BackendError(f"{exc.filename or 'file system'}: {exc.strerror or exc}", code="io_error"))
        raise


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2, default=str) + "\n")


def parse_date(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(f"{name}: {value!r} is not a date (use YYYY-MM-DD)", field=name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_pairs(values: list[str] | None, name: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"{name}: {item!r} is not KEY=VALUE", field=name)
        pairs[key.strip()] = value.strip()
    return pairs


# ------------------------------------------------------------------ config


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective settings (secrets masked)."""
    data = run(settings).masked()
    if as_json:
        print_json(data)
        return
    table = Table("setting", "value", title="hanrag settings")

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            table.add_row(prefix, json.dumps(value, ensure_ascii=False))

    walk("", data)
    console.print(table)


@config_app.command("validate")
def config_validate() -> None:
    """Check the settings and the data directory; exit non-zero when something is wrong."""
    loaded = run(settings)
    problems: list[str] = []
    try:
        loaded.data_dir.mkdir(parents=True, exist_ok=True)
        probe = loaded.data_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        problems.append(f"data directory {loaded.data_dir} is not writable: {exc.strerror or exc}")
    if loaded.embed.backend == "sentence_transformers" and not Path(loaded.embed.model).expanduser().is_dir():
        problems.append(f"embed.model: {loaded.embed.model} is not a directory")
    if loaded.index.backend == "milvus" and not loaded.index.milvus_uri:
        problems.append("index.milvus_uri is required when index.backend is milvus")
    if problems:
        for problem in problems:
            err_console.print(
                f"[bold red]error[/] {escape('[invalid_settings]')} {escape(problem)}", highlight=False
            )
        raise typer.Exit(code=1)
    console.print("[green]settings are valid[/]")


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


def _run_with_progress(
    label: str, work: Callable[[Callable[[int], None], Any], IngestReport]
) -> IngestReport:
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


def _print_report(report: IngestReport) -> None:
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
    if background:
        _ingest_in_background(paths, include, exclude, acl)
        return

    def work() -> IngestReport:
        date_override = parse_date(date, "date")
        metadata = parse_pairs(meta, "meta")
        with engine_session() as engine:
            return _run_with_progress(
                "ingest",
                lambda on_start, on_progress: engine.ingest(
                    paths,
                    include=include,
                    exclude=exclude,
                    acl=acl,
                    date_override=date_override,
                    metadata=metadata,
                    on_start=on_start,
                    on_progress=on_progress,
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
        _print_report(report)


def _ingest_in_background(
    paths: list[Path], include: list[str] | None, exclude: list[str] | None, acl: list[str] | None
) -> None:
    from hanrag.auth.access import validate_acl
    from hanrag.cli.jobs import enqueue
    from hanrag.jobs.base import JobRecord

    def work() -> Any:
        payload = {
            "paths": [str(p.expanduser().resolve()) for p in paths],
            "acl": validate_acl(acl) if acl else None,
            "include": include,
            "exclude": exclude,
        }
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
        with engine_session() as engine:
            return _run_with_progress(
                "sync",
                lambda on_start, on_progress: engine.sync(
                    directory,
                    include=include,
                    exclude=exclude,
                    acl=acl,
                    on_start=on_start,
                    on_progress=on_progress,
                ),
            )

    report = run(work)
    _show_report(report, as_json)


# ------------------------------------------------------------------ search


def build_filters(
    principal: list[str] | None,
    date_from: str | None,
    date_to: str | None,
    document: list[str] | None,
    meta: list[str] | None,
) -> SearchFilters:
    start = parse_date(date_from, "date_from")
    end = parse_date(date_to, "date_to")
    if start and end and start > end:
        raise InvalidInputError("date_from is after date_to", field="date_from")
    return SearchFilters(
        principals=list(principal) if principal else None,
        date_from=to_epoch(start) if start else None,
        # An end date given as a day includes that whole day.
        date_to=to_epoch(end) + (86399 if date_to and len(date_to) == 10 else 0) if end else None,
        document_ids=list(document) if document else None,
        metadata=parse_pairs(meta, "meta"),
    )


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The question or keywords, in Korean or English.")],
    k: Annotated[int | None, typer.Option("--k", help="How many hits.")] = None,
    fusion: Annotated[str | None, typer.Option("--fusion", help="weighted or rrf.")] = None,
    principal: Annotated[
        list[str] | None, typer.Option("--principal", help="Search as this principal (repeatable).")
    ] = None,
    date_from: Annotated[str | None, typer.Option("--date-from", help="YYYY-MM-DD")] = None,
    date_to: Annotated[str | None, typer.Option("--date-to", help="YYYY-MM-DD")] = None,
    document: Annotated[list[str] | None, typer.Option("--document", help="Only these document ids.")] = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="Metadata KEY=VALUE filter.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Hybrid search (dense + Korean BM25) over the ingested documents."""

    def work() -> Any:
        filters = build_filters(principal, date_from, date_to, document, meta)
        with engine_session() as engine:
            return engine.search(query, k=k, filters=filters, fusion=fusion)

    result = run(work)
    if as_json:
        print_json(result.as_dict())
        return
    console.rule(f"[bold]{escape(result.query)}")
    for rank, hit in enumerate(result.hits, start=1):
        _print_hit(rank, hit)
    if result.widened_months:
        note = "dropped" if result.widened_months < 0 else f"widened by ±{result.widened_months} months"
        console.print(f"[yellow]time range {note}: too few documents matched[/]")
    if not result.hits:
        console.print("[yellow]no matching documents[/]")


def _print_hit(rank: int, hit: Hit, *, width: int = 240) -> None:
    chunk = hit.chunk
    location = (
        Path(chunk.source).name
        + (f" p.{chunk.page}" if chunk.page else "")
        + (f" [{chunk.sheet}]" if chunk.sheet else "")
    )
    components = " · ".join(
        f"{name} {value:.3f}"
        for name, value in (
            ("dense", hit.dense_score),
            ("bm25", hit.bm25_score),
            ("bigram", hit.bigram_score),
        )
        if value is not None
    )
    console.print(
        f"[bold cyan][{rank}][/] [bold]{escape(chunk.title)}[/] — {escape(location)}  "
        f"[dim]score {hit.score:.3f} ({components})[/]"
    )
    snippet = chunk.text.replace("\n", " ")
    console.print(
        "    " + (snippet[:width] + ("…" if len(snippet) > width else "")), highlight=False, markup=False
    )


# ------------------------------------------------------------------ answers


async def _stream_answer(
    engine: Engine, question: str, session_id: str | None, rag: bool, *, echo: bool
) -> dict[str, Any]:
    """Run one question through the engine; print deltas as they come when ``echo``."""
    from hanrag.answer.engine import AskOptions

    result: dict[str, Any] = {}
    references: list[dict[str, Any]] = []
    async for event in engine.ask(question, session_id=session_id, options=AskOptions(rag=rag)):
        if event.type == "references":
            references = event.data["references"]
        elif event.type == "delta" and echo:
            console.print(event.data["text"], end="", highlight=False, markup=False, soft_wrap=True)
        elif event.type == "done":
            result = dict(event.data)
            result["references"] = references
        elif event.type == "error":
            assert event.exception is not None
            raise event.exception
    if echo:
        console.print()
    return result


def _print_citations(result: dict[str, Any]) -> None:
    if result.get("fallback"):
        console.print(f"[yellow]{escape(result['fallback'])}[/]")
    if not result.get("citations"):
        return
    console.print("[dim]출처[/]")
    for citation in result["citations"]:
        location = Path(citation["source"]).name + (f" p.{citation['page']}" if citation.get("page") else "")
        console.print(f"  [bold cyan][{citation['n']}][/] {escape(citation['title'])} — {escape(location)}")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question, in Korean or English.")],
    session: Annotated[str | None, typer.Option("--session", help="Continue this conversation.")] = None,
    no_rag: Annotated[bool, typer.Option("--no-rag", help="Answer without searching the documents.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Answer a question from the documents, streaming, with the cited sources below."""
    import asyncio

    def work() -> dict[str, Any]:
        with engine_session() as engine:
            return asyncio.run(_stream_answer(engine, question, session, not no_rag, echo=not as_json))

    result = run(work)
    if as_json:
        print_json(
            {
                "answer": result["answer"],
                "citations": result["citations"],
                "session_id": result["session_id"],
                "timings": result["timings"],
                "usage": result.get("usage"),
                "fallback": result.get("fallback"),
            }
        )
        return
    _print_citations(result)
    console.print(f"[dim]session {result['session_id']}[/]")


@app.command()
def chat(
    session: Annotated[str | None, typer.Option("--session", help="Continue this conversation.")] = None,
    no_rag: Annotated[bool, typer.Option("--no-rag")] = False,
) -> None:
    """Interactive conversation with memory (empty line or Ctrl-D to leave)."""
    import asyncio

    with engine_session() as engine:
        session_id = session
        console.print("[dim]질문을 입력하세요. 빈 줄이나 Ctrl-D로 끝냅니다.[/]")
        while True:
            try:
                question = console.input("[bold green]질문> [/]")
            except (EOFError, KeyboardInterrupt):
                console.print()
                break
            if not question.strip():
                break
            try:
                result = asyncio.run(_stream_answer(engine, question, session_id, not no_rag, echo=True))
            except HanragError as exc:
                err_console.print(f"[bold red]error[/] {escape(f'[{exc.code}]')} {escape(exc.message)}")
                continue
            session_id = result["session_id"]
            _print_citations(result)


sessions_app = typer.Typer(help="List, read and delete conversations.", no_args_is_help=True)
app.add_typer(sessions_app, name="sessions")


@sessions_app.command("list")
def sessions_list(
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recent conversations."""

    def work() -> list[dict[str, Any]]:
        with engine_session() as engine:
            return [row.as_dict() for row in engine.sessions.list_sessions(limit=limit)]

    rows = run(work)
    if as_json:
        print_json(rows)
        return
    table = Table("session", "title", "updated", title=f"{len(rows)} sessions")
    for row in rows:
        table.add_row(row["session_id"], row["title"], row["updated_at"])
    console.print(table)


@sessions_app.command("show")
def sessions_show(
    session_id: Annotated[str, typer.Argument()],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The messages of one conversation."""

    def work() -> list[dict[str, Any]]:
        with engine_session() as engine:
            engine.sessions.get(session_id)
            return [row.as_dict() for row in engine.sessions.messages(session_id)]

    messages = run(work)
    if as_json:
        print_json(messages)
        return
    for message in messages:
        style = "bold green" if message["role"] == "user" else "bold cyan"
        console.print(f"[{style}]{message['role']}[/] {escape(message['content'])}")


@sessions_app.command("delete")
def sessions_delete(session_id: Annotated[str, typer.Argument()]) -> None:
    """Delete a conversation and its messages."""

    def work() -> None:
        with engine_session() as engine:
            engine.sessions.delete(session_id)

    run(work)
    console.print(f"deleted session {session_id}")


# --------------------------------------------------------------- documents


@documents_app.command("list")
def documents_list(
    status: Annotated[str | None, typer.Option("--status", help="indexed, failed or indexing.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 100,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List ingested documents."""

    def work() -> list[dict[str, Any]]:
        with engine_session() as engine:
            return [row.as_dict() for row in engine.list_documents(offset=offset, limit=limit, status=status)]

    rows = run(work)
    if as_json:
        print_json(rows)
        return
    table = Table(
        "id", "title", "format", "status", "chunks", "acl", "source", title=f"{len(rows)} documents"
    )
    for row in rows:
        table.add_row(
            row["document_id"],
            row["title"],
            row["format"] or "",
            row["status"],
            str(row["chunk_count"]),
            ",".join(row["acl"]),
            row["source"],
        )
    console.print(table)


@documents_app.command("show")
def documents_show(
    document: Annotated[str, typer.Argument(help="Document id or source path.")],
    chunks: Annotated[bool, typer.Option("--chunks", help="Also print the chunks.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show one document's catalog entry (and optionally its chunks)."""

    def work() -> dict[str, Any]:
        with engine_session() as engine:
            row = engine.get_document(document)
            data = row.as_dict()
            if chunks:
                data["chunks"] = [
                    {
                        "chunk_id": c.chunk_id,
                        "position": c.position,
                        "page": c.page,
                        "sheet": c.sheet,
                        "kind": c.kind,
                        "text": c.text,
                    }
                    for c in engine.document_chunks(row.id)
                ]
            return data

    data = run(work)
    if as_json:
        print_json(data)
        return
    table = Table("field", "value", title=data["title"])
    for key, value in data.items():
        if key != "chunks":
            table.add_row(
                key, json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else str(value)
            )
    console.print(table)
    for chunk in data.get("chunks", []):
        console.rule(f"{chunk['position']} · {chunk['chunk_id']} · page {chunk['page']}")
        console.print(chunk["text"], highlight=False, markup=False)


@documents_app.command("delete")
def documents_delete(
    document: Annotated[str, typer.Argument(help="Document id or source path.")],
) -> None:
    """Remove a document and its chunks from the index and the catalog."""

    def work() -> tuple[Any, int]:
        with engine_session() as engine:
            return engine.delete_document(document)

    row, removed = run(work)
    console.print(f"deleted {row.title} ({row.id}): {removed} chunks removed")


# ------------------------------------------------------------------ status


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    load_model: Annotated[
        bool, typer.Option("--load-model", help="Load the embedding model to report it.")
    ] = False,
) -> None:
    """Counts, index size and model status."""

    def work() -> dict[str, Any]:
        with engine_session() as engine:
            return engine.status(load_model=load_model)

    data = run(work)
    if as_json:
        print_json(data)
        return
    table = Table("what", "value", title="hanrag status")
    table.add_row("data directory", data["data_dir"])
    table.add_row("documents", ", ".join(f"{k}: {v}" for k, v in data["documents"].items()) or "none")
    for key, value in data["index"].items():
        table.add_row(f"index.{key}", str(value))
    for key, value in data["embedding_model"].items():
        table.add_row(f"embedding.{key}", str(value))
    if data["embedding_cache"]:
        table.add_row("embedding cache entries", str(data["embedding_cache"]["entries"]))
    console.print(table)


# ------------------------------------------------------------------ samples


def samples_dir() -> Path:
    return Path(str(resources.files("hanrag") / "samples"))


@app.command()
def samples() -> None:
    """Print the directory of the bundled Korean sample documents."""
    sys.stdout.write(f"{samples_dir()}\n")


@app.command()
def demo(
    question: Annotated[str, typer.Argument(help="A question about the sample documents.")] = (
        "입사 3년차 직원의 연차휴가는 며칠인가요?"
    ),
) -> None:
    """Ingest the bundled sample documents and answer a question with cited sources."""

    import asyncio

    def work() -> dict[str, Any]:
        with engine_session() as engine:
            report = _run_with_progress(
                "samples",
                lambda on_start, on_progress: engine.ingest(
                    [samples_dir()], on_start=on_start, on_progress=on_progress
                ),
            )
            _print_report(report)
            console.rule(f"[bold]{escape(question)}")
            return asyncio.run(_stream_answer(engine, question, None, True, echo=True))

    result = run(work)
    _print_citations(result)


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Interface (default from settings: 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default from settings: 8000).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Server processes.")] = 1,
    ray: Annotated[
        bool, typer.Option("--ray", help="Serve with Ray Serve replicas instead of uvicorn workers.")
    ] = False,
    replicas: Annotated[int, typer.Option("--replicas", min=1, help="Ray Serve replicas (with --ray).")] = 2,
) -> None:
    """Serve the HTTP API (native REST + SSE, OpenAI-compatible, legacy) with uvicorn or Ray Serve."""
    import os

    import uvicorn

    loaded = run(settings)
    if ray:
        try:
            from hanrag.api import ray_serve
        except ImportError:
            fail(ConfigError("--ray needs Ray Serve: pip install 'ray[serve]'", code="missing_extra"))
        if state.config_file is not None:
            os.environ["HANRAG_CONFIG_FILE"] = str(state.config_file)
        ray_serve.run(loaded, host=host or loaded.api.host, port=port or loaded.api.port, replicas=replicas)
        return
    # Worker processes build their own settings from the environment.
    os.environ["HANRAG_DATA_DIR"] = str(loaded.data_dir)
    if state.config_file is not None:
        os.environ["HANRAG_CONFIG_FILE"] = str(state.config_file)
    uvicorn.run(
        "hanrag.api.app:create_app",
        factory=True,
        host=host or loaded.api.host,
        port=port or loaded.api.port,
        workers=workers,
        log_level=loaded.log_level.lower(),
        timeout_graceful_shutdown=10,
        timeout_keep_alive=int(loaded.api.keep_alive_s),
        # A worker warming up (Kiwi's first load, a BM25 rebuild) holds the GIL for
        # seconds; uvicorn's 5 s default health check would kill it mid-request.
        timeout_worker_healthcheck=120,
    )


def _register_admin_commands() -> None:
    from hanrag.cli import admin, jobs

    admin.register(app)
    jobs.register(app)


if __name__ == "__main__":
    # Run as a script: use the imported module's app, so every command module
    # registers against one app (no second copy of this module).
    from hanrag.cli.main import app as cli_app

    cli_app()
else:
    _register_admin_commands()
