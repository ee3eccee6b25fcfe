"""The MCP server (``hanrag mcp``) through the official ``mcp`` client, against real servers:
streamable HTTP (uvicorn on 127.0.0.1, a free port) and stdio (``python -m hanrag mcp``).

Auth mode token, two groups: a key of group ``alpha`` never sees the ``beta`` document
through any tool or resource (its id, file name or text), a key of ``beta`` does (so the
check can fail), and a missing or invalid key is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from hanrag.embed.cache import EmbeddingCache
from hanrag.engine import Engine
from hanrag.ingest.model import IngestRequest
from hanrag.mcp.server import HanragMCP, document_uri
from hanrag.settings import Settings

ALPHA_TEXT = "알파 프로젝트의 올해 예산은 3억 원이며 담당 부서는 기획팀입니다."
# The marker must never reach an alpha caller, in any form.
BETA_MARKER = "베타기밀7731"
BETA_TEXT = f"베타 프로젝트 기밀 문서 {BETA_MARKER}: 예산은 9억 원이며 출시일은 9월입니다."
PASSWORD = "correct-horse-battery-staple"


@dataclass
class Corpus:
    data_dir: Path
    engine: Engine
    alpha_id: str
    beta_id: str
    alpha_key: str
    beta_key: str


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text, encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, shared_cache_path: Path) -> Iterator[Corpus]:
    root = tmp_path_factory.mktemp("mcp")
    data_dir = root / "data"
    engine = Engine(Settings(data_dir=data_dir, auth={"mode": "token"}))
    engine.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
    engine.ingest(
        IngestRequest(paths=[_write(root / "a", "alpha-plan.txt", ALPHA_TEXT)], acl=["group:alpha"])
    )
    engine.ingest(IngestRequest(paths=[_write(root / "b", "beta-secret.txt", BETA_TEXT)], acl=["group:beta"]))
    ids = {Path(row.source).name: row.id for row in engine.catalog.list_documents()}
    engine.auth.create_user("alice", PASSWORD, groups=["alpha"])
    engine.auth.create_user("bob", PASSWORD, groups=["beta"])
    yield Corpus(
        data_dir=data_dir,
        engine=engine,
        alpha_id=ids["alpha-plan.txt"],
        beta_id=ids["beta-secret.txt"],
        alpha_key=engine.auth.create_api_key("alice", "mcp")["key"],
        beta_key=engine.auth.create_api_key("bob", "mcp")["key"],
    )
    engine.close()


@pytest.fixture(scope="module")
def http_url(corpus: Corpus) -> Iterator[str]:
    app = HanragMCP(corpus.engine).http_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the MCP server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = True
    thread.join(10)


def http_client(url: str, key: str) -> Client:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=300)
    )
    return Client(streamable_http_client(url, http_client=http), cache=None)


async def _error_text(call: Any) -> str:
    """The text of a tool error or a resource error."""
    try:
        result = await call
    except MCPError as exc:
        return exc.message
    assert result.is_error, result
    return result.content[0].text


async def everything_seen(client: Client, corpus: Corpus) -> tuple[str, dict[str, Any]]:
    """All a caller gets through every tool and resource, serialised (errors aside: they echo
    the key the caller sent), and the parts by name."""
    seen: list[Any] = []
    tools = await client.list_tools()
    assert {t.name for t in tools.tools} == {"search", "ask", "get_document"}
    listing = await client.list_resources()
    seen.append([r.model_dump() for r in listing.resources])
    templates = await client.list_resource_templates()
    assert templates.resource_templates[0].uri_template == "hanrag://documents/{document_id}"
    for resource in listing.resources:
        read = await client.read_resource(resource.uri)
        seen.append(read.model_dump())
    search = await client.call_tool("search", {"query": "베타 프로젝트 기밀 예산 출시일", "k": 5})
    assert not search.is_error, search.content
    seen.append(search.structured_content)
    ask = await client.call_tool("ask", {"question": "베타 프로젝트의 출시일은 언제인가요?"})
    assert not ask.is_error, ask.content
    seen.append(ask.structured_content)
    by_key: dict[str, Any] = {}
    for key in (corpus.beta_id, "beta-secret.txt", corpus.alpha_id):
        result = await client.call_tool("get_document", {"document": key})
        by_key[key] = result
        if not result.is_error:
            seen.append(result.model_dump())
    read_beta: str | dict[str, Any]
    try:
        read_beta = (await client.read_resource(document_uri(corpus.beta_id))).model_dump()
        seen.append(read_beta)
    except MCPError as exc:
        read_beta = exc.message
    parts = {
        "uris": {r.uri for r in listing.resources},
        "search": search.structured_content,
        "ask": ask.structured_content,
        "get_document": by_key,
        "read_beta": read_beta,
    }
    return json.dumps(seen, ensure_ascii=False, default=str), parts


def assert_sees_only_alpha(dump: str, parts: dict[str, Any], corpus: Corpus) -> None:
    for secret in (corpus.beta_id, "beta-secret", BETA_MARKER, "9억"):
        assert secret not in dump, f"{secret!r} leaked to an alpha caller"
    assert parts["uris"] == {document_uri(corpus.alpha_id)}
    assert all(hit["document_id"] == corpus.alpha_id for hit in parts["search"]["hits"])
    assert all(c.get("document_id", corpus.alpha_id) == corpus.alpha_id for c in parts["ask"]["citations"])
    for key in (corpus.beta_id, "beta-secret.txt"):
        result = parts["get_document"][key]
        assert result.is_error
        # Exactly what a missing document gets.
        assert result.content[0].text == f"[document_not_found] no document with id or source {key!r}"
    assert isinstance(parts["read_beta"], str) and parts["read_beta"].startswith("[document_not_found]")
    alpha = parts["get_document"][corpus.alpha_id]
    assert not alpha.is_error
    assert alpha.structured_content["chunks"][0]["text"].startswith("알파 프로젝트")


def assert_sees_beta(dump: str, parts: dict[str, Any], corpus: Corpus) -> None:
    assert BETA_MARKER in dump
    assert document_uri(corpus.beta_id) in parts["uris"]
    assert any(hit["document_id"] == corpus.beta_id for hit in parts["search"]["hits"])
    for key in (corpus.beta_id, "beta-secret.txt"):
        result = parts["get_document"][key]
        assert not result.is_error, result.content
        assert result.structured_content["document"]["document_id"] == corpus.beta_id
        assert BETA_MARKER in result.structured_content["chunks"][0]["text"]
    assert BETA_MARKER in json.dumps(parts["read_beta"], ensure_ascii=False)
    # bob is not in alpha: the alpha document is hidden from him in turn.
    assert parts["get_document"][corpus.alpha_id].is_error


# ------------------------------------------------------------------ streamable HTTP


def test_http_group_keys_see_only_their_documents(corpus: Corpus, http_url: str) -> None:
    async def main() -> None:
        async with http_client(http_url, corpus.alpha_key) as alice:
            dump, parts = await everything_seen(alice, corpus)
        assert_sees_only_alpha(dump, parts, corpus)
        async with http_client(http_url, corpus.beta_key) as bob:
            dump, parts = await everything_seen(bob, corpus)
        assert_sees_beta(dump, parts, corpus)

    asyncio.run(main())


def test_http_answer_cites_its_sources(corpus: Corpus, http_url: str) -> None:
    async def main() -> None:
        async with http_client(http_url, corpus.alpha_key) as alice:
            result = await alice.call_tool("ask", {"question": "알파 프로젝트의 예산은 얼마인가요?"})
            missing = await _error_text(alice.call_tool("get_document", {"document": "no-such-doc"}))
            invalid = await _error_text(alice.call_tool("search", {"query": "", "k": 500}))
            unknown = await _error_text(alice.read_resource("hanrag://documents/no-such-doc"))
        answer = result.structured_content
        assert answer["citations"], answer
        assert answer["citations"][0]["document_id"] == corpus.alpha_id
        assert answer["session_id"]
        assert missing == "[document_not_found] no document with id or source 'no-such-doc'"
        assert invalid.startswith("[invalid_input]") and "k" in invalid and "query" in invalid
        assert unknown.startswith("[document_not_found]")

    asyncio.run(main())


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer hrk_not-a-real-key"}])
def test_http_refuses_missing_or_invalid_keys(http_url: str, headers: dict[str, str]) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    response = httpx.post(
        http_url,
        json=body,
        headers={**headers, "Accept": "application/json, text/event-stream"},
        timeout=30,
    )
    assert response.status_code == 401
    assert response.json()["code"] in {"unauthorized", "invalid_api_key"}
    assert "www-authenticate" in response.headers

    async def main() -> None:
        async with http_client(http_url, "hrk_not-a-real-key") as client:
            await client.list_tools()

    with pytest.raises(BaseException):  # noqa: B017 - the SDK wraps the 401 in an exception group
        asyncio.run(main())


# ------------------------------------------------------------------ stdio


def _stdio_env(corpus: Corpus, key: str | None) -> dict[str, str]:
    env = {
        "HANRAG_DATA_DIR": str(corpus.data_dir),
        "HANRAG_AUTH__MODE": "token",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    if key is not None:
        env["HANRAG_MCP_API_KEY"] = key
    return env


def test_stdio_scopes_by_the_key_in_the_environment(corpus: Corpus) -> None:
    async def main() -> None:
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "hanrag", "mcp"], env=_stdio_env(corpus, corpus.alpha_key)
        )
        async with Client(params, cache=None, read_timeout_seconds=300) as alice:
            dump, parts = await everything_seen(alice, corpus)
        assert_sees_only_alpha(dump, parts, corpus)

    asyncio.run(main())


@pytest.mark.parametrize("key", [None, "hrk_not-a-real-key"])
def test_stdio_refuses_to_start_without_a_valid_key(corpus: Corpus, key: str | None) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hanrag", "mcp"],
        env={**os.environ, **_stdio_env(corpus, key)},
        input="",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error ["), done.stderr


# ------------------------------------------------------------------ auth mode none


def test_auth_mode_none_is_the_implicit_single_user(corpus: Corpus) -> None:
    engine = Engine(Settings(data_dir=corpus.data_dir))
    try:

        async def main() -> set[str]:
            async with Client(HanragMCP(engine).server, cache=None) as client:
                listing = await client.list_resources()
            return {r.uri for r in listing.resources}

        assert asyncio.run(main()) == {document_uri(corpus.alpha_id), document_uri(corpus.beta_id)}
    finally:
        engine.close()


def test_cli_refuses_an_unknown_transport() -> None:
    from typer.testing import CliRunner

    from hanrag.cli.main import app

    result = CliRunner().invoke(app, ["mcp", "--transport", "websocket"])
    assert result.exit_code == 2
    assert "invalid_input" in result.output


def test_http_applies_the_per_principal_rate_limit(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    """The MCP endpoint counts requests per principal like the HTTP API: past the limit a
    caller gets 429 with Retry-After and the request never reaches the server."""
    from hanrag.mcp.server import BearerAuth

    monkeypatch.setattr(corpus.engine.settings.auth, "rate_limit_per_minute", 2)
    reached: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=BearerAuth(inner, corpus.engine))
        headers = {"Authorization": f"Bearer {corpus.alpha_key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://mcp") as client:
            return [await client.post("/mcp", headers=headers, json={}) for _ in range(3)]

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[2].json()["code"] == "rate_limited" and int(responses[2].headers["retry-after"]) >= 1
    assert len(reached) == 2
