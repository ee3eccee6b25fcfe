"""``hanrag serve --workers 2``: two uvicorn worker processes over one data directory.

The server runs as a real subprocess on a free loopback port. Which worker answers a
request is read from the operating system (the worker process holding the server side
of the request's TCP connection), so each check can be made on *both* workers:

* concurrent searches and questions all succeed;
* a document uploaded through one worker is found by a following search on either
  worker (each process's local index follows the other's writes through SQLite);
* a conversation continues on the other worker (sessions live in the catalog);
* with token auth, a per-minute rate limit and Redis, the limit holds across both
  workers: of N + k requests spread over them exactly N pass;
* SIGTERM stops the server and its workers cleanly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from answer_fixtures import free_port
from conftest import copy_samples  # (tests/ is on sys.path)
from hanrag.embed.cache import EmbeddingCache
from hanrag.engine import Engine
from hanrag.settings import Settings

HANRAG = str(Path(sys.executable).with_name("hanrag"))
REDIS_URL = "redis://127.0.0.1:6379/0"
PASSWORD = "correct-horse-battery"
RATE_LIMIT = 4
STARTUP_TIMEOUT = 120.0


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    workers: set[int] = field(default_factory=set)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def worker_pids(self) -> set[int]:
        """Worker processes: the server's descendants that listen on its port."""
        found: set[int] = set()
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return found
        for child in children:
            try:
                connections = child.net_connections(kind="tcp")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in connections):
                found.add(child.pid)
        return found

    def worker_of(self, client_port: int) -> int | None:
        """The worker holding the server side of the connection from ``client_port``."""
        for pid in self.workers:
            try:
                connections = psutil.Process(pid).net_connections(kind="tcp")
            except psutil.NoSuchProcess:
                continue
            for c in connections:
                if c.laddr.port == self.port and c.raddr and c.raddr.port == client_port:
                    return pid
        return None

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kwargs)

    def pinned(self, pid: int, headers: dict[str, str] | None = None, attempts: int = 80) -> httpx.Client:
        """A client whose (kept-alive) connection is served by worker ``pid`` (close it after use)."""
        for _ in range(attempts):
            client = self.client(headers=headers or {})
            response = client.get("/healthz")
            assert response.status_code == 200
            if self.served_by(response) == pid:
                return client
            client.close()
        raise AssertionError(f"no connection reached worker {pid} in {attempts} attempts")

    @contextlib.contextmanager
    def on_worker(self, pid: int, headers: dict[str, str] | None = None) -> Iterator[httpx.Client]:
        client = self.pinned(pid, headers)
        try:
            yield client
        finally:
            client.close()

    def served_by(self, response: httpx.Response) -> int | None:
        stream = response.extensions["network_stream"]
        client_port = stream.get_extra_info("client_addr")[1]
        return self.worker_of(int(client_port))


def _start(data_dir: Path, log: Path, **env: str) -> Server:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HANRAG_")}
    environment.update(
        {
            "HANRAG_DATA_DIR": str(data_dir),
            "HANRAG_LOG_LEVEL": "INFO",  # uvicorn then logs replaced workers ("... died")
            # Keep the two workers from competing for the two cores with thread pools.
            "OMP_NUM_THREADS": "1",
            **env,
        }
    )
    handle = log.open("wb")
    process = subprocess.Popen(
        [HANRAG, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=environment,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    handle.close()
    server = Server(url=f"http://127.0.0.1:{port}", port=port, process=process, log=log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            _stop(server)
            raise AssertionError(f"the server did not start in {STARTUP_TIMEOUT} s:\n{server.log_tail()}")
        server.workers = server.worker_pids()
        if len(server.workers) == 2:
            try:
                if httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
        time.sleep(0.5)


def _warm(server: Server, timeout: float = 180.0) -> int:
    """One search on each worker, one worker at a time (its first query loads Kiwi and the model).

    uvicorn kills a worker that leaves its health-check ping unanswered for 5 s, and Kiwi's
    initialisation holds the GIL for seconds (more on a busy machine): a worker killed here is
    replaced by a new one, which is warmed in turn. Returns how many workers were replaced.
    """
    deadline = time.monotonic() + timeout
    warmed: set[int] = set()
    seen: set[int] = set()
    while True:
        server.workers = server.worker_pids()
        seen |= server.workers
        if len(server.workers) == 2 and server.workers <= warmed:
            return len(seen) - 2
        assert time.monotonic() < deadline, f"the workers did not warm up:\n{server.log_tail()}"
        for pid in sorted(server.workers - warmed):
            try:
                with server.on_worker(pid) as client:
                    response = client.post("/api/v1/search", json={"query": "연차 휴가", "k": 1})
                    if response.status_code == 200 and server.served_by(response) == pid:
                        warmed.add(pid)
            except (httpx.HTTPError, AssertionError):
                pass
        time.sleep(0.2)


def _deaths(server: Server) -> int:
    text = server.log.read_text(errors="replace") if server.log.exists() else ""
    return text.count(" died")


def _stop(server: Server) -> int | None:
    """SIGTERM and wait; the process group is killed only if that does not work."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
            return None
    return server.process.returncode


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, shared_cache_path: Path, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """Two workers over a data directory with two ingested samples."""
    base = tmp_path_factory.mktemp("serve-workers")
    docs = copy_samples(base / "docs", ["인사규정.md", "정보보안정책.txt"])
    engine = Engine(Settings(data_dir=base / "data"))
    engine.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
    try:
        report = engine.ingest([docs])
        assert sorted(o.status for o in report.outcomes) == ["added", "added"], report.outcomes
    finally:
        engine.close()
    # The workers' embedding cache starts with the session's embeddings (copied, not shared).
    with (
        contextlib.closing(sqlite3.connect(shared_cache_path)) as source,
        contextlib.closing(sqlite3.connect(base / "data" / "embed-cache.db")) as copy,
    ):
        source.backup(copy)
    server = _start(base / "data", base / "server.log")
    replaced = _warm(server)
    if replaced:
        with capsys_disabled(request):
            print(
                f"\n[serve --workers 2] {replaced} worker(s) killed by uvicorn's 5 s health check while warming up"
            )
    workers = set(server.workers)
    yield server
    later = _deaths(server) - replaced
    code = _stop(server)
    assert later == 0, f"{later} worker(s) died after warm-up:\n{server.log_tail()}"
    assert code == 0, f"the server did not stop cleanly on SIGTERM ({code}):\n{server.log_tail()}"
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in workers
    )


@contextlib.contextmanager
def capsys_disabled(request: pytest.FixtureRequest) -> Iterator[None]:
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        yield
        return
    with capture.global_and_fixture_disabled():
        yield


def hit_ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [h["document_id"] for h in response.json()["hits"]]


def test_concurrent_searches_and_questions_succeed(served: Server) -> None:
    assert len(served.workers) == 2

    def search(query: str) -> tuple[int, int | None, int]:
        with served.client() as client:
            response = client.post("/api/v1/search", json={"query": query, "k": 3})
            return response.status_code, served.served_by(response), len(response.json().get("hits", []))

    def ask(question: str) -> tuple[int, int | None, int]:
        with served.client() as client:
            response = client.post("/api/v1/ask", json={"question": question, "k": 3})
            return response.status_code, served.served_by(response), len(response.json().get("citations", []))

    calls: list[tuple[Callable[[str], tuple[int, int | None, int]], str]] = [
        (search, "연차 휴가는 며칠인가요?"),
        (ask, "수습 기간 급여는 얼마인가요?"),
        (search, "USB 저장장치 사용"),
        (ask, "비밀번호는 얼마나 자주 바꿔야 하나요?"),
        (search, "재택근무 신청"),
        (ask, "연차 휴가는 며칠인가요?"),
    ]
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        results = list(pool.map(lambda call: call[0](call[1]), calls))
    assert [status for status, _, _ in results] == [200] * len(calls), results
    assert all(found > 0 for _, _, found in results), results
    assert {pid for _, pid, _ in results} <= served.workers


def test_an_upload_is_searchable_on_every_worker(served: Server) -> None:
    writer, other = sorted(served.workers)
    marker = uuid.uuid4().hex[:8]
    text = f"# 사내 동호회 규정 {marker}\n\n사내 동호회 활동비는 분기마다 회원 1인당 5만 원까지 지원한다.\n"
    with served.on_worker(writer) as client:
        response = client.post(
            "/api/v1/documents", files={"file": (f"동호회-{marker}.md", text.encode(), "text/markdown")}
        )
        assert response.status_code == 201, response.text
        assert served.served_by(response) == writer
        document_id = response.json()["document_id"]

    query = "동호회 활동비 지원 금액"
    for pid in (other, writer):
        deadline = time.monotonic() + 10
        while True:
            with served.on_worker(pid) as client:
                found = hit_ids(client.post("/api/v1/search", json={"query": query, "k": 3}))
                listed = client.get(f"/api/v1/documents/{document_id}").status_code
            if found and found[0] == document_id and listed == 200:
                break
            assert time.monotonic() < deadline, f"worker {pid} did not find the upload: {found}"
            time.sleep(0.3)


def test_a_conversation_continues_on_the_other_worker(served: Server) -> None:
    first_worker, second_worker = sorted(served.workers)
    with served.on_worker(first_worker) as client:
        first = client.post("/api/v1/ask", json={"question": "연차 휴가는 며칠인가요?"})
        assert first.status_code == 200, first.text
        session_id = first.json()["session_id"]
    with served.on_worker(second_worker) as client:
        second = client.post(
            "/api/v1/ask", json={"question": "수습 기간에도 쓸 수 있나요?", "session_id": session_id}
        )
        assert second.status_code == 200, second.text
        assert second.json()["session_id"] == session_id
    for pid in (first_worker, second_worker):
        with served.on_worker(pid) as client:
            messages = client.get(f"/api/v1/sessions/{session_id}/messages")
            assert messages.status_code == 200, messages.text
            turns = [(m["role"], m["content"]) for m in messages.json()]
            assert [role for role, _ in turns] == ["user", "assistant", "user", "assistant"]
            assert turns[0][1] == "연차 휴가는 며칠인가요?" and turns[2][1] == "수습 기간에도 쓸 수 있나요?"


# ---------------------------------------------------------------- rate limits


def _redis_up() -> bool:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def wait_for_fresh_minute_window(margin: float = 20.0) -> None:
    """Limits count per wall-clock minute: start the burst well inside one window."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


@pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")
def test_the_rate_limit_holds_across_workers_through_redis(tmp_path: Path) -> None:
    import redis

    data = tmp_path / "data"
    username = f"rl{uuid.uuid4().hex[:10]}"
    engine = Engine(Settings(data_dir=data, auth={"mode": "token"}))
    try:
        engine.auth.create_user(username, PASSWORD)
        key = engine.auth.create_api_key(username, "rate")["key"]
    finally:
        engine.close()
    store = redis.Redis.from_url(REDIS_URL)
    pattern = f"hanrag:rate:user:{username}:*"
    server = _start(
        data,
        tmp_path / "server.log",
        HANRAG_AUTH__MODE="token",
        HANRAG_AUTH__RATE_LIMIT_PER_MINUTE=str(RATE_LIMIT),
        HANRAG_REDIS_URL=REDIS_URL,
    )
    try:
        headers = {"Authorization": f"Bearer {key}"}
        # First the window, then the connections: uvicorn closes a connection idle for 5 s.
        wait_for_fresh_minute_window()
        clients = {pid: server.pinned(pid, headers) for pid in server.workers}
        statuses: list[tuple[int, int]] = []
        extra = 4
        for i in range(RATE_LIMIT + extra):  # alternate between the two workers
            pid = sorted(clients)[i % 2]
            response = clients[pid].get("/api/v1/auth/me")
            assert server.served_by(response) == pid
            statuses.append((pid, response.status_code))
            if response.status_code == 429:
                assert response.json()["code"] == "rate_limited"
                assert 1 <= int(response.headers["retry-after"]) <= 60
        for client in clients.values():
            client.close()
        codes = [code for _, code in statuses]
        # Per-process counters would let up to 2 x N through; the shared count lets exactly N.
        assert codes.count(200) == RATE_LIMIT, statuses
        assert codes.count(429) == extra, statuses
        assert codes[:RATE_LIMIT] == [200] * RATE_LIMIT
        assert {pid for pid, code in statuses if code == 429} == server.workers  # both refuse
        counts = [int(store.get(k) or 0) for k in store.scan_iter(match=pattern)]
        assert counts == [RATE_LIMIT + extra]
    finally:
        code = _stop(server)
        for stale in store.scan_iter(match=pattern):
            store.delete(stale)
        store.close()
    assert code == 0, f"the server did not stop cleanly on SIGTERM ({code}):\n{server.log_tail()}"
