"""A directory dataset's corpus, ingested into a scratch data directory once.

The scratch directory is ``<data_dir>/eval/corpora/<key>/`` where the key hashes the
corpus (its passages, in order) with the settings that shape what ingestion stores (the
chunker and the embedding model): a second run over the same corpus finds it ready and
ingests nothing; a change of chunk size gets a directory of its own. The scratch engine
always uses SQLite in that directory and the local index, whatever the operator's
settings say, so an evaluation never writes into the operator's catalog or index.

Each passage becomes one document through the real pipeline, exactly as
``bench/retrieval.py`` ingests the KorQuAD bench set (so the figures agree): the bytes are
Markdown with the title in YAML front matter and the passage text as the body, so the
chunk title is the passage title and the chunk text the passage text. Documents are
``source_type="eval"``, ``source="corpus:<passage id>"``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hanrag.eval.dataset import Passage, fingerprint
from hanrag.eval.port import EvalEngine
from hanrag.ingest.pipeline import document_id_for
from hanrag.settings import Settings

SOURCE_TYPE = "eval"
SOURCE_PREFIX = "corpus:"
MARKER = "eval-corpus.json"
# Bump when the way passages become documents changes (the scratch index is then rebuilt).
FORMAT = "eval-corpus-1"

_UNSAFE = re.compile(r"[^\w.\-]+")


def passage_bytes(title: str, text: str) -> bytes:
    """Markdown with the title in YAML front matter: chunk title = title, chunk text = text."""
    safe_title = " ".join(title.split())
    return f"---\ntitle: {safe_title}\n---\n{text.strip()}\n".encode()


def source_of(passage_id: str) -> str:
    return f"{SOURCE_PREFIX}{passage_id}"


def document_id(passage_id: str) -> str:
    return document_id_for(SOURCE_TYPE, source_of(passage_id))


def passage_of_source(source: str) -> str | None:
    return source[len(SOURCE_PREFIX) :] if source.startswith(SOURCE_PREFIX) else None


def scratch_key(corpus_fingerprint: str, settings: Settings) -> str:
    shape = {
        "format": FORMAT,
        "corpus": corpus_fingerprint,
        "chunk": settings.chunk.model_dump(mode="json"),
        "embed": {"backend": settings.embed.backend, "model": settings.embed.model},
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def scratch_dir(data_dir: Path, corpus_fingerprint: str, settings: Settings) -> Path:
    return data_dir / "eval" / "corpora" / scratch_key(corpus_fingerprint, settings)


def scratch_settings(settings: Settings, directory: Path) -> Settings:
    """The operator's settings over the scratch directory: SQLite catalog, local index."""
    copy = settings.model_copy(
        update={
            "data_dir": directory,
            "catalog_url": "",
            "index": settings.index.model_copy(update={"backend": "local"}),
        }
    )
    copy.__dict__.pop("resolved_catalog_url", None)  # a cached property of the original
    return copy


def ready(directory: Path, corpus_fingerprint: str) -> dict[str, Any] | None:
    """The marker of a completely ingested corpus, or None."""
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if marker.get("format") != FORMAT or marker.get("corpus_fingerprint") != corpus_fingerprint:
        return None
    return marker if marker.get("complete") else None


def ingest_corpus(
    engine: EvalEngine,
    passages: list[Passage],
    directory: Path,
    *,
    on_progress: Callable[[int, int, dict[str, int]], None] | None = None,
) -> dict[str, Any]:
    """Ingest every passage unless the directory already holds this corpus; returns the
    marker (outcome counts, seconds, chunks). An interrupted ingestion is simply run again:
    unchanged passages are skipped by the pipeline and embeddings come from the cache."""
    corpus_fp = fingerprint(p.as_dict() for p in passages)
    marker = ready(directory, corpus_fp)
    if marker is not None:
        return {**marker, "reused": True}
    counts: dict[str, int] = {}
    failures: list[dict[str, str]] = []
    started = time.perf_counter()
    for done, passage in enumerate(passages, start=1):
        outcome = engine.pipeline.ingest_bytes(
            passage_bytes(passage.title, passage.text),
            f"{_UNSAFE.sub('_', passage.id)[:120] or 'passage'}.md",
            source=source_of(passage.id),
            source_type=SOURCE_TYPE,
            metadata=dict(passage.metadata) or None,
            date_override=None
            if passage.date is None
            else datetime.fromisoformat(passage.date).replace(tzinfo=UTC),
        )
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        if outcome.status == "failed" and len(failures) < 20:
            failures.append({"id": passage.id, "error": str(outcome.error)})
        if on_progress is not None:
            on_progress(done, len(passages), counts)
    engine.index.refresh()
    marker = {
        "format": FORMAT,
        "corpus_fingerprint": corpus_fp,
        "passages": len(passages),
        "outcomes": counts,
        "failures": failures,
        "seconds": round(time.perf_counter() - started, 2),
        "complete": True,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / (MARKER + ".partial")
    partial.write_text(json.dumps(marker, ensure_ascii=False, indent=2), encoding="utf-8")
    partial.replace(directory / MARKER)
    return {**marker, "reused": False}
