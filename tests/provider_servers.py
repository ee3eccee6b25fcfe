"""Local servers speaking the Anthropic and Gemini wire protocols, for the adapter tests.

The native adapters go through the official SDKs (``anthropic``, ``google-genai``), so
the only honest test is the SDK talking HTTP to something that answers the way the real
service does. These servers run on 127.0.0.1 (stdlib ``http.server`` in a thread), answer
each request from a script — good replies, HTTP errors with ``Retry-After``, malformed
chunks, streams cut mid-way, stalls — and record every request (path, headers, JSON body)
so a test can check that the system prompt and the images went out in each provider's
own format. Mirrors :class:`answer_fixtures.ScriptedLLMServer`.

* :class:`AnthropicServer` — ``POST /v1/messages``: JSON for ``stream: false``,
  server-sent events for ``stream: true`` (``message_start``, ``content_block_start``,
  ``content_block_delta`` (``text_delta``), ``content_block_stop``, ``message_delta``
  (usage, ``stop_reason``), ``message_stop``, ``ping``).
* :class:`GeminiServer` — ``POST /{version}/models/{model}:generateContent``,
  ``:streamGenerateContent?alt=sse``, ``:embedContent`` and ``:batchEmbedContents``
  (any API version prefix: SDK 3.x asks for ``v1`` by default, older ones ``v1beta``).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[["Handler", dict[str, Any]], None]

# The kinds of request a script answers: a streamed or a plain generation, an embedding.
STREAM, COMPLETE, EMBED = "stream", "complete", "embed"


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def down_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


# --------------------------------------------------------------- generic replies


def status(code: int, payload: Any = None, *, headers: dict[str, str] | None = None) -> Reply:
    """An HTTP answer with a JSON body (``payload`` as is when it is a string)."""

    def reply(handler: Handler, body: dict[str, Any]) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload or {}, ensure_ascii=False)
        data = text.encode("utf-8")
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    return reply


def stall(seconds: float, then: Reply | None = None) -> Reply:
    """Say nothing for ``seconds`` (longer than the client's read timeout), then maybe answer."""

    def reply(handler: Handler, body: dict[str, Any]) -> None:
        time.sleep(seconds)
        if then is not None:
            then(handler, body)

    return reply


def raw_sse(*frames: str) -> Reply:
    """Exactly these SSE frames (each ends with a blank line), for malformed streams."""

    def reply(handler: Handler, body: dict[str, Any]) -> None:
        handler.start_sse()
        for frame in frames:
            handler.send_raw(frame.rstrip("\n") + "\n\n")

    return reply


def cut_after(*frames: str) -> Reply:
    """A chunked SSE stream that sends ``frames`` and dies mid-body (no terminating chunk)."""

    def reply(handler: Handler, body: dict[str, Any]) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for frame in frames:
            data = (frame.rstrip("\n") + "\n\n").encode("utf-8")
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)

    return reply


def stall_after(seconds: float, *frames: str) -> Reply:
    """A stream that sends ``frames``, then goes quiet for ``seconds`` (a stalled model)."""

    def reply(handler: Handler, body: dict[str, Any]) -> None:
        handler.start_sse()
        for frame in frames:
            handler.send_raw(frame.rstrip("\n") + "\n\n")
        time.sleep(seconds)

    return reply


# ------------------------------------------------------------ Anthropic replies


def anthropic_event(kind: str, payload: dict[str, Any]) -> str:
    """One Messages-API SSE frame (``event:`` names the type, ``data:`` repeats it)."""
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload}, ensure_ascii=False)}\n\n"


def anthropic_frames(
    deltas: list[str],
    *,
    input_tokens: int = 12,
    output_tokens: int = 7,
    stop_reason: str = "end_turn",
    model: str = "claude-test",
) -> list[str]:
    """The frames of a well-behaved text answer, in the order the real API sends them."""
    message = {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    frames = [
        anthropic_event("message_start", {"message": message}),
        anthropic_event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        anthropic_event("ping", {}),
    ]
    frames += [
        anthropic_event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})
        for text in deltas
    ]
    frames += [
        anthropic_event("content_block_stop", {"index": 0}),
        anthropic_event(
            "message_delta",
            {
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        ),
        anthropic_event("message_stop", {}),
    ]
    return frames


def anthropic_sse(deltas: list[str], *, delay_s: float = 0.0, **kwargs: Any) -> Reply:
    """A streamed answer of ``deltas`` (``kwargs``: see :func:`anthropic_frames`)."""
    frames = anthropic_frames(deltas, **kwargs)

    def reply(handler: Handler, body: dict[str, Any]) -> None:
        handler.start_sse()
        for frame in frames:
            if delay_s and "content_block_delta" in frame:
                time.sleep(delay_s)
            handler.send_raw(frame)

    return reply


def anthropic_message(text: str, *, input_tokens: int = 12, output_tokens: int = 7) -> Reply:
    """A non-streamed ``Message``."""
    return status(
        200,
        {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        },
    )


def anthropic_error(code: int, kind: str, *, retry_after: str | None = None) -> Reply:
    """An HTTP error in the API's own body format (``{"type": "error", "error": ...}``)."""
    headers = {"retry-after": retry_after} if retry_after is not None else None
    return status(
        code,
        {"type": "error", "error": {"type": kind, "message": f"scripted {kind}"}},
        headers=headers,
    )


# --------------------------------------------------------------- Gemini replies


def gemini_chunk(
    text: str | None = None,
    *,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    thought: str | None = None,
) -> dict[str, Any]:
    """One ``GenerateContentResponse`` (a streamed chunk or the whole answer)."""
    parts: list[dict[str, Any]] = []
    if thought is not None:
        parts.append({"text": thought, "thought": True})
    if text is not None:
        parts.append({"text": text})
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    payload: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-test"}
    if usage is not None:
        payload["usageMetadata"] = usage
    return payload


def gemini_frame(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def gemini_frames(
    deltas: list[str],
    *,
    prompt_tokens: int = 11,
    output_tokens: int = 6,
    finish: str = "STOP",
    thought: str | None = None,
) -> list[str]:
    """A well-behaved stream: text chunks with running usage; the last carries finishReason."""
    frames = []
    for i, text in enumerate(deltas):
        last = i == len(deltas) - 1
        usage = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens if last else i + 1}
        frames.append(
            gemini_frame(
                gemini_chunk(
                    text,
                    finish=finish if last else None,
                    usage=usage,
                    thought=thought if i == 0 else None,
                )
            )
        )
    return frames


def gemini_sse(deltas: list[str], *, delay_s: float = 0.0, **kwargs: Any) -> Reply:
    frames = gemini_frames(deltas, **kwargs)

    def reply(handler: Handler, body: dict[str, Any]) -> None:
        handler.start_sse()
        for frame in frames:
            if delay_s:
                time.sleep(delay_s)
            handler.send_raw(frame)

    return reply


def gemini_content(text: str, *, prompt_tokens: int = 11, output_tokens: int = 6) -> Reply:
    """A non-streamed ``generateContent`` answer."""
    return status(
        200,
        gemini_chunk(
            text,
            finish="STOP",
            usage={"promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens},
        ),
    )


_GEMINI_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED"}


def gemini_error(code: int, *, retry_after: str | None = None, retry_delay: str | None = None) -> Reply:
    """A Google API error body; ``retry_delay`` adds a ``google.rpc.RetryInfo`` detail (what
    the real service sends on 429 instead of a header)."""
    error: dict[str, Any] = {
        "code": code,
        "message": f"scripted error {code}",
        "status": _GEMINI_STATUS.get(code, "INTERNAL" if code >= 500 else "FAILED_PRECONDITION"),
    }
    if retry_delay is not None:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}]
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return status(code, {"error": error}, headers=headers)


def fake_vector(text: str, dimension: int) -> list[float]:
    """A deterministic pseudo-embedding of ``text`` (same text, same vector)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [(digest[i % len(digest)] - 128) / 128.0 + 0.001 * i for i in range(dimension)]


def gemini_embeddings(dimension: int = 8) -> Reply:
    """Embeds every request of ``batchEmbedContents`` (or the one of ``embedContent``)."""

    def reply(handler: Handler, body: dict[str, Any]) -> None:
        requests = body.get("requests")
        if requests is None:
            text = "".join(p.get("text", "") for p in body["content"]["parts"])
            status(200, {"embedding": {"values": fake_vector(text, dimension)}})(handler, body)
            return
        vectors = [
            {"values": fake_vector("".join(p.get("text", "") for p in r["content"]["parts"]), dimension)}
            for r in requests
        ]
        status(200, {"embeddings": vectors})(handler, body)

    return reply


# ------------------------------------------------------------------------ server

_GEMINI_PATH = re.compile(r"^/(?P<version>v1[a-z0-9]*)/models/(?P<model>[^:/]+):(?P<method>[A-Za-z]+)$")
_GEMINI_KINDS = {
    "generateContent": COMPLETE,
    "streamGenerateContent": STREAM,
    "embedContent": EMBED,
    "batchEmbedContents": EMBED,
}


class Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs expect of a real API

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def start_sse(self) -> None:
        # No Content-Length: the stream ends when the connection closes.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def send_raw(self, text: str) -> None:
        self.wfile.write(text.encode("utf-8"))
        self.wfile.flush()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        owner = self.server.owner
        kind = owner.kind_of(self.path, body)
        with owner.lock:
            owner.requests.append(
                {"path": self.path, "headers": dict(self.headers), "body": body, "kind": kind}
            )
        if kind is None:
            status(404, {"error": {"code": 404, "message": f"no route {self.path}"}})(self, body)
            return
        owner.next_reply(kind)(self, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: _ScriptedServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) makes the stalled handler hit a closed socket.
        pass


class _ScriptedServer:
    """Answers each kind of request from its own script, in order (the last one repeats)."""

    name = "scripted"

    def __init__(self, scripts: dict[str, list[Reply]]) -> None:
        self.scripts = scripts
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._counts = dict.fromkeys(scripts, 0)
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.owner = self
        # A short poll interval: stop() waits for it, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=self.name, daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL an SDK is given (no API version: each SDK adds its own)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kind_of(self, path: str, body: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def recorded(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if kind is None or r["kind"] == kind]

    def bodies(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [r["body"] for r in self.recorded(kind)]

    def next_reply(self, kind: str) -> Reply:
        with self.lock:
            script = self.scripts[kind]
            index = min(self._counts[kind], len(script) - 1)
            self._counts[kind] += 1
        return script[index]

    def start(self) -> _ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class AnthropicServer(_ScriptedServer):
    """The Messages API: ``stream`` answers streamed requests, ``complete`` the others."""

    name = "scripted-anthropic"

    def __init__(self, stream: list[Reply] | None = None, complete: list[Reply] | None = None) -> None:
        super().__init__(
            {
                STREAM: list(stream or [anthropic_sse(["기본 답변"])]),
                COMPLETE: list(complete or [anthropic_message("기본 답변")]),
            }
        )

    def kind_of(self, path: str, body: dict[str, Any]) -> str | None:
        if path.split("?")[0] != "/v1/messages":
            return None
        return STREAM if body.get("stream") else COMPLETE


class GeminiServer(_ScriptedServer):
    """The Gemini API: ``stream``, ``complete`` and ``embed`` scripts by method."""

    name = "scripted-gemini"

    def __init__(
        self,
        stream: list[Reply] | None = None,
        complete: list[Reply] | None = None,
        embed: list[Reply] | None = None,
    ) -> None:
        super().__init__(
            {
                STREAM: list(stream or [gemini_sse(["기본 답변"])]),
                COMPLETE: list(complete or [gemini_content("기본 답변")]),
                EMBED: list(embed or [gemini_embeddings()]),
            }
        )

    def kind_of(self, path: str, body: dict[str, Any]) -> str | None:
        route, _, query = path.partition("?")
        match = _GEMINI_PATH.match(route)
        if match is None:
            return None
        kind = _GEMINI_KINDS.get(match.group("method"))
        if kind == STREAM and "alt=sse" not in query:
            return None  # the JSON-array flavour of streaming is not spoken here
        return kind


@contextmanager
def anthropic_server(
    stream: list[Reply] | None = None, complete: list[Reply] | None = None
) -> Iterator[AnthropicServer]:
    server = AnthropicServer(stream, complete)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def gemini_server(
    stream: list[Reply] | None = None,
    complete: list[Reply] | None = None,
    embed: list[Reply] | None = None,
) -> Iterator[GeminiServer]:
    server = GeminiServer(stream, complete, embed)
    server.start()
    try:
        yield server
    finally:
        server.stop()
