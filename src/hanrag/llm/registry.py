"""The provider registry: ``llm.providers`` -> one handle per provider (its generator, its
circuit breaker, its concurrency slots, its live statistics).

Why handles and not bare generators: a provider's health is a property of the provider,
not of the role asking — when the vLLM server is down, the planner's calls and the
answer's calls both fail — so the breaker, the slots and the statistics are kept once per
provider and shared by the routers of every role it serves (``hanrag.llm.router``).

Without ``llm.providers`` the registry holds one provider built from the single-provider
fields (``llm.backend``, ``base_url``, ``model``, ...) serving the answer, planner and sql
roles, so existing settings keep working. That legacy provider keeps today's behaviour
where it matters: no retries inside the router (the job runner retries whole questions)
and no concurrency limit; it does get the circuit breaker, so a server that is down stops
costing each question a connect error (or a timeout) twice.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from hanrag.errors import ConfigError
from hanrag.llm.base import GenerationOptions, Generator
from hanrag.llm.breaker import STATE_VALUE, CircuitBreaker
from hanrag.llm.metrics import watch_state
from hanrag.settings import DEFAULT_ROLES, LLMSettings, ProviderSettings, Settings

log = logging.getLogger("hanrag.llm")

# The legacy single provider was never limited; a slot count no server reaches.
UNLIMITED_SLOTS = 1_000_000
# Weight of the newest observation in the moving averages (about the last 5 calls count).
EWMA_ALPHA = 0.3
# Native adapters written as their own modules, imported only when configured.
NATIVE_ADAPTERS = {
    "anthropic": ("hanrag.llm.anthropic", "AnthropicGenerator", "anthropic"),
    "gemini": ("hanrag.llm.gemini", "GeminiGenerator", "google-genai"),
}


def public_url(url: str) -> str | None:
    """``url`` without credentials: user info, query and fragment dropped (an API key can
    hide in any of them); what status pages may show."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class SlotLimit:
    """At most ``size`` calls in flight to one provider; a caller waits a bounded time for
    a slot, then the router tries the next provider.

    Not an ``asyncio.Semaphore``: one engine is shared by several event loops (the API
    server's, each CLI command's ``asyncio.run``, job workers), and a semaphore binds to
    the first loop that waits on it. Slots are counted under a thread lock and handed
    directly to the oldest waiter on release, waking it on its own loop."""

    __slots__ = ("_lock", "_waiters", "in_use", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()

    def try_acquire(self) -> bool:
        with self._lock:
            if self.in_use < self.size and not self._waiters:
                self.in_use += 1
                return True
            return False

    async def acquire(self, timeout_s: float) -> bool:
        """True with a slot held (give it back with :meth:`release`); False when none
        came free within ``timeout_s``."""
        with self._lock:
            if self.in_use < self.size and not self._waiters:
                self.in_use += 1
                return True
            if timeout_s <= 0:
                return False
            loop = asyncio.get_running_loop()
            waiter = _Waiter(loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter.future, timeout_s)
            return True
        except BaseException as exc:
            with self._lock:
                granted = waiter.granted
                if not granted:
                    waiter.abandoned = True
                    self._waiters.remove(waiter)
            if granted:
                if isinstance(exc, TimeoutError):
                    return True  # the slot arrived just as the wait ran out: keep it
                self.release()
            if isinstance(exc, TimeoutError):
                return False
            raise

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.abandoned:
                    continue
                waiter.granted = True  # the slot passes to it: in_use is unchanged
                try:
                    waiter.loop.call_soon_threadsafe(_wake, waiter.future)
                except RuntimeError:  # its loop is closed: nobody will use the slot
                    waiter.granted = False
                    continue
                return
            self.in_use -= 1


@dataclass(slots=True, eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    granted: bool = False
    abandoned: bool = False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(slots=True)
class ProviderStats:
    """What a provider did since start-up (shared by the roles it serves). The moving
    averages feed the least-latency strategy; the rest is for status pages."""

    requests: int = 0
    errors: int = 0
    last_error_code: str | None = None
    last_error_status: int | None = None
    last_error_at: str | None = None
    # The last failure's reason (scrubbed of keys and URL credentials), and whether the
    # last call failed: status pages show it as error_message until a call succeeds.
    last_error_message: str | None = None
    failing: bool = False
    # Until the caller has something: the first chunk of a stream, a whole completion.
    response_s: float | None = None
    latency_s: float | None = None  # whole calls
    ttft_s: float | None = None  # streams' first chunk
    error_rate: float = 0.0  # moving average of failures (0..1)
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @staticmethod
    def _ewma(old: float | None, new: float) -> float:
        return new if old is None else old + EWMA_ALPHA * (new - old)

    def response(self, seconds: float, *, first_chunk: bool) -> None:
        with self.lock:
            self.response_s = self._ewma(self.response_s, seconds)
            if first_chunk:
                self.ttft_s = self._ewma(self.ttft_s, seconds)

    def finished(self, seconds: float, tokens_in: int, tokens_out: int, cost: float) -> None:
        with self.lock:
            self.latency_s = self._ewma(self.latency_s, seconds)
            self.error_rate -= EWMA_ALPHA * self.error_rate
            self.failing = False
            self.tokens_in += tokens_in
            self.tokens_out += tokens_out
            self.cost += cost

    def failed(self, code: str, status: int | None, message: str | None = None) -> None:
        with self.lock:
            self.errors += 1
            self.failing = True
            self.last_error_message = message
            self.error_rate += EWMA_ALPHA * (1.0 - self.error_rate)
            self.last_error_code = code
            self.last_error_status = status
            self.last_error_at = datetime.now(UTC).isoformat(timespec="seconds")

    def as_dict(self) -> dict[str, Any]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 2)

        with self.lock:
            return {
                "requests": self.requests,
                "errors": self.errors,
                "error_rate": round(self.error_rate, 4),
                "last_error": None
                if self.last_error_code is None
                else {
                    "code": self.last_error_code,
                    "status": self.last_error_status,
                    "at": self.last_error_at,
                    "message": self.last_error_message,
                },
                "error_message": self.last_error_message if self.failing else None,
                "latency_ms": ms(self.latency_s),
                "time_to_first_token_ms": ms(self.ttft_s),
                "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out,
                "cost": round(self.cost, 6),
            }


@dataclass(slots=True, eq=False)
class ProviderHandle:
    """One configured provider with its generator and live state."""

    config: ProviderSettings
    generator: Generator
    breaker: CircuitBreaker
    slots: SlotLimit
    stats: ProviderStats
    order: int  # its place in the list (ties of priority and cost keep it)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_llm(self) -> bool:
        return self.config.kind != "extractive"

    @property
    def can_see(self) -> bool:
        """The operator's word (``vision``, or the vision role) or the adapter's own."""
        config = self.config
        return config.vision or "vision" in config.roles or bool(getattr(self.generator, "can_see", False))

    def scrub(self, text: str) -> str:
        """``text`` as it may be shown: this provider's API key masked, its base URL
        without credentials (adapters name the URL they failed to reach)."""
        config = self.config
        if config.base_url:
            text = text.replace(config.base_url.rstrip("/"), public_url(config.base_url) or "<base_url>")
        key = config.api_key.get_secret_value() if config.api_key else ""
        return text.replace(key, "***") if key else text

    def cost_of(self, tokens_in: int, tokens_out: int) -> float:
        config = self.config
        return (tokens_in * config.cost_per_1m_input + tokens_out * config.cost_per_1m_output) / 1e6

    def as_dict(self) -> dict[str, Any]:
        """The provider as status pages show it: never its API key, nor a base URL's
        credentials."""
        config = self.config
        return {
            "name": config.name,
            "kind": config.kind,
            "model": getattr(self.generator, "name", config.model),
            "base_url": public_url(config.base_url),
            "roles": list(config.roles),
            "priority": config.priority,
            "vision": self.can_see,
            "cost_per_1m_input": config.cost_per_1m_input,
            "cost_per_1m_output": config.cost_per_1m_output,
            "max_concurrency": None if config.max_concurrency >= UNLIMITED_SLOTS else config.max_concurrency,
            "in_flight": self.slots.in_use,
            **self.breaker.as_dict(),
            **self.stats.as_dict(),
        }


def legacy_provider(llm: LLMSettings) -> ProviderSettings:
    """The one provider today's single-provider fields describe."""
    return ProviderSettings(
        name="default",
        kind=llm.backend,
        base_url=llm.base_url,
        model=llm.model,
        api_key=llm.api_key,
        roles=list(DEFAULT_ROLES),
        max_concurrency=UNLIMITED_SLOTS,
        timeout_s=llm.read_timeout_s,
        connect_timeout_s=llm.connect_timeout_s,
        model_path=llm.model_path,
        n_ctx=llm.n_ctx,
        n_threads=llm.n_threads,
    )


def build_provider_generator(
    provider: ProviderSettings, settings: Settings, defaults: GenerationOptions
) -> Generator:
    """The adapter for one provider (native SDK adapters imported only when configured)."""
    kind = provider.kind
    if kind == "openai":
        from hanrag.llm.openai_compat import OpenAICompatGenerator

        return OpenAICompatGenerator(
            base_url=provider.base_url,
            model=provider.model,
            api_key=provider.api_key.get_secret_value() if provider.api_key else None,
            connect_timeout_s=provider.connect_timeout_s,
            read_timeout_s=provider.timeout_s,
            defaults=defaults,
        )
    if kind == "llama_cpp":
        from hanrag.llm.llama_cpp import LlamaCppGenerator

        return LlamaCppGenerator(provider.model_path, n_ctx=provider.n_ctx, n_threads=provider.n_threads)
    if kind == "extractive":
        from hanrag.llm.extractive import ExtractiveGenerator

        return ExtractiveGenerator(
            max_sentences=settings.answer.extractive_sentences,
            analysis_cache_size=settings.answer.extractive_cache_passages,
        )
    if kind in NATIVE_ADAPTERS:
        module_name, class_name, package = NATIVE_ADAPTERS[kind]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = module_name if exc.name == module_name else exc.name
            raise ConfigError(
                f"provider {provider.name!r} (kind {kind}) cannot be built: {missing} is not "
                f"available (pip install {package})",
                code="provider_unavailable",
            ) from exc
        adapter: Generator = getattr(module, class_name)(provider, defaults)
        return adapter
    raise ConfigError(f"provider {provider.name!r} has an unknown kind {kind!r}", code="config_error")


class ProviderRegistry:
    """Every configured provider, built once per engine; the routers of the roles share
    its handles."""

    def __init__(
        self,
        settings: Settings,
        defaults: GenerationOptions,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        llm = settings.llm
        self.settings = settings
        self.legacy = not llm.providers
        configs = list(llm.providers) or [legacy_provider(llm)]
        seen: set[str] = set()
        for config in configs:
            if config.name in seen:
                raise ConfigError(f"two providers are named {config.name!r}", code="config_error")
            seen.add(config.name)
        # Retries inside the router are for registries; the legacy provider never retried.
        self.retries = 0 if self.legacy else llm.retries
        self.providers = [
            self._handle(config, index, settings, defaults, clock) for index, config in enumerate(configs)
        ]
        log.info(
            "model providers loaded",
            extra={
                "providers": [f"{c.name} ({c.kind}, {c.model})" for c in configs],
                "strategy": llm.strategy,
            },
        )

    @staticmethod
    def _handle(
        config: ProviderSettings,
        index: int,
        settings: Settings,
        defaults: GenerationOptions,
        clock: Callable[[], float],
    ) -> ProviderHandle:
        llm = settings.llm
        breaker = CircuitBreaker(
            failures=llm.breaker_failures,
            window_s=llm.breaker_window_s,
            cooldown_s=llm.breaker_cooldown_s,
            clock=clock,
        )
        watched = weakref.ref(breaker)

        def state() -> int:
            live = watched()
            return 0 if live is None else STATE_VALUE[live.state]

        watch_state(config.name, state)
        return ProviderHandle(
            config=config,
            generator=build_provider_generator(config, settings, defaults),
            breaker=breaker,
            slots=SlotLimit(config.max_concurrency),
            stats=ProviderStats(),
            order=index,
        )

    def for_role(self, role: str) -> list[ProviderHandle]:
        return [p for p in self.providers if role in p.config.roles]

    def get(self, name: str) -> ProviderHandle | None:
        return next((p for p in self.providers if p.name == name), None)

    def status(self) -> dict[str, Any]:
        llm = self.settings.llm
        return {
            "strategy": llm.strategy,
            "mode": llm.mode,
            "planner": llm.planner,
            "legacy": self.legacy,
            "providers": [p.as_dict() for p in self.providers],
        }
