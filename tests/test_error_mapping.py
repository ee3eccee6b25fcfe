"""The error mapping of the HTTP API, over real servers on loopback.

* request timeouts answer 504 ``timeout`` (the legacy error object on legacy routes) and
  cancel the work behind the request: the answer's generation stops, and work running in
  threads (retrieval, ingestion) starts nothing more — no turn, no document is stored;
* a full disk answers 507 ``storage_full`` on every write path (upload, ask in JSON and
  SSE, session writes, login and its audit row, legacy routes), an SSE stream ends with
  an ``error`` event, ``/readyz`` reports not ready and recovers once space is back, and
  nothing stored before is lost — on a real small filesystem (a tmpfs; needs root);
* a value a database column cannot hold (PostgreSQL) answers 400 ``invalid_input``
  naming the column, not 500;
* dates at the edge of the calendar with an offset are refused naming the field on every
  route that takes date filters.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from api_server import LiveServer, engine_over_samples, parse_sse, start_server, with_api
from conftest import EngineFactory, SampleCorpus
from hanrag.api.storage import StorageMonitor
from hanrag.auth.access import SYSTEM
from hanrag.engine import Engine
from hanrag.errors import (
    BackendError,
    InvalidInputError,
    RequestTimeoutError,
    StorageFullError,
    WorkCancelled,
    translate_error,
)
from hanrag.llm.base import GenerationChunk, GenerationRequest
from hanrag.llm.extractive import ExtractiveGenerator
from hanrag.settings import Settings

PROBLEM_JSON = "application/problem+json"
DOCS = ["인사규정.md", "정보보안정책.txt"]
QUESTION = "계정 잠금은 언제 되나요?"
PASSWORD = "correct-horse-battery"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body = response.json()
    assert body["status"] == status and body["code"] == code, body
    assert "Traceback" not in response.text
    return body


def assert_legacy_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == 200, response.text  # legacy: the status is in the body
    body = response.json()
    assert set(body) == {"status_code", "result", "qry_id", "detail", "evt_time"}, body
    assert body["status_code"] == status and body["result"], body
    return body


def stored_messages(engine: Engine) -> int:
    return sum(len(engine.sessions.messages(s.id)) for s in engine.sessions.list_sessions(limit=10_000))


# ------------------------------------------------------------- the mapping


def _sqlite_full() -> OperationalError:
    """A real SQLITE_FULL from SQLite, through SQLAlchemy (a database capped at 3 pages)."""
    engine = create_engine("sqlite:///:memory:")
    try:
        with engine.connect() as connection:
            connection.execute(text("CREATE TABLE t (x TEXT)"))
            connection.execute(text("PRAGMA max_page_count = 3"))
            for _ in range(100):
                connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": "가" * 2000})
    except OperationalError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("SQLite did not run out of pages")


def _wrapped_enospc() -> BackendError:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise BackendError("the index could not be written") from exc
    except BackendError as exc:
        return exc


def _storage_errors() -> list[Any]:
    cases = [
        pytest.param(_sqlite_full, id="sqlite-full-via-sqlalchemy"),
        pytest.param(lambda: sqlite3.OperationalError("database or disk is full"), id="sqlite-message"),
        pytest.param(lambda: OSError(errno.ENOSPC, "No space left on device"), id="enospc"),
        pytest.param(lambda: OSError(errno.EDQUOT, "Disk quota exceeded"), id="edquot"),
        pytest.param(_wrapped_enospc, id="backend-error-caused-by-enospc"),
    ]
    try:
        import psycopg.errors

        cases.append(pytest.param(lambda: psycopg.errors.DiskFull("could not extend file"), id="pg-53100"))
    except ImportError:  # pragma: no cover - psycopg is a dev dependency
        pass
    return cases


@pytest.mark.parametrize("make_error", _storage_errors())
def test_storage_errors_map_to_storage_full(make_error: Callable[[], BaseException]) -> None:
    error = translate_error(make_error())
    assert isinstance(error, StorageFullError)
    assert (error.http_status, error.code) == (507, "storage_full")


def test_other_errors_keep_their_meaning() -> None:
    refused = InvalidInputError("bad", field="question")
    assert translate_error(refused) is refused
    assert translate_error(RuntimeError("boom")) is None
    assert translate_error(OSError(errno.ENOENT, "No such file")) is None
    cancelled = translate_error(WorkCancelled("given up"))
    assert isinstance(cancelled, RequestTimeoutError)
    assert (cancelled.http_status, cancelled.code) == (504, "timeout")


def test_sqlite_integer_overflow_is_invalid_input() -> None:
    engine = create_engine("sqlite:///:memory:")
    try:
        with engine.connect() as connection, pytest.raises(OverflowError) as raised:
            connection.execute(text("SELECT :n"), {"n": 2**70})
    finally:
        engine.dispose()
    error = translate_error(raised.value)
    assert isinstance(error, InvalidInputError)
    assert (error.http_status, error.code) == (400, "invalid_input")


def test_storage_monitor_remembers_a_full_disk_until_space_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path)
    settings = with_api(settings, min_free_mb=0, storage_full_hold_s=600)
    free = {"bytes": 0}
    monkeypatch.setattr("hanrag.api.storage.lowest_free", lambda _settings: (free["bytes"], tmp_path))
    monitor = StorageMonitor()
    assert monitor.problem(settings) is None
    monitor.note_full(settings)
    problem = monitor.problem(settings)
    assert problem is not None and "lack of space" in problem
    free["bytes"] = 100 * 2**20  # an operator freed space
    assert monitor.problem(settings) is None
    # Without local space coming back (a database server's disk), it is the hold time.
    monitor.note_full(settings)
    assert monitor.problem(settings) is not None
    assert monitor.problem(with_api(settings, storage_full_hold_s=0)) is None
    # And the free-space floor on its own.
    assert "less than api.min_free_mb" in (monitor.problem(with_api(settings, min_free_mb=200)) or "")


# ---------------------------------------------------------------- timeouts


@dataclass
class Served:
    engine: Engine
    live: LiveServer
    client: httpx.Client


@pytest.fixture(scope="module")
def served(
    samples_engine: SampleCorpus,
    sample_copier: Any,
    shared_cache_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("error-mapping")
    engine = engine_over_samples(base / "data", sample_copier(base / "docs", DOCS), shared_cache_path)
    live = start_server(engine)
    client = httpx.Client(base_url=live.url, timeout=60)
    try:
        # Warm: models loaded, so the timeouts below measure the slowed parts only.
        assert client.post("/api/v1/ask", json={"question": QUESTION}).status_code == 200
        yield Served(engine, live, client)
    finally:
        client.close()
        live.stop()
        engine.close()


@pytest.fixture
def short_timeout(served: Served) -> Iterator[float]:
    """``api.request_timeout_s`` of the running server set to 1.5 s for one test."""
    state = served.live.app.state
    original = state.settings
    state.settings = with_api(original, request_timeout_s=1.5)
    try:
        yield 1.5
    finally:
        state.settings = original


class EndlessGenerator(ExtractiveGenerator):
    """Yields a piece of text every 50 ms for 10 s, counting what it yielded."""

    def __init__(self) -> None:
        super().__init__()
        self.pieces = 0
        self.closed = threading.Event()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        try:
            for _ in range(200):
                await asyncio.sleep(0.05)
                self.pieces += 1
                yield GenerationChunk(text="계속 ")
        finally:
            self.closed.set()


@pytest.fixture
def endless(served: Served) -> Iterator[EndlessGenerator]:
    answers = served.engine.answers
    original = answers.generator
    generator = EndlessGenerator()
    answers.generator = generator
    try:
        yield generator
    finally:
        answers.generator = original


def _audit_questions(engine: Engine) -> int:
    return len(engine.audit.query(action="question", limit=10_000))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/ask", {"question": QUESTION}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}]}),
    ],
)
def test_answer_past_the_timeout_is_504_and_generation_stops(
    served: Served, short_timeout: float, endless: EndlessGenerator, path: str, body: dict[str, Any]
) -> None:
    messages, questions = stored_messages(served.engine), _audit_questions(served.engine)
    started = time.monotonic()
    response = served.client.post(path, json=body)
    assert time.monotonic() - started < short_timeout + 2
    problem = assert_problem(response, 504, "timeout")
    assert "longer than" in problem["detail"]
    assert endless.closed.wait(2), "the generation was not cancelled"
    assert 0 < endless.pieces < 200
    pieces = endless.pieces
    time.sleep(0.5)
    assert endless.pieces == pieces  # nothing more is generated
    assert stored_messages(served.engine) == messages  # no turn stored
    assert _audit_questions(served.engine) == questions


def test_legacy_query_past_the_timeout_is_504_in_the_legacy_object(
    served: Served, short_timeout: float, endless: EndlessGenerator
) -> None:
    page_id = f"timeout-{uuid.uuid4().hex[:8]}"
    messages = stored_messages(served.engine)
    response = served.client.post(
        "/query", json={"qry_id": "q-504", "page_id": page_id, "qry_contents": QUESTION}
    )
    body = assert_legacy_error(response, 504)
    assert body["qry_id"] == "q-504"
    assert endless.closed.wait(2), "the generation was not cancelled"
    time.sleep(0.5)
    assert stored_messages(served.engine) == messages  # no turn stored


@dataclass
class SlowRetrieval:
    embedded: list[float]  # when a (slow) query embedding finished
    searches: list[float]  # when the index was searched


@pytest.fixture
def slow_retrieval(served: Served, monkeypatch: pytest.MonkeyPatch) -> SlowRetrieval:
    """The query embedding takes 2.5 s (in the retrieval thread); index searches are counted."""
    retriever = served.engine.retriever
    embed_query, search = retriever.embedder.embed_query, retriever.index.search
    seen = SlowRetrieval([], [])

    def slow_embed(*args: Any, **kwargs: Any) -> Any:
        time.sleep(2.5)
        vector = embed_query(*args, **kwargs)
        seen.embedded.append(time.monotonic())
        return vector

    def counted_search(*args: Any, **kwargs: Any) -> Any:
        seen.searches.append(time.monotonic())
        return search(*args, **kwargs)

    monkeypatch.setattr(retriever.embedder, "embed_query", slow_embed)
    monkeypatch.setattr(retriever.index, "search", counted_search)
    return seen


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/search", {"query": QUESTION}),
        ("/api/v1/ask", {"question": QUESTION}),
        ("/api/v1/ask", {"question": QUESTION, "stream": True}),
        ("/v1/chat/completions", {"stream": True, "messages": [{"role": "user", "content": QUESTION}]}),
    ],
)
def test_slow_retrieval_is_504_and_the_search_goes_no_further(
    served: Served, short_timeout: float, slow_retrieval: SlowRetrieval, path: str, body: dict[str, Any]
) -> None:
    messages = stored_messages(served.engine)
    response = served.client.post(path, json=body)
    assert_problem(response, 504, "timeout")
    time.sleep(2.5)
    assert len(slow_retrieval.embedded) == 1  # the embedding in the thread has finished by now...
    assert slow_retrieval.searches == []  # ...and the thread did not go on to search
    assert stored_messages(served.engine) == messages


def test_upload_past_the_timeout_stores_nothing(
    served: Served, short_timeout: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hanrag.ingest.pipeline as pipeline_module

    parse_bytes = pipeline_module.parse_bytes
    embedded: list[int] = []
    pipeline = served.engine.pipeline
    embed_passages = pipeline.embedder.embed_passages

    parsed: list[str] = []

    def slow_parse(data: bytes, filename: str, **kwargs: Any) -> Any:
        time.sleep(2.5)
        document = parse_bytes(data, filename, **kwargs)
        parsed.append(filename)
        return document

    def counted_embed(texts: list[str], *args: Any, **kwargs: Any) -> Any:
        embedded.append(len(texts))
        return embed_passages(texts, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "parse_bytes", slow_parse)
    monkeypatch.setattr(pipeline.embedder, "embed_passages", counted_embed)
    name = f"timeout-{uuid.uuid4().hex[:8]}.md"
    documents = len(served.engine.list_documents(limit=10_000, caller=SYSTEM))
    response = served.client.post(
        "/api/v1/documents", files={"file": (name, "# 지연\n\n느린 파서가 읽는 문서입니다.".encode())}
    )
    assert_problem(response, 504, "timeout")
    time.sleep(3.0)
    # The parse in the thread has ended by now: finished, or stopped by the parse budget's
    # own cancellation check (it looks at the request's cancel token)...
    assert parsed in ([], [name])
    assert embedded == []  # ...and nothing was embedded after the request gave up...
    assert len(served.engine.list_documents(limit=10_000, caller=SYSTEM)) == documents  # ...nor stored
    assert not any(name in row.source for row in served.engine.list_documents(limit=10_000, caller=SYSTEM))


# ------------------------------------------------------------------- dates

EDGE_DATES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


@pytest.mark.parametrize("value", EDGE_DATES)
@pytest.mark.parametrize("field", ["date_from", "date_to"])
@pytest.mark.parametrize(
    ("path", "body"),
    [("/api/v1/search", {"query": QUESTION}), ("/api/v1/ask", {"question": QUESTION})],
)
def test_dates_outside_the_calendar_in_utc_name_the_field(
    served: Served, path: str, body: dict[str, Any], field: str, value: str
) -> None:
    response = served.client.post(path, json={**body, "filters": {field: value}})
    problem = assert_problem(response, 422, "invalid_request")
    assert problem["errors"][0]["field"] == f"filters.{field}"
    assert f"filters.{field}" in problem["detail"] and "UTC" in problem["detail"]


@pytest.mark.parametrize("value", EDGE_DATES)
def test_job_filters_at_the_edge_of_the_calendar_name_the_field(served: Served, value: str) -> None:
    response = served.client.post(
        "/api/v1/jobs/ask", json={"question": QUESTION, "filters": {"date_from": value}}
    )
    assert response.status_code == 400, response.text
    assert "filters.date_from" in response.text


@pytest.mark.parametrize(
    "filters",
    [
        {"date_from": "0001-01-01T00:00:00Z", "date_to": "0001-01-02T00:00:00Z"},
        {"date_from": "9999-12-30T00:00:00Z", "date_to": "9999-12-31T23:59:59Z"},
        {"date_from": "0001-01-01T00:00:00-14:00"},
        {"date_from": [1, 1, 1], "date_to": [1, 1, 2]},
    ],
)
def test_ranges_at_the_ends_of_the_calendar_are_searched(served: Served, filters: dict[str, Any]) -> None:
    """Dates that exist in UTC are fine, even where the range is widened past year 1 or 9999."""
    response = served.client.post("/api/v1/search", json={"query": QUESTION, "filters": filters})
    assert response.status_code == 200, response.text


def test_date_arrays_that_overflow_are_refused(served: Served) -> None:
    body = {"query": QUESTION, "filters": {"date_from": [10**30, 1, 1]}}
    problem = assert_problem(served.client.post("/api/v1/search", json=body), 422, "invalid_request")
    assert problem["errors"][0]["field"] == "filters.date_from"


# ------------------------------------------------------------- storage full


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs (skipped where mounting is not allowed)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no byte left."""
    filler = directory / "filler.bin"
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def truncate_wals(data_dir: Path) -> None:
    """Checkpoint every SQLite database so the next write must grow its WAL (a server with
    headroom in a WAL would only fail a few writes later)."""
    for database in data_dir.rglob("*.db"):
        connection = sqlite3.connect(database)
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()


def test_full_disk_answers_507_everywhere_and_loses_nothing(
    small_fs: Path, sample_copier: Any, shared_cache_path: Path, tmp_path: Path
) -> None:
    docs = sample_copier(tmp_path / "docs", DOCS)
    engine = engine_over_samples(small_fs / "data", docs, shared_cache_path, auth={"mode": "token"})
    engine.auth.create_user("kim", PASSWORD, role="editor")
    settings = with_api(engine.settings, min_free_mb=0, storage_full_hold_s=600)
    live = start_server(engine, settings)
    client = httpx.Client(base_url=live.url, timeout=60)
    filler: Path | None = None
    try:
        login = client.post("/api/v1/auth/login", json={"username": "kim", "password": PASSWORD})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        assert client.get("/readyz").status_code == 200
        first = client.post("/api/v1/ask", json={"question": QUESTION}, headers=headers)
        assert first.status_code == 200, first.text
        session_id = first.json()["session_id"]
        search = client.post("/api/v1/search", json={"query": QUESTION}, headers=headers).json()
        hits_before = [hit["chunk_id"] for hit in search["hits"]]
        documents_before = client.get("/api/v1/documents", headers=headers).json()["total"]
        messages_before = len(client.get(f"/api/v1/sessions/{session_id}/messages", headers=headers).json())
        assert hits_before and documents_before == len(DOCS) and messages_before == 2

        truncate_wals(small_fs / "data")
        filler = fill(small_fs)
        # Nothing has failed yet and there is no floor: still ready.
        assert client.get("/readyz").status_code == 200

        # Every write path: 507 storage_full.
        upload = client.post(
            "/api/v1/documents",
            files={"file": ("새문서.md", "# 새 문서\n\n디스크가 가득 찼습니다.".encode())},
            headers=headers,
        )
        assert_problem(upload, 507, "storage_full")
        assert_problem(
            client.post("/api/v1/ask", json={"question": QUESTION}, headers=headers), 507, "storage_full"
        )
        follow_up = {"question": "비밀번호 변경 주기는?", "session_id": session_id}
        assert_problem(client.post("/api/v1/ask", json=follow_up, headers=headers), 507, "storage_full")
        stream = client.post("/api/v1/ask", json={"question": QUESTION, "stream": True}, headers=headers)
        assert stream.status_code == 200
        events = parse_sse(stream.text)
        assert events[-1].event == "error", [e.event for e in events]
        assert events[-1].json()["code"] == "storage_full"
        assert "done" not in [e.event for e in events]
        chat = client.post(
            "/v1/chat/completions",
            json={"stream": True, "messages": [{"role": "user", "content": QUESTION}]},
            headers=headers,
        )
        assert '"code": "storage_full"' in chat.text and "[DONE]" not in chat.text
        assert_problem(client.delete(f"/api/v1/sessions/{session_id}", headers=headers), 507, "storage_full")
        again = client.post("/api/v1/auth/login", json={"username": "kim", "password": PASSWORD})
        assert_problem(again, 507, "storage_full")
        legacy = client.post(
            "/query",
            json={"qry_id": "q-full", "page_id": "full-room", "qry_contents": QUESTION},
            headers=headers,
        )
        assert_legacy_error(legacy, 507)
        legacy_stream = client.post(
            "/query_stream", json={"page_id": "full-room", "qry_contents": QUESTION}, headers=headers
        )
        assert legacy_stream.status_code == 200
        assert parse_sse(legacy_stream.text)[-1].json()["type"] == "error"

        # Not ready while writes fail for lack of space; with a floor, the free space says it too.
        not_ready = assert_problem(client.get("/readyz"), 503, "not_ready")
        assert "lack of space" in not_ready["checks"]["storage"]
        state = live.app.state
        state.settings = with_api(settings, min_free_mb=1)
        low = assert_problem(client.get("/readyz"), 503, "not_ready")
        assert "less than api.min_free_mb" in low["checks"]["storage"]
        # Reads still work.
        assert client.post("/api/v1/search", json={"query": QUESTION}, headers=headers).status_code == 200

        # Space is back: ready again, and everything stored before is still there.
        filler.unlink()
        filler = None
        assert client.get("/readyz").status_code == 200
        search = client.post("/api/v1/search", json={"query": QUESTION}, headers=headers).json()
        assert [hit["chunk_id"] for hit in search["hits"]] == hits_before
        assert client.get("/api/v1/documents", headers=headers).json()["total"] == documents_before
        messages = client.get(f"/api/v1/sessions/{session_id}/messages", headers=headers).json()
        assert len(messages) == messages_before
        upload = client.post(
            "/api/v1/documents",
            files={"file": ("새문서.md", "# 새 문서\n\n공간이 돌아왔습니다.".encode())},
            headers=headers,
        )
        assert upload.status_code == 201, upload.text
        assert client.post("/api/v1/ask", json=follow_up, headers=headers).status_code == 200
    finally:
        client.close()
        live.stop()
        engine.close()
        if filler is not None:
            filler.unlink(missing_ok=True)


# --------------------------------------------------------------- PostgreSQL

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _postgres_up() -> bool:
    try:
        import psycopg

        with psycopg.connect(ADMIN_DSN, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not _postgres_up():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    import psycopg

    name = f"hanrag_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgres_value_too_long_is_400_naming_the_column(
    make_engine: EngineFactory, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(catalog_url=pg_url)
    with pytest.raises(Exception) as raised:
        engine.sessions.create("p" * 80, principal=None)
    error = translate_error(raised.value)
    assert isinstance(error, InvalidInputError) and error.field == "chat_sessions.id"
    assert "64" in error.message

    live = start_server(engine)
    client = httpx.Client(base_url=live.url, timeout=60)
    try:
        body = {"qry_id": "q-long", "page_id": "p" * 80, "qry_contents": QUESTION}
        # However the legacy route stores long page ids, never a 500.
        assert client.post("/query", json=body).status_code < 500
        # The backstop: a long page id reaching the 64-character column is refused, not a 500.
        monkeypatch.setattr(engine, "room_id", lambda page_id, caller: page_id)
        refused = assert_legacy_error(client.post("/query", json=body), 400)
        assert "chat_sessions.id" in refused["result"]
        native = client.post("/api/v1/ask", json={"question": QUESTION, "session_id": "p" * 80})
        assert native.status_code in (400, 422) and native.status_code < 500
    finally:
        client.close()
        live.stop()
