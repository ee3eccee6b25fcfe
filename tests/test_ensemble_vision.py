"""Ensemble answers and image questions through the engine (P11), against local servers
speaking the OpenAI protocol: three providers answer side by side and the grounded answer
wins over one that invents a citation; an image is described by the vision provider, the
description joins the question, and the answering model sees the image when it can."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from answer_fixtures import (
    answer_engine,
    close_answer_engine,
    completion,
    down_url,
    provider_config,
    scripted_server,
    sse,
    stall,
)
from conftest import SampleCorpus
from hanrag.answer.engine import AskOptions
from hanrag.auth.access import SYSTEM
from hanrag.domain import AnswerResult
from hanrag.engine import Engine
from hanrag.errors import InvalidInputError
from hanrag.llm.base import ImageInput

USB = "USB 사용 승인은 며칠 동안 유효한가요?"
GROUNDED = "USB 사용 승인은 최대 30일 동안 유효하며, 기간이 끝나면 다시 신청해야 합니다 [1]."
AGREEING = "USB 사용 승인은 최대 30일 동안 유효합니다. 기간이 끝나면 다시 신청해야 합니다 [1]."
INVENTED = "USB 승인은 팀장 구두 승인으로 1년 동안 유효합니다 [7]. 분실해도 신고할 필요가 없습니다 [9]."


@pytest.fixture
def build(samples_engine: SampleCorpus, tmp_path: Path, shared_cache_path: Path) -> Iterator[Any]:
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


def ask(engine: Engine, question: str, **options: Any) -> AnswerResult:
    return asyncio.run(engine.ask_result(question, caller=SYSTEM, options=AskOptions(**options)))


def png() -> ImageInput:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 90, 200)).save(buffer, "PNG")
    return ImageInput("image/png", buffer.getvalue())


def test_the_ensemble_returns_the_grounded_answer_with_a_consensus_score(build: Any) -> None:
    with (
        scripted_server(stream=[sse([INVENTED])]) as invented,
        scripted_server(stream=[sse([GROUNDED])]) as grounded,
        scripted_server(stream=[sse([AGREEING])]) as agreeing,
    ):
        providers = [
            provider_config("invented", invented.url, priority=1, roles=["answer"]),
            provider_config("grounded", grounded.url, priority=2, roles=["answer"]),
            provider_config("agreeing", agreeing.url, priority=3, roles=["answer"]),
        ]
        engine = build(llm={"providers": providers, "mode": "ensemble", "planner": False})
        result = ask(engine, USB, candidates=True)
    assert result.answer in (GROUNDED, AGREEING)
    info = result.ensemble
    assert info is not None and info["chosen"] in ("grounded", "agreeing")
    assert set(info["scores"]) == {"invented", "grounded", "agreeing"}
    assert info["scores"]["invented"] < min(info["scores"]["grounded"], info["scores"]["agreeing"])
    assert 0 < info["consensus"] < 1 and len(info["candidates"]) == 3
    assert result.citations and result.citations[0]["n"] == 1
    # Each provider was asked exactly once, with the same grounded prompt.
    prompts = [s.bodies(stream=True)[0]["messages"] for s in (invented, grounded, agreeing)]
    assert prompts[0] == prompts[1] == prompts[2]


def test_an_ensemble_survives_a_down_and_a_stalled_provider(build: Any) -> None:
    with (
        scripted_server(stream=[sse([GROUNDED])]) as healthy,
        scripted_server(stream=[stall(5, sse(["늦은 답"]))]) as slow,
    ):
        providers = [
            provider_config("down", down_url(), priority=1, roles=["answer"]),
            provider_config("slow", slow.url, priority=2, roles=["answer"]),
            provider_config("healthy", healthy.url, priority=3, roles=["answer"]),
        ]
        engine = build(
            llm={"providers": providers, "mode": "ensemble", "planner": False, "ensemble_timeout_s": 1.0}
        )
        result = ask(engine, USB)
    assert result.answer == GROUNDED and result.ensemble is not None
    assert result.ensemble["chosen"] == "healthy"
    assert set(result.ensemble["errors"]) == {"down", "slow"}


def test_single_mode_per_request_overrides_the_setting(build: Any) -> None:
    with scripted_server(stream=[sse([GROUNDED])]) as one, scripted_server(stream=[sse([AGREEING])]) as two:
        providers = [
            provider_config("one", one.url, priority=1, roles=["answer"]),
            provider_config("two", two.url, priority=2, roles=["answer"]),
        ]
        engine = build(llm={"providers": providers, "mode": "ensemble", "planner": False})
        result = ask(engine, USB, mode="single")
        assert result.ensemble is None and result.answer == GROUNDED
        assert two.bodies() == []


def test_an_image_is_described_for_retrieval_and_shown_to_a_model_that_sees(build: Any) -> None:
    description = "USB 저장장치 사용 승인 신청 화면입니다. 승인 기간을 묻는 내용입니다."
    with scripted_server(
        stream=[sse(["승인은 30일 동안 유효합니다 [1]."])], complete=[completion(description)]
    ) as server:
        providers = [provider_config("eye", server.url, roles=["answer", "vision"])]
        engine = build(llm={"providers": providers, "planner": False})
        result = ask(engine, "이 화면의 승인은 얼마나 유효해?", images=[png()])
    vision_request = server.bodies(stream=False)[0]
    parts = vision_request["messages"][-1]["content"]
    assert parts[0]["type"] == "text" and parts[1]["type"] == "image_url"
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert base64.b64decode(parts[1]["image_url"]["url"].split(",", 1)[1]) == png().data
    # The description joined the question: retrieval found the USB article.
    assert description in result.plan["question"]
    assert any("정보보안정책" in ref["source"] for ref in result.references)
    answer_request = server.bodies(stream=True)[0]
    assert any(p.get("type") == "image_url" for p in answer_request["messages"][-1]["content"])
    assert result.timings.get("vision_ms") is not None


def test_an_image_question_without_a_vision_provider_is_refused(build: Any) -> None:
    with scripted_server() as server:
        engine = build(llm={"providers": [provider_config("blind", server.url, roles=["answer"])]})
        with pytest.raises(InvalidInputError) as err:
            ask(engine, "이 사진은 뭐야?", images=[png()])
        assert err.value.code == "vision_unavailable"
        assert server.bodies() == []  # refused before any model call


def test_a_blind_answer_model_gets_the_description_but_not_the_image(build: Any) -> None:
    with (
        scripted_server(complete=[completion("보안 USB 사진")]) as eye,
        scripted_server(stream=[sse(["답 [1]."])]) as blind,
    ):
        providers = [
            provider_config("eye", eye.url, roles=["vision"]),
            provider_config("blind", blind.url, roles=["answer"]),
        ]
        engine = build(llm={"providers": providers, "planner": False})
        ask(engine, "사진 속 USB는 언제까지 쓸 수 있어?", images=[png()])
        answer_messages = blind.bodies(stream=True)[0]["messages"]
    assert all(isinstance(m["content"], str) for m in answer_messages)
    assert "보안 USB 사진" in answer_messages[-1]["content"]


def test_a_judge_provider_weighs_in(build: Any) -> None:
    def verdict(handler: Any, body: dict[str, Any]) -> None:
        judged = body["messages"][-1]["content"]
        completion("<score>0</score>" if GROUNDED in judged else "<score>100</score>")(handler, body)

    with (
        scripted_server(stream=[sse([GROUNDED])]) as first,
        scripted_server(stream=[sse([AGREEING])]) as second,
        scripted_server(complete=[verdict]) as judge,
    ):
        providers = [
            provider_config("first", first.url, priority=1, roles=["answer"]),
            provider_config("second", second.url, priority=2, roles=["answer"]),
            provider_config("judge", judge.url, roles=["judge"]),
        ]
        engine = build(llm={"providers": providers, "mode": "ensemble", "planner": False})
        result = ask(engine, USB, candidates=True)
        assert len(judge.bodies(stream=False)) == 2
    assert result.ensemble is not None and result.ensemble["chosen"] == "second"
    signals = {c["provider"]: c["signals"] for c in result.ensemble["candidates"]}
    assert signals["first"]["judge"] == 0.0 and signals["second"]["judge"] == 1.0
