"""The provider registry and the router (P11): circuit breakers, fallback before the first
chunk, retries with Retry-After, concurrency slots, strategies, statistics and status.

The providers are real HTTP servers on loopback speaking the OpenAI protocol
(``tests/answer_fixtures.py``); the breaker's clock is injected where cooldowns matter.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from answer_fixtures import (
    ScriptedLLMServer,
    chunked_cut,
    completion,
    down_url,
    provider_config,
    retry_after,
    routed_generators,
    sse,
    stall,
    status,
)
from hanrag.llm import metrics as llm_metrics
from hanrag.llm.base import (
    GenerationOptions,
    GenerationRequest,
    Generator,
    GeneratorError,
    ImageInput,
    Turn,
)
from hanrag.llm.breaker import CircuitBreaker
from hanrag.llm.registry import ProviderRegistry, SlotLimit, public_url
from hanrag.llm.router import RoutedGenerator

QUESTION = "USB 저장장치 사용 승인은 며칠 동안 유효한가요?"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


provider = provider_config
build = routed_generators


def request(text: str = QUESTION, images: list[ImageInput] | None = None) -> GenerationRequest:
    return GenerationRequest(question=text, sources=[], messages=[Turn("user", text, images=images or [])])


async def collect(generator: Generator, text: str = QUESTION) -> str:
    return "".join([chunk.text async for chunk in generator.stream(request(text))])


def answer(generator: Generator) -> str:
    return asyncio.run(collect(generator))


def failure(generator: Generator) -> tuple[GeneratorError, float]:
    started = time.perf_counter()
    with pytest.raises(GeneratorError) as info:
        answer(generator)
    return info.value, time.perf_counter() - started


@pytest.fixture
def servers() -> Iterator[list[ScriptedLLMServer]]:
    started: list[ScriptedLLMServer] = []
    yield started
    for server in started:
        server.stop()


def serve(servers: list[ScriptedLLMServer], *stream: Any, complete: list[Any] | None = None) -> str:
    server = ScriptedLLMServer(list(stream), complete).start()
    servers.append(server)
    return server.url


def streamed(server_url: str, servers: list[ScriptedLLMServer]) -> int:
    server = next(s for s in servers if s.url == server_url)
    return len(server.bodies(stream=True))


# ------------------------------------------------------------------ breaker


def test_breaker_opens_after_n_failures_in_the_window_probes_once_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, window_s=10, cooldown_s=30, clock=clock)
    assert breaker.state == "closed"
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure()
    assert breaker.state == "open"
    assert not breaker.allow() and breaker.retry_in() == 30
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one probe at a time
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


def test_a_failed_probe_opens_again_and_a_released_one_lets_the_next_caller_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, window_s=10, cooldown_s=5, clock=clock)
    breaker.failure()
    assert breaker.state == "open"
    clock.now += 5
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and breaker.opened_count == 2
    clock.now += 4
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()
    breaker.release()  # no verdict (the caller found no free slot): someone else probes
    assert breaker.state == "half_open" and breaker.allow()


def test_failures_outside_the_window_or_before_a_success_do_not_open_the_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=2, window_s=10, cooldown_s=5, clock=clock)
    breaker.failure()
    clock.now += 11
    breaker.failure()
    assert breaker.state == "closed"
    breaker.success()
    breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open"


# ------------------------------------------------------------------ fallback


def test_a_provider_that_refuses_connections_falls_back_to_the_next(
    tmp_path: Path, servers: list[ScriptedLLMServer]
) -> None:
    second = serve(servers, sse(["둘째 ", "답"]))
    generators, registry = build(tmp_path, [provider("p1", down_url()), provider("p2", second)])
    router = generators["answer"]
    assert router.name == "answer+planner+sql:p1+p2"

    async def served() -> tuple[str, str]:
        return await collect(router), router.name

    # The answer names the model that served it (in the task that read the stream).
    assert asyncio.run(served()) == ("둘째 답", "p2-model")
    assert router.name == "answer+planner+sql:p1+p2"
    p1 = registry.get("p1")
    assert p1 is not None and p1.stats.errors == 2  # tried, retried once, then p2
    assert p1.stats.last_error_code == "llm_unavailable"


def test_a_500_is_retried_then_falls_back(tmp_path: Path, servers: list[ScriptedLLMServer]) -> None:
    first, second = serve(servers, status(500)), serve(servers, sse(["대체 답"]))
    generators, _ = build(tmp_path, [provider("p1", first), provider("p2", second)])
    assert answer(generators["answer"]) == "대체 답"
    assert streamed(first, servers) == 2 and streamed(second, servers) == 1


def test_a_400_is_not_retried_and_does_not_count_against_the_breaker(
    tmp_path: Path, servers: list[ScriptedLLMServer]
) -> None:
    first, second = serve(servers, status(400)), serve(servers, sse(["대체 답"]))
    generators, registry = build(
        tmp_path, [provider("p1", first), provider("p2", second)], breaker_failures=1
    )
    assert answer(generators["answer"]) == "대체 답"
    assert streamed(first, servers) == 1
    p1 = registry.get("p1")
    assert p1 is not None and p1.breaker.state == "closed" and p1.stats.last_error_status == 400


def test_a_429_retry_after_is_honoured(tmp_path: Path, servers: list[ScriptedLLMServer]) -> None:
    first = serve(servers, retry_after(429, "0.5"), sse(["기다린 답"]))
    second = serve(servers, sse(["대체 답"]))
    generators, _ = build(tmp_path, [provider("p1", first), provider("p2", second)])
    started = time.perf_counter()
    assert answer(generators["answer"]) == "기다린 답"
    waited = time.perf_counter() - started
    assert 0.5 <= waited < 2.0, waited
    assert streamed(second, servers) == 0


def test_a_long_retry_after_is_capped_then_the_next_provider_answers(
    tmp_path: Path, servers: list[ScriptedLLMServer]
) -> None:
    first = serve(servers, retry_after(429, "30"))
    second = serve(servers, sse(["대체 답"]))
    generators, _ = build(tmp_path, [provider("p1", first), provider("p2", second)], retry_max_s=0.3)
    started = time.perf_counter()
    assert answer(generators["answer"]) == "대체 답"
    waited = time.perf_counter() - started
    assert 0.3 <= waited < 2.0, waited
    assert streamed(first, servers) == 2


def test_a_stream_cut_before_its_first_chunk_falls_back(
    tmp_path: Path, servers: list[ScriptedLLMServer]
) -> None:
    first, second = serve(servers, chunked_cut([])), serve(servers, sse(["대체 답"]))
    generators, _ = build(tmp_path, [provider("p1", first), provider("p2", second)], retries=0)
    assert answer(generators["answer"]) == "대체 답"


def test_no_fallback_after_the_first_chunk(tmp_path: Path, servers: list[ScriptedLLMServer]) -> None:
    first = serve(servers, sse(["앞부분 ", "중간"], finish=False, done=False))
    second = serve(servers, sse(["대체 답"]))
    generators, registry = build(tmp_path, [provider("p1", first), provider("p2", second)])
    received: list[str] = []

    async def read() -> None:
        async for chunk in generators["answer"].stream(request()):
            received.append(chunk.text)

    with pytest.raises(GeneratorError) as info:
        asyncio.run(read())
    assert info.value.code == "llm_stream_cut"
    assert "".join(received) == "앞부분 중간"
    assert streamed(first, servers) == 1 and streamed(second, servers) == 0
    p1 = registry.get("p1")
    assert p1 is not None and p1.stats.last_error_code == "llm_stream_cut"


def test_complete_falls_back_and_skips_the_extractive_provider(
    tmp_path: Path, servers: list[ScriptedLLMServer]
) -> None:
    second = serve(servers, complete=[completion("계획")])
    generators, _ = build(
        tmp_path,
        [
            provider("extractive", "", kind="extractive", priority=1),
            provider("p1", down_url(), priority=2),
            provider("p2", second, priority=3),
        ],
    )
    planner = generators["planner"]
    assert planner.is_llm
    text = asyncio.run(planner.complete([Turn("user", "질문")], GenerationOptions(max_tokens=10)))
    assert text == "계획"


def test_an_image_question_goes_to_a_provider_that_can_see(
    tmp_path: Path, servers: list[ScriptedLLMServer]
) -> None:
    blind, seeing = serve(servers, sse(["못 봄"])), serve(servers, sse(["봄"]))
    generators, _ = build(tmp_path, [provider("blind", blind), provider("eyes", seeing, vision=True)])
    router = generators["answer"]
    assert router.can_see
    image = ImageInput("image/png", b"\x89PNG")

    async def read() -> str:
        return "".join([c.text async for c in router.stream(request("이 그림은?", [image]))])

    assert asyncio.run(read()) == "봄"
    assert answer(router) == "못 봄"  # without an image the priority order holds


# ------------------------------------------------------------- open breakers


def test_with_every_breaker_open_a_call_fails_fast(tmp_path: Path, servers: list[ScriptedLLMServer]) -> None:
    stalled = serve(servers, stall(5.0), complete=[stall(5.0)])
    generators, registry = build(
        tmp_path,
        [provider("slow", stalled, timeout_s=0.3), provider("gone", down_url())],
        breaker_failures=1,
    )
    router = generators["answer"]
    error, first = failure(router)
    assert first >= 0.3 and error.code == "llm_unavailable"  # the last error met: p2's
    assert [p.breaker.state for p in registry.providers] == ["open", "open"]
    error, again = failure(router)
    assert again < 0.05, again
    assert error.code == "llm_unavailable" and error.transient and "circuit open" in error.message
    started = time.perf_counter()
    with pytest.raises(GeneratorError):
        asyncio.run(router.complete([Turn("user", "질문")], GenerationOptions()))
    assert time.perf_counter() - started < 0.05
    assert streamed(stalled, servers) == 1


def test_after_the_cooldown_one_probe_closes_the_breaker(
    tmp_path: Path, servers: list[ScriptedLLMServer]
) -> None:
    clock = Clock()
    url = serve(servers, status(500), status(500), sse(["복구됨"]))
    generators, registry = build(
        tmp_path, [provider("p1", url)], clock=clock, breaker_failures=1, breaker_cooldown_s=30, retries=0
    )
    router, p1 = generators["answer"], registry.providers[0]
    assert failure(router)[0].code == "llm_http_error" and p1.breaker.state == "open"
    assert failure(router)[0].code == "llm_unavailable"  # refused without a request
    assert streamed(url, servers) == 1
    clock.now += 30
    assert p1.breaker.state == "half_open"
    assert failure(router)[0].code == "llm_http_error"  # the probe failed: open again
    assert p1.breaker.state == "open" and streamed(url, servers) == 2
    clock.now += 30
    assert answer(router) == "복구됨"
    assert p1.breaker.state == "closed"


# ---------------------------------------------------------------- concurrency


def _concurrent(router: Generator, delay_s: float) -> tuple[tuple[str, float], tuple[str, float]]:
    async def timed(wait: float) -> tuple[str, float]:
        await asyncio.sleep(wait)
        started = time.perf_counter()
        text = await collect(router)
        return text, time.perf_counter() - started

    async def both() -> tuple[tuple[str, float], tuple[str, float]]:
        first, second = await asyncio.gather(timed(0), timed(delay_s))
        return first, second

    return asyncio.run(both())


def test_a_full_provider_is_waited_for_a_bounded_time_then_the_next_one_answers(
    tmp_path: Path, servers: list[ScriptedLLMServer]
) -> None:
    slow = serve(servers, sse(["느린 ", "답"], delay_s=0.4))
    fast = serve(servers, sse(["빠른 답"]))
    generators, _ = build(
        tmp_path, [provider("slow", slow, max_concurrency=1), provider("fast", fast)], queue_wait_s=0.2
    )
    (first, _), (second, waited) = _concurrent(generators["answer"], 0.05)
    assert first == "느린 답" and second == "빠른 답"
    assert 0.2 <= waited < 0.6, waited


def test_a_slot_that_frees_within_the_wait_is_taken(tmp_path: Path, servers: list[ScriptedLLMServer]) -> None:
    slow = serve(servers, sse(["느린 ", "답"], delay_s=0.2))
    fast = serve(servers, sse(["빠른 답"]))
    generators, _ = build(
        tmp_path, [provider("slow", slow, max_concurrency=1), provider("fast", fast)], queue_wait_s=3
    )
    (first, _), (second, waited) = _concurrent(generators["answer"], 0.05)
    assert first == second == "느린 답"
    assert waited >= 0.3 and streamed(fast, servers) == 0


def test_slots_are_handed_over_between_event_loops() -> None:
    """One engine serves several loops (API server, CLI, workers): a slot released on one
    wakes a waiter on another."""
    limit = SlotLimit(1)
    assert limit.try_acquire()
    result: list[bool] = []
    waiting = threading.Event()

    def other_loop() -> None:
        async def wait() -> bool:
            waiting.set()
            return await limit.acquire(3.0)

        result.append(asyncio.run(wait()))

    thread = threading.Thread(target=other_loop)
    thread.start()
    waiting.wait(2)
    time.sleep(0.1)
    limit.release()
    thread.join(5)
    assert result == [True] and limit.in_use == 1
    assert not asyncio.run(limit.acquire(0.05))  # held by the other loop's caller
    limit.release()
    assert limit.in_use == 0


# ----------------------------------------------------------------- strategies


def _names(router: Generator) -> list[str]:
    assert isinstance(router, RoutedGenerator)
    return [lane.handle.name for lane in router.order()]


def _three(tmp_path: Path, strategy: str) -> tuple[RoutedGenerator, ProviderRegistry]:
    url = down_url()  # never called: only the order is looked at
    generators, registry = build(
        tmp_path,
        [
            provider("a", url, priority=20, cost_per_1m_input=1.0, cost_per_1m_output=1.0),
            provider("b", url, priority=10, cost_per_1m_input=3.0, cost_per_1m_output=15.0),
            provider("c", url, priority=10, cost_per_1m_input=0.1, cost_per_1m_output=0.4),
        ],
        strategy=strategy,
    )
    router = generators["answer"]
    assert isinstance(router, RoutedGenerator)
    return router, registry


def test_priority_orders_by_priority_then_list_order(tmp_path: Path) -> None:
    router, _ = _three(tmp_path, "priority")
    assert _names(router) == ["b", "c", "a"]


def test_round_robin_rotates(tmp_path: Path) -> None:
    router, _ = _three(tmp_path, "round_robin")
    orders = [_names(router) for _ in range(4)]
    assert orders == [["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"], ["b", "c", "a"]]


def test_cost_puts_the_cheapest_first(tmp_path: Path) -> None:
    router, _ = _three(tmp_path, "cost")
    assert _names(router) == ["c", "a", "b"]


def test_least_latency_tries_the_unmeasured_then_the_fastest_and_penalises_errors(tmp_path: Path) -> None:
    router, registry = _three(tmp_path, "least_latency")
    handles = {p.name: p for p in registry.providers}
    handles["b"].stats.response_s = 0.8
    handles["c"].stats.response_s = 0.2
    assert _names(router) == ["a", "c", "b"]  # a was never measured
    handles["a"].stats.response_s = 0.5
    assert _names(router) == ["c", "a", "b"]
    handles["c"].stats.error_rate = 0.5  # fast, but failing half its calls
    assert _names(router) == ["a", "b", "c"]


def test_least_latency_learns_which_server_answers_first(
    tmp_path: Path, servers: list[ScriptedLLMServer]
) -> None:
    slow = serve(servers, sse(["느린 답"], delay_s=0.15))
    fast = serve(servers, sse(["빠른 답"]))
    generators, _ = build(
        tmp_path, [provider("slow", slow), provider("fast", fast)], strategy="least_latency"
    )
    answers = [answer(generators["answer"]) for _ in range(4)]
    assert answers == ["느린 답", "빠른 답", "빠른 답", "빠른 답"]


# ------------------------------------------------------------ stats and status


def test_usage_tokens_and_cost_are_counted_per_provider(
    tmp_path: Path, servers: list[ScriptedLLMServer]
) -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    url = serve(servers, sse(["답"], usage=usage))
    name = f"priced-{time.monotonic_ns()}"
    generators, registry = build(
        tmp_path, [provider(name, url, cost_per_1m_input=2.0, cost_per_1m_output=10.0)]
    )
    answer(generators["answer"])
    answer(generators["answer"])
    stats = registry.providers[0].stats.as_dict()
    assert stats["requests"] == 2 and stats["errors"] == 0
    assert stats["tokens_in"] == 2000 and stats["tokens_out"] == 1000
    assert stats["cost"] == pytest.approx(0.014)
    assert stats["time_to_first_token_ms"] is not None and stats["latency_ms"] is not None
    role = "answer+planner+sql"
    value = llm_metrics.REGISTRY.get_sample_value
    assert (
        value("hanrag_llm_provider_tokens_total", {"provider": name, "role": role, "direction": "in"}) == 2000
    )
    assert value("hanrag_llm_provider_cost_total", {"provider": name, "role": role}) == pytest.approx(0.014)
    assert value("hanrag_llm_provider_requests_total", {"provider": name, "role": role}) == 2
    assert value("hanrag_llm_provider_state", {"provider": name}) == 0


def test_status_never_shows_keys_or_url_credentials(tmp_path: Path) -> None:
    secret_url = f"http://user:hunter2@127.0.0.1:{down_url().split(':')[2]}?key=zzsecret"
    generators, registry = build(
        tmp_path, [provider("p1", secret_url, api_key="sk-very-secret"), provider("p2", down_url())]
    )
    text = json.dumps([registry.status(), generators["answer"].status()])
    for secret in ("hunter2", "zzsecret", "sk-very-secret", "user:"):
        assert secret not in text
    assert public_url("https://k:v@api.example.com:8443/v1?key=x#f") == "https://api.example.com:8443/v1"
    assert public_url("") is None
    assert public_url("http://u:p@[::1]:8080/v1") == "http://[::1]:8080/v1"
    status: dict[str, Any] = generators["answer"].status()
    assert status["backend"] == "router" and [p["name"] for p in status["providers"]] == ["p1", "p2"]
    assert status["providers"][0]["state"] == "closed"
