"""One role's generator over several providers: strategy order, circuit breakers, bounded
waits for a slot, retries of transient errors, fallback to the next provider.

Why the rules are what they are:

* **Fallback only before the first chunk.** Once text has reached the asker, a second
  model cannot continue the first one's sentence; a failure after the first chunk is the
  answer's failure and propagates (the answer engine reports it; nothing is stored).
* **Retries only for transient errors** (connect errors, timeouts, 429, 5xx, a stream
  cut before its first chunk): a 400 or a malformed reply will not get better by asking
  again; another provider may still take it, so it falls through without a retry.
  Backoff is exponential with full jitter (callers that failed together do not retry
  together); a ``Retry-After`` is honoured, capped by ``llm.retry_max_s``.
* **An open breaker costs nothing.** The provider is skipped without any I/O, so when
  every provider is down the last error is raised at once and the answer engine's
  extractive fallback answers without paying a connect timeout per question.
* **Slots with a bounded wait.** A provider at ``max_concurrency`` makes the caller wait
  up to ``llm.queue_wait_s`` for a slot, then try the next provider instead of queueing
  forever behind a saturated GPU.

The hot path is a few attribute reads, one lock per breaker check and per slot, and the
pre-bound metric children: well under the 1 ms p95 the router may add (``bench/router.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from hanrag.errors import HanragError
from hanrag.llm.base import (
    GenerationChunk,
    GenerationOptions,
    GenerationRequest,
    GeneratorError,
    Turn,
    Usage,
)
from hanrag.llm.metrics import RoleMetrics
from hanrag.llm.registry import ProviderHandle

STRATEGIES = ("priority", "round_robin", "least_latency", "cost")
# least_latency: seconds a provider's score grows per unit of its recent error rate, so a
# fast provider that fails half its calls ranks behind a slower one that does not.
ERROR_PENALTY_S = 5.0


@dataclass(slots=True, eq=False)
class _Lane:
    """A provider as one role's router sees it (the role's metric children bound)."""

    handle: ProviderHandle
    metrics: RoleMetrics


@dataclass(slots=True)
class _Tried:
    """What one routed call went through: errors in order, providers skipped as open."""

    errors: list[HanragError] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _is_health_failure(exc: HanragError) -> bool:
    """Whether an error says the provider is unwell (it counts against its breaker). A 4xx
    refusal (other than 429) says the provider is up and disliked this request."""
    if isinstance(exc, GeneratorError):
        return exc.transient or exc.status is None or exc.status >= 500
    return True


def _transient(exc: HanragError) -> bool:
    return isinstance(exc, GeneratorError) and exc.transient


def _has_images(messages: list[Turn]) -> bool:
    return any(turn.images for turn in messages)


async def _close(stream: AsyncIterator[GenerationChunk]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        # Closing a failed stream must not hide the error being handled.
        with contextlib.suppress(Exception):
            await aclose()


class RoutedGenerator:
    """The :class:`~hanrag.llm.base.Generator` of one role (answer, planner, sql, ...)
    over the providers that serve it."""

    def __init__(
        self,
        role: str,
        providers: list[ProviderHandle],
        *,
        strategy: str = "priority",
        retries: int = 1,
        retry_base_s: float = 0.2,
        retry_max_s: float = 5.0,
        queue_wait_s: float = 10.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not providers:
            raise ValueError(f"no provider serves the {role} role")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown routing strategy {strategy!r}")
        self.role = role
        self.strategy = strategy
        self.retries = retries
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.queue_wait_s = queue_wait_s
        self._random = rng
        lanes = [_Lane(p, RoleMetrics(p.name, role)) for p in providers]
        self._by_priority = sorted(lanes, key=lambda lane: (lane.handle.config.priority, lane.handle.order))
        self._by_cost = sorted(
            lanes,
            key=lambda lane: (
                lane.handle.config.cost_per_1m_input + lane.handle.config.cost_per_1m_output,
                lane.handle.config.priority,
                lane.handle.order,
            ),
        )
        self._turn = itertools.count()
        self.providers = [lane.handle for lane in self._by_priority]
        self.is_llm = any(p.is_llm for p in providers)
        self.can_see = any(p.can_see for p in providers)
        self._name = (
            self._model(providers[0])
            if len(providers) == 1
            else f"{role}:{'+'.join(p.name for p in self.providers)}"
        )
        # The model that served this task's last call (read by the answer engine after a
        # stream, for the answer's ``generator``): a context variable, so concurrent
        # questions each see their own.
        self._served: ContextVar[str | None] = ContextVar(f"hanrag_served_{role}", default=None)

    @staticmethod
    def _model(handle: ProviderHandle) -> str:
        return str(getattr(handle.generator, "name", handle.name))

    @property
    def name(self) -> str:
        """The model that served the current task's last call; before any, the role's
        model (one provider) or ``role:provider+provider``."""
        return self._served.get() or self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    # ----------------------------------------------------------------- order

    def order(self) -> list[_Lane]:
        """The providers in the order this call tries them (open breakers are skipped
        later, when reached, so a half-open probe happens in strategy order)."""
        lanes = self._by_priority
        strategy = self.strategy
        if strategy == "priority" or len(lanes) == 1:
            return lanes
        if strategy == "cost":
            return self._by_cost
        if strategy == "round_robin":
            start = next(self._turn) % len(lanes)
            return lanes[start:] + lanes[:start]
        # least_latency: recent time-to-answer plus a penalty for recent errors; a provider
        # never measured scores 0 and is tried first, once, to be measured.
        return sorted(lanes, key=self._latency_score)

    @staticmethod
    def _latency_score(lane: _Lane) -> float:
        stats = lane.handle.stats
        return (stats.response_s or 0.0) + stats.error_rate * ERROR_PENALTY_S

    def _lanes(self, messages: list[Turn], *, llm_only: bool) -> list[_Lane]:
        lanes = self.order()
        if llm_only:
            lanes = [lane for lane in lanes if lane.handle.is_llm]
        if messages and _has_images(messages):
            seeing = [lane for lane in lanes if lane.handle.can_see]
            lanes = seeing or lanes  # none can see: the request is the caller's to refuse
        return lanes

    # --------------------------------------------------------------- attempts

    async def _enter(self, lane: _Lane, tried: _Tried) -> bool:
        """Breaker and slot for one call: True when the call may go out (a slot held)."""
        handle = lane.handle
        if not handle.breaker.allow():
            if handle.name not in tried.skipped:
                tried.skipped.append(handle.name)
            return False
        if handle.slots.try_acquire() or await handle.slots.acquire(self.queue_wait_s):
            with handle.stats.lock:
                handle.stats.requests += 1
            lane.metrics.requests.inc()
            return True
        handle.breaker.release()
        lane.metrics.error("llm_busy")
        tried.errors.append(
            GeneratorError(
                f"provider {handle.name} is busy ({handle.config.max_concurrency} calls in flight)",
                code="llm_busy",
                transient=True,
            )
        )
        return False

    def _failed(self, lane: _Lane, exc: HanragError, seconds: float) -> None:
        handle = lane.handle
        status = exc.status if isinstance(exc, GeneratorError) else None
        handle.stats.failed(exc.code, status, handle.scrub(exc.message))
        lane.metrics.error(exc.code)
        lane.metrics.latency.observe(seconds)
        if _is_health_failure(exc):
            handle.breaker.failure()
        else:
            handle.breaker.success()

    def _succeeded(self, lane: _Lane, seconds: float, usage: Usage | None) -> None:
        handle = lane.handle
        handle.breaker.success()
        tokens_in = (usage.prompt_tokens or 0) if usage else 0
        tokens_out = (usage.completion_tokens or 0) if usage else 0
        cost = handle.cost_of(tokens_in, tokens_out)
        handle.stats.finished(seconds, tokens_in, tokens_out, cost)
        metrics = lane.metrics
        metrics.latency.observe(seconds)
        if tokens_in:
            metrics.tokens_in.inc(tokens_in)
        if tokens_out:
            metrics.tokens_out.inc(tokens_out)
        if cost:
            metrics.cost.inc(cost)

    def _retry_delay(self, attempt: int, exc: HanragError) -> float:
        after = exc.retry_after_s if isinstance(exc, GeneratorError) else None
        if after is not None:
            return min(after, self.retry_max_s)
        return self._random() * min(self.retry_max_s, self.retry_base_s * 2**attempt)

    def _may_retry(self, lane: _Lane, attempt: int, exc: HanragError) -> bool:
        return attempt < self.retries and _transient(exc) and lane.handle.breaker.state == "closed"

    def _exhausted(self, tried: _Tried, *, none_fit: bool = False) -> GeneratorError:
        """The error a call that no provider answered raises: the last one met, so the
        answer engine's fallback (and its notice) name what actually went wrong."""
        if tried.errors:
            last = tried.errors[-1]
            if isinstance(last, GeneratorError):
                return last
            error = GeneratorError(last.message, code=last.code, transient=False)
            error.__cause__ = last
            return error
        if tried.skipped:
            return GeneratorError(
                f"no provider of the {self.role} role is available now "
                f"(circuit open: {', '.join(tried.skipped)})",
                code="llm_unavailable",
                transient=True,
            )
        what = "language model" if none_fit else "provider"
        return GeneratorError(
            f"no {what} serves the {self.role} role", code="llm_unavailable", transient=False
        )

    # ----------------------------------------------------------------- stream

    async def _open(
        self, lane: _Lane, request: GenerationRequest, tried: _Tried
    ) -> tuple[AsyncIterator[GenerationChunk], GenerationChunk | None, float] | None:
        """The provider's stream with its first chunk (retrying transient errors), or
        None when it is skipped or failed; on success its slot stays held."""
        handle = lane.handle
        attempt = 0
        while True:
            if not await self._enter(lane, tried):
                return None
            started = time.perf_counter()
            stream = handle.generator.stream(request)
            try:
                first: GenerationChunk | None = await anext(stream)
            except StopAsyncIteration:
                first = None  # an empty answer is still an answer
            except HanragError as exc:
                await _close(stream)
                handle.slots.release()
                self._failed(lane, exc, time.perf_counter() - started)
                tried.errors.append(exc)
                if not self._may_retry(lane, attempt, exc):
                    return None
                await asyncio.sleep(self._retry_delay(attempt, exc))
                attempt += 1
                continue
            except BaseException:
                await _close(stream)
                handle.slots.release()
                handle.breaker.release()
                raise
            seconds = time.perf_counter() - started
            handle.stats.response(seconds, first_chunk=True)
            lane.metrics.ttft.observe(seconds)
            self._served.set(self._model(handle))
            return stream, first, started

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        tried = _Tried()
        opened = None
        lane: _Lane | None = None
        for lane in self._lanes(request.messages, llm_only=False):
            opened = await self._open(lane, request, tried)
            if opened is not None:
                break
        if opened is None or lane is None:
            raise self._exhausted(tried)
        stream, first, started = opened
        handle = lane.handle
        usage: Usage | None = None
        try:
            if first is not None:
                usage = first.usage
                yield first
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    yield chunk
        except HanragError as exc:
            # After the first chunk there is no fallback: the answer has begun.
            self._failed(lane, exc, time.perf_counter() - started)
            raise
        except BaseException:
            # The reader stopped (closed the stream, was cancelled): the provider answered.
            handle.breaker.success()
            raise
        else:
            self._succeeded(lane, time.perf_counter() - started, usage)
        finally:
            await _close(stream)
            handle.slots.release()

    # --------------------------------------------------------------- complete

    async def complete(self, messages: list[Turn], options: GenerationOptions) -> str:
        """One completion from the first provider that gives it (language models only)."""
        tried = _Tried()
        lanes = self._lanes(messages, llm_only=True)
        for lane in lanes:
            handle = lane.handle
            attempt = 0
            while await self._enter(lane, tried):
                started = time.perf_counter()
                try:
                    text = await handle.generator.complete(messages, options)
                except HanragError as exc:
                    handle.slots.release()
                    self._failed(lane, exc, time.perf_counter() - started)
                    tried.errors.append(exc)
                    if not self._may_retry(lane, attempt, exc):
                        break
                    await asyncio.sleep(self._retry_delay(attempt, exc))
                    attempt += 1
                    continue
                except BaseException:
                    handle.slots.release()
                    handle.breaker.release()
                    raise
                handle.slots.release()
                seconds = time.perf_counter() - started
                handle.stats.response(seconds, first_chunk=False)
                self._succeeded(lane, seconds, None)
                self._served.set(self._model(handle))
                return text
        raise self._exhausted(tried, none_fit=not lanes)

    # ----------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """The role's providers with their live state; no API key nor credentials."""
        kinds = {p.config.kind for p in self.providers}
        return {
            "backend": next(iter(kinds)) if len(self.providers) == 1 else "router",
            "name": self.name,
            "role": self.role,
            "strategy": self.strategy,
            "loaded": True,
            "providers": [p.as_dict() for p in self.providers],
        }
