"""Evaluation metrics against hand-computed cases (P13): retrieval ranks, Korean answer
normalisation with particles, citations, the paired bootstrap, and the judge's parsers."""

from __future__ import annotations

import math

import pytest

from hanrag.eval.judge import average_precision, claims_of, statement_counts, verdicts
from hanrag.eval.metrics import (
    answer_forms,
    best_char_f1,
    char_f1,
    citation_metrics,
    contained,
    exact_match,
    hit_at,
    mrr_at,
    ndcg_at,
    normalise_answer,
    paired_bootstrap,
    passage_matches,
    recall_at,
    retrieval_metrics,
    strip_particle,
)


def log2(rank: int) -> float:
    return 1 / math.log2(rank + 1)


# ------------------------------------------------------------------ retrieval


def test_single_gold_matches_the_bench_formulas() -> None:
    # Gold at rank 3 of 10: hit@1 0, hit@5 1, MRR 1/3, nDCG 1/log2(4) = 0.5.
    ranked = [set(), set(), {"g"}, set(), set()]
    assert hit_at(ranked, 1) == 0.0
    assert hit_at(ranked, 5) == 1.0
    assert mrr_at(ranked, 10) == pytest.approx(1 / 3)
    assert ndcg_at(ranked, 1, 10) == pytest.approx(0.5)
    assert retrieval_metrics(ranked, 1, 10) == {
        "hit@1": 0.0,
        "recall@1": 0.0,
        "hit@5": 1.0,
        "recall@5": 1.0,
        "hit@10": 1.0,
        "recall@10": 1.0,
        "mrr@10": pytest.approx(1 / 3),
        "ndcg@10": pytest.approx(0.5),
    }
    # Past the cut-off the gold counts for nothing.
    assert mrr_at(ranked, 2) == 0.0
    assert ndcg_at(ranked, 1, 2) == 0.0


def test_two_golds_recall_and_ndcg() -> None:
    # Gold a at rank 2, gold b at rank 4, a again at rank 5 (gains nothing twice).
    ranked = [set(), {"a"}, set(), {"b"}, {"a"}]
    assert recall_at(ranked, 2, 1) == 0.0
    assert recall_at(ranked, 2, 3) == 0.5
    assert recall_at(ranked, 2, 5) == 1.0
    assert mrr_at(ranked, 5) == 0.5
    dcg = log2(2) + log2(4)
    ideal = log2(1) + log2(2)
    assert ndcg_at(ranked, 2, 5) == pytest.approx(dcg / ideal)
    # Three golds, k = 2: the ideal has only two relevant ranks.
    assert ndcg_at([{"a"}, {"b"}], 3, 2) == pytest.approx(1.0)
    # A gold that is missing from the index still counts in the recall's denominator.
    assert recall_at([{"a"}], 2, 10) == 0.5


def test_gold_passage_text_containment() -> None:
    passages = [
        "연차휴가는 매년 15일이 주어진다.",
        "출장 숙박비는 1박에 10만 원까지 실비로 지급하며 영수증을 낸다.",
    ]
    # The chunk holds the gold passage (spacing and punctuation differ).
    assert passage_matches("제3조 연차휴가는  매년 15일이 주어진다 그리고 이월된다.", passages) == {0}
    # A long enough chunk inside the gold passage matches it; a short fragment does not.
    assert passage_matches("출장 숙박비는 1박에 10만 원까지 실비로 지급하며", passages) == {1}
    assert passage_matches("숙박비", passages) == set()
    assert passage_matches("", passages) == set()


def test_citations() -> None:
    # Three citations: one gold, one gold again (same unit), one not; two gold units.
    cited = [{"a"}, set(), {"a"}]
    metrics = citation_metrics(cited, 2)
    assert metrics["citation_precision"] == pytest.approx(2 / 3)
    assert metrics["citation_recall"] == 0.5
    assert metrics["citation_hit"] == 1.0
    assert citation_metrics([], 1) == {"citation_precision": 0.0, "citation_recall": 0.0, "citation_hit": 0.0}


# ------------------------------------------------------------------ answers


@pytest.mark.parametrize(
    ("word", "stem"),
    [
        ("서울은", "서울"),
        ("서울에서", "서울"),
        ("서울에서는", "서울"),  # topic particle after a case particle: both go
        ("학교에도", "학교"),
        ("부산으로", "부산"),
        ("2014년까지", "2014년"),
        ("서울입니다", "서울"),
        ("사과", "사"),  # a noun ending like a particle loses it (both sides alike)
        ("이", "이"),  # nothing would be left
        ("김철수가", "김철수"),
        ("책을", "책"),
    ],
)
def test_strip_particle(word: str, stem: str) -> None:
    assert strip_particle(word) == stem


def test_normalisation_of_spacing_punctuation_and_particles() -> None:
    assert normalise_answer("「서울 특별시」에서는!") == "서울특별시"
    assert normalise_answer("ＥＳＰ  KH-2입니다.") == "espkh2"
    assert answer_forms("국가가") == ("국가가", "국가")
    assert answer_forms("작은 국가") == ("작은국가", "작은국", "작국")
    assert answer_forms("") == ("",)


def test_exact_match_korean() -> None:
    assert exact_match("서울입니다.", ["서울"]) == 1.0
    assert exact_match("서울 특별시", ["서울특별시"]) == 1.0  # 띄어쓰기
    assert exact_match("국가가", ["국가"]) == 1.0  # last-word form meets the written one
    assert exact_match("경기도에서", ["경기도"]) == 1.0
    assert exact_match("부산", ["서울", "대구"]) == 0.0
    assert exact_match("", ["서울"]) == 0.0


def test_char_f1_hand_computed() -> None:
    # "서울시청" vs "서울역": common 서, 울 -> P = 2/4, R = 2/3, F1 = 2PR/(P+R) = 4/7.
    assert char_f1("서울시청", "서울역") == pytest.approx(4 / 7)
    # A particle does not cost F1: "서울은" against "서울" is a match.
    assert char_f1("서울은", "서울") == 1.0
    assert char_f1("부산", "서울") == 0.0
    assert best_char_f1("서울시청", ["부산", "서울역"]) == pytest.approx(4 / 7)
    assert best_char_f1("서울", []) == 0.0


def test_contained() -> None:
    answer = "지루는 몽펠리에와 2014년까지 계약을 연장했다 [1]."
    assert contained(answer, ["2014년"]) == 1.0
    assert contained("서울의 중심지입니다", ["서울 중심지"]) == 1.0
    assert contained(answer, ["2015년"]) == 0.0
    # A gold answer cut to one character by stripping does not match anything containing it.
    assert contained("국민 연금", ["국가"]) == 0.0


# ------------------------------------------------------------------ bootstrap


def test_paired_bootstrap_is_deterministic_and_sensible() -> None:
    before = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    after = [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    first = paired_bootstrap(before, after, seed=7)
    assert first == paired_bootstrap(before, after, seed=7)
    assert first["n"] == 8
    assert first["delta"] == pytest.approx(3 / 8)
    assert first["low"] is not None and first["high"] is not None
    assert 0 <= first["low"] <= first["delta"] <= first["high"] <= 1
    assert first["p_worse"] == 0.0  # no question got worse: no resample can be below zero
    other = paired_bootstrap(before, after, seed=8)
    assert other["delta"] == first["delta"]
    # Identical runs: a zero-width interval at zero.
    same = paired_bootstrap(before, before)
    assert (same["delta"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    assert paired_bootstrap([], [])["delta"] is None
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [])


# ------------------------------------------------------------------ judge parsing


def test_judge_reply_parsers() -> None:
    assert verdicts('<verdict n="1">예</verdict>\n<verdict n="2">아니오</verdict>', 2) == [True, False]
    assert verdicts("<verdict n=1>yes</verdict>", 1) == [True]
    assert verdicts('<verdict n="1">예</verdict>', 2) is None  # one verdict missing
    assert claims_of("<claim>연차는 15일이다.</claim>\n<claim>이월된다.</claim>") == [
        "연차는 15일이다.",
        "이월된다.",
    ]
    assert claims_of("<claim>none</claim>") == []
    assert claims_of("형식 없음") is None
    assert statement_counts("<tp>a</tp><tp>b</tp><fp>c</fp>") == {"tp": 2, "fp": 1, "fn": 0}
    assert statement_counts("no tags") is None
    # Average precision: useful at ranks 1 and 3 -> (1/1 + 2/3) / 2.
    assert average_precision([True, False, True]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([False, False]) == 0.0
