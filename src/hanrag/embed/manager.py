"""Shared model manager: one embedding model per process, loaded lazily.

Every part of the process (CLI command, API route, worker job) asks
:func:`shared_embedder` for its model; the first caller loads it under a lock,
later callers reuse it. Backends that cannot take overlapping calls are
serialised here, so callers never need to know.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from hanrag.embed.base import Embedder, ModelStatus, Vectors
from hanrag.embed.cache import EmbeddingCache, content_hash
from hanrag.lru import LruCache

TOKEN_COUNT_CACHE_SIZE = 16384  # texts whose token count is kept (a hash and an int each)


def _rss_mb() -> float | None:
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / 2**20
    except Exception:
        return None


class SharedEmbedder:
    """Thread-safe, lazily loaded wrapper around one :class:`Embedder`."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._load_lock = threading.Lock()
        self._call_lock = threading.Lock()
        self._loaded = False
        self._load_seconds: float | None = None
        self._memory_mb: float | None = None
        # Token counts of recent texts: context packing counts the same top passages for
        # question after question, and each count would otherwise wait for the model lock
        # behind query embeddings (a third of a busy server's time before this cache).
        self._token_counts: LruCache[str, int] = LruCache(TOKEN_COUNT_CACHE_SIZE)

    @property
    def name(self) -> str:
        return self._embedder.name

    @property
    def identity(self) -> str:
        """Cache namespace: vectors of different models must never mix."""
        return f"{self._embedder.backend}:{self._embedder.name}"

    def load(self) -> None:
        if self._loaded:
            return
        with self._load_lock:
            if self._loaded:
                return
            before = _rss_mb()
            started = time.perf_counter()
            self._embedder.load()
            dimension = self._embedder.dimension  # forces servers to answer now
            self._load_seconds = time.perf_counter() - started
            after = _rss_mb()
            if before is not None and after is not None:
                self._memory_mb = max(after - before, 0.0)
            self._loaded = dimension > 0

    @contextlib.contextmanager
    def _serialised(self) -> Iterator[None]:
        if self._embedder.serial:
            with self._call_lock:
                yield
        else:
            yield

    @property
    def dimension(self) -> int:
        self.load()
        return self._embedder.dimension

    def embed_queries(self, texts: list[str]) -> Vectors:
        self.load()
        with self._serialised():
            return self._embedder.embed_queries(texts)

    def embed_passages(self, texts: list[str]) -> Vectors:
        self.load()
        with self._serialised():
            return self._embedder.embed_passages(texts)

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
        return ModelStatus(
            backend=self._embedder.backend,
            name=self._embedder.name,
            loaded=self._loaded,
            dimension=self._embedder.dimension if self._loaded else None,
            device=self._embedder.device,
            load_seconds=self._load_seconds,
            memory_mb=self._memory_mb,
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
        self._queries: LruCache[str, Vectors] = LruCache(query_cache_size)

    def embed_query(self, text: str) -> Vectors:
        cached = self._queries.get(text)
        if cached is not None:
            return cached
        vector = self.shared.embed_queries([text])[0]
        self._queries.put(text, vector)
        return vector

    def embed_passages(self, texts: list[str]) -> Vectors:
        if self.cache is None:
            return self.shared.embed_passages(texts)
        hashes = [content_hash(t) for t in texts]
        found = self.cache.get_many(self.shared.identity, hashes)
        missing = [i for i, h in enumerate(hashes) if h not in found]
        if missing:
            fresh = self.shared.embed_passages([texts[i] for i in missing])
            new_items = {hashes[i]: fresh[row] for row, i in enumerate(missing)}
            self.cache.put_many(self.shared.identity, new_items)
            found.update(new_items)
        if not texts:
            return np.zeros((0, self.shared.dimension), dtype=np.float32)
        return np.vstack([found[h] for h in hashes]).astype(np.float32, copy=False)


_registry: dict[tuple[str, ...], SharedEmbedder] = {}
_registry_lock = threading.Lock()


def shared_embedder(key: tuple[str, ...], build: Callable[[], Embedder]) -> SharedEmbedder:
    """The one :class:`SharedEmbedder` of this process for ``key``.

    ``build`` is a zero-argument callable making the adapter; it runs at most once per key.
    """
    with _registry_lock:
        existing = _registry.get(key)
        if existing is None:
            existing = SharedEmbedder(build())
            _registry[key] = existing
        return existing
