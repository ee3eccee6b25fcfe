"""The local index's in-memory state: rows in slot order and the BM25 postings.

* :class:`Rows` — the append-only float32 matrix (grown by doubling), dates, document
  codes, liveness and one boolean mask per ACL principal, so filters are array
  operations inside the query;
* :class:`LexicalPostings` — one bm25s index over stored token ids (Kiwi morphemes or
  character bigrams), rebuilt from SQLite without re-analysing any text.
"""

from __future__ import annotations

import array
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hanrag.index.fusion import FloatArray

BoolArray = npt.NDArray[np.bool_]
log = logging.getLogger("hanrag.index.local")


@dataclass
class Rows:
    """Per-row arrays in slot order (row i holds slot ``slots[i]``)."""

    dimension: int = 0
    size: int = 0
    slots: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    vectors: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    alive: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    dates: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    doc_codes: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    acl_masks: dict[str, BoolArray] = field(default_factory=dict)

    @property
    def capacity(self) -> int:
        return int(self.slots.shape[0])

    def reserve(self, needed: int, dimension: int) -> None:
        if self.dimension == 0:
            self.dimension = dimension
            self.vectors = np.zeros((0, dimension), dtype=np.float32)
        if needed <= self.capacity:
            return
        capacity = max(needed, self.capacity * 2, 1024)

        def grow(array: Any, fill: Any = 0) -> Any:
            shape = (capacity, *array.shape[1:])
            grown = np.full(shape, fill, dtype=array.dtype)
            grown[: self.size] = array[: self.size]
            return grown

        self.slots = grow(self.slots)
        self.vectors = grow(self.vectors)
        self.alive = grow(self.alive, False)
        self.dates = grow(self.dates)
        self.doc_codes = grow(self.doc_codes, -1)
        self.acl_masks = {p: grow(mask, False) for p, mask in self.acl_masks.items()}

    def row_of(self, slot: int) -> int | None:
        row = int(np.searchsorted(self.slots[: self.size], slot))
        if row < self.size and int(self.slots[row]) == slot:
            return row
        return None

    def set_acl(self, row: int, acl: list[str]) -> None:
        for mask in self.acl_masks.values():
            mask[row] = False
        for principal in acl:
            if principal not in self.acl_masks:
                self.acl_masks[principal] = np.zeros(self.capacity, dtype=np.bool_)
            self.acl_masks[principal][row] = True


class DocumentIds:
    """Each document's token ids as bm25s reads them, kept as one flat int32 array with
    offsets. A document's id list exists only while bm25s iterates over it, so a rebuild
    never holds every token of the corpus as Python objects at once (at 100k chunks that
    was over a gigabyte of transient memory)."""

    def __init__(self, flat: npt.NDArray[np.int32], offsets: npt.NDArray[np.int64]) -> None:
        self.flat = flat
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __iter__(self) -> Iterator[list[int]]:
        flat, offsets = self.flat, self.offsets
        for i in range(len(offsets) - 1):
            yield flat[offsets[i] : offsets[i + 1]].tolist()


class LexicalPostings:
    """One bm25s index over the live rows, rebuilt from stored tokens."""

    def __init__(self, column: str, k1: float, b: float) -> None:
        self.column = column
        self.k1 = k1
        self.b = b
        self.retriever: Any = None
        self.live_rows = np.zeros(0, dtype=np.int64)  # the matrix row of each BM25 document

    def build(
        self, path: Path, slots: npt.NDArray[np.int64], alive: BoolArray
    ) -> tuple[Any, npt.NDArray[np.int64]]:
        """Postings for a snapshot of the rows (their slots and alive flags), read through
        a connection of its own, so that no lock is held: (bm25s retriever or None, the
        matrix row of each BM25 document)."""
        import bm25s
        from bm25s.tokenization import Tokenized

        # Live rows only: a replaced or deleted chunk must not count as a document in the
        # BM25 statistics (N and the average length), or scores would drift with every
        # re-ingest until the process restarts. Rows written after the snapshot wait for
        # the next build.
        live: list[int] = []
        vocab: dict[str, int] = {}
        flat = array.array("i")
        offsets = [0]
        last_slot = int(slots[-1]) if slots.size else -1
        db = sqlite3.connect(str(path), check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            query = f"SELECT slot, {self.column} FROM chunks WHERE slot <= ? ORDER BY slot"
            for slot, tokens in db.execute(query, (last_slot,)):
                row = int(np.searchsorted(slots, slot))
                if row >= slots.size or int(slots[row]) != slot or not alive[row]:
                    continue
                live.append(row)
                if tokens:
                    flat.extend([vocab.setdefault(token, len(vocab)) for token in tokens.split(" ")])
                offsets.append(len(flat))
        finally:
            db.close()
        live_rows = np.asarray(live, dtype=np.int64)
        if not flat:
            return None, live_rows
        ids = DocumentIds(np.frombuffer(flat, dtype=np.int32), np.asarray(offsets, dtype=np.int64))
        corpus = Tokenized(ids=ids, vocab=vocab)
        retriever = bm25s.BM25(method="lucene", k1=self.k1, b=self.b)
        # No extra empty token: a query's tokens are checked against the vocabulary first.
        retriever.index(corpus, create_empty_token=False, show_progress=False)
        return retriever, live_rows

    def install(self, built: tuple[Any, npt.NDArray[np.int64]]) -> None:
        self.retriever, self.live_rows = built

    def scores(self, tokens: list[str], size: int) -> FloatArray:
        out = np.zeros(size, dtype=np.float64)
        if self.retriever is None or not tokens:
            return out
        vocab = self.retriever.vocab_dict
        known = [t for t in tokens if t in vocab]
        if not known:
            return out
        scores = np.asarray(self.retriever.get_scores(known), dtype=np.float64)
        inside = self.live_rows < size
        out[self.live_rows[inside]] = scores[: self.live_rows.shape[0]][inside]
        return out
