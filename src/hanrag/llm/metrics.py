"""Prometheus metrics of the model providers (breaker state, latency, errors, tokens, cost).

They live in their own registry because the services layer may not import the API's
(``hanrag.api.metrics``); the API mounts this registry into the one ``/metrics`` serves
(see ``hanrag.api.routers.models``). Names start with ``hanrag_llm_provider_`` so they
never collide with the HTTP server's own (``hanrag_time_to_first_token_seconds`` is the
whole answer's, measured from the question; these are per provider call).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

PROVIDER_STATE = Gauge(
    "hanrag_llm_provider_state",
    "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open",
    ["provider"],
    registry=REGISTRY,
)
PROVIDER_REQUESTS = Counter(
    "hanrag_llm_provider_requests_total",
    "Calls sent to a provider (each retry counts)",
    ["provider", "role"],
    registry=REGISTRY,
)
PROVIDER_ERRORS = Counter(
    "hanrag_llm_provider_errors_total",
    "Failed provider calls, by stable error code",
    ["provider", "role", "code"],
    registry=REGISTRY,
)
PROVIDER_LATENCY = Histogram(
    "hanrag_llm_provider_latency_seconds",
    "Provider call duration (a whole stream, or a whole completion)",
    ["provider", "role"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
PROVIDER_TTFT = Histogram(
    "hanrag_llm_provider_time_to_first_token_seconds",
    "Time from the provider call to its first streamed chunk",
    ["provider", "role"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
PROVIDER_TOKENS = Counter(
    "hanrag_llm_provider_tokens_total",
    "Tokens reported by providers (direction: in = prompt, out = completion)",
    ["provider", "role", "direction"],
    registry=REGISTRY,
)
PROVIDER_COST = Counter(
    "hanrag_llm_provider_cost_total",
    "Cost from the reported tokens and the provider's cost_per_1m_input/output (its currency)",
    ["provider", "role"],
    registry=REGISTRY,
)


class RoleMetrics:
    """The metric children of one (provider, role), bound once so the router's hot path
    does no label lookups."""

    __slots__ = ("_labels", "cost", "errors", "latency", "requests", "tokens_in", "tokens_out", "ttft")

    def __init__(self, provider: str, role: str) -> None:
        self._labels = (provider, role)
        self.requests = PROVIDER_REQUESTS.labels(provider, role)
        self.latency = PROVIDER_LATENCY.labels(provider, role)
        self.ttft = PROVIDER_TTFT.labels(provider, role)
        self.tokens_in = PROVIDER_TOKENS.labels(provider, role, "in")
        self.tokens_out = PROVIDER_TOKENS.labels(provider, role, "out")
        self.cost = PROVIDER_COST.labels(provider, role)
        self.errors = PROVIDER_ERRORS

    def error(self, code: str) -> None:
        self.errors.labels(*self._labels, code).inc()


def watch_state(provider: str, state: Callable[[], int]) -> None:
    """Report ``state()`` as the provider's breaker state, read at each scrape: an open
    breaker turns half-open by the clock alone, with no call to record it."""
    PROVIDER_STATE.labels(provider).set_function(state)
