"""``hanrag`` command line (Typer + Rich). Every command calls the one :class:`Engine`.

This module is the entry point (``hanrag.cli.main:app``): the global options, ``config``,
``status``, ``samples``, ``demo`` and ``serve``; the other commands live in their own
modules and register on the shared app (:mod:`hanrag.cli.common`)."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from hanrag.cli.common import (
    app,
    config_app,
    console,
    engine_session,
    err_console,
    fail,
    print_json,
    run,
    settings,
    state,
)
from hanrag.cli.ingest import print_report, run_with_progress
from hanrag.cli.search import print_citations, stream_answer
from hanrag.domain import AnswerResult
from hanrag.errors import ConfigError

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
    coded = [("invalid_settings", problem) for problem in problems]
    from hanrag.ops.offline import offline_refusals

    coded.extend(("offline_refused", refused) for refused in offline_refusals(loaded))
    try:
        from hanrag.answer.prompts import load_prompts

        load_prompts(loaded.prompts)
    except ConfigError as exc:
        coded.append((exc.code, exc.message))
    if coded:
        for code, problem in coded:
            err_console.print(
                f"[bold red]error[/] {escape(f'[{code}]')} {escape(problem)}", highlight=False, soft_wrap=True
            )
        raise typer.Exit(code=1)
    console.print("[green]settings are valid[/]")


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

    def work() -> AnswerResult:
        with engine_session() as engine:
            report = run_with_progress(
                "samples",
                lambda on_start, on_progress: engine.ingest(
                    [samples_dir()], on_start=on_start, on_progress=on_progress
                ),
            )
            print_report(report)
            console.rule(f"[bold]{escape(question)}")
            return asyncio.run(stream_answer(engine, question, None, True, echo=True))

    result = run(work)
    print_citations(result)


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

    from hanrag.answer.prompts import load_prompts
    from hanrag.ops.offline import check_offline

    loaded = run(settings)
    run(lambda: check_offline(loaded))  # offline: a URL pointing elsewhere is refused before serving
    run(lambda: load_prompts(loaded.prompts))  # a bad operator prompt file: refused before serving
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


def _register_commands() -> None:
    """Each command module adds its commands to the one app when imported."""
    from hanrag.cli import (  # noqa: F401
        admin,
        backup,
        bundle,
        eval,
        feedback,
        ingest,
        jobs,
        library,
        mcp_server,
        models,
        ops,
        search,
        sources,
        vocab,
    )

    admin.register(app)
    jobs.register(app)
    mcp_server.register(app)


if __name__ == "__main__":
    # Run as a script: use the imported module's app, so every command module
    # registers against one app (no second copy of this module).
    from hanrag.cli.main import app as cli_app

    cli_app()
else:
    _register_commands()
