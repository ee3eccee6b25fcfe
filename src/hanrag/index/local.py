"""Local index adapter: NumPy dense matrix + bm25s over Kiwi tokens + SQLite.

Design (embedded default, one machine, no services):

* SQLite (``index.db`` in the data directory) is the source of truth: every chunk
  row holds its text, metadata, ACL, lexical tokens and vector. A document is
  replaced in one transaction, so a crash mid-ingest leaves the previous
  consistent state on disk.
* In memory, rows are kept in slot order: an append-only float32 matrix that
  grows by doubling (adding or replacing a document appends rows and marks the
  old ones dead — the matrix is never rebuilt from scratch), date and document
  arrays, and one boolean mask per ACL principal. Filters are therefore boolean
  array operations inside the query, never a post-filter of a top-k.
* Lexical scoring uses two bm25s indexes (Kiwi morphemes and character bigrams).
  bm25s has no incremental update, so postings are rebuilt lazily from the tokens
  stored in SQLite (never re-analysed) before the first query after a write batch.
* Other processes writing the same directory are picked up through SQLite's
  ``data_version`` and a change log; new rows are appended, deletions and ACL
  changes applied, without reloading everything.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from hanrag.domain import Chunk, Hit, SearchFilters
from hanrag.embed.base import Vectors
from hanrag.errors import ConfigError
from hanrag.index.base import DocumentChunks, IndexedChunk, IndexQuery, IndexStats, check_metadata_keys
from hanrag.index.fusion import FloatArray, fuse, top_k_indices
from hanrag.index.local_memory import BoolArray, LexicalPostings, Rows
from hanrag.index.local_store import CHUNK_COLUMNS, SCHEMA, row_to_chunk

log = logging.getLogger("hanrag.index.local")


class LocalIndex:
    backend = "local"

    def __init__(self, directory: Path, *, bm25_k1: float = 1.2, bm25_b: float = 0.75) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / "index.db"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(SCHEMA)
        self._rows = Rows()
        self._doc_ids: list[str] = []
        self._doc_code: dict[str, int] = {}
        self._doc_meta: list[dict[str, str]] = []
        self._max_slot = 0
        self._last_change = 0
        self._data_version = -1
        self._lexical = {
            "bm25": LexicalPostings("morphemes", bm25_k1, bm25_b),
            "bigram": LexicalPostings("bigrams", bm25_k1, bm25_b),
        }
        self._lexical_dirty = True
        self._lexical_built = False  # postings have been built at least once
        self._build_lock = threading.Lock()  # one postings build at a time
        self._own_writes_pending = False  # this object wrote since the last build
        self._background: threading.Thread | None = None  # a rebuild for others' writes
        with self._lock:
            stored = self._db.execute("SELECT value FROM meta WHERE key = 'dimension'").fetchone()
            if stored:
                self._rows.reserve(0, int(stored[0]))
            self._last_change = int(
                self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
            )
            self._load_new_rows()
            self._data_version = self._current_data_version()

    # ----------------------------------------------------------------- sync

    def _current_data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _code_for(self, document_id: str, metadata: dict[str, str]) -> int:
        code = self._doc_code.get(document_id)
        if code is None:
            code = len(self._doc_ids)
            self._doc_ids.append(document_id)
            self._doc_code[document_id] = code
            self._doc_meta.append(metadata)
        else:
            self._doc_meta[code] = metadata
        return code

    def _append(
        self,
        slot: int,
        document_id: str,
        date: int,
        acl: list[str],
        metadata: dict[str, str],
        vector: npt.NDArray[np.float32],
    ) -> None:
        rows = self._rows
        rows.reserve(rows.size + 1, vector.shape[0])
        row = rows.size
        rows.slots[row] = slot
        rows.vectors[row] = vector
        rows.alive[row] = True
        rows.dates[row] = date
        rows.doc_codes[row] = self._code_for(document_id, metadata)
        rows.size += 1
        # A new row is False in every mask already: only its own principals need setting.
        for principal in acl:
            if principal not in rows.acl_masks:
                rows.acl_masks[principal] = np.zeros(rows.capacity, dtype=np.bool_)
            rows.acl_masks[principal][row] = True
        self._max_slot = max(self._max_slot, slot)

    def _load_new_rows(self) -> None:
        """Append rows written (by anyone) after the last slot we hold."""
        cursor = self._db.execute(
            "SELECT slot, document_id, date, acl, metadata, vector FROM chunks WHERE slot > ? ORDER BY slot",
            (self._max_slot,),
        )
        loaded = 0
        for slot, document_id, date, acl, metadata, blob in cursor:
            vector = np.frombuffer(blob, dtype=np.float32)
            self._append(int(slot), document_id, int(date), json.loads(acl), json.loads(metadata), vector)
            loaded += 1
        if loaded:
            self._lexical_dirty = True

    def _apply_changes(self) -> None:
        changes = self._db.execute(
            "SELECT seq, slot, kind FROM changes WHERE seq > ? ORDER BY seq", (self._last_change,)
        ).fetchall()
        acl_slots: list[int] = []
        for seq, slot, kind in changes:
            self._last_change = int(seq)
            row = self._rows.row_of(int(slot))
            if row is None:
                continue
            if kind == "delete":
                self._rows.alive[row] = False
                self._lexical_dirty = True
            elif kind == "acl":
                acl_slots.append(int(slot))
        for start in range(0, len(acl_slots), 500):
            batch = acl_slots[start : start + 500]
            marks = ",".join("?" * len(batch))
            for slot, acl in self._db.execute(f"SELECT slot, acl FROM chunks WHERE slot IN ({marks})", batch):
                row = self._rows.row_of(int(slot))
                if row is not None:
                    self._rows.set_acl(row, json.loads(acl))

    def _sync(self) -> None:
        """Follow writes made by other processes since we last looked."""
        version = self._current_data_version()
        if version == self._data_version:
            return
        self._load_new_rows()
        self._apply_changes()
        self._data_version = version

    # --------------------------------------------------------------- writes

    def _check_dimension(self, vectors: Vectors) -> None:
        dimension = int(vectors.shape[1])
        if self._rows.dimension and dimension != self._rows.dimension:
            raise ConfigError(
                f"embedding dimension {dimension} does not match the index ({self._rows.dimension}); "
                "the embedding model changed: rebuild the index into a new data directory",
                code="dimension_mismatch",
            )

    def upsert_documents(self, documents: list[DocumentChunks]) -> None:
        # One SQLite transaction per document keeps each replacement all-or-nothing.
        for document_id, chunks, vectors in documents:
            self.upsert_document(document_id, chunks, vectors)

    def upsert_document(self, document_id: str, chunks: list[IndexedChunk], vectors: Vectors) -> None:
        if len(chunks) != int(vectors.shape[0]):
            raise ValueError(f"{len(chunks)} chunks but {vectors.shape[0]} vectors")
        with self._lock:
            if chunks:
                self._check_dimension(vectors)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._sync()
                old = [
                    int(r[0])
                    for r in self._db.execute("SELECT slot FROM chunks WHERE document_id = ?", (document_id,))
                ]
                self._db.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
                self._db.executemany(
                    "INSERT INTO changes (slot, kind) VALUES (?, 'delete')", [(s,) for s in old]
                )
                new_slots: list[int] = []
                for item, vector in zip(chunks, vectors, strict=True):
                    c = item.chunk
                    cursor = self._db.execute(
                        "INSERT INTO chunks (chunk_id, document_id, position, text, title, source,"
                        " content_hash, date, acl, page, sheet, kind, metadata, morphemes, bigrams, vector)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            c.chunk_id,
                            c.document_id,
                            c.position,
                            c.text,
                            c.title,
                            c.source,
                            c.content_hash,
                            c.date,
                            json.dumps(c.acl, ensure_ascii=False),
                            c.page,
                            c.sheet,
                            c.kind,
                            json.dumps(c.metadata, ensure_ascii=False),
                            " ".join(item.morphemes),
                            " ".join(item.bigrams),
                            np.asarray(vector, dtype=np.float32).tobytes(),
                        ),
                    )
                    new_slots.append(int(cursor.lastrowid or 0))
                if chunks and not self._rows.dimension:
                    self._db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('dimension', ?)",
                        (str(vectors.shape[1]),),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            # Memory follows only after the commit succeeded.
            for slot in old:
                row = self._rows.row_of(slot)
                if row is not None:
                    self._rows.alive[row] = False
            for slot, item, vector in zip(new_slots, chunks, vectors, strict=True):
                c = item.chunk
                self._append(
                    slot,
                    document_id,
                    c.date,
                    list(c.acl),
                    dict(c.metadata),
                    np.asarray(vector, dtype=np.float32),
                )
            self._last_change = int(
                self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
            )
            self._data_version = self._current_data_version()
            self._lexical_dirty = True
            self._own_writes_pending = True

    def delete_document(self, document_id: str) -> int:
        with self._lock:
            self._sync()
            removed = self._alive_count_of(document_id)
            self.upsert_document(
                document_id, [], np.zeros((0, max(self._rows.dimension, 1)), dtype=np.float32)
            )
            return removed

    def _alive_count_of(self, document_id: str) -> int:
        code = self._doc_code.get(document_id)
        if code is None:
            return 0
        size = self._rows.size
        return int(np.count_nonzero((self._rows.doc_codes[:size] == code) & self._rows.alive[:size]))

    def set_document_acl(self, document_id: str, acl: list[str]) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._sync()
                slots = [
                    int(r[0])
                    for r in self._db.execute("SELECT slot FROM chunks WHERE document_id = ?", (document_id,))
                ]
                self._db.execute(
                    "UPDATE chunks SET acl = ? WHERE document_id = ?",
                    (json.dumps(acl, ensure_ascii=False), document_id),
                )
                self._db.executemany(
                    "INSERT INTO changes (slot, kind) VALUES (?, 'acl')", [(s,) for s in slots]
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            for slot in slots:
                row = self._rows.row_of(slot)
                if row is not None:
                    self._rows.set_acl(row, acl)
            self._last_change = int(
                self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
            )
            self._data_version = self._current_data_version()
            return len(slots)

    def refresh(self) -> None:
        """Bring the lexical postings up to date with every write seen so far.

        Until this process has searched, there are no postings to keep up to date and
        nothing is built: a CLI ingest does not pay for postings it never uses (at 100k
        chunks, seconds), and the first search builds them anyway.
        """
        if self._lexical_built:
            self._build_postings(wait=True)
        else:
            with self._lock:
                self._sync()

    def _build_postings(self, *, wait: bool) -> None:
        """Rebuild the lexical postings if anything was written since the last build.

        The build runs outside the index lock: searches meanwhile answer from the previous
        postings, in which rows written since have no lexical score (and removed rows are
        filtered out as always). One build at a time; with ``wait=False`` a caller that
        finds one under way returns at once instead. Never call this while holding the
        index lock (the build takes it to install).
        """
        if not self._build_lock.acquire(blocking=wait):
            return
        try:
            with self._lock:
                self._sync()
                if not self._lexical_dirty:
                    return
                self._lexical_dirty = self._own_writes_pending = False
                size = self._rows.size
                slots = self._rows.slots[:size].copy()
                alive = self._rows.alive[:size].copy()
            try:
                for lexical in self._lexical.values():
                    built = lexical.build(self.path, slots, alive)
                    with self._lock:
                        lexical.install(built)
                self._lexical_built = True
            except BaseException:
                with self._lock:
                    self._lexical_dirty = True
                raise
        finally:
            self._build_lock.release()

    # ---------------------------------------------------------------- reads

    def _filter_mask(self, filters: SearchFilters) -> BoolArray:
        rows = self._rows
        size = rows.size
        mask = rows.alive[:size].copy()
        if filters.principals is not None:
            allowed = np.zeros(size, dtype=np.bool_)
            for principal in filters.principals:
                principal_mask = rows.acl_masks.get(principal)
                if principal_mask is not None:
                    allowed |= principal_mask[:size]
            mask &= allowed
        # Live rows the caller may read: what metadata keys are known from.
        readable = mask.copy() if filters.metadata else mask
        if filters.date_from is not None:
            mask &= rows.dates[:size] >= filters.date_from
        if filters.date_to is not None:
            mask &= rows.dates[:size] <= filters.date_to
        if filters.document_ids is not None:
            codes = [self._doc_code[d] for d in filters.document_ids if d in self._doc_code]
            mask &= np.isin(rows.doc_codes[:size], np.asarray(codes, dtype=np.int32))
        if filters.metadata:
            check_metadata_keys(filters.metadata, self._metadata_keys_of(readable))
            for key, value in filters.metadata.items():
                codes = [code for code, meta in enumerate(self._doc_meta) if meta.get(key) == value]
                mask &= np.isin(rows.doc_codes[:size], np.asarray(codes, dtype=np.int32))
        return mask

    def count_matching(self, filters: SearchFilters) -> int:
        with self._lock:
            self._sync()
            return int(np.count_nonzero(self._filter_mask(filters)))

    def _refresh_in_background(self) -> None:
        """Rebuild the postings in a thread of its own: for writes of other processes, which
        no search of this one should wait for."""
        if self._background is not None and self._background.is_alive():
            return
        self._background = threading.Thread(
            target=self._background_refresh, name="hanrag-postings", daemon=True
        )
        self._background.start()

    def _background_refresh(self) -> None:
        try:
            self._build_postings(wait=False)
        except Exception as exc:  # the next search starts another try
            log.warning("postings rebuild failed", extra={"error_type": type(exc).__name__})

    def search(self, query: IndexQuery) -> list[Hit]:
        # Postings are brought up to date before a search when this process wrote since the
        # last build (it reads its own writes) or when there are none yet. A build under way
        # in another thread is not waited for: the previous postings answer meanwhile.
        if self._own_writes_pending or not self._lexical_built:
            self._build_postings(wait=not self._lexical_built)
        with self._lock:
            self._sync()
            if self._lexical_dirty:  # written by other processes: rebuilt beside this search
                self._refresh_in_background()
            rows = self._rows
            size = rows.size
            if size == 0:
                return []
            candidates = np.flatnonzero(self._filter_mask(query.filters))
            if candidates.size == 0:
                return []
            signals: dict[str, FloatArray] = {}
            if query.weights.get("dense", 0) > 0 and query.vector is not None:
                if candidates.size * 4 > size:
                    # Most rows pass the filters: one product over the matrix is cheaper than
                    # copying the candidate rows out first.
                    signals["dense"] = (rows.vectors[:size] @ query.vector)[candidates].astype(np.float64)
                else:
                    signals["dense"] = (rows.vectors[candidates] @ query.vector).astype(np.float64)
            lexical_tokens = {"bm25": query.morphemes, "bigram": query.bigrams}
            for name, lexical in self._lexical.items():
                if query.weights.get(name, 0) > 0 and lexical_tokens[name]:
                    signals[name] = lexical.scores(lexical_tokens[name], size)[candidates]
        if not signals:
            return []
        # Each signal nominates its best candidates; fusion sees their union with
        # every signal's real score (not just the ones that nominated them).
        nominated = np.unique(
            np.concatenate(
                [self._nominate(name, scores, query.candidates) for name, scores in signals.items()]
            )
        )
        fused = fuse({n: s[nominated] for n, s in signals.items()}, query.weights, query.fusion, query.rrf_k)
        best = top_k_indices(fused, query.k)
        picked = nominated[best]
        slots = [int(rows.slots[candidates[i]]) for i in picked]
        chunks = self._chunks_by_slot(slots)
        hits: list[Hit] = []
        for position, slot in zip(best, slots, strict=True):
            chunk = chunks.get(slot)
            if chunk is None:  # deleted by another process in the meantime
                continue
            index = int(nominated[position])
            hits.append(
                Hit(
                    chunk=chunk,
                    score=float(fused[position]),
                    dense_score=float(signals["dense"][index]) if "dense" in signals else None,
                    bm25_score=float(signals["bm25"][index]) if "bm25" in signals else None,
                    bigram_score=float(signals["bigram"][index]) if "bigram" in signals else None,
                )
            )
        return hits

    @staticmethod
    def _nominate(name: str, scores: FloatArray, count: int) -> npt.NDArray[np.intp]:
        """A signal's best candidates; a lexical signal nominates only chunks sharing a term
        with the query (as Milvus's BM25 search does), never arbitrary zero scores."""
        top = top_k_indices(scores, count)
        return top if name == "dense" else top[scores[top] > 0]

    def _chunks_by_slot(self, slots: list[int]) -> dict[int, Chunk]:
        if not slots:
            return {}
        marks = ",".join("?" * len(slots))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE slot IN ({marks})", slots
            ).fetchall()
        return {int(r[0]): row_to_chunk(r) for r in rows}

    def get_chunks(self, chunk_ids: list[str]) -> list[Chunk]:
        if not chunk_ids:
            return []
        found: dict[str, Chunk] = {}
        with self._lock:
            for start in range(0, len(chunk_ids), 500):
                batch = chunk_ids[start : start + 500]
                marks = ",".join("?" * len(batch))
                for row in self._db.execute(
                    f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE chunk_id IN ({marks})", batch
                ):
                    chunk = row_to_chunk(row)
                    found[chunk.chunk_id] = chunk
        return [found[c] for c in chunk_ids if c in found]

    def document_chunks(self, document_id: str) -> list[Chunk]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE document_id = ? ORDER BY position", (document_id,)
            ).fetchall()
        return [row_to_chunk(r) for r in rows]

    def export_documents(self) -> Iterator[tuple[str, list[IndexedChunk], Vectors]]:
        """Every document with its chunks, stored tokens and vectors (for index migrations)."""
        with self._lock:
            document_ids = [
                r[0] for r in self._db.execute("SELECT DISTINCT document_id FROM chunks ORDER BY document_id")
            ]
        for document_id in document_ids:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {CHUNK_COLUMNS}, morphemes, bigrams, vector FROM chunks WHERE document_id = ? "
                    "ORDER BY position",
                    (document_id,),
                ).fetchall()
            if not rows:
                continue
            chunks = [
                IndexedChunk(
                    chunk=row_to_chunk(tuple(row[:-3])),
                    morphemes=row[-3].split(" ") if row[-3] else [],
                    bigrams=row[-2].split(" ") if row[-2] else [],
                )
                for row in rows
            ]
            vectors = np.vstack([np.frombuffer(row[-1], dtype=np.float32) for row in rows])
            yield document_id, chunks, vectors

    def document_chunk_counts(self) -> dict[str, int]:
        with self._lock:
            return {
                doc: int(n)
                for doc, n in self._db.execute(
                    "SELECT document_id, COUNT(*) FROM chunks GROUP BY document_id"
                )
            }

    def metadata_keys(self, principals: list[str] | None = None) -> set[str]:
        with self._lock:
            self._sync()
            return self._metadata_keys_of(self._filter_mask(SearchFilters(principals=principals)))

    def _metadata_keys_of(self, rows_mask: BoolArray) -> set[str]:
        keys: set[str] = set()
        for code in np.unique(self._rows.doc_codes[: self._rows.size][rows_mask]):
            keys.update(self._doc_meta[int(code)])
        return keys

    def stats(self) -> IndexStats:
        with self._lock:
            self._sync()
            size = self._rows.size
            alive = self._rows.alive[:size]
            live_docs = np.unique(self._rows.doc_codes[:size][alive]).size if size else 0
            disk = sum(p.stat().st_size for p in self.directory.glob("index.db*") if p.is_file())
            return IndexStats(
                chunks=int(np.count_nonzero(alive)),
                documents=int(live_docs),
                dimension=self._rows.dimension or None,
                disk_bytes=disk,
                details={
                    "rows_in_memory": size,
                    "dead_rows": int(size - np.count_nonzero(alive)),
                    "principals": len(self._rows.acl_masks),
                    "matrix_mb": round(self._rows.vectors.nbytes / 2**20, 1),
                },
            )

    def close(self) -> None:
        if self._background is not None:
            self._background.join(timeout=120)  # a rebuild reads through self._db's data
        with self._lock:
            self._db.close()
