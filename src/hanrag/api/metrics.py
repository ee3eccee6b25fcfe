"""Prometheus metrics of the HTTP server (exposed on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "hanrag_http_requests_total", "HTTP requests", ["route", "method", "status"], registry=REGISTRY
)
REQUEST_SECONDS = Histogram(
    "hanrag_http_request_seconds",
    "HTTP request latency (until the response starts)",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "hanrag_time_to_first_token_seconds",
    "Time from question to the first answer text",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
GENERATED_TOKENS_PER_SECOND = Histogram(
    "hanrag_generation_tokens_per_second",
    "Generation speed (completion tokens, or answer pieces when the generator reports none)",
    buckets=(1, 5, 10, 20, 50, 100, 200, 500),
    registry=REGISTRY,
)
RETRIEVAL_SECONDS = Histogram(
    "hanrag_retrieval_seconds",
    "Retrieval latency (planning excluded)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
ACTIVE_STREAMS = Gauge("hanrag_active_streams", "Streaming responses in progress", registry=REGISTRY)
INGESTED_DOCUMENTS = Counter(
    "hanrag_ingested_documents_total", "Documents ingested, by outcome", ["status"], registry=REGISTRY
)
EMBEDDING_CACHE_HIT_RATIO = Gauge(
    "hanrag_embedding_cache_hit_ratio", "Share of passage embeddings served from the cache", registry=REGISTRY
)
ANSWER_ERRORS = Counter(
    "hanrag_answer_errors_total", "Answer streams that ended in an error", ["code"], registry=REGISTRY
)
FEEDBACK = Counter(
    "hanrag_feedback_total",
    "Feedback on answers, by rating (up, down) and reason (none when not given)",
    ["rating", "reason"],
    registry=REGISTRY,
)
MODEL_LOADED = Gauge(
    "hanrag_model_loaded", "Whether a model is loaded (1) or not (0)", ["kind", "name"], registry=REGISTRY
)
MODEL_LOAD_SECONDS = Gauge(
    "hanrag_model_load_seconds", "How long loading the model took", ["kind", "name"], registry=REGISTRY
)
MODEL_MEMORY_BYTES = Gauge(
    "hanrag_model_memory_bytes",
    "Resident memory the process grew by while loading the model",
    ["kind", "name"],
    registry=REGISTRY,
)
MODEL_RELOADS = Counter(
    "hanrag_model_reloads_total",
    "Model reloads without a restart, by outcome",
    ["outcome"],
    registry=REGISTRY,
)
