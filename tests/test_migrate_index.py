"""``hanrag index migrate --to milvus`` and ``Engine.migrate_index``: local index -> milvus-lite.

The migration copies every chunk with its stored vector and Kiwi tokens; nothing is
parsed or embedded again. That is shown two ways: the embedding cache's counters do not
move (``Engine.migrate_index`` over the session's sample corpus), and the CLI runs with
the embedding backend pointed at a loopback port where nothing listens. Afterwards a
search with ``HANRAG_INDEX__BACKEND=milvus`` gives the same top results as the local index.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from typer.testing import CliRunner

from answer_fixtures import down_url
from conftest import EngineFactory, SampleCorpus, copy_samples  # (tests/ is on sys.path)
from hanrag.auth.access import SYSTEM
from hanrag.cli.main import app
from hanrag.domain import Hit, SearchFilters, to_epoch
from hanrag.embed.base import Vectors
from hanrag.embed.manager import CachingEmbedder
from hanrag.engine import Engine
from hanrag.index.factory import build_index
from hanrag.index.retriever import Retriever
from hanrag.settings import Settings

pytest.importorskip("pymilvus")
from hanrag.index.milvus import MilvusIndex, encode_tokens

TIE = 1e-6
QUERIES = [
    "연차 휴가는 며칠인가요?",
    "수습 기간 급여",
    "재택근무 신청 방법",
    "USB 저장장치 사용",
    "비밀번호 변경 주기",
    "헤파 필터 가격",
    "출장비 정산 기준",
    "회의실 예약 총무팀",
    "경조사 휴가",
    "제품 보증 기간",
]


class MemoEmbedder(CachingEmbedder):
    """Query embeddings remembered (the same query is searched in both indexes)."""

    memo: ClassVar[dict[str, Vectors]] = {}

    def embed_query(self, text: str) -> Vectors:
        if text not in self.memo:
            self.memo[text] = super().embed_query(text)
        return self.memo[text]


def milvus_settings(settings: Settings, uri: Path) -> Settings:
    index = settings.index.model_copy(update={"backend": "milvus", "milvus_uri": str(uri)})
    return settings.model_copy(update={"index": index})


def same_top(local: list[Hit], other: list[Hit], top: int = 3) -> bool:
    """Top-1 identical; top-3 the same set, or differing only in hits tied (within TIE)
    with the third score in both rankings."""
    if not local or not other:
        return not local and not other
    if local[0].chunk.chunk_id != other[0].chunk.chunk_id:
        return False
    mine = {h.chunk.chunk_id for h in local[:top]}
    theirs = {h.chunk.chunk_id for h in other[:top]}
    if mine == theirs:
        return True
    for hits, ids in ((local, mine ^ theirs), (other, mine ^ theirs)):
        boundary = hits[min(top, len(hits)) - 1].score
        scores = {h.chunk.chunk_id: h.score for h in hits}
        if any(chunk not in scores or abs(scores[chunk] - boundary) > TIE for chunk in ids):
            return False
    return True


def test_engine_migrate_index_copies_every_chunk_without_embedding(
    samples_engine: SampleCorpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = samples_engine.engine
    cache = engine.embedding_cache
    assert cache is not None
    counters = (cache.hits, cache.misses, cache.count())
    local_counts = engine.index.document_chunk_counts()
    total = sum(local_counts.values())
    target = milvus_settings(engine.settings, tmp_path / "milvus.db")

    progress: list[tuple[int, int, int]] = []
    report = engine.migrate_index(target, lambda done, of, chunks: progress.append((done, of, chunks)))
    assert (report["documents"], report["chunks"]) == (len(local_counts), total)
    assert report["chunks_per_second"] > 0
    assert progress[-1] == (len(local_counts), len(local_counts), total)
    assert (cache.hits, cache.misses, cache.count()) == counters  # nothing was embedded

    milvus = build_index(target, engine.catalog)
    try:
        assert isinstance(milvus, MilvusIndex)
        assert milvus.document_chunk_counts() == local_counts
        stats = milvus.stats()
        assert (stats.chunks, stats.documents, stats.dimension) == (total, len(local_counts), 384)

        # Every row: the same chunk, the same vector, the same Kiwi tokens.
        rows = {row["pk"]: row for row in milvus.iterate_rows()}
        assert len(rows) == total
        for _document_id, items, vectors in engine.index.export_documents():
            for item, vector in zip(items, vectors, strict=True):
                row = rows[item.chunk.chunk_id]
                assert MilvusIndex._to_chunk(row) == item.chunk
                assert np.allclose(np.asarray(row["dense"], dtype=np.float32), vector, atol=1e-6)
                assert row["morphemes"] == (encode_tokens(item.morphemes) or " ")
                assert row["bigrams"] == (encode_tokens(item.bigrams) or " ")

        # The same top results through the retriever, with and without filters.
        # Both through the engine's retriever code; each query is embedded once for the two.
        embedder = MemoEmbedder(engine.embedder.shared, engine.embedder.cache)
        local_retriever = Retriever(engine.index, embedder, engine.settings.retrieval)
        retriever = Retriever(milvus, embedder, engine.settings.retrieval)
        filters = [
            None,
            SearchFilters(principals=["public"]),
            SearchFilters(date_from=to_epoch(date(2024, 6, 1))),
        ]
        cases = agreed = 0
        failures: list[str] = []
        for query in QUERIES:
            for chosen in filters:
                local = local_retriever.search(query, k=10, filters=chosen).hits
                other = retriever.search(query, k=10, filters=chosen).hits
                cases += 1
                if same_top(local, other):
                    agreed += 1
                else:
                    failures.append(
                        f"{query!r} {chosen}: {[h.chunk.chunk_id for h in local[:3]]} "
                        f"vs {[h.chunk.chunk_id for h in other[:3]]}"
                    )
        with capsys.disabled():
            print(
                f"\n[migrate parity] samples ({total} chunks): {agreed}/{cases} searches agree "
                f"({100 * agreed / cases:.0f} %)"
            )
        assert not failures, "\n".join(failures)
    finally:
        milvus.close()
    assert (cache.hits, cache.misses, cache.count()) == counters


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_cli_migrate_without_an_embedding_server_then_search_milvus(
    runner: CliRunner,
    make_engine: EngineFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = copy_samples(tmp_path / "docs", ["인사규정.md", "정보보안정책.txt"])
    data = tmp_path / "data"
    local_engine = make_engine(data)
    report = local_engine.ingest([docs])
    assert sorted(o.status for o in report.outcomes) == ["added", "added"]
    local_counts = local_engine.index.document_chunk_counts()
    total = sum(local_counts.values())
    local_engine.close()

    # Any embedding call would fail: the backend is an OpenAI-compatible server that is not there.
    monkeypatch.setenv("HANRAG_DATA_DIR", str(data))
    monkeypatch.setenv("HANRAG_EMBED__BACKEND", "openai")
    monkeypatch.setenv("HANRAG_EMBED__BASE_URL", down_url())
    monkeypatch.setenv("HANRAG_EMBED__TIMEOUT_S", "2")

    unknown = runner.invoke(app, ["index", "migrate", "--to", "elastic"])
    assert unknown.exit_code == 2 and "unknown target backend 'elastic'" in unknown.output

    for _ in range(2):  # a second run replaces the same chunks: nothing doubles
        result = runner.invoke(app, ["index", "migrate", "--to", "milvus"])
        assert result.exit_code == 0, result.output
        flat = "".join(result.output.split())  # Rich wraps long lines
        assert f"copied{len(local_counts)}documents/{total}chunksto{data / 'milvus.db'}" in flat, (
            result.output
        )
    # The embedding backend really is unusable: searching with it fails.
    failed = runner.invoke(app, ["search", "연차 휴가는 며칠인가요?"])
    assert failed.exit_code != 0

    # Switch to Milvus through the environment, with the real embedder for the queries.
    monkeypatch.delenv("HANRAG_EMBED__BACKEND")
    monkeypatch.delenv("HANRAG_EMBED__BASE_URL")
    monkeypatch.delenv("HANRAG_EMBED__TIMEOUT_S")
    monkeypatch.setenv("HANRAG_INDEX__BACKEND", "milvus")
    monkeypatch.setenv("HANRAG_INDEX__MILVUS_URI", str(data / "milvus.db"))

    def cli_search(query: str) -> list[dict[str, Any]]:
        result = runner.invoke(app, ["search", query, "--k", "5", "--json"])
        assert result.exit_code == 0, result.output
        hits: list[dict[str, Any]] = json.loads(result.output)["hits"]
        return hits

    milvus_engine = make_engine(data)
    assert milvus_engine.settings.index.backend == "milvus"
    assert milvus_engine.index.backend == "milvus"
    assert milvus_engine.index.document_chunk_counts() == local_counts
    reference = make_engine(data, index={"backend": "local"})
    assert reference.index.backend == "local"
    for query in ("연차 휴가는 며칠인가요?", "USB 저장장치 사용", "재택근무 신청 방법", "비밀번호 변경 주기"):
        local = reference.search(query, k=10, caller=SYSTEM).hits
        other = milvus_engine.search(query, k=10, caller=SYSTEM).hits
        assert same_top(local, other), (
            query,
            [h.chunk.chunk_id for h in local[:3]],
            [h.chunk.chunk_id for h in other[:3]],
        )
    milvus_engine.close()  # milvus-lite: one client per data file at a time
    for query in ("연차 휴가는 며칠인가요?", "USB 저장장치 사용"):
        hits = cli_search(query)
        assert hits[0]["chunk_id"] == reference.search(query, k=5, caller=SYSTEM).hits[0].chunk.chunk_id


def test_migrating_from_milvus_is_refused(make_engine: EngineFactory, tmp_path: Path) -> None:
    engine: Engine = make_engine(index={"backend": "milvus", "milvus_uri": str(tmp_path / "m.db")})
    with pytest.raises(Exception) as caught:
        engine.migrate_index(milvus_settings(engine.settings, tmp_path / "other.db"))
    assert getattr(caught.value, "code", None) == "invalid_source"
