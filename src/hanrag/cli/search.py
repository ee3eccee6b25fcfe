"""``hanrag search``, ``ask`` and ``chat``: hits, streamed answers and their citations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from hanrag.auth.access import SYSTEM
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
from hanrag.domain import (
    AnswerEvent,
    AnswerResult,
    DeltaEvent,
    Hit,
    ReferencesEvent,
    SearchFilters,
    fold_answer,
    to_epoch,
)
from hanrag.engine import Engine
from hanrag.errors import HanragError, InvalidInputError

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
            return engine.search(query, caller=SYSTEM, k=k, filters=filters, fusion=fusion)

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


async def stream_answer(
    engine: Engine, question: str, session_id: str | None, rag: bool, *, echo: bool
) -> AnswerResult:
    """Run one question through the engine; print deltas as they come when ``echo``."""
    from hanrag.answer.engine import AskOptions

    def show(event: AnswerEvent) -> None:
        if echo and isinstance(event, ReferencesEvent) and event.table is not None:
            print_table(event.table)
        if echo and isinstance(event, DeltaEvent):
            console.print(event.text, end="", highlight=False, markup=False, soft_wrap=True)

    events = engine.ask(question, caller=SYSTEM, session_id=session_id, options=AskOptions(rag=rag))
    result = await fold_answer(events, on_event=show)
    if echo:
        console.print()
    return result


def print_table(table: dict[str, Any]) -> None:
    """The table route's rows as a Rich table, its SQL below in dim text."""
    from rich.table import Table

    shown = Table(*(escape(str(c)) for c in table["columns"]), title=escape(table["title"]))
    for row in table["rows"][:50]:
        shown.add_row(*(escape("" if v is None else str(v)) for v in row))
    console.print(shown)
    more = table["row_count"] - min(table["row_count"], 50)
    if more > 0 or table["truncated"]:
        console.print(f"[dim]… {more} more rows{' (capped)' if table['truncated'] else ''}[/]")
    console.print(f"[dim]{escape(table['source'])}: {escape(table['sql'])}[/]")


def print_citations(result: AnswerResult) -> None:
    if result.fallback:
        console.print(f"[yellow]{escape(result.fallback)}[/]")
    if not result.citations:
        return
    console.print("[dim]출처[/]")
    for citation in result.citations:
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

    def work() -> AnswerResult:
        with engine_session() as engine:
            return asyncio.run(stream_answer(engine, question, session, not no_rag, echo=not as_json))

    result = run(work)
    if as_json:
        # {"answer", "citations", "session_id", "timings", "usage", "fallback"}
        print_json(result.as_dict())
        return
    print_citations(result)
    console.print(f"[dim]session {result.session_id}[/]")


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
                result = asyncio.run(stream_answer(engine, question, session_id, not no_rag, echo=True))
            except HanragError as exc:
                err_console.print(f"[bold red]error[/] {escape(f'[{exc.code}]')} {escape(exc.message)}")
                continue
            session_id = result.session_id
            print_citations(result)
