"""Index port: dense vectors + Korean lexical signals + metadata/ACL filters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from hanrag.domain import Chunk, Hit, SearchFilters
from hanrag.embed.base import Vectors
from hanrag.errors import InvalidInputError

SIGNALS = ("dense", "bm25", "bigram")


def check_metadata_keys(metadata: dict[str, str], known: set[str]) -> None:
    """Refuse a metadata filter on a key no document the caller may read carries (``known``
    is counted over those documents only, so the error discloses nothing hidden). One
    check for every index adapter and for requests checked before they are queued."""
    for key in metadata:
        if key not in known:
            raise InvalidInputError(
                f"unknown metadata field {key!r} (known: {', '.join(sorted(known)) or 'none'})",
                code="unknown_filter_field",
                field=f"metadata.{key}",
            )


@dataclass(slots=True)
class IndexQuery:
    """A query already analysed by the retriever.

    ``morphemes`` are Kiwi content tokens, ``bigrams`` character bigrams, ``vector``
    the normalised query embedding. Weights of zero switch a signal off.
    """

    vector: Vectors | None
    morphemes: list[str]
    bigrams: list[str]
    k: int
    filters: SearchFilters = field(default_factory=SearchFilters)
    fusion: str = "weighted"
    weights: dict[str, float] = field(default_factory=lambda: {"dense": 0.4, "bm25": 0.4, "bigram": 0.2})
    rrf_k: int = 60
    candidates: int = 100


@dataclass(slots=True)
class IndexedChunk:
    """What the index stores per chunk: the chunk, its vector and lexical tokens."""

    chunk: Chunk
    morphemes: list[str]
    bigrams: list[str]


@dataclass(slots=True)
class IndexStats:
    chunks: int
    documents: int
    dimension: int | None
    disk_bytes: int
    details: dict[str, object] = field(default_factory=dict)


# One document's replacement: its id, its chunks and their vectors (one row per chunk).
DocumentChunks = tuple[str, list[IndexedChunk], Vectors]


class Index(Protocol):
    backend: str

    def upsert_document(self, document_id: str, chunks: list[IndexedChunk], vectors: Vectors) -> None:
        """Atomically replace every chunk of ``document_id`` (all or nothing)."""
        ...

    def upsert_documents(self, documents: list[DocumentChunks]) -> None:
        """Replace several documents, each as :meth:`upsert_document` would; the bulk path
        of migrations (a remote index writes a batch in a few round trips)."""
        ...

    def delete_document(self, document_id: str) -> int:
        """Remove a document's chunks; returns how many were removed."""
        ...

    def set_document_acl(self, document_id: str, acl: list[str]) -> int:
        """Change the ACL of every chunk of a document without re-embedding."""
        ...

    def search(self, query: IndexQuery) -> list[Hit]: ...

    def count_matching(self, filters: SearchFilters) -> int:
        """How many chunks pass the filters (used to widen time ranges)."""
        ...

    def get_chunks(self, chunk_ids: list[str]) -> list[Chunk]: ...

    def document_chunks(self, document_id: str) -> list[Chunk]:
        """A document's chunks in order of position (none for an unknown document)."""
        ...

    def document_chunk_counts(self) -> dict[str, int]:
        """Every stored document's id and number of chunks."""
        ...

    def export_documents(self) -> Iterator[DocumentChunks]:
        """Every document with its chunks (in order), their stored tokens and vectors, as
        :meth:`upsert_documents` takes them: what an index migration copies."""
        ...

    def metadata_keys(self, principals: list[str] | None = None) -> set[str]:
        """Metadata keys of live documents; with ``principals``, of those they may read only
        (so that a filter's error never names a key of a document the caller cannot see)."""
        ...

    def stats(self) -> IndexStats: ...

    def refresh(self) -> None:
        """Bring derived structures (lexical postings) up to date after writes."""
        ...

    def close(self) -> None: ...
