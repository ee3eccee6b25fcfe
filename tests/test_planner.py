"""Planner: rule-based plans (Kiwi keywords, date phrases, follow-ups, greetings) and the
LLM planner through a real OpenAI-compatible client against a scripted loopback server."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from answer_fixtures import completion, down_url, scripted_server, status
from hanrag.answer.planner import Plan, Planner, parse_planner_output, rule_plan
from hanrag.answer.prompts import PLANNER_SYSTEM
from hanrag.korean.analyzer import morpheme_tokens
from hanrag.korean.dates import DateRange
from hanrag.llm.base import Turn
from hanrag.llm.extractive import ExtractiveGenerator
from hanrag.llm.openai_compat import OpenAICompatGenerator

TODAY = date(2025, 6, 15)

FILTER_HISTORY = [
    Turn("user", "AP-500 헤파 필터 교체 주기는 얼마인가요?"),
    Turn("assistant", "6개월 또는 2,000시간마다 교체합니다 [1]. 탈취 필터는 12개월입니다."),
]

GOOD = (
    "<question>AP-500 헤파 필터의 가격은 얼마인가요?</question>\n"
    "<keywords>AP-500, 헤파 필터, 가격</keywords>\n"
    "<time>2025-01-01~2025-06-30</time>\n"
    "<route>table</route>"
)


def _llm(url: str) -> OpenAICompatGenerator:
    return OpenAICompatGenerator(base_url=url, model="planner", connect_timeout_s=2.0, read_timeout_s=5.0)


def _plan(planner: Planner, question: str, history: list[Turn] | None = None) -> Plan:
    return asyncio.run(planner.plan(question, history or [], TODAY))


# ------------------------------------------------------------------ rule plans


def test_keywords_are_kiwi_content_words() -> None:
    question = "USB 사용 승인은 며칠 동안 유효한가요?"
    plan = rule_plan(question, [], TODAY)
    assert plan.planner == "rules" and plan.route == "documents"
    assert plan.question == question
    assert plan.keywords == list(dict.fromkeys(morpheme_tokens(question)))
    assert {"usb", "승인", "유효"} <= set(plan.keywords)
    # Particles and endings are not keywords.
    for function_word in ("은", "는", "가요", "?"):
        assert function_word not in plan.keywords
    assert plan.time_range is None
    assert plan.notes == []


def test_time_range_comes_from_the_date_phrase() -> None:
    plan = rule_plan("작년 하반기 보안사고 신고 건수는?", [], TODAY)
    assert plan.time_range == DateRange(date(2024, 7, 1), date(2024, 12, 31), "작년 하반기")
    assert plan.as_dict()["time_range"] == ["2024-07-01", "2024-12-31"]
    assert rule_plan("최근 3개월 경비 정산", [], TODAY).time_range == DateRange(
        date(2025, 3, 15), TODAY, "최근 3개월"
    )
    # Seniority is not a period to search in.
    assert rule_plan("3년차 직원의 연차휴가는 며칠인가요?", [], TODAY).time_range is None


@pytest.mark.parametrize("question", ["그럼 가격은?", "가격은?", "그거 어디서 사요?"])
def test_follow_up_is_completed_with_the_previous_questions_key_nouns(question: str) -> None:
    plan = rule_plan(question, FILTER_HISTORY, TODAY)
    assert plan.question.endswith(question)
    assert "헤파" in plan.question and "필터" in plan.question
    assert {"헤파", "필터"} <= set(plan.keywords)
    assert plan.notes and "follow-up" in plan.notes[0]
    # Only the previous *user* turn is used: nothing from the assistant's answer.
    assert "탈취" not in plan.question


def test_the_most_recent_user_turn_is_the_one_completed_from() -> None:
    history = [
        Turn("user", "USB 사용 승인 유효 기간은?"),
        Turn("assistant", "30일입니다 [1]."),
        *FILTER_HISTORY,
    ]
    plan = rule_plan("그럼 가격은?", history, TODAY)
    assert "필터" in plan.question and "usb" not in plan.question.lower()


def test_a_standalone_question_is_left_alone_in_a_conversation() -> None:
    question = "보안사고는 몇 시간 안에 정보보안팀에 신고해야 하나요?"
    plan = rule_plan(question, FILTER_HISTORY, TODAY)
    assert plan.question == question
    assert plan.notes == []
    assert "필터" not in plan.keywords


def test_without_history_nothing_is_completed() -> None:
    assert rule_plan("그럼 가격은?", [], TODAY).question == "그럼 가격은?"


@pytest.mark.parametrize("greeting", ["안녕하세요", "안녕!", "고마워", "감사합니다", "hello"])
def test_greetings_need_no_retrieval(greeting: str) -> None:
    plan = rule_plan(greeting, [], TODAY)
    assert plan.route == "none"
    # Nor are they glued to the previous question's nouns.
    in_conversation = rule_plan(greeting, FILTER_HISTORY, TODAY)
    assert in_conversation.route == "none"
    assert in_conversation.question == greeting
    assert in_conversation.notes == []


def test_a_question_that_starts_with_a_greeting_is_still_a_question() -> None:
    plan = rule_plan("안녕하세요, 보안사고 신고는 몇 시간 안에 해야 하나요?", [], TODAY)
    assert plan.route == "documents"


def test_planner_without_a_language_model_uses_rules() -> None:
    for llm in (None, ExtractiveGenerator()):
        planner = Planner(llm)
        assert planner.llm is None
        plan = _plan(planner, "그럼 가격은?", FILTER_HISTORY)
        assert plan.planner == "rules"
        assert "헤파" in plan.question


# ------------------------------------------------------------ tagged LLM output


def test_parse_planner_output_reads_every_field() -> None:
    plan = parse_planner_output(GOOD, "가격은?")
    assert plan.planner == "llm"
    assert plan.question == "AP-500 헤파 필터의 가격은 얼마인가요?"
    assert plan.keywords == ["AP-500", "헤파 필터", "가격"]
    assert plan.time_range is not None
    assert (plan.time_range.start, plan.time_range.end) == (date(2025, 1, 1), date(2025, 6, 30))
    assert plan.route == "table"
    empty = parse_planner_output(
        "<question></question><keywords></keywords><time>none</time><route>NONE</route>", "안녕"
    )
    assert empty.question == "안녕" and empty.keywords == [] and empty.time_range is None
    assert empty.route == "none"


@pytest.mark.parametrize(
    "text",
    [
        "질문을 분석했습니다. 헤파 필터 가격입니다.",
        "<question>q</question><keywords>k</keywords><time>none</time>",
        "<question>q</question><keywords>k</keywords><time>none</time><route>web</route>",
        "<question>q</question><keywords>k</keywords><time>작년</time><route>documents</route>",
        "<question>q</question><keywords>k</keywords><time>2025-06-30~2025-01-01</time><route>documents</route>",
        "<question>q</question><keywords>k</keywords><time>2025-02-30~2025-03-01</time><route>documents</route>",
    ],
    ids=["no-tags", "missing-route", "unknown-route", "free-text-time", "reversed-range", "impossible-date"],
)
def test_parse_planner_output_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        parse_planner_output(text, "질문")


# --------------------------------------------------------- LLM planner over HTTP


def test_llm_plan_from_well_formed_tags() -> None:
    with scripted_server(complete=[completion(GOOD)]) as server:
        plan = _plan(Planner(_llm(server.url)), "가격은?", FILTER_HISTORY)
        bodies = server.bodies()
    assert plan.planner == "llm"
    assert plan.question == "AP-500 헤파 필터의 가격은 얼마인가요?"
    assert plan.route == "table"
    assert len(bodies) == 1
    body = bodies[0]
    assert body["stream"] is False
    assert body["temperature"] == 0.0
    system, user = body["messages"]
    assert system["content"] == PLANNER_SYSTEM.format(today="2025-06-15")
    # The conversation is handed to the model so it can resolve the follow-up itself.
    assert "사용자: AP-500 헤파 필터 교체 주기는 얼마인가요?" in user["content"]
    assert user["content"].endswith("마지막 질문: 가격은?")


def test_llm_planner_retries_malformed_output_and_succeeds_on_the_third_attempt() -> None:
    script = [
        completion("가격을 물어보는 질문입니다."),
        completion("<question>반쪽</question>"),
        completion(GOOD),
    ]
    with scripted_server(complete=script) as server:
        plan = _plan(Planner(_llm(server.url)), "가격은?", FILTER_HISTORY)
        requests = len(server.requests)
    assert requests == 3
    assert plan.planner == "llm"
    assert plan.keywords == ["AP-500", "헤파 필터", "가격"]


def test_llm_planner_that_never_answers_in_tags_falls_back_to_rules() -> None:
    with scripted_server(complete=[completion("모르겠습니다.")]) as server:
        plan = _plan(Planner(_llm(server.url)), "그럼 가격은?", FILTER_HISTORY)
        requests = len(server.requests)
    assert requests == 3
    assert plan.planner == "rules"
    assert "헤파" in plan.question  # the rule plan's follow-up completion
    assert any("LLM planner failed" in note and "missing tags" in note for note in plan.notes)


def test_llm_planner_with_the_server_down_falls_back_to_rules() -> None:
    plan = _plan(Planner(_llm(down_url())), "작년 보안사고 신고 기한은?")
    assert plan.planner == "rules"
    assert plan.time_range is not None and plan.time_range.start == date(2024, 1, 1)
    assert any("llm_unavailable" in note for note in plan.notes)


def test_llm_planner_does_not_retry_a_broken_server() -> None:
    with scripted_server(complete=[status(500)]) as server:
        plan = _plan(Planner(_llm(server.url)), "USB 승인 기간은?")
        requests = len(server.requests)
    assert requests == 1
    assert plan.planner == "rules"
    assert any("llm_http_error" in note for note in plan.notes)


def test_the_number_of_attempts_is_configurable() -> None:
    with scripted_server(complete=[completion("엉뚱한 답")]) as server:
        plan = _plan(Planner(_llm(server.url), attempts=2), "USB 승인 기간은?")
        requests = len(server.requests)
    assert requests == 2
    assert plan.planner == "rules"
