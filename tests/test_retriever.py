"""Retriever on the ingested samples: validation, time-range widening, score reporting, answers.

Every test here reads the session's sample corpus and never writes to it.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from conftest import SampleCorpus
from hanrag.auth.access import SYSTEM, Caller
from hanrag.domain import SearchFilters, SearchResult, to_epoch
from hanrag.errors import InvalidInputError
from hanrag.index.retriever import Retriever, add_months
from hanrag.korean.analyzer import normalize
from hanrag.settings import RetrievalSettings


def _search(corpus: SampleCorpus, query: str, **kwargs: object) -> SearchResult:
    """The engine's search, for the caller whose principals the filters name (if any)."""
    filters = kwargs.get("filters")
    principals = filters.principals if isinstance(filters, SearchFilters) else None
    caller = SYSTEM if principals is None else Caller.of("tester", principals)
    return corpus.engine.search(query, caller=caller, **kwargs)  # type: ignore[arg-type]


def _source_names(result: SearchResult) -> list[str]:
    return [Path(h.chunk.source).name for h in result.hits]


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize("query", ["", "   ", "\n\t ", "\u3000"])
def test_empty_query(samples_engine: SampleCorpus, query: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        _search(samples_engine, query)
    assert caught.value.code == "empty_query"
    assert caught.value.field == "query"


def test_query_too_long(samples_engine: SampleCorpus) -> None:
    with pytest.raises(InvalidInputError) as caught:
        _search(samples_engine, "연" * 10_000)
    assert caught.value.code == "query_too_long"
    assert "10000" in caught.value.message and "2000" in caught.value.message
    # Exactly at the limit is fine; whitespace runs count once after normalisation.
    lexical = {"dense": 0.0, "bm25": 1.0, "bigram": 1.0}  # no need to embed 2000 characters here
    assert len(normalize("휴가 " * 666 + "휴가")) == 2000
    assert _search(samples_engine, "휴가 " * 666 + "휴가", weights=lexical).hits
    assert _search(samples_engine, "연차휴가" + " " * 5000, weights=lexical).query == "연차휴가"


@pytest.mark.parametrize("k", [0, -1, 201, 10_000])
def test_k_out_of_range(samples_engine: SampleCorpus, k: int) -> None:
    with pytest.raises(InvalidInputError) as caught:
        _search(samples_engine, "연차휴가", k=k)
    assert caught.value.code == "invalid_k"
    assert caught.value.field == "k"


def test_k_bounds_accepted(samples_engine: SampleCorpus) -> None:
    assert len(_search(samples_engine, "연차휴가", k=1).hits) == 1
    total = samples_engine.engine.index.stats().chunks
    assert len(_search(samples_engine, "연차휴가", k=200).hits) == min(200, total)
    assert len(_search(samples_engine, "연차휴가").hits) == samples_engine.engine.settings.retrieval.k


def test_unknown_fusion_method(samples_engine: SampleCorpus) -> None:
    with pytest.raises(InvalidInputError) as caught:
        _search(samples_engine, "연차휴가", fusion="borda")
    assert caught.value.field == "fusion"
    assert "borda" in caught.value.message and "rrf" in caught.value.message


def test_unknown_weight_name(samples_engine: SampleCorpus) -> None:
    with pytest.raises(InvalidInputError) as caught:
        _search(samples_engine, "연차휴가", weights={"sparse": 1.0})
    assert caught.value.code == "unknown_filter_field"
    assert caught.value.field == "weights.sparse"
    assert "'sparse'" in caught.value.message


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
def test_bad_weight_values(samples_engine: SampleCorpus, value: float) -> None:
    with pytest.raises(InvalidInputError) as caught:
        _search(samples_engine, "연차휴가", weights={"dense": value})
    assert caught.value.field == "weights.dense"


def test_all_weights_zero(samples_engine: SampleCorpus) -> None:
    with pytest.raises(InvalidInputError) as caught:
        _search(samples_engine, "연차휴가", weights={"dense": 0, "bm25": 0, "bigram": 0})
    assert caught.value.field == "weights"


def test_unknown_metadata_filter_through_the_engine(samples_engine: SampleCorpus) -> None:
    with pytest.raises(InvalidInputError) as caught:
        _search(samples_engine, "연차휴가", filters=SearchFilters(metadata={"department": "인사"}))
    assert caught.value.code == "unknown_filter_field"
    assert caught.value.field == "metadata.department"
    # A known key filters inside the index.
    result = _search(samples_engine, "헤파 필터", k=50, filters=SearchFilters(metadata={"format": "pdf"}))
    assert result.hits and set(_source_names(result)) == {"제품매뉴얼.pdf"}


def test_acl_applies_to_every_search(samples_engine: SampleCorpus) -> None:
    assert _search(samples_engine, "연차휴가", filters=SearchFilters(principals=["group:nobody"])).hits == []
    assert _search(samples_engine, "연차휴가", filters=SearchFilters(principals=["public"])).hits


# ------------------------------------------------------------- time ranges
#
# Sample dates (UTC): 정보보안정책 2024-11-01 (pinned mtime), 인사규정 2025-01-01 (pinned
# mtime), 복리후생 2025-01-02, 경비처리지침 2025-02-03, 가격표 2025-03-01 09:00,
# 제품매뉴얼 docx/pdf 2025-03-15. min_time_matches is 3; widening steps 3, 6, 12, 24, 60 months.


def _check_dates(result: SearchResult) -> None:
    for hit in result.hits:
        if result.applied_date_from is not None:
            assert hit.chunk.date >= result.applied_date_from
        if result.applied_date_to is not None:
            assert hit.chunk.date <= result.applied_date_to


def test_range_with_enough_matches_is_kept(samples_engine: SampleCorpus) -> None:
    filters = SearchFilters(date_from=to_epoch(date(2025, 3, 1)), date_to=to_epoch(date(2025, 3, 31)))
    result = _search(samples_engine, "헤파 필터 가격", k=50, filters=filters)
    assert result.widened_months == 0
    assert (result.applied_date_from, result.applied_date_to) == (filters.date_from, filters.date_to)
    assert set(_source_names(result)) == {"가격표.xlsx", "제품매뉴얼.docx", "제품매뉴얼.pdf"}
    _check_dates(result)


def test_narrow_range_far_from_the_documents_is_widened(samples_engine: SampleCorpus) -> None:
    requested_from, requested_to = date(2025, 9, 1), date(2025, 9, 30)
    filters = SearchFilters(date_from=to_epoch(requested_from), date_to=to_epoch(requested_to))
    assert samples_engine.engine.index.count_matching(filters) == 0
    result = _search(samples_engine, "헤파 필터 가격", k=50, filters=filters)
    # +-3 months (2025-06-01..2025-12-30) holds nothing; +-6 (2025-03-01..2026-03-30)
    # reaches the price list (03-01) and both manuals (03-15).
    assert result.widened_months == 6
    assert result.applied_date_from == to_epoch(date(2025, 3, 1))
    assert result.applied_date_to == to_epoch(date(2026, 3, 30))
    assert set(_source_names(result)) == {"가격표.xlsx", "제품매뉴얼.docx", "제품매뉴얼.pdf"}
    _check_dates(result)


def test_open_ended_range_widens_one_side(samples_engine: SampleCorpus) -> None:
    filters = SearchFilters(date_to=to_epoch(date(2024, 6, 1)))  # before every document
    result = _search(samples_engine, "비밀번호", k=50, filters=filters)
    # 2024-06-01 + 6 months = 2024-12-01 reaches the security policy (2024-11-01).
    assert result.widened_months == 6
    assert result.applied_date_from is None
    assert result.applied_date_to == to_epoch(date(2024, 12, 1))
    assert set(_source_names(result)) == {"정보보안정책.txt"}


def test_range_dropped_when_nothing_is_near(samples_engine: SampleCorpus) -> None:
    filters = SearchFilters(date_from=to_epoch(date(1990, 1, 1)), date_to=to_epoch(date(1990, 1, 31)))
    result = _search(samples_engine, "연차휴가", k=5, filters=filters)
    assert result.widened_months == -1
    assert result.applied_date_from is None and result.applied_date_to is None
    assert result.hits and Path(result.hits[0].chunk.source).name == "인사규정.md"


def test_dropping_the_range_never_drops_the_acl(samples_engine: SampleCorpus) -> None:
    filters = SearchFilters(
        principals=["group:nobody"], date_from=to_epoch(date(2025, 3, 1)), date_to=to_epoch(date(2025, 3, 31))
    )
    result = _search(samples_engine, "헤파 필터", filters=filters)
    assert result.widened_months == -1
    assert result.hits == []


def test_no_range_reports_none(samples_engine: SampleCorpus) -> None:
    result = _search(samples_engine, "연차휴가")
    assert result.widened_months is None
    assert result.applied_date_from is None and result.applied_date_to is None
    assert set(result.timings_ms) == {"filters", "embed", "index", "total"}


def test_widening_steps_follow_the_settings(samples_engine: SampleCorpus) -> None:
    engine = samples_engine.engine
    settings = RetrievalSettings(min_time_matches=3, widen_months=[1, 2])
    retriever = Retriever(engine.index, engine.embedder, settings)
    filters = SearchFilters(date_from=to_epoch(date(2025, 9, 1)), date_to=to_epoch(date(2025, 9, 30)))
    assert retriever.search("헤파 필터", filters=filters).widened_months == -1
    needs_many = Retriever(engine.index, engine.embedder, RetrievalSettings(min_time_matches=10_000))
    kept = SearchFilters(date_from=to_epoch(date(2025, 3, 1)), date_to=to_epoch(date(2025, 3, 31)))
    assert needs_many.search("헤파 필터", filters=kept).widened_months == -1


def test_add_months_clamps_the_day() -> None:
    from datetime import datetime

    assert add_months(datetime(2025, 1, 31), 1) == datetime(2025, 2, 28)
    assert add_months(datetime(2024, 1, 31), 1) == datetime(2024, 2, 29)
    assert add_months(datetime(2025, 3, 31), -1) == datetime(2025, 2, 28)
    assert add_months(datetime(2025, 11, 15), 3) == datetime(2026, 2, 15)
    assert add_months(datetime(2025, 2, 15), -14) == datetime(2023, 12, 15)


# ---------------------------------------------------------- score reporting


def test_hits_report_fused_score_and_components(samples_engine: SampleCorpus) -> None:
    engine = samples_engine.engine
    query = "AP-700용 헤파 필터 가격"
    price_list = samples_engine.ids["가격표.xlsx"]
    result = _search(samples_engine, query, k=50, filters=SearchFilters(document_ids=[price_list]))
    hits = result.hits
    assert len(hits) == engine.index.document_chunk_counts()[price_list] >= 2
    weights = {"dense": 0.4, "bm25": 0.4, "bigram": 0.2}
    components = {
        "dense": np.array([h.dense_score for h in hits], dtype=np.float64),
        "bm25": np.array([h.bm25_score for h in hits], dtype=np.float64),
        "bigram": np.array([h.bigram_score for h in hits], dtype=np.float64),
    }
    # Every chunk of the document is a candidate, so min-max runs over exactly these hits.
    expected = np.zeros(len(hits))
    for name, scores in components.items():
        spread = scores.max() - scores.min()
        assert spread > 0, name
        expected += weights[name] * (scores - scores.min()) / spread
    assert [h.score for h in hits] == pytest.approx(list(expected), abs=1e-9)
    # The dense component is the cosine of the query and the stored passage vector.
    query_vector = engine.embedder.embed_query(query)
    for hit in hits:
        passage = engine.embedder.embed_passages([hit.chunk.embedding_text])[0]
        assert hit.dense_score == pytest.approx(float(passage @ query_vector), abs=1e-4)
    # The row with AP-700's filter is in the first sheet.
    assert "APF-700H" in hits[0].chunk.text


def test_rrf_scores_follow_the_definition(samples_engine: SampleCorpus) -> None:
    price_list = samples_engine.ids["가격표.xlsx"]
    result = _search(
        samples_engine, "헤파 필터 가격", k=50, fusion="rrf", filters=SearchFilters(document_ids=[price_list])
    )
    hits = result.hits
    rrf_k = samples_engine.engine.settings.retrieval.rrf_k
    expected = [0.0] * len(hits)
    for name, weight in (("dense", 0.4), ("bm25", 0.4), ("bigram", 0.2)):
        values = [getattr(h, f"{name}_score") for h in hits]
        for i, value in enumerate(values):
            rank = 1 + sum(1 for other in values if other > value)
            expected[i] += weight / (rrf_k + rank)
    assert [h.score for h in hits] == pytest.approx(expected, abs=1e-12)


def test_weights_switch_signals_off(samples_engine: SampleCorpus) -> None:
    result = _search(samples_engine, "연차휴가", weights={"dense": 1.0, "bm25": 0.0, "bigram": 0.0})
    assert all(h.bm25_score is None and h.bigram_score is None for h in result.hits)
    # (No timing check: the query's vector may come from the engine's query LRU.)
    assert all(h.dense_score is not None for h in result.hits)
    lexical = _search(samples_engine, "연차휴가", weights={"dense": 0.0, "bm25": 1.0, "bigram": 0.0})
    assert all(h.dense_score is None and h.bm25_score is not None for h in lexical.hits)


def test_hit_as_dict(samples_engine: SampleCorpus) -> None:
    result = _search(samples_engine, "비밀번호 변경 주기", k=1)
    data = result.as_dict()
    assert data["query"] == "비밀번호 변경 주기"
    hit = data["hits"][0]
    assert set(hit) == {
        "chunk_id", "document_id", "source", "title", "text", "score", "dense_score", "bm25_score",
        "bigram_score", "page", "sheet", "date",
    }  # fmt: skip
    assert hit["date"] == "2024-11-01"
    assert hit["document_id"] == samples_engine.ids["정보보안정책.txt"]


# -------------------------------------------------- questions about the samples


QUESTIONS = [
    ("근속 연수에 따른 연차휴가 일수", {"인사규정.md"}, "15일"),
    ("USB 저장장치를 쓰려면 누구의 승인을 받아야 하나요?", {"정보보안정책.txt"}, "보안 예외 신청"),
    ("헤파 필터는 얼마나 자주 교체해야 하나요?", {"제품매뉴얼.docx", "제품매뉴얼.pdf"}, "2,000시간"),
    ("야근 식대 한도는 얼마인가요?", {"경비처리지침.html"}, "12,000원"),
    ("배우자 건강검진 비용 지원", {"복리후생안내.hwpx"}, "50만 원"),
    ("AP-700용 헤파 필터 가격", {"가격표.xlsx"}, "59000"),
    ("비밀번호 변경 주기", {"정보보안정책.txt"}, "90일"),
    ("VPN 해외 접속 신청", {"정보보안정책.txt"}, "해외 접속 허용"),
]


@pytest.mark.parametrize(("question", "sources", "answer"), QUESTIONS)
@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_korean_questions_find_the_right_document_first(
    samples_engine: SampleCorpus, question: str, sources: set[str], answer: str, fusion: str
) -> None:
    result = _search(samples_engine, question, k=3, fusion=fusion)
    top = result.hits[0]
    assert Path(top.chunk.source).name in sources, _source_names(result)
    assert answer in top.chunk.text
