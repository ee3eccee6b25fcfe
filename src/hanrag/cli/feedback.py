"""``hanrag feedback list|export``: the thumbs up and down people gave the answers.

``hanrag feedback export OUT.jsonl [--rating up|down] [--since YYYY-MM-DD]`` writes an
evaluation dataset: UTF-8 JSON Lines, one object per feedback, oldest first (each object
is one line; laid out here with comments)::

    {"question": "입사 3년차 연차는 며칠인가요?",      # the question the answer was for
     "answer": "... [1]",                            # the rated answer, as it was shown
     "rating": "up",                                 # up | down
     "reason": null,                                 # wrong_source | outdated | incomplete | other | null
     "comment": null,                                # the rater's comment (<= 2000 characters) or null
     "relevant_chunk_ids": ["9c1e...-00000-5d2a..."], # the cited chunks, for thumbs up only ([] otherwise)
     "cited_titles": ["연차휴가 규정"],               # titles of the cited passages (any rating)
     "model": "extractive",                          # the generator that wrote the answer (null if unknown)
     "created_at": "2026-12-02T10:00:00+00:00"}      # when the feedback was given (ISO 8601)

A thumbs up marks the cited passages as relevant to the question (retrieval ground truth
and a good reference answer); a thumbs down keeps the question with its reason as a
failure case. Every line holds the other users' questions: keep the file as private as
the catalog.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from hanrag.auth.access import SYSTEM
from hanrag.cli.common import app, console, engine_session, parse_date, print_json, run
from hanrag.errors import InvalidInputError

feedback_app = typer.Typer(help="Read and export the feedback on answers.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")

RatingOption = Annotated[str | None, typer.Option("--rating", help="Only up or down.")]


def _rating(value: str | None) -> str | None:
    if value is not None and value not in ("up", "down"):
        raise InvalidInputError(
            f"--rating: {value!r} is not up or down", code="invalid_rating", field="rating"
        )
    return value


@feedback_app.command("list")
def feedback_list(
    rating: RatingOption = None,
    since: Annotated[str | None, typer.Option("--since", help="YYYY-MM-DD (UTC).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The newest feedback first."""

    def work() -> tuple[list[dict[str, Any]], int]:
        wanted = _rating(rating)
        with engine_session() as engine:
            rows, total = engine.feedback.page(
                caller=SYSTEM, rating=wanted, since=parse_date(since, "since"), limit=limit
            )
            return [row.as_dict() for row in rows], total

    rows, total = run(work)
    if as_json:
        print_json({"items": rows, "total": total})
        return
    table = Table("given", "rating", "reason", "user", "question", "comment", title=f"{total} feedback")
    for row in rows:
        table.add_row(
            row["created_at"][:16].replace("T", " "),
            row["rating"],
            row["reason"] or "",
            escape(row["principal"] or "-"),
            escape(row["question"][:60]),
            escape((row["comment"] or "")[:60]),
        )
    console.print(table)


@feedback_app.command("export")
def feedback_export(
    out: Annotated[Path, typer.Argument(help="The JSON Lines file to write.")],
    rating: RatingOption = None,
    since: Annotated[str | None, typer.Option("--since", help="YYYY-MM-DD (UTC).")] = None,
) -> None:
    """Write the feedback as an evaluation dataset: one JSON object per line, oldest first
    ({"question", "answer", "rating", "reason", "comment", "relevant_chunk_ids" (the cited
    chunks, thumbs up only), "cited_titles", "model", "created_at"})."""
    from hanrag.answer.feedback import dataset_record

    def work() -> int:
        wanted = _rating(rating)
        count = 0
        with engine_session() as engine:
            rows = engine.feedback.each(caller=SYSTEM, rating=wanted, since=parse_date(since, "since"))
            partial = out.with_name(f".{out.name}.partial")
            # Written whole or not at all; readable by its owner only (it holds users' questions).
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                    for row in rows:
                        handle.write(json.dumps(dataset_record(row), ensure_ascii=False) + "\n")
                        count += 1
                os.replace(partial, out)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        return count

    count = run(work)
    console.print(f"wrote {count} feedback records to {escape(str(out))}")
