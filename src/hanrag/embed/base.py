"""Embeddings port."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


@dataclass(slots=True)
class ModelStatus:
    backend: str
    name: str
    loaded: bool
    dimension: int | None
    device: str
    # Of all the model's handles together (RSS growth while loading).
    load_seconds: float | None
    memory_mb: float | None
    # A second handle of a serial model for queries (embed.query_handle), and its share.
    query_handle: bool = False
    query_handle_load_seconds: float | None = None
    query_handle_memory_mb: float | None = None
    # Why the model could not be loaded (the last attempt), None when it loads.
    error_message: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "name": self.name,
            "loaded": self.loaded,
            "dimension": self.dimension,
            "device": self.device,
            "load_seconds": _rounded(self.load_seconds, 3),
            "memory_mb": _rounded(self.memory_mb, 1),
            "handles": 2 if self.query_handle else 1,
            "query_handle": {
                "load_seconds": _rounded(self.query_handle_load_seconds, 3),
                "memory_mb": _rounded(self.query_handle_memory_mb, 1),
            }
            if self.query_handle
            else None,
            "error_message": self.error_message,
        }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors.

    Queries and passages are embedded differently (e5-style prefixes, or the
    server's own handling), so the port has one method for each.
    ``load()`` is idempotent and may be slow; the others call it when needed.
    """

    backend: str
    name: str
    # True when calls must not overlap (in-process engines with one native handle).
    serial: bool

    def load(self) -> None: ...

    @property
    def dimension(self) -> int: ...

    @property
    def device(self) -> str: ...

    def embed_queries(self, texts: list[str]) -> Vectors: ...

    def embed_passages(self, texts: list[str]) -> Vectors: ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model would see for ``text`` (exact or a close estimate)."""
        ...


def l2_normalise(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32, copy=False)


def estimate_tokens(text: str) -> int:
    """Subword-token estimate for servers whose tokenizer we cannot call.

    Measured on multilingual-e5 (XLM-R sentencepiece) over Korean prose: about one
    token per 1.6 characters of Hangul and one per 4 characters of ASCII.
    """
    hangul = sum(1 for ch in text if "\uac00" <= ch <= "\ud7a3")
    other = len(text) - hangul
    return int(hangul / 1.6 + other / 4) + 2
