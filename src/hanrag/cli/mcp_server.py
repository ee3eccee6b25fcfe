"""``hanrag mcp``: the MCP server over stdio (for desktop clients that launch it) or
streamable HTTP (for clients on the network), scoped by the caller's API key."""

from __future__ import annotations

from typing import Annotated

import typer

from hanrag.cli.common import engine_session, err_console, fail, run, settings
from hanrag.errors import InvalidInputError

TRANSPORTS = ("stdio", "http")


def mcp(
    transport: Annotated[
        str, typer.Option("--transport", help="stdio (launched by the client) or http (streamable HTTP).")
    ] = "stdio",
    host: Annotated[str, typer.Option("--host", help="Interface for --transport http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port for --transport http.")] = 8001,
    path: Annotated[str, typer.Option("--path", help="Endpoint path for --transport http.")] = "/mcp",
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="HANRAG_MCP_API_KEY",
            show_envvar=True,
            help="stdio in auth mode token: whose documents the server may show (prefer the env var).",
        ),
    ] = None,
) -> None:
    """Serve search, cited answers and documents to MCP clients (tools and resources)."""
    import anyio

    from hanrag.mcp.server import HanragMCP

    if transport not in TRANSPORTS:
        fail(
            InvalidInputError(
                f"--transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}", field="transport"
            )
        )
    from hanrag.ops.offline import check_offline

    loaded = run(settings)
    run(lambda: check_offline(loaded))  # offline: a URL pointing elsewhere is refused before serving
    if transport == "http":
        import uvicorn

        with engine_session() as engine:
            app = HanragMCP(engine).http_app(host=host, path=path)
            err_console.print(f"hanrag MCP server on http://{host}:{port}{path}", highlight=False)
            uvicorn.run(app, host=host, port=port, log_level=loaded.log_level.lower(), access_log=False)
        return
    # stdio: stdout carries the protocol, so nothing else may be printed there.
    with engine_session() as engine:
        server = HanragMCP(engine, stdio_key=api_key)
        run(server.stdio_caller)  # a missing or invalid key: one line on stderr, exit 1
        anyio.run(server.run_stdio)


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp)
