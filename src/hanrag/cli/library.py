"""``hanrag sessions`` and ``hanrag documents``: conversations and the documents' catalog."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from hanrag.auth.access import SYSTEM
from hanrag.cli.common import (
    app,
    console,
    documents_app,
    engine_session,
    print_json,
    run,
)

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
            return [row.as_dict() for row in engine.list_sessions(caller=SYSTEM, limit=limit)]

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
            return [row.as_dict() for row in engine.session_messages(session_id, caller=SYSTEM)]

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
            engine.delete_session(session_id, caller=SYSTEM)

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
            return [
                row.as_dict()
                for row in engine.list_documents(caller=SYSTEM, offset=offset, limit=limit, status=status)
            ]

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
            row = engine.get_document(document, caller=SYSTEM)
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
                    for c in engine.document_chunks(row.id, caller=SYSTEM)
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
            return engine.delete_document(document, caller=SYSTEM)

    row, removed = run(work)
    console.print(f"deleted {row.title} ({row.id}): {removed} chunks removed")
