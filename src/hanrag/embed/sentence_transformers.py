"""sentence-transformers adapter for a model in a local directory (extra ``st``).

For GPU hosts that keep e.g. KURE-v1 or BGE-M3 on disk; never downloads: the
model path must be a directory and the hub is forced offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hanrag.embed.base import Vectors
from hanrag.errors import ConfigError


def resolve_device(device: str) -> str:
    """``auto``: CUDA when torch sees a GPU, else Apple's MPS when there, else the CPU."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


class SentenceTransformersEmbedder:
    backend = "sentence_transformers"
    # torch releases the GIL and is safe for concurrent encode calls on one model.
    serial = False

    def __init__(
        self,
        model_path: str,
        *,
        device: str = "auto",
        batch_size: int = 32,
        query_prefix: str = "",
        passage_prefix: str = "",
    ) -> None:
        self.name = model_path
        self._device = device
        self._batch_size = batch_size
        self._query_prefix = query_prefix
        self._passage_prefix = passage_prefix
        self._model: Any = None

    def load(self) -> None:
        if self._model is not None:
            return
        path = Path(self.name).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"sentence-transformers model directory not found: {path}", code="model_not_found"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError(
                "the sentence_transformers backend needs the 'st' extra: pip install 'hanrag[st]'",
                code="missing_extra",
            ) from exc
        self._device = resolve_device(self._device)
        self._model = SentenceTransformer(str(path), device=self._device)

    @property
    def dimension(self) -> int:
        self.load()
        return int(self._model.get_sentence_embedding_dimension())

    @property
    def device(self) -> str:
        return self._device

    def _encode(self, texts: list[str], prefix: str) -> Vectors:
        self.load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            [prefix + t for t in texts],
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_queries(self, texts: list[str]) -> Vectors:
        return self._encode(texts, self._query_prefix)

    def embed_passages(self, texts: list[str]) -> Vectors:
        return self._encode(texts, self._passage_prefix)

    def count_tokens(self, text: str) -> int:
        self.load()
        return len(self._model.tokenizer(self._passage_prefix + text)["input_ids"])
