"""Helpers for the answer, planner, generator and CLI tests.

* :class:`ScriptedLLMServer` — a real HTTP server on 127.0.0.1 (stdlib
  ``http.server`` in a thread) that speaks the OpenAI chat-completions wire
  protocol (JSON for ``stream: false``, server-sent events for ``stream: true``)
  and answers each request from a script: good streams, HTTP errors, malformed
  JSON, cut streams, stalls. It records every request body it received.
* :func:`answer_engine` — an :class:`Engine` with its own settings and its own
  session store, searching the session-wide sample index (ingested once by
  ``samples_engine`` in conftest), so answer tests never write to the shared corpus.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from hanrag.embed.cache import EmbeddingCache
from hanrag.engine import Engine
from hanrag.llm.base import Generator
from hanrag.llm.factory import build_generators, generation_options
from hanrag.llm.registry import ProviderRegistry
from hanrag.settings import Settings

Reply = Callable[["_Handler", dict[str, Any]], None]


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def down_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}/v1"


# ----------------------------------------------------------------- replies


def _event(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> str:
    payload: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        payload["usage"] = usage
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def sse(
    deltas: list[str],
    *,
    usage: dict[str, int] | None = None,
    finish: bool = True,
    done: bool = True,
    delay_s: float = 0.0,
    comment: bool = True,
) -> Reply:
    """A well-behaved stream: role, content deltas, finish reason, a usage-only chunk, [DONE]."""

    def reply(handler: _Handler, body: dict[str, Any]) -> None:
        handler.start_sse()
        if comment:
            handler.send_raw(": keep-alive\n\n")
        handler.send_raw(_event({"role": "assistant"}))
        for text in deltas:
            if delay_s:
                time.sleep(delay_s)
            handler.send_raw(_event({"content": text}))
        if finish:
            handler.send_raw(_event({}, finish="stop"))
        if usage is not None:
            payload = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": usage,
            }
            handler.send_raw(f"data: {json.dumps(payload)}\n\n")
        if done:
            handler.send_raw("data: [DONE]\n\n")

    return reply


def raw_sse(*lines: str) -> Reply:
    """A stream of exactly these SSE lines (for malformed events)."""

    def reply(handler: _Handler, body: dict[str, Any]) -> None:
        handler.start_sse()
        for line in lines:
            handler.send_raw(line + "\n\n")

    return reply


def chunked_cut(deltas: list[str]) -> Reply:
    """HTTP/1.1 chunked stream that dies mid-body (no terminating chunk)."""

    def reply(handler: _Handler, body: dict[str, Any]) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for text in [_event({"role": "assistant"}), *(_event({"content": t}) for t in deltas)]:
            data = text.encode()
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)

    return reply


def status(code: int, text: str = '{"error": {"message": "boom"}}') -> Reply:
    def reply(handler: _Handler, body: dict[str, Any]) -> None:
        data = text.encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return reply


def retry_after(code: int, seconds: str) -> Reply:
    """An HTTP error (429, 503) asking the client to wait: ``Retry-After: <seconds>``."""

    def reply(handler: _Handler, body: dict[str, Any]) -> None:
        data = b'{"error": {"message": "slow down"}}'
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Retry-After", seconds)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return reply


def stall(seconds: float, then: Reply | None = None) -> Reply:
    """Say nothing for ``seconds`` (longer than the client's read timeout), then maybe answer."""

    def reply(handler: _Handler, body: dict[str, Any]) -> None:
        time.sleep(seconds)
        if then is not None:
            then(handler, body)

    return reply


def completion(content: str) -> Reply:
    """A non-streamed chat completion (what the LLM planner asks for)."""

    def reply(handler: _Handler, body: dict[str, Any]) -> None:
        payload = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": "scripted",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        status(200, json.dumps(payload, ensure_ascii=False))(handler, body)

    return reply


_LAST_QUESTION = re.compile(r"마지막 질문:\s*(.*)\Z", re.DOTALL)


def echo_plan(handler: _Handler, body: dict[str, Any]) -> None:
    """A planner answer in the tagged format, with the asked question as the standalone one."""
    user = body["messages"][-1]["content"]
    match = _LAST_QUESTION.search(user)
    question = match.group(1).strip() if match else user
    completion(
        f"<question>{question}</question><keywords></keywords><time>none</time><route>documents</route>"
    )(handler, body)


# ------------------------------------------------------------------ server


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

    def send_raw(self, text: str) -> None:
        self.wfile.write(text.encode("utf-8"))
        self.wfile.flush()

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            status(200, '{"object": "list", "data": [{"id": "scripted", "object": "model"}]}')(self, {})
        else:
            status(404)(self, {})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        owner = self.server.owner
        with owner.lock:
            owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if not self.path.endswith("/chat/completions"):
            status(404)(self, body)
            return
        owner.next_reply(bool(body.get("stream")))(self, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ScriptedLLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) makes the stalled handler hit a closed socket.
        pass


class ScriptedLLMServer:
    """OpenAI-compatible server on loopback answering from scripts.

    ``stream``: replies for streamed requests, in order (the last one repeats);
    ``complete``: replies for non-streamed ones (the planner), same rule.
    """

    def __init__(self, stream: list[Reply] | None = None, complete: list[Reply] | None = None) -> None:
        self.stream_script = list(stream or [sse(["기본 답변"])])
        self.complete_script = list(complete or [echo_plan])
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._counts = {True: 0, False: 0}
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-llm", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def bodies(self, *, stream: bool | None = None) -> list[dict[str, Any]]:
        with self.lock:
            bodies = [r["body"] for r in self.requests]
        return [b for b in bodies if stream is None or bool(b.get("stream")) == stream]

    def next_reply(self, stream: bool) -> Reply:
        with self.lock:
            script = self.stream_script if stream else self.complete_script
            index = min(self._counts[stream], len(script) - 1)
            self._counts[stream] += 1
        return script[index]

    def start(self) -> ScriptedLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def scripted_server(
    stream: list[Reply] | None = None, complete: list[Reply] | None = None
) -> Iterator[ScriptedLLMServer]:
    server = ScriptedLLMServer(stream, complete).start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ engines


def answer_engine(index_engine: Engine, data_dir: Path, cache_path: Path, **overrides: Any) -> Engine:
    """An engine with its own settings and session store over ``index_engine``'s index.

    Close it with :func:`close_answer_engine` (which leaves the shared index open).
    """
    engine = Engine(Settings(data_dir=data_dir, **overrides))
    engine.__dict__["index"] = index_engine.index
    engine.__dict__["embedding_cache"] = EmbeddingCache(cache_path)
    return engine


def close_answer_engine(engine: Engine) -> None:
    engine.__dict__.pop("index", None)
    engine.close()


def seed_embedding_cache(shared_cache_path: Path, data_dir: Path) -> None:
    """Copy the session's embedding cache into ``data_dir`` (what a CLI engine opens there)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if not shared_cache_path.exists():
        return
    with (
        closing(sqlite3.connect(shared_cache_path)) as source,
        closing(sqlite3.connect(data_dir / "embed-cache.db")) as target,
    ):
        source.backup(target)


# ---------------------------------------------------------------- providers


def provider_config(name: str, url: str, **extra: Any) -> dict[str, Any]:
    """One ``llm.providers`` entry for an OpenAI-compatible server (model ``<name>-model``)."""
    return {
        "name": name,
        "kind": "openai",
        "base_url": url,
        "model": f"{name}-model",
        "timeout_s": 5.0,
        "connect_timeout_s": 1.0,
        **extra,
    }


def routed_generators(
    data_dir: Path,
    providers: list[dict[str, Any]],
    *,
    clock: Callable[[], float] = time.monotonic,
    **llm: Any,
) -> tuple[dict[str, Generator], ProviderRegistry]:
    """The per-role generators over a registry of ``providers`` (short retry backoff, one
    retry unless ``llm`` says otherwise), and the registry (breakers, statistics)."""
    settings = Settings(
        data_dir=data_dir, llm={"providers": providers, "retry_base_s": 0.01, "retries": 1, **llm}
    )
    registry = ProviderRegistry(settings, generation_options(settings), clock=clock)
    return build_generators(settings, registry), registry
