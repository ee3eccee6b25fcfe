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
    load_seconds: float | None
    memory_mb: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "name": self.name,
            "loaded": self.loaded,
            "dimension": self.dimension,
            "device": self.device,
            "load_seconds": None if self.load_seconds is None else round(self.load_seconds, 3),
            "memory_mb": None if self.memory_mb is None else round(self.memory_mb, 1),
        }


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
