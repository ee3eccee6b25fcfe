"""The model router (P11): its own overhead, and time to first token with a provider down.

Usage::

    .venv/bin/python bench/router.py [--calls N] [--requests N] [--model-delay S]

**Overhead.** A scripted in-process provider with zero latency (three chunks, then a
usage chunk; ``complete`` returns at once) is called ``--calls`` times directly and
through :class:`hanrag.llm.router.RoutedGenerator` (one provider; two providers in
priority order; least-latency over two), on one event loop after a warm-up. Each call is
timed from the call to the last chunk consumed; the overhead is the router's p95 minus
the direct p95 (P11 target: <= 1 ms p95).

**Time to first token with provider 1 down.** Real OpenAI-protocol servers on loopback
(``tests/answer_fixtures.ScriptedLLMServer``) whose first chunk comes after
``--model-delay`` seconds (a model's prefill); provider 2 is healthy. Provider 1 is
either down (connection refused) or stalled (accepts, never answers; ``timeout_s`` 0.5).
Settings: 3 failures open the breaker, 1 retry, 30 s cooldown. ``before`` is the requests
until the breaker opened, ``after`` the next ``--requests``; ``healthy`` is provider 2
alone. P11 target: after <= 1.5x healthy. A planner call (``complete``) after the breaker
opened shows the planner no longer pays the timeout either (the breaker is per provider,
shared by the roles).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from answer_fixtures import ScriptedLLMServer, completion, down_url, sse, stall
from hanrag.llm.base import GenerationChunk, GenerationOptions, GenerationRequest, Generator, Turn, Usage
from hanrag.llm.factory import build_generators, generation_options
from hanrag.llm.registry import ProviderRegistry
from hanrag.settings import Settings

DATA_DIR = Path("/tmp/hanrag-bench-router")
REQUEST = GenerationRequest(question="질문", sources=[], messages=[Turn("user", "질문")])


class ZeroLatency:
    """A provider that answers at once: what is left is the caller's own cost."""

    is_llm = True
    can_see = False

    def __init__(self, name: str) -> None:
        self.name = name

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        for text in ("가", "나", "다"):
            yield GenerationChunk(text=text)
        yield GenerationChunk(usage=Usage(10, 3), finish_reason="stop")

    async def complete(self, messages: list[Turn], options: GenerationOptions) -> str:
        return "답"

    def status(self) -> dict[str, object]:
        return {"backend": "fake", "name": self.name}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def routed(providers: list[dict[str, Any]], *, fakes: bool = False, **llm: Any) -> dict[str, Generator]:
    settings = Settings(data_dir=DATA_DIR, llm={"providers": providers, **llm})
    registry = ProviderRegistry(settings, generation_options(settings))
    if fakes:
        for handle in registry.providers:
            handle.generator = ZeroLatency(handle.name)
    return build_generators(settings, registry)


async def time_stream(generator: Generator) -> tuple[float, float]:
    """(time to first chunk, time to the last) in ms."""
    started = time.perf_counter()
    first = None
    async for _ in generator.stream(REQUEST):
        if first is None:
            first = time.perf_counter()
    ended = time.perf_counter()
    return ((first or ended) - started) * 1000, (ended - started) * 1000


# ---------------------------------------------------------------- overhead


async def overhead(calls: int) -> list[tuple[str, float, float, float]]:
    direct = ZeroLatency("direct")
    url = down_url()  # never reached: the generators are replaced by fakes
    one = routed([{"name": "a", "base_url": url}], fakes=True)["answer"]
    two = routed([{"name": "a", "base_url": url}, {"name": "b", "base_url": url}], fakes=True)["answer"]
    fastest = routed(
        [{"name": "a", "base_url": url}, {"name": "b", "base_url": url}], fakes=True, strategy="least_latency"
    )["answer"]
    subjects: list[tuple[str, Any]] = [
        ("direct (no router)", direct),
        ("router, 1 provider", one),
        ("router, 2 providers, priority", two),
        ("router, 2 providers, least_latency", fastest),
    ]
    rows = []
    baseline = 0.0
    for label, generator in subjects:
        for _ in range(500):
            await time_stream(generator)
        times = [(await time_stream(generator))[1] for _ in range(calls)]
        p95 = pct(times, 0.95)
        if generator is direct:
            baseline = p95
        rows.append((f"stream: {label}", statistics.median(times), p95, p95 - baseline))
    options = GenerationOptions()
    messages = REQUEST.messages
    for label, generator in (subjects[0], subjects[1]):
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            await generator.complete(messages, options)
            times.append((time.perf_counter() - started) * 1000)
        p95 = pct(times, 0.95)
        if generator is direct:
            baseline = p95
        rows.append((f"complete: {label}", statistics.median(times), p95, p95 - baseline))
    return rows


# ---------------------------------------------------------------- fallback


def answering(delay_s: float) -> ScriptedLLMServer:
    return ScriptedLLMServer(
        [sse(["첫 ", "토큰"], delay_s=delay_s, usage={"prompt_tokens": 10, "completion_tokens": 2})],
        [completion("<question>q</question>")],
    ).start()


async def fallback_rows(requests: int, delay_s: float) -> list[tuple[str, str, float, float, int]]:
    healthy_server = answering(delay_s)
    stalled_server = ScriptedLLMServer([stall(30.0)], [stall(30.0)]).start()
    common: dict[str, Any] = {
        "breaker_failures": 3,
        "retries": 1,
        "retry_base_s": 0.05,
        "breaker_cooldown_s": 30,
    }
    rows: list[tuple[str, str, float, float, int]] = []
    try:
        healthy = routed([{"name": "p2", "base_url": healthy_server.url}], **common)["answer"]
        ttfts = [(await time_stream(healthy))[0] for _ in range(requests)]
        rows.append(("healthy (p2 alone)", "-", statistics.median(ttfts), pct(ttfts, 0.95), len(ttfts)))
        for label, p1 in (
            ("p1 refused", {"name": "p1", "base_url": down_url()}),
            ("p1 stalled (timeout 0.5 s)", {"name": "p1", "base_url": stalled_server.url, "timeout_s": 0.5}),
        ):
            generators = routed([p1, {"name": "p2", "base_url": healthy_server.url}], **common)
            router = generators["answer"]
            breaker = router.providers[0].breaker  # type: ignore[attr-defined]
            before: list[float] = []
            while breaker.state == "closed":
                before.append((await time_stream(router))[0])
            after = [(await time_stream(router))[0] for _ in range(requests)]
            rows.append((label, "before", statistics.median(before), max(before), len(before)))
            rows.append((label, "after", statistics.median(after), pct(after, 0.95), len(after)))
            planner = generators["planner"]
            started = time.perf_counter()
            await planner.complete(REQUEST.messages, GenerationOptions(max_tokens=20))
            planned = (time.perf_counter() - started) * 1000
            rows.append((label, "planner after", planned, planned, 1))
    finally:
        healthy_server.stop()
        stalled_server.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--model-delay", type=float, default=0.05)
    args = parser.parse_args()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"\nRouter overhead ({args.calls} calls each, zero-latency in-process provider)")
    print(f"{'':44} {'p50 ms':>8} {'p95 ms':>8} {'p95 - direct':>13}")
    for label, p50, p95, extra in asyncio.run(overhead(args.calls)):
        print(f"{label:44} {p50:8.4f} {p95:8.4f} {extra:13.4f}")
    print(
        f"\nTime to first token, provider 1 down (model first-token delay {args.model_delay * 1000:.0f} ms)"
    )
    print(f"{'':30} {'phase':14} {'p50 ms':>9} {'p95/max ms':>11} {'n':>4}")
    rows = asyncio.run(fallback_rows(args.requests, args.model_delay))
    healthy = rows[0][2]
    for label, phase, p50, high, n in rows:
        ratio = f"  {p50 / healthy:.2f}x healthy" if phase in ("after", "before") else ""
        print(f"{label:30} {phase:14} {p50:9.1f} {high:11.1f} {n:4}{ratio}")
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
