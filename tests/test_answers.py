"""The ask flow end to end with the extractive generator on the ingested samples:
events, citations, facts, memory, stored turns, time ranges, context packing, timings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from answer_fixtures import answer_engine, close_answer_engine
from conftest import SampleCorpus
from hanrag.answer.engine import AskOptions, cited_numbers
from hanrag.answer.prompts import EXTRACTIVE_NO_RAG_ANSWER, NOT_FOUND_ANSWER
from hanrag.auth.access import SYSTEM
from hanrag.domain import AnswerEvent, AnswerResult, SearchFilters, to_epoch
from hanrag.engine import Engine
from hanrag.errors import HanragError
from hanrag.korean.analyzer import sentences

TODAY = date(2025, 6, 1)
CITATION_KEYS = {"n", "chunk_id", "document_id", "source", "title", "page"}

USB = "USB 사용 승인은 며칠 동안 유효한가요?"
INCIDENT = "보안사고는 몇 시간 안에 신고해야 하나요?"
FILTER = "AP-500 헤파 필터는 얼마나 자주 교체해야 하나요?"

EngineFactory = Callable[..., Engine]


@pytest.fixture
def build(samples_engine: SampleCorpus, tmp_path: Path, shared_cache_path: Path) -> Iterator[EngineFactory]:
    """Engines over the shared sample index, each with its own settings and session store."""
    engines: list[Engine] = []

    def make(**overrides: Any) -> Engine:
        engine = answer_engine(
            samples_engine.engine, tmp_path / f"answers{len(engines)}", shared_cache_path, **overrides
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        close_answer_engine(engine)


@pytest.fixture
def engine(build: EngineFactory) -> Engine:
    return build()


def events_of(engine: Engine, question: str, **kwargs: Any) -> list[AnswerEvent]:
    kwargs.setdefault("options", AskOptions(today=TODAY))

    async def collect() -> list[AnswerEvent]:
        return [event async for event in engine.ask(question, **kwargs, caller=SYSTEM)]

    return asyncio.run(collect())


def done_of(events: list[AnswerEvent]) -> dict[str, Any]:
    assert events[-1].type == "done", events[-1].data
    return events[-1].data


def deltas_of(events: list[AnswerEvent]) -> list[str]:
    return [e.data["text"] for e in events if e.type == "delta"]


def stored(engine: Engine) -> list[tuple[str, str, str]]:
    return [
        (session.id, message.role, message.content)
        for session in engine.sessions.list_sessions()
        for message in engine.sessions.messages(session.id)
    ]


def file_of(source: str) -> str:
    return Path(source).name


# ------------------------------------------------------------ event protocol


def test_events_come_as_references_deltas_done(engine: Engine, samples_engine: SampleCorpus) -> None:
    events = events_of(engine, INCIDENT)
    types = [e.type for e in events]
    assert types[0] == "references"
    assert types[-1] == "done"
    assert set(types[1:-1]) == {"delta"} and len(types) >= 3
    done = done_of(events)
    deltas = deltas_of(events)
    # Increments, never the whole text again.
    assert "".join(deltas) == done["answer"]
    assert all(deltas)
    if len(deltas) > 1:
        assert done["answer"] not in deltas
    assert "1시간" in done["answer"]
    references = events[0].data["references"]
    assert [r["n"] for r in references] == list(range(1, len(references) + 1))
    assert events[0].data["plan"]["question"] == INCIDENT
    security = samples_engine.ids["정보보안정책.txt"]
    assert done["citations"]
    assert {c["document_id"] for c in done["citations"]} == {security}


def test_citations_are_exactly_the_sources_cited_in_the_answer(engine: Engine) -> None:
    events = events_of(engine, "배우자 출산휴가는 며칠인가요?")
    done = done_of(events)
    references = {r["n"]: r for r in events[0].data["references"]}
    cited = cited_numbers(done["answer"])
    assert cited, done["answer"]
    assert [c["n"] for c in done["citations"]] == cited
    assert len(references) > len(cited)  # some retrieved sources were not used, and are not cited
    for citation in done["citations"]:
        assert set(citation) == CITATION_KEYS
        reference = references[citation["n"]]
        for key in CITATION_KEYS:
            assert citation[key] == reference[key]
        assert citation["chunk_id"].startswith(citation["document_id"])
        assert citation["title"]
        assert Path(citation["source"]).is_file()


@pytest.mark.parametrize(
    ("question", "fact", "file"),
    [
        (USB, "30일", "정보보안정책.txt"),
        (INCIDENT, "1시간", "정보보안정책.txt"),
        (FILTER, "6개월", None),
        ("야근 식대 한도는 얼마인가요?", "12,000원", "경비처리지침.html"),
        ("배우자 출산휴가는 며칠인가요?", "20일", "인사규정.md"),
        ("자기계발비는 1년에 얼마나 지원되나요?", "120만 원", "복리후생안내.hwpx"),
    ],
)
def test_questions_about_the_samples_get_the_fact_and_the_right_source(
    engine: Engine, question: str, fact: str, file: str | None
) -> None:
    events = events_of(engine, question)
    done = done_of(events)
    assert fact in done["answer"]
    references = {r["n"]: r for r in events[0].data["references"]}
    cited_files = {file_of(c["source"]) for c in done["citations"]}
    if file is not None:
        assert file in cited_files
    # Some cited passage really holds the fact.
    assert any(fact in references[c["n"]]["text"] for c in done["citations"])
    if file is None:
        assert cited_files <= {"제품매뉴얼.docx", "제품매뉴얼.pdf", "가격표.xlsx"}


def test_unrelated_question_gets_the_not_found_answer(engine: Engine) -> None:
    events = events_of(engine, "파리의 인구는 몇 명인가요?")
    done = done_of(events)
    assert done["answer"] == NOT_FOUND_ANSWER
    assert done["citations"] == []
    assert cited_numbers(done["answer"]) == []


def test_ask_result_returns_the_same_answer(engine: Engine) -> None:
    result = asyncio.run(engine.ask_result(USB, options=AskOptions(today=TODAY), caller=SYSTEM))
    assert isinstance(result, AnswerResult)
    assert "30일" in result.answer
    assert result.references and result.citations
    assert result.fallback is None
    data = result.as_dict()
    assert set(data) >= {"answer", "citations", "session_id", "timings", "usage", "fallback"}
    assert data["answer"] == result.answer
    assert engine.sessions.exists(result.session_id)


def test_timings_are_reported(engine: Engine) -> None:
    timings = done_of(events_of(engine, USB))["timings"]
    for key in ("planning_ms", "retrieval_ms", "time_to_first_token_ms", "generation_ms", "total_ms"):
        assert isinstance(timings[key], float) and timings[key] >= 0, key
    assert timings["planning_ms"] <= timings["time_to_first_token_ms"] <= timings["total_ms"]
    assert timings["retrieval_ms"] <= timings["total_ms"]


# ------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("question", "code"),
    [("", "empty_question"), ("   \n\t ", "empty_question"), ("가" * 2001, "question_too_long")],
)
def test_bad_questions_are_error_events_and_nothing_is_stored(
    engine: Engine, question: str, code: str
) -> None:
    events = events_of(engine, question)
    assert [e.type for e in events] == ["error"]
    assert events[0].data["code"] == code
    assert events[0].exception is not None and events[0].exception.code == code
    assert engine.sessions.list_sessions() == []
    with pytest.raises(HanragError) as info:
        asyncio.run(engine.ask_result(question, caller=SYSTEM))
    assert info.value.code == code


def test_question_limit_follows_the_settings(build: EngineFactory) -> None:
    engine = build(answer={"max_question_chars": 20})
    assert events_of(engine, "USB 사용 승인 기간은 며칠이며 연장은 어떻게 하나요?")[0].data["code"] == (
        "question_too_long"
    )
    assert events_of(engine, "USB 승인 기간은?")[-1].type == "done"


def test_error_turn_in_an_existing_session_stores_nothing(engine: Engine) -> None:
    session = done_of(events_of(engine, USB))["session_id"]
    before = stored(engine)
    assert len(before) == 2
    events = events_of(engine, "", session_id=session)
    assert events[0].data["code"] == "empty_question"
    assert stored(engine) == before


def test_unknown_session_is_refused_unless_asked_to_create_it(engine: Engine) -> None:
    events = events_of(engine, USB, session_id="no-such-room")
    assert [e.type for e in events] == ["error"]
    assert events[0].data["code"] == "session_not_found"
    assert not engine.sessions.exists("no-such-room")
    done = done_of(
        events_of(engine, USB, session_id="legacy-room", options=AskOptions(create_missing_session=True))
    )
    assert done["session_id"] == "legacy-room"
    messages = engine.sessions.messages("legacy-room")
    assert [(m.role, m.content) for m in messages] == [("user", USB), ("assistant", done["answer"])]
    assert messages[1].cited_chunk_ids == [c["chunk_id"] for c in done["citations"]]
    assert messages[1].references and messages[1].references[0]["n"] == 1


# ----------------------------------------------------------------- memory


def test_follow_up_uses_the_previous_turn(engine: Engine) -> None:
    first = done_of(events_of(engine, FILTER))
    session = first["session_id"]
    events = events_of(engine, "그럼 가격은?", session_id=session)
    done = done_of(events)
    plan = done["plan"]
    assert plan["question"] != "그럼 가격은?"
    assert "헤파" in plan["question"] and "필터" in plan["question"]
    assert "49000" in done["answer"] or "49,000" in done["answer"]
    assert any(
        file_of(c["source"]) in {"가격표.xlsx", "제품매뉴얼.docx", "제품매뉴얼.pdf"}
        for c in done["citations"]
    )
    assert [m.role for m in engine.sessions.messages(session)] == ["user", "assistant"] * 2
    # Without the conversation the same words are not completed.
    alone = done_of(events_of(engine, "그럼 가격은?"))
    assert alone["plan"]["question"] == "그럼 가격은?"
    assert alone["session_id"] != session


def test_memory_can_be_switched_off(build: EngineFactory) -> None:
    engine = build(answer={"memory_messages": 0})
    session = done_of(events_of(engine, FILTER))["session_id"]
    done = done_of(events_of(engine, "그럼 가격은?", session_id=session))
    assert done["plan"]["question"] == "그럼 가격은?"


@pytest.mark.parametrize("limit", [4, 5])
def test_sessions_are_bounded_and_keep_whole_turns(build: EngineFactory, limit: int) -> None:
    engine = build(answer={"max_session_messages": limit})
    questions = [USB, INCIDENT, "야근 식대 한도는 얼마인가요?"]
    session = None
    for question in questions:
        session = done_of(events_of(engine, question, session_id=session))["session_id"]
    assert session is not None
    messages = engine.sessions.messages(session)
    assert len(messages) == 4
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [m.content for m in messages if m.role == "user"] == questions[1:]


# ----------------------------------------------------------- no retrieval


def test_rag_off_with_the_extractive_generator_explains_itself(engine: Engine) -> None:
    events = events_of(engine, USB, options=AskOptions(rag=False, today=TODAY))
    assert events[0].type == "references"
    assert events[0].data["references"] == []
    done = done_of(events)
    assert done["answer"] == EXTRACTIVE_NO_RAG_ANSWER
    assert done["citations"] == []


def test_greeting_is_answered_without_retrieval(engine: Engine) -> None:
    events = events_of(engine, "안녕하세요")
    assert events[0].data["references"] == []
    assert events[0].data["plan"]["route"] == "none"
    assert done_of(events)["citations"] == []


# ------------------------------------------------------------- time ranges


def _reference_dates(events: list[AnswerEvent]) -> list[date]:
    return [date.fromisoformat(r["date"]) for r in events[0].data["references"]]


def test_a_time_phrase_restricts_retrieval_to_that_period(engine: Engine) -> None:
    unrestricted = _reference_dates(events_of(engine, USB))
    assert max(unrestricted) >= date(2025, 1, 1)  # without a period, 2025 documents compete
    events = events_of(engine, "2024년 " + USB)
    done = done_of(events)
    assert done["plan"]["time_range"] == ["2024-01-01", "2024-12-31"]
    assert all(d.year == 2024 for d in _reference_dates(events))
    assert "30일" in done["answer"]
    # Relative phrases resolve against the given today: 작년 in 2025 is 2024.
    relative = events_of(engine, "작년 " + USB)
    assert done_of(relative)["plan"]["time_range"] == ["2024-01-01", "2024-12-31"]
    assert all(d.year == 2024 for d in _reference_dates(relative))


def test_a_period_without_documents_is_widened(engine: Engine) -> None:
    events = events_of(engine, "2019년 " + USB)
    done = done_of(events)
    assert done["plan"]["time_range"] == ["2019-01-01", "2019-12-31"]
    dates = _reference_dates(events)
    assert dates, "widening must find documents"
    # Widened by up to 60 months on each side: 2014-01-01 .. 2024-12-31, not the 2025 documents.
    assert all(date(2014, 1, 1) <= d <= date(2024, 12, 31) for d in dates)
    assert "30일" in done["answer"]


def test_a_period_far_from_every_document_is_dropped(engine: Engine) -> None:
    events = events_of(engine, "2000년 " + USB)
    done = done_of(events)
    assert done["plan"]["time_range"] == ["2000-01-01", "2000-12-31"]
    dates = _reference_dates(events)
    assert dates and max(dates) >= date(2025, 1, 1)
    assert "30일" in done["answer"]


def test_the_callers_dates_win_over_the_planned_period(engine: Engine) -> None:
    filters = SearchFilters(date_from=to_epoch(date(2025, 1, 1)))
    events = events_of(engine, "2024년 야근 식대 한도는 얼마인가요?", filters=filters)
    assert done_of(events)["plan"]["time_range"] == ["2024-01-01", "2024-12-31"]
    assert all(d >= date(2025, 1, 1) for d in _reference_dates(events))


def test_time_filter_can_be_switched_off(build: EngineFactory) -> None:
    engine = build(answer={"apply_time_filter": False})
    events = events_of(engine, "2024년 야근 식대 한도는 얼마인가요?")
    assert "12,000원" in done_of(events)["answer"]
    assert date(2025, 2, 3) in _reference_dates(events)  # 경비처리지침 (2025) is not filtered out


# ---------------------------------------------------------- context packing


def _assert_whole_sentences(source_text: str, chunk_text: str) -> None:
    if source_text == chunk_text:
        return
    kept = sentences(chunk_text)
    joined = [" ".join(kept[:i]) for i in range(1, len(kept) + 1)]
    assert source_text in joined, (source_text, chunk_text)


def test_packing_respects_the_budget_and_cuts_only_between_sentences(
    engine: Engine, samples_engine: SampleCorpus
) -> None:
    count = engine.shared_embedder.count_tokens
    hits = engine.search("연차휴가 이월과 병가, 경조사 휴가 규정", k=8, caller=SYSTEM).hits
    total = sum(count(h.chunk.text) for h in hits)
    for budget in (100, 150, 400):
        engine.settings.answer.context_tokens = budget
        sources = engine.answers.pack(hits)
        assert sources, budget
        assert total > budget  # the budget really binds
        assert sum(count(s.text) for s in sources) <= budget
        # Highest-ranked first, numbered 1..n; the lowest-ranked passages are the ones dropped.
        assert [s.hit.chunk.chunk_id for s in sources] == [h.chunk.chunk_id for h in hits[: len(sources)]]
        assert [s.n for s in sources] == list(range(1, len(sources) + 1))
        for source in sources:
            _assert_whole_sentences(source.text, source.hit.chunk.text)
        if budget == 100:
            assert any(s.text != s.hit.chunk.text for s in sources)  # something really was cut
    engine.settings.answer.context_tokens = 100_000
    assert [s.text for s in engine.answers.pack(hits)] == [h.chunk.text for h in hits]


def test_a_small_context_budget_reaches_the_references(build: EngineFactory) -> None:
    engine = build(answer={"context_tokens": 120})
    events = events_of(engine, "연차휴가는 며칠까지 이월할 수 있나요?")
    count = engine.shared_embedder.count_tokens
    references = events[0].data["references"]
    assert references
    assert sum(count(r["text"]) for r in references) <= 120
    assert events[-1].type == "done"


def test_two_first_turns_racing_for_a_new_legacy_room_both_succeed(engine: Engine) -> None:
    options = AskOptions(create_missing_session=True, today=TODAY)

    async def ask(question: str) -> list[AnswerEvent]:
        return [
            event
            async for event in engine.ask(question, session_id="race-room", options=options, caller=SYSTEM)
        ]

    async def both() -> list[list[AnswerEvent]]:
        return list(await asyncio.gather(ask(USB), ask(INCIDENT)))

    for events in asyncio.run(both()):
        assert events[-1].type == "done", events[-1].data
    messages = engine.sessions.messages("race-room")
    assert sorted(m.content for m in messages if m.role == "user") == sorted([USB, INCIDENT])
    assert [s.id for s in engine.sessions.list_sessions()] == ["race-room"]


def test_creating_an_existing_session_is_a_stable_error(engine: Engine) -> None:
    engine.sessions.create("room-1", principal="user:kim")
    with pytest.raises(HanragError) as info:
        engine.sessions.create("room-1")
    assert info.value.code == "session_exists"
    assert engine.sessions.owner("room-1") == "user:kim"
