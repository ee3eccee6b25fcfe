"""Offline installs: ``hanrag bundle OUT`` and ``hanrag offline verify DIR``.

* ``bundle`` writes an offline installer (see :mod:`hanrag.ops.bundle`): a wheelhouse of
  hanrag and every dependency of the chosen extras, the models inside it, ``install.sh``,
  an operator's README and a SHA-256 manifest; ``OUT`` ending in ``.tar`` packs it.
* ``offline verify`` checks a bundle (or a backup, or a ``.tar`` of either) against its
  ``MANIFEST.sha256``: files missing, changed or not listed; exit 1 when any.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hanrag.cli.common import app, console, err_console, print_json, run
from hanrag.ops.bundle import OPT_IN_EXTRAS, BundleReport, BundleSpec, build_bundle
from hanrag.ops.manifest import Verification, read_text, verify

offline_app = typer.Typer(help="Offline installs: check a bundle or a backup.", no_args_is_help=True)
app.add_typer(offline_app, name="offline")


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


@app.command()
def bundle(
    out: Annotated[Path, typer.Argument(help="The bundle's folder, or a .tar file.")],
    extras: Annotated[
        list[str] | None,
        typer.Option("--extras", help="Extras to include (comma-separated, repeatable); llama is opt-in."),
    ] = None,
    platform: Annotated[
        list[str] | None,
        typer.Option(
            "--platform", help="pip platform tag of the target, e.g. manylinux_2_28_x86_64 (repeatable)."
        ),
    ] = None,
    python: Annotated[
        str | None, typer.Option("--python", help="Target Python version (default: this one).")
    ] = None,
    source: Annotated[
        Path | None, typer.Option("--source", help="A hanrag checkout or wheel (default: this checkout).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier bundle at OUT.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Build an offline installer: every wheel, the models inside them, install.sh, a README
    and a SHA-256 manifest (needs the package index now, never on the target)."""
    spec = BundleSpec(out=out, extras=_split(extras), platforms=_split(platform), source=source, force=force)
    if python:
        spec.python = python
    for extra in spec.extras:
        if extra in OPT_IN_EXTRAS:
            err_console.print(f"note: the {extra} extra {OPT_IN_EXTRAS[extra]}")

    def say(line: str) -> None:
        if not as_json:
            err_console.print(f"[dim]{escape(line)}[/]")

    report: BundleReport = run(lambda: build_bundle(spec, say=say))
    if as_json:
        print_json(report.as_dict())
        return
    for model in report.models:
        console.print(f"model: {escape(model['model'])} ({model['bytes'] / 2**20:.0f} MB)")
    console.print(
        f"[green]bundle written[/] {escape(str(report.path))}: {report.wheels} wheels, "
        f"{report.bytes / 2**20:.0f} MB, {report.seconds:.0f} s; install with install.sh on the target"
    )


@offline_app.command("verify")
def offline_verify(
    path: Annotated[Path, typer.Argument(help="A bundle or backup folder, or a .tar of one.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check every file against MANIFEST.sha256 (missing, changed, not listed); exit 1 if any."""

    def check() -> Verification:
        import json

        # A backup's manifest.json names the dumps its operator adds afterwards (pg_dump...).
        described = read_text(path, "manifest.json") if path.exists() else None
        external = json.loads(described).get("external", []) if described else []
        return verify(path, ignore=[step["file"] for step in external if step.get("file")])

    result = run(check)
    if as_json:
        print_json(result.as_dict())
    else:
        for label, names in (
            ("missing", result.missing),
            ("changed", result.changed),
            ("extra", result.extra),
        ):
            for name in names:
                err_console.print(f"[bold red]{label}[/] {escape(name)}")
        verdict = "[green]ok[/]" if result.ok else "[bold red]failed[/]"
        console.print(
            f"{verdict}: {result.checked} files checked, {len(result.missing)} missing, "
            f"{len(result.changed)} changed, {len(result.extra)} not in the manifest"
        )
    if not result.ok:
        raise typer.Exit(code=1)
