"""The provider registry and the per-role generators (P11): legacy settings, roles, native
adapters, and through the engine: the planner's own provider, the planner switched off,
and a stalled server that stops costing timeouts once its breaker is open."""

from __future__ import annotations

import asyncio
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from answer_fixtures import (
    answer_engine,
    close_answer_engine,
    down_url,
    provider_config,
    routed_generators,
    scripted_server,
    sse,
    stall,
)
from conftest import SampleCorpus
from hanrag.auth.access import SYSTEM
from hanrag.domain import AnswerResult
from hanrag.engine import Engine
from hanrag.errors import ConfigError
from hanrag.llm.base import GenerationOptions
from hanrag.llm.extractive import ExtractiveGenerator
from hanrag.llm.factory import build_generators, generation_options
from hanrag.llm.registry import ProviderRegistry
from hanrag.llm.router import RoutedGenerator
from hanrag.settings import Settings

QUESTION = "USB 저장장치 사용 승인은 며칠 동안 유효한가요?"
provider = provider_config
build = routed_generators


# --------------------------------------------------------- registry and roles


def test_legacy_single_provider_settings_build_one_router_for_answer_planner_and_sql(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, llm={"backend": "openai", "base_url": down_url(), "model": "m1"})
    registry = ProviderRegistry(settings, generation_options(settings))
    generators = build_generators(settings, registry)
    router = generators["answer"]
    assert isinstance(router, RoutedGenerator)
    assert generators["planner"] is router and generators["sql"] is router
    assert router.name == "m1" and router.is_llm and registry.legacy and registry.retries == 0
    assert "vision" not in generators and "judge" not in generators
    assert router.status()["backend"] == "openai"
    extractive = build_generators(Settings(data_dir=tmp_path))
    assert isinstance(extractive["answer"], ExtractiveGenerator)
    assert extractive["planner"] is extractive["answer"]


def test_roles_get_their_own_providers(tmp_path: Path) -> None:
    url = down_url()
    generators, _ = build(
        tmp_path,
        [
            provider("big", url, roles=["answer", "sql"]),
            provider("small", url, roles=["planner"]),
            provider("eyes", url, roles=["vision"], vision=True),
        ],
    )
    assert generators["answer"] is generators["sql"]
    assert generators["planner"].name == "small-model"
    assert generators["vision"].can_see and not generators["answer"].can_see


def test_without_an_answer_provider_questions_are_answered_extractively(tmp_path: Path) -> None:
    generators, _ = build(tmp_path, [provider("small", down_url(), roles=["planner"])])
    assert isinstance(generators["answer"], ExtractiveGenerator)


def test_duplicate_names_and_missing_native_adapters_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = down_url()
    with pytest.raises(ConfigError):
        build(tmp_path, [provider("p", url), provider("p", url)])
    monkeypatch.setitem(sys.modules, "hanrag.llm.gemini", None)
    with pytest.raises(ConfigError) as info:
        build(tmp_path, [provider("g", "", kind="gemini")])
    assert info.value.code == "provider_unavailable" and "hanrag.llm.gemini" in info.value.message


def test_native_adapters_are_built_through_their_agreed_constructor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Any] = []

    class FakeAnthropic:
        is_llm = True
        can_see = False

        def __init__(self, provider: Any, defaults: GenerationOptions) -> None:
            built.append((provider.name, provider.api_key.get_secret_value(), defaults.max_tokens))
            self.name = provider.model

    module = types.ModuleType("hanrag.llm.anthropic")
    module.AnthropicGenerator = FakeAnthropic  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hanrag.llm.anthropic", module)
    generators, _ = build(
        tmp_path, [provider("claude", "", kind="anthropic", api_key="k", model="claude-x")], max_tokens=77
    )
    assert built == [("claude", "k", 77)] and generators["answer"].name == "claude-x"


# ------------------------------------------------------------ through the engine


@pytest.fixture
def engines(samples_engine: SampleCorpus, tmp_path: Path, shared_cache_path: Path) -> Iterator[Any]:
    made: list[Engine] = []

    def make(**llm: Any) -> Engine:
        engine = answer_engine(samples_engine.engine, tmp_path / f"e{len(made)}", shared_cache_path, llm=llm)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        close_answer_engine(engine)


def _ask(engine: Engine) -> AnswerResult:
    return asyncio.run(engine.ask_result(QUESTION, caller=SYSTEM))


def test_the_planner_uses_its_own_provider_and_can_be_switched_off(engines: Any) -> None:
    with scripted_server([sse(["30일입니다 [1]."])]) as big, scripted_server([sse(["x"])]) as small:
        engine = engines(
            providers=[
                provider("big", big.url, roles=["answer", "sql"]),
                provider("small", small.url, roles=["planner"]),
            ]
        )
        done = _ask(engine)
        assert done.plan["planner"] == "llm" and done.answer == "30일입니다 [1]."
        assert len(small.bodies(stream=False)) == 1 and big.bodies(stream=False) == []
        assert small.bodies(stream=True) == []
        off = engines(planner=False, providers=[provider("big", big.url), provider("small", small.url)])
        done = _ask(off)
        assert done.plan["planner"] == "rules"
        assert len(small.bodies(stream=False)) == 1 and big.bodies(stream=False) == []


def test_once_the_breaker_is_open_neither_planner_nor_answer_pays_the_timeout(engines: Any) -> None:
    """P11's target with today's single-provider settings: a stalled server costs the
    planner's and the answer's timeouts until the breaker opens, then nothing."""
    with scripted_server([stall(5.0)], [stall(5.0)]) as server:
        engine = engines(backend="openai", base_url=server.url, read_timeout_s=0.4, breaker_failures=2)
        started = time.perf_counter()
        first = _ask(engine)
        paid = time.perf_counter() - started
        started = time.perf_counter()
        second = _ask(engine)
        fast = time.perf_counter() - started
        requests = len(server.bodies())
    assert (first.fallback or "").startswith("llm_timeout") and paid >= 0.8
    assert first.plan["planner"] == "rules"
    assert (second.fallback or "").startswith("llm_unavailable") and "30일" in second.answer
    assert second.plan["planner"] == "rules"
    assert fast < 0.4, (paid, fast)
    assert requests == 2  # the second question sent nothing to the stalled server
