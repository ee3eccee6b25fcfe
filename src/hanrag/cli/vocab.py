"""``hanrag vocab``: the company vocabulary (see :mod:`hanrag.korean.vocabulary`).

    hanrag vocab word add 누리온패스 한빛스마트패스 [--tag NNP]   # kept whole by Kiwi
    hanrag vocab synonym add 법카 법인카드                        # one group of equivalents
    hanrag vocab stopword add 관련
    hanrag vocab list [--json] | export FILE | import FILE
    hanrag vocab reindex                                         # lexical only, no embedding

Words change how text is analysed: after ``word add|remove`` or an ``import``, the
already-indexed chunks are re-analysed (``--no-reindex`` leaves that to a later
``hanrag vocab reindex``). Synonyms and stop-words apply to queries at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from hanrag.cli.common import app, console, engine_session, err_console, print_json, run, settings
from hanrag.errors import InvalidInputError
from hanrag.korean.vocabulary import Vocabulary, VocabularyFile

vocab_app = typer.Typer(
    help="The company vocabulary: dictionary words, synonyms, stop-words.", no_args_is_help=True
)
word_app = typer.Typer(help="Kiwi user dictionary words (kept whole).", no_args_is_help=True)
synonym_app = typer.Typer(help="Synonym and abbreviation groups (query time).", no_args_is_help=True)
stopword_app = typer.Typer(help="Stop-words, dropped from queries' lexical tokens.", no_args_is_help=True)
vocab_app.add_typer(word_app, name="word")
vocab_app.add_typer(synonym_app, name="synonym")
vocab_app.add_typer(stopword_app, name="stopword")
app.add_typer(vocab_app, name="vocab")

Terms = Annotated[list[str], typer.Argument(help="Terms.")]
NoReindex = Annotated[bool, typer.Option("--no-reindex", help="Do not re-analyse the indexed chunks now.")]


def _file() -> VocabularyFile:
    return VocabularyFile(settings().data_dir)


def _reindex() -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from hanrag.jobs.vocab_reindex import reindex

    with (
        engine_session() as engine,
        Progress(
            TextColumn("[bold]reindex"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[chunks]} chunks"),
            console=err_console,
        ) as progress,
    ):
        task = progress.add_task("reindex", total=None, chunks=0)

        def on_progress(done: int, total: int, chunks: int) -> None:
            progress.update(task, completed=done, total=total, chunks=chunks)

        return reindex(engine, on_progress=on_progress)


def _print_reindex(report: dict[str, Any]) -> None:
    console.print(
        f"re-analysed {report['documents']} documents / {report['chunks']} chunks "
        f"({report['documents_changed']} changed) in {report['seconds']} s; nothing was embedded"
    )


def _change(kind: str, action: str, terms: list[str], tag: str = "NNP", *, reindex: bool = False) -> None:
    file = _file()

    def work() -> bool:
        with file.changing() as vocabulary:
            before = vocabulary.as_dict()
            method = getattr(vocabulary, f"{action}_{kind}")
            method(terms, tag) if kind == "words" and action == "add" else method(terms)
            changed = vocabulary.as_dict() != before
        return changed

    changed = run(work)
    console.print(
        f"{kind}: {action} {', '.join(escape(t) for t in terms)}" + ("" if changed else " (no change)")
    )
    if changed and reindex:
        _print_reindex(run(_reindex))


@word_app.command("add")
def word_add(
    terms: Terms,
    tag: Annotated[str, typer.Option("--tag", help="Kiwi tag: NNP (default), NNG, SL …")] = "NNP",
    no_reindex: NoReindex = False,
) -> None:
    """Add words to Kiwi's user dictionary (then re-analyse the indexed chunks)."""
    _change("words", "add", terms, tag, reindex=not no_reindex)


@word_app.command("remove")
def word_remove(terms: Terms, no_reindex: NoReindex = False) -> None:
    """Remove words from the user dictionary (then re-analyse the indexed chunks)."""
    _change("words", "remove", terms, reindex=not no_reindex)


@synonym_app.command("add")
def synonym_add(term: Annotated[str, typer.Argument()], others: Terms) -> None:
    """Make TERM and OTHER… equivalent in queries (e.g. 법카 법인카드)."""
    _change("synonyms", "add", [term, *others])


@synonym_app.command("remove")
def synonym_remove(
    term: Annotated[str, typer.Argument()], others: Annotated[list[str] | None, typer.Argument()] = None
) -> None:
    """Take TERM (and OTHER…) out of their synonym groups."""
    _change("synonyms", "remove", [term, *(others or [])])


@stopword_app.command("add")
def stopword_add(terms: Terms) -> None:
    """Drop these words from queries' lexical tokens."""
    _change("stopwords", "add", terms)


@stopword_app.command("remove")
def stopword_remove(terms: Terms) -> None:
    """Stop dropping these words."""
    _change("stopwords", "remove", terms)


@vocab_app.command("list")
def vocab_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show the vocabulary."""
    data = run(_file().load).as_dict()
    if as_json:
        print_json(data)
        return
    table = Table("kind", "entry", title=f"vocabulary (version {data['version']})")
    for word in data["words"]:
        table.add_row("word", f"{escape(word['term'])} [{word['tag']}]")
    for group in data["synonyms"]:
        table.add_row("synonyms", escape(" ⇄ ".join(group)))
    for term in data["stopwords"]:
        table.add_row("stop-word", escape(term))
    console.print(table)


@vocab_app.command("export")
def vocab_export(file: Annotated[Path, typer.Argument(help="JSON file to write.")]) -> None:
    """Write the vocabulary as JSON (the format ``import`` reads)."""
    data = run(_file().load).as_dict()
    run(lambda: file.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"))
    console.print(f"wrote {escape(str(file))}")


@vocab_app.command("import")
def vocab_import(
    file: Annotated[Path, typer.Argument(help="JSON file written by export.")], no_reindex: NoReindex = False
) -> None:
    """Replace the vocabulary with FILE's (checked whole first)."""

    def work() -> tuple[bool, Vocabulary]:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{file} is not valid JSON: {exc}", code="invalid_vocabulary") from exc
        incoming = Vocabulary.from_dict(data)
        store = _file()
        words_before = store.load().words
        return words_before != incoming.words, store.replace(incoming)

    words_changed, stored = run(work)
    console.print(
        f"imported {len(stored.words)} words, {len(stored.synonyms)} synonym groups, "
        f"{len(stored.stopwords)} stop-words (version {stored.version})"
    )
    if words_changed and not no_reindex:
        _print_reindex(run(_reindex))


@vocab_app.command("reindex")
def vocab_reindex() -> None:
    """Re-analyse every indexed chunk with the current dictionary (no embedding)."""
    _print_reindex(run(_reindex))
