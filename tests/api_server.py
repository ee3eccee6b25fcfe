"""Real HTTP servers on loopback for the API tests.

* :func:`start_server` runs uvicorn with :func:`hanrag.api.app.create_app` around a
  given :class:`~hanrag.engine.Engine` in a background thread, on a free port of
  127.0.0.1, and returns a :class:`LiveServer` (``.url``, ``.stop()``).
* :func:`start_receiver` runs a tiny HTTP server that records the JSON bodies POSTed
  to it (the legacy push mode's response URL); ``fail_next`` makes the next POSTs get a 500.
* :func:`engine_over_samples` builds a *writable* engine over a copy of the bundled
  samples whose passage embeddings come from the session's shared cache (so the
  samples are not embedded again once ``samples_engine`` has ingested them);
  :func:`engine_on_index` an engine with its own sessions over an existing index.
* :class:`SlowExtractive` is the extractive generator with a pause before each piece
  of text, so that a stream lasts long enough to be cut or batched.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from hanrag.api.app import create_app
from hanrag.embed.cache import EmbeddingCache
from hanrag.engine import Engine
from hanrag.llm.base import GenerationChunk, GenerationRequest
from hanrag.llm.extractive import ExtractiveGenerator
from hanrag.settings import Settings


@dataclass
class LiveServer:
    url: str
    port: int
    app: Any
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():  # a stream that will not end: stop waiting for it
            self.server.force_exit = True
            self.thread.join(timeout)


def with_api(settings: Settings, **api: Any) -> Settings:
    """A copy of ``settings`` with some ``api.*`` values changed."""
    return settings.model_copy(update={"api": settings.api.model_copy(update=api)})


def start_server(
    engine: Engine, settings: Settings | None = None, *, startup_timeout: float = 30.0
) -> LiveServer:
    """Serve ``create_app(settings, engine)`` with uvicorn on 127.0.0.1:<free port>."""
    app = create_app(settings or engine.settings, engine)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server stopped during start-up")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the test server did not start in time")
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    return LiveServer(url=url, port=port, app=app, server=server, thread=thread)


# ----------------------------------------------------------------- receiver


@dataclass
class Received:
    at: float  # time.monotonic() on arrival
    body: Any
    status: int  # what the receiver answered


@dataclass
class Receiver:
    url: str
    server: ThreadingHTTPServer
    thread: threading.Thread
    fail_next: int = 0  # how many of the next POSTs get a 500
    posts: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, qry_id: str | None = None) -> list[Received]:
        """Every POST (accepted or failed), optionally only those about ``qry_id``."""
        with self.lock:
            posts = list(self.posts)
        return [
            p
            for p in posts
            if qry_id is None or (isinstance(p.body, dict) and p.body.get("qry_id") == qry_id)
        ]

    def accepted(self, qry_id: str | None = None) -> list[Received]:
        return [p for p in self.received(qry_id) if p.status == 200]

    def wait_for(
        self, qry_id: str, predicate: Callable[[list[Received]], bool], timeout: float = 30.0
    ) -> list[Received]:
        """The accepted POSTs about ``qry_id`` once ``predicate`` holds for them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            posts = self.accepted(qry_id)
            if predicate(posts):
                return posts
            time.sleep(0.05)
        bodies = [p.body for p in self.received(qry_id)]
        raise AssertionError(f"the receiver did not get what was expected in {timeout} s: {bodies!r}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def start_receiver() -> Receiver:
    """An HTTP server on loopback that records POSTed JSON (set ``fail_next`` to make POSTs fail with 500)."""
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = holder["receiver"]
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            try:
                body: Any = json.loads(raw.decode("utf-8"))
            except ValueError:
                body = raw.decode("utf-8", "replace")
            with receiver.lock:
                status = 200
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    status = 500
                receiver.posts.append(Received(time.monotonic(), body, status))
            payload = b'{"ok": true}' if status == 200 else b'{"error": "try again"}'
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="legacy-receiver", daemon=True)
    receiver = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/rsp", server=server, thread=thread)
    holder["receiver"] = receiver
    thread.start()
    return receiver


# ------------------------------------------------------------------ engines


def engine_over_samples(data_dir: Path, docs: Path, cache_path: Path, **overrides: Any) -> Engine:
    """A writable engine with the samples in ``docs`` ingested; embeddings through ``cache_path``."""
    engine = Engine(Settings(data_dir=data_dir, **overrides))
    engine.__dict__["embedding_cache"] = EmbeddingCache(cache_path)
    report = engine.ingest([docs])
    failed = [o for o in report.outcomes if o.status == "failed"]
    assert not failed, failed
    return engine


def engine_on_index(index_engine: Engine, data_dir: Path, cache_path: Path, **overrides: Any) -> Engine:
    """An engine with its own settings, catalog and sessions that searches ``index_engine``'s index
    (read-only). Close it with :func:`close_engine_on_index`, which leaves that index open."""
    engine = Engine(Settings(data_dir=data_dir, **overrides))
    engine.__dict__["index"] = index_engine.index
    engine.__dict__["embedding_cache"] = EmbeddingCache(cache_path)
    return engine


def close_engine_on_index(engine: Engine) -> None:
    engine.__dict__.pop("index", None)
    engine.close()


class SlowExtractive(ExtractiveGenerator):
    """The extractive generator, pausing ``delay`` seconds before each piece of text."""

    def __init__(self, delay: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay = delay

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        async for chunk in super().stream(request):
            if chunk.text:
                await asyncio.sleep(self.delay)
            yield chunk


# ---------------------------------------------------------------- wire format


@dataclass
class SseEvent:
    event: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(text: str) -> list[SseEvent]:
    """Split a text/event-stream body into events (``event:`` name and joined ``data:`` lines)."""
    events: list[SseEvent] = []
    for block in re.split(r"\r?\n\r?\n", text):
        if not block.strip():
            continue
        name: str | None = None
        data: list[str] = []
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
        events.append(SseEvent(name, "\n".join(data)))
    return events


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """One sample of a Prometheus text exposition (None when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if labels is None or all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


def read_metric(url: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metric_value(httpx.get(f"{url}/metrics", timeout=10).text, name, labels)
