"""``hanrag backup OUT`` and ``hanrag restore IN [--data-dir NEW]`` (see
:mod:`hanrag.ops.backup` and :mod:`hanrag.ops.restore`): a consistent online copy of the
data directory while the server keeps serving and ingesting, and its way back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hanrag.cli.common import app, console, err_console, print_json, run, settings
from hanrag.ops.backup import BackupReport, backup
from hanrag.ops.restore import RestoreReport, restore


def _say(as_json: bool) -> Callable[[str], None]:
    def say(line: str) -> None:
        if not as_json:
            err_console.print(f"[dim]{escape(line)}[/]")

    return say


@app.command("backup")
def backup_command(
    out: Annotated[Path, typer.Argument(help="A new folder, or a .tar file.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier backup at OUT.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Back up the data directory while hanrag keeps running: catalog, index, embedding
    cache, uploaded originals and settings (secrets masked), with a SHA-256 manifest."""
    loaded = run(settings)
    report: BackupReport = run(lambda: backup(loaded, out, force=force, say=_say(as_json)))
    if as_json:
        print_json(report.as_dict())
        return
    counts = report.manifest["counts"]
    console.print(
        f"[green]backup written[/] {escape(str(out))}: {counts.get('chunks', '-')} chunks, "
        f"{sum((counts.get('documents') or {}).values())} documents, {counts['uploads']} originals, "
        f"{report.bytes / 2**20:.1f} MB in {report.seconds:.1f} s (writes paused {report.gate_ms:.0f} ms)"
    )
    mismatched = counts.get("indexed_documents_not_matching_index")
    if mismatched:
        err_console.print(f"[yellow]warning[/] {mismatched} documents disagree with the index in this backup")
    for step in report.manifest["external"]:
        err_console.print(
            f"[bold yellow]to do[/] {escape(step['name'])} is not in the data directory: "
            f"run {escape(step['command'])}"
        )


@app.command("restore")
def restore_command(
    source: Annotated[Path, typer.Argument(help="A backup folder or .tar.")],
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where to restore (default: the data directory).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace the catalog, index, cache and originals of a non-empty one."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Restore a backup into a data directory (refused: another format, a newer hanrag or
    schema, files not matching the manifest, a non-empty directory without --force)."""
    loaded = run(settings)
    report: RestoreReport = run(
        lambda: restore(loaded, source, data_dir=data_dir, force=force, say=_say(as_json))
    )
    if as_json:
        print_json(report.as_dict())
        return
    counts = report.manifest.get("counts", {})
    console.print(
        f"[green]restored[/] {escape(str(source))} into {escape(str(report.data_dir))}: "
        f"{counts.get('chunks', '-')} chunks, {report.bytes / 2**20:.1f} MB in {report.seconds:.1f} s; "
        f"schema {report.schema[0]} -> {report.schema[1]}"
        + (f"; {report.jobs_cancelled} unfinished jobs cancelled" if report.jobs_cancelled else "")
    )
    for item in report.todo:
        err_console.print(f"[bold yellow]to do[/] {escape(item)}")
