"""Operator commands: ``hanrag doctor`` and ``hanrag config init``.

* ``doctor`` checks every configured dependency for real (see :mod:`hanrag.ops.doctor`)
  and prints one line per check — verdict, time taken, what it found, what to do — and
  exits 1 when any check failed (``--json``: the same report as JSON, same exit code).
* ``config init`` writes the commented ``.env`` template of every setting, generated
  from the settings models (see :mod:`hanrag.ops.config_template`); an existing file is
  kept unless ``--force``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from hanrag.cli.common import app, config_app, console, engine_session, fail, print_json, run
from hanrag.errors import InvalidInputError
from hanrag.ops.config_template import env_template, setting_names
from hanrag.ops.doctor import DEFAULT_TIMEOUT_S, DoctorReport, run_doctor

VERDICT_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.5, help="Seconds a connection or a request may take.")
    ] = DEFAULT_TIMEOUT_S,
    providers: Annotated[
        bool, typer.Option("--providers/--no-providers", help="Send each model provider a short request.")
    ] = True,
) -> None:
    """Check every configured dependency (catalog, index, embedding model, providers, Redis,
    Milvus, SQL sources, disk, data directory, clock); exit 1 when a check fails."""

    def work() -> DoctorReport:
        with engine_session() as engine:
            return run_doctor(engine, timeout_s=timeout, providers=providers)

    report = run(work)
    if as_json:
        print_json(report.as_dict())
    else:
        table = Table("check", "verdict", "ms", "detail", "remedy", title="hanrag doctor", show_lines=False)
        for result in report.results:
            style = VERDICT_STYLE[result.verdict]
            table.add_row(
                escape(result.name),
                f"[{style}]{result.verdict}[/]",
                f"{result.seconds * 1000:.0f}",
                escape(result.detail),
                escape(result.remedy or ""),
            )
        console.print(table)
        counts = report.counts()
        console.print(
            f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail, {counts['skip']} skipped "
            f"in {report.seconds:.2f} s"
        )
    if report.failed:
        raise typer.Exit(code=1)


@config_app.command("init")
def config_init(
    out: Annotated[
        Path, typer.Option("--out", help="Where to write the template ('-': standard output).")
    ] = Path(".env"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented .env template of every setting with its default (secrets empty)."""
    text = env_template()
    if str(out) == "-":
        sys.stdout.write(text)
        return
    if out.exists() and not force:
        fail(InvalidInputError(f"{out} exists; --force overwrites it", code="file_exists", field="out"))

    def write() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")

    run(write)
    console.print(f"wrote {len(setting_names())} settings to {escape(str(out))}")
