"""Ensemble scoring (P11): the best-grounded candidate wins; an invented citation loses."""

from __future__ import annotations

from hanrag.answer.ensemble import (
    Candidate,
    citation_validity,
    consensus,
    grounding,
    score_candidates,
)
from hanrag.domain import Chunk, Hit
from hanrag.llm.base import Source

PASSAGES = [
    "USB 저장장치는 정보보안팀의 사전 승인을 받은 경우에만 사용할 수 있다. 승인은 30일 동안 유효하다.",
    "출장비는 출장 종료 후 7일 이내에 경비처리 시스템으로 청구한다.",
]


def sources() -> list[Source]:
    found = []
    for n, text in enumerate(PASSAGES, start=1):
        chunk = Chunk(
            chunk_id=f"c{n}",
            document_id=f"d{n}",
            position=0,
            text=text,
            title=f"문서{n}",
            source=f"doc{n}.txt",
            content_hash=f"h{n}",
            date=0,
        )
        found.append(Source(n=n, hit=Hit(chunk=chunk, score=1.0), text=text))
    return found


GROUNDED = "USB 저장장치는 정보보안팀의 사전 승인을 받아야 사용할 수 있으며, 승인은 30일 동안 유효합니다 [1]."
AGREEING = "정보보안팀의 사전 승인이 있어야 USB 저장장치를 쓸 수 있고 승인은 30일 동안 유효합니다 [1]."
HALLUCINATED = (
    "USB 저장장치는 팀장 구두 승인만 있으면 무제한으로 쓸 수 있습니다 [7]. 분실 시 벌금이 부과됩니다 [9]."
)


def test_the_grounded_answer_wins_and_the_invented_citation_loses() -> None:
    candidates = [
        Candidate("hallucinating", HALLUCINATED),
        Candidate("grounded", GROUNDED),
        Candidate("agreeing", AGREEING),
        Candidate("down", error="llm_unavailable"),
    ]
    scored = score_candidates(candidates, sources())
    order = [s.candidate.provider for s in scored]
    assert order[-1] == "down" and scored[-1].score == 0.0
    assert order.index("hallucinating") == 2  # behind both grounded answers
    assert scored[0].candidate.provider in ("grounded", "agreeing")
    worst = next(s for s in scored if s.candidate.provider == "hallucinating")
    assert worst.signals["citations"] == 0.0 and worst.signals["grounding"] < 0.5
    assert 0 < consensus(scored) < 1


def test_signals() -> None:
    found = sources()
    assert grounding(GROUNDED, found) == 1.0
    assert grounding(HALLUCINATED, found) < 0.5
    assert citation_validity("답 [1], [2].", found) == 1.0
    assert citation_validity("답 [1][5].", found) == 0.5
    assert citation_validity("출처 없는 답.", found) == 0.5
    one = score_candidates([Candidate("only", GROUNDED)], found)
    assert one[0].signals["agreement"] == 0.5 and consensus(one) == 1.0
    assert consensus(score_candidates([Candidate("x", error="llm_timeout")], found)) == 0.0
