"""What every command module shares: the Typer app, the consoles, settings and engine
sessions, and the one way errors end a command (one line, a stable code, non-zero exit)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from hanrag.engine import Engine
from hanrag.errors import HanragError, InvalidInputError
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
    log_level: str | None = None  # --verbose / --debug
    service: bool = False  # a long-running command (SERVICES)


state = _State()
# Commands that run as services log at log_level (INFO by default); the others at WARNING
# unless log_level is set or --verbose / --debug is given.
SERVICES = frozenset({"serve", "worker", "mcp"})


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data directory (default ./hanrag-data or HANRAG_DATA_DIR)."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings file.")] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Log what hanrag does (INFO) on stderr, whatever log_level says."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Log everything hanrag does (DEBUG).")] = False,
) -> None:
    state.data_dir = data_dir
    state.config_file = config
    state.log_level = "DEBUG" if debug else "INFO" if verbose else None
    state.service = ctx.invoked_subcommand in SERVICES
    if state.log_level is not None:
        # Server worker processes and reloads read the settings from the environment.
        os.environ["HANRAG_LOG_LEVEL"] = state.log_level


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
    if state.log_level is not None:
        overrides["log_level"] = state.log_level
    loaded = load_settings(state.config_file, **overrides)
    quiet = not state.service and "log_level" not in loaded.model_fields_set
    configure_logging(
        "WARNING" if quiet else loaded.log_level,
        loaded.log_json,
        file=loaded.log_file,
        max_mb=loaded.log_max_mb,
        backups=loaded.log_backups,
    )
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
