"""Milvus index adapter (pymilvus): milvus-lite in a file, or a Milvus server by URI.

Collection layout: primary key = chunk id; document id; a dense FLOAT_VECTOR;
two VARCHAR fields holding space-joined Kiwi morphemes and character bigrams,
each turned into a BM25 sparse vector by a Milvus BM25 function with a plain
standard analyser over hex-encoded tokens (Milvus has no Korean analyser,
so Kiwi does the analysis here); display text, title, source; date as INT64; ACL as ARRAY<VARCHAR>
plus the same principals as one VARCHAR of hex words (``acl_terms``, see below);
metadata as JSON (stored, never filtered on the query path).

ACL filters: a Milvus server answers ``array_contains_any(acl, [...])`` from an
INVERTED index on the array. milvus-lite evaluates array functions row by row in
Python (about 320 ms per signal at 6k chunks, seconds at 100k) but ``LIKE`` on a
VARCHAR column with Arrow kernels (about 20 ms at 6k), so on milvus-lite the filter
is ``acl_terms like "% <hex> %" or ...``. Hex words contain no LIKE wildcard
(``%``, ``_``), so a principal can only match itself. Collections made before
``acl_terms`` existed keep using the array filter.

Ranking: each signal nominates its top candidates under the same filter
expression, every nominated chunk gets all three real scores, and
:func:`hanrag.index.fusion.fuse` combines them — exactly what the local adapter
does, so both adapters rank alike. (Milvus's own ``hybrid_search`` rankers
normalise scores differently and see only each list's own top hits;
``milvus_server_fusion=True`` uses it anyway, for fewer round trips.)

milvus-lite differences handled here: BM25 scores come back negative (their sign
is flipped), a reopened collection must be loaded, and metadata filters are
resolved to document ids through the catalog instead of slow JSON filters.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hanrag.domain import Chunk, Hit, SearchFilters
from hanrag.embed.base import Vectors
from hanrag.errors import BackendError, ConfigError
from hanrag.index.base import DocumentChunks, IndexedChunk, IndexQuery, IndexStats, check_metadata_keys
from hanrag.index.fusion import FloatArray, fuse, top_k_indices
from hanrag.index.milvus_terms import acl_terms, decode_tokens, encode_principal, encode_tokens

COLLECTION = "hanrag_chunks"
_SCALARS = [
    "pk",
    "document_id",
    "position",
    "text",
    "title",
    "source",
    "content_hash",
    "date",
    "acl",
    "page",
    "sheet",
    "kind",
    "metadata",
]
_MAX_TEXT = 65535
_QUERY_LIMIT = 16384  # the most rows one Milvus query may return
_ROW_BATCH = 1000  # rows fetched or rewritten per call when a document's rows are read whole
_NO_PAGE = -1


def _skip_per_character_string_check() -> None:
    """pymilvus 3.0 "checks" each VARCHAR value of a row by handing the string to its
    list-of-strings check, which then walks the characters one by one: the check cannot
    fail (one character is never over the limit) and took a third of an upsert's time.
    Lengths are bounded by :meth:`MilvusIndex._row`, and the server checks them again."""
    with contextlib.suppress(ImportError):
        from pymilvus.client import entity_helper

        if hasattr(entity_helper, "CHECK_STR_ARRAY"):
            entity_helper.CHECK_STR_ARRAY = False


def _hit_key(hit: Any) -> str:
    """The primary key of a search hit (pymilvus names it after the field, older versions "id")."""
    keys = hit.keys() if hasattr(hit, "keys") else ()
    if "pk" in keys:
        return str(hit["pk"])
    if "id" in keys:
        return str(hit["id"])
    return str(hit["entity"]["pk"])


class MilvusIndex:
    backend = "milvus"

    def __init__(
        self,
        uri: str,
        *,
        collection: str = COLLECTION,
        index_type: str = "HNSW",
        index_params: dict[str, Any] | None = None,
        metadata_lookup: Callable[[dict[str, str]], list[str]] | None = None,
        metadata_keys: Callable[[list[str] | None], set[str]] | None = None,
        token: str = "",
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
        flush_rows: int | None = None,
        acl_filter: str = "auto",
    ) -> None:
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:
            raise ConfigError(
                "the milvus index needs the 'milvus' extra: pip install 'hanrag[milvus]'",
                code="missing_extra",
            ) from exc
        _skip_per_character_string_check()
        if not uri:
            raise ConfigError("index.milvus_uri is required for the milvus backend", code="invalid_settings")
        if "://" not in uri:
            Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.uri = uri
        self.collection = collection
        self._index_type = index_type
        self._index_params = index_params or (
            {"M": 16, "efConstruction": 200} if index_type == "HNSW" else {}
        )
        self._metadata_lookup = metadata_lookup
        self._metadata_keys = metadata_keys
        # The local index's BM25 parameters; set explicitly because milvus-lite defaults k1 to 1.5.
        self._bm25_params = {"bm25_k1": bm25_k1, "bm25_b": bm25_b}
        # milvus-lite filters its in-memory buffer row by row in Python, so the per-document
        # lookup of stale rows costs O(buffered rows) and a long batch (a migration, a large
        # ingest) goes quadratic; flushing every few thousand rows keeps it flat. A Milvus
        # server flushes by itself (0: never flush here before refresh()).
        self._flush_rows = (2048 if "://" not in uri else 0) if flush_rows is None else flush_rows
        if acl_filter not in ("auto", "array", "terms"):
            raise ConfigError(f"unknown ACL filter mode {acl_filter!r}", code="invalid_settings")
        # auto: the LIKE filter on milvus-lite, the indexed array filter on a server.
        self._acl_filter = ("terms" if "://" not in uri else "array") if acl_filter == "auto" else acl_filter
        self._has_acl_terms = True
        self._unflushed = 0
        self._lock = threading.RLock()
        try:
            self._client = MilvusClient(uri=uri, token=token) if token else MilvusClient(uri=uri)
        except Exception as exc:
            raise BackendError(
                f"cannot open Milvus at {uri}: {type(exc).__name__}", code="index_unavailable"
            ) from exc
        self._dimension: int | None = None
        if self._client.has_collection(collection):
            described = self._client.describe_collection(collection)
            names = set()
            for field in described.get("fields", []):
                names.add(field.get("name"))
                if field.get("name") == "dense":
                    self._dimension = int(field.get("params", {}).get("dim", 0)) or None
            self._has_acl_terms = "acl_terms" in names
            # A reopened collection is not searchable until it is loaded again.
            self._client.load_collection(collection)

    # ---------------------------------------------------------------- schema

    def _ensure_collection(self, dimension: int) -> None:
        if self._dimension is not None:
            if dimension != self._dimension:
                raise ConfigError(
                    f"embedding dimension {dimension} does not match the Milvus collection ({self._dimension})",
                    code="dimension_mismatch",
                )
            return
        from pymilvus import DataType, Function, FunctionType

        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=256)
        schema.add_field("document_id", DataType.VARCHAR, max_length=128)
        schema.add_field("position", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=_MAX_TEXT)
        schema.add_field("title", DataType.VARCHAR, max_length=2048)
        schema.add_field("source", DataType.VARCHAR, max_length=4096)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("date", DataType.INT64)
        schema.add_field(
            "acl", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=1024, max_length=256
        )
        schema.add_field("acl_terms", DataType.VARCHAR, max_length=_MAX_TEXT)
        schema.add_field("page", DataType.INT64)
        schema.add_field("sheet", DataType.VARCHAR, max_length=512)
        schema.add_field("kind", DataType.VARCHAR, max_length=16)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dimension)
        analyzer = {"tokenizer": "standard"}
        for name in ("morphemes", "bigrams"):
            schema.add_field(
                name, DataType.VARCHAR, max_length=_MAX_TEXT, enable_analyzer=True, analyzer_params=analyzer
            )
            schema.add_field(f"{name}_sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name=f"{name}_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=[name],
                    output_field_names=[f"{name}_sparse"],
                )
            )
        index_params = self._client.prepare_index_params()
        index_params.add_index(
            "dense", index_type=self._index_type, metric_type="IP", params=self._index_params
        )
        for name in ("morphemes", "bigrams"):
            index_params.add_index(
                f"{name}_sparse",
                index_type="SPARSE_INVERTED_INDEX",
                metric_type="BM25",
                params=dict(self._bm25_params),
            )
            # pymilvus 3 sends these as flat key/values, which a Milvus server reads but
            # milvus-lite ignores (it reads only the JSON "params" entry, and would score
            # with k1 = 1.5); send the JSON entry too (the server merges it, same values).
            index_params[-1].get_index_configs()["params"] = dict(self._bm25_params)
        index_params.add_index("document_id", index_type="INVERTED")
        index_params.add_index("date", index_type="INVERTED")
        if "://" in self.uri:
            # A server filters arrays through an INVERTED index; milvus-lite has no array
            # index (and refuses one), so there the LIKE filter on acl_terms is used.
            index_params.add_index("acl", index_type="INVERTED")
        self._client.create_collection(self.collection, schema=schema, index_params=index_params)
        self._client.load_collection(self.collection)
        self._dimension = dimension

    # ---------------------------------------------------------------- writes

    @staticmethod
    def _row(item: IndexedChunk, vector: Any) -> dict[str, Any]:
        c = item.chunk
        return {
            "pk": c.chunk_id,
            "document_id": c.document_id,
            "position": c.position,
            "text": c.text[: _MAX_TEXT // 3],  # VARCHAR limits count bytes; Hangul is 3 bytes in UTF-8
            "title": c.title[:600],
            "source": c.source[:1300],
            "content_hash": c.content_hash,
            "date": int(c.date),
            "acl": list(c.acl),
            "acl_terms": acl_terms(list(c.acl)),
            "page": _NO_PAGE if c.page is None else int(c.page),
            "sheet": (c.sheet or "")[:160],
            "kind": c.kind,
            "metadata": dict(c.metadata),
            "dense": np.asarray(vector, dtype=np.float32).tolist(),
            # An empty analysed text is refused; a lone space tokenises to nothing.
            "morphemes": encode_tokens(item.morphemes)[:_MAX_TEXT] or " ",
            "bigrams": encode_tokens(item.bigrams)[:_MAX_TEXT] or " ",
        }

    def upsert_document(self, document_id: str, chunks: list[IndexedChunk], vectors: Vectors) -> None:
        self.upsert_documents([(document_id, chunks, vectors)])

    def upsert_documents(self, documents: list[DocumentChunks]) -> None:
        for _document_id, chunks, vectors in documents:
            if len(chunks) != int(vectors.shape[0]):
                raise ValueError(f"{len(chunks)} chunks but {vectors.shape[0]} vectors")
        with self._lock:
            for _document_id, chunks, vectors in documents:
                if chunks:
                    self._ensure_collection(int(vectors.shape[1]))
            if self._dimension is None or not documents:
                return
            # Milvus has no multi-statement transactions: new rows go in first, then the
            # old ones (ids not in the new set) are deleted, so a crash in between leaves
            # the previous version searchable, never nothing. A batch costs one upsert and
            # one lookup instead of one each per document (each lookup scans milvus-lite's
            # unflushed rows in Python).
            rows = [
                self._row(item, vector)
                for _document_id, chunks, vectors in documents
                for item, vector in zip(chunks, vectors, strict=True)
            ]
            if rows:
                self._client.upsert(self.collection, rows)
            keep = {row["pk"] for row in rows}
            stale = [pk for pk in self._document_pks([d for d, _c, _v in documents]) if pk not in keep]
            if stale:
                self._client.delete(self.collection, ids=stale)
            self._written(len(rows) + len(stale))

    def _document_pks(self, document_ids: list[str]) -> list[str]:
        """Primary keys of every stored chunk of these documents (however many)."""
        expression = f"document_id in {json.dumps(sorted(set(document_ids)), ensure_ascii=False)}"
        rows = self._client.query(
            self.collection, filter=expression, output_fields=["pk"], limit=_QUERY_LIMIT
        )
        if len(rows) < _QUERY_LIMIT:
            return [row["pk"] for row in rows]
        # A query answers at most 16,384 rows; an iterator pages through the rest.
        pks: list[str] = []
        iterator = self._client.query_iterator(
            self.collection, batch_size=4096, filter=expression, output_fields=["pk"]
        )
        while batch := iterator.next():
            pks.extend(row["pk"] for row in batch)
        iterator.close()
        return pks

    def _written(self, rows: int) -> None:
        self._unflushed += rows
        if self._flush_rows and self._unflushed >= self._flush_rows:
            self._client.flush(self.collection)
            self._unflushed = 0

    def delete_document(self, document_id: str) -> int:
        with self._lock:
            if self._dimension is None:
                return 0
            pks = self._document_pks([document_id])
            if pks:
                self._client.delete(self.collection, ids=pks)
                self._written(len(pks))
            return len(pks)

    def set_document_acl(self, document_id: str, acl: list[str]) -> int:
        with self._lock:
            if self._dimension is None:
                return 0
            changed = 0
            for rows in self._document_rows(document_id, [*_SCALARS, "dense", "morphemes", "bigrams"]):
                for row in rows:
                    row["acl"] = list(acl)
                    if self._has_acl_terms:
                        row["acl_terms"] = acl_terms(list(acl))
                    row.pop("morphemes_sparse", None)
                    row.pop("bigrams_sparse", None)
                self._client.upsert(self.collection, rows)
                self._written(len(rows))
                changed += len(rows)
            return changed

    def _document_rows(self, document_id: str, fields: list[str]) -> Iterator[list[dict[str, Any]]]:
        """A document's stored rows, a bounded batch at a time."""
        pks = self._document_pks([document_id])
        for start in range(0, len(pks), _ROW_BATCH):
            rows = self._client.get(
                self.collection, ids=pks[start : start + _ROW_BATCH], output_fields=fields
            )
            if rows:
                yield [dict(row) for row in rows]

    def refresh(self) -> None:
        with self._lock:
            if self._dimension is not None:
                self._client.flush(self.collection)
                self._unflushed = 0

    # ---------------------------------------------------------------- filters

    def _expression(self, filters: SearchFilters) -> str:
        parts: list[str] = []
        if filters.principals is not None:
            if not filters.principals:
                return 'pk == ""'  # nobody's principals: nothing matches
            parts.append(self._acl_expression(filters.principals))
        if filters.date_from is not None:
            parts.append(f"date >= {int(filters.date_from)}")
        if filters.date_to is not None:
            parts.append(f"date <= {int(filters.date_to)}")
        document_ids = filters.document_ids
        if filters.metadata:
            check_metadata_keys(filters.metadata, self.metadata_keys(filters.principals))
            if self._metadata_lookup is None:
                raise ConfigError("metadata filters need the catalog lookup", code="unsupported_filter")
            matching = self._metadata_lookup(filters.metadata)
            document_ids = (
                matching if document_ids is None else [d for d in document_ids if d in set(matching)]
            )
        if document_ids is not None:
            if not document_ids:
                return 'pk == ""'
            parts.append(f"document_id in {json.dumps(list(document_ids), ensure_ascii=False)}")
        return " and ".join(parts)

    def _acl_expression(self, principals: list[str]) -> str:
        if self._acl_filter == "terms" and self._has_acl_terms:
            words = sorted({encode_principal(p) for p in principals})
            return "(" + " or ".join(f'acl_terms like "% {word} %"' for word in words) + ")"
        return f"array_contains_any(acl, {json.dumps(principals, ensure_ascii=False)})"

    def count_matching(self, filters: SearchFilters) -> int:
        with self._lock:
            if self._dimension is None:
                return 0
            expression = self._expression(filters)
            rows = self._client.query(self.collection, filter=expression or "", output_fields=["count(*)"])
            return int(rows[0]["count(*)"]) if rows else 0

    # ----------------------------------------------------------------- search

    def _signal(self, name: str, data: Any, expression: str, limit: int) -> dict[str, float]:
        field = {"dense": "dense", "bm25": "morphemes_sparse", "bigram": "bigrams_sparse"}[name]
        params = {"metric_type": "IP" if name == "dense" else "BM25"}
        if name == "dense" and self._index_type == "HNSW":
            params["params"] = {"ef": max(64, limit)}  # type: ignore[assignment]
        results = self._client.search(
            self.collection,
            data=[data],
            anns_field=field,
            limit=limit,
            filter=expression,
            search_params=params,
            output_fields=["pk"],
        )
        scores = {_hit_key(hit): float(hit["distance"]) for hit in (results[0] if results else [])}
        if name != "dense" and scores and all(v <= 0 for v in scores.values()):
            scores = {k: -v for k, v in scores.items()}  # milvus-lite reports BM25 negated
        return scores

    def search(self, query: IndexQuery) -> list[Hit]:
        with self._lock:
            if self._dimension is None:
                return []
            expression = self._expression(query.filters)
            inputs: dict[str, Any] = {}
            if query.weights.get("dense", 0) > 0 and query.vector is not None:
                inputs["dense"] = np.asarray(query.vector, dtype=np.float32).tolist()
            if query.weights.get("bm25", 0) > 0 and query.morphemes:
                inputs["bm25"] = encode_tokens(query.morphemes)
            if query.weights.get("bigram", 0) > 0 and query.bigrams:
                inputs["bigram"] = encode_tokens(query.bigrams)
            if not inputs:
                return []
            nominated: dict[str, dict[str, float]] = {
                name: self._signal(name, data, expression, query.candidates) for name, data in inputs.items()
            }
            union = sorted({pk for scores in nominated.values() for pk in scores})
            if not union:
                return []
            # Complete every signal's scores over the union (as the local index has them).
            restricted = f"pk in {json.dumps(union, ensure_ascii=False)}"
            if expression:
                restricted = f"({expression}) and {restricted}"
            for name, data in inputs.items():
                missing = [pk for pk in union if pk not in nominated[name]]
                if missing:
                    nominated[name].update(self._signal(name, data, restricted, len(union)))
            signals: dict[str, FloatArray] = {
                name: np.asarray([scores.get(pk, 0.0) for pk in union], dtype=np.float64)
                for name, scores in nominated.items()
            }
            fused = fuse(signals, query.weights, query.fusion, query.rrf_k)
            best = top_k_indices(fused, query.k)
            chosen = [union[i] for i in best]
            chunks = {c.chunk_id: c for c in self.get_chunks(chosen)}
        hits: list[Hit] = []
        for i in best:
            chunk = chunks.get(union[i])
            if chunk is None:
                continue
            hits.append(
                Hit(
                    chunk=chunk,
                    score=float(fused[i]),
                    dense_score=float(signals["dense"][i]) if "dense" in signals else None,
                    bm25_score=float(signals["bm25"][i]) if "bm25" in signals else None,
                    bigram_score=float(signals["bigram"][i]) if "bigram" in signals else None,
                )
            )
        return hits

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _to_chunk(row: dict[str, Any]) -> Chunk:
        return Chunk(
            chunk_id=row["pk"],
            document_id=row["document_id"],
            position=int(row["position"]),
            text=row["text"],
            title=row["title"],
            source=row["source"],
            content_hash=row["content_hash"],
            date=int(row["date"]),
            acl=list(row["acl"]),
            page=None if int(row["page"]) == _NO_PAGE else int(row["page"]),
            sheet=row["sheet"] or None,
            kind=row["kind"],
            metadata=dict(row["metadata"] or {}),
        )

    def get_chunks(self, chunk_ids: list[str]) -> list[Chunk]:
        if not chunk_ids or self._dimension is None:
            return []
        with self._lock:
            rows = self._client.get(self.collection, ids=list(chunk_ids), output_fields=_SCALARS)
        found = {row["pk"]: self._to_chunk(row) for row in rows}
        return [found[c] for c in chunk_ids if c in found]

    def document_chunks(self, document_id: str) -> list[Chunk]:
        if self._dimension is None:
            return []
        with self._lock:
            chunks = [self._to_chunk(r) for rows in self._document_rows(document_id, _SCALARS) for r in rows]
        return sorted(chunks, key=lambda c: c.position)

    def export_documents(self) -> Iterator[DocumentChunks]:
        """Every document with its chunks, stored tokens and vectors (for index migrations)."""
        fields = [*_SCALARS, "dense", "morphemes", "bigrams"]
        for document_id in sorted(self.document_chunk_counts()):
            with self._lock:
                rows = [row for rows in self._document_rows(document_id, fields) for row in rows]
            rows.sort(key=lambda row: int(row["position"]))
            if rows:
                chunks = [
                    IndexedChunk(
                        self._to_chunk(r), decode_tokens(r["morphemes"]), decode_tokens(r["bigrams"])
                    )
                    for r in rows
                ]
                yield document_id, chunks, np.asarray([r["dense"] for r in rows], dtype=np.float32)

    def iterate_rows(self, batch_size: int = 1000) -> Any:
        """Every stored row with its vector (for migrations)."""
        if self._dimension is None:
            return
        iterator = self._client.query_iterator(
            self.collection,
            batch_size=batch_size,
            filter="",
            output_fields=[*_SCALARS, "dense", "morphemes", "bigrams"],
        )
        while True:
            batch = iterator.next()
            if not batch:
                iterator.close()
                return
            yield from batch

    def document_chunk_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        if self._dimension is None:
            return counts
        with self._lock:
            iterator = self._client.query_iterator(
                self.collection, batch_size=4096, filter="", output_fields=["document_id"]
            )
            while True:
                batch = iterator.next()
                if not batch:
                    iterator.close()
                    break
                for row in batch:
                    counts[row["document_id"]] = counts.get(row["document_id"], 0) + 1
        return counts

    def metadata_keys(self, principals: list[str] | None = None) -> set[str]:
        return self._metadata_keys(principals) if self._metadata_keys is not None else set()

    def stats(self) -> IndexStats:
        with self._lock:
            if self._dimension is None:
                return IndexStats(
                    chunks=0, documents=0, dimension=None, disk_bytes=0, details={"uri": self.uri}
                )
            rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
            chunks = int(rows[0]["count(*)"]) if rows else 0
        disk = 0
        if "://" not in self.uri and Path(self.uri).exists():
            path = Path(self.uri)
            disk = sum(
                p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()
            )
        documents = len(self.document_chunk_counts())
        return IndexStats(
            chunks=chunks,
            documents=documents,
            dimension=self._dimension,
            disk_bytes=disk,
            details={"uri": self.uri, "collection": self.collection, "index_type": self._index_type},
        )

    def close(self) -> None:
        # Closing a client whose server went away is not an error.
        with self._lock, contextlib.suppress(Exception):
            self._client.close()
