"""OpenAI-compatible ``/v1/embeddings`` adapter (vLLM, TEI, Ollama, OpenAI).

The server does the model work; we add the configured query/passage prefixes
(e5/KURE-style models need them; set them empty for models that do not), batch
requests, and normalise the vectors so inner product is cosine similarity.
"""

from __future__ import annotations

import httpx
import numpy as np

from hanrag.embed.base import Vectors, estimate_tokens, l2_normalise
from hanrag.errors import BackendError
from hanrag.netpolicy import tls_context


class OpenAICompatEmbedder:
    backend = "openai"
    serial = False

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        batch_size: int = 32,
        query_prefix: str = "",
        passage_prefix: str = "",
    ) -> None:
        self.name = model
        self._url = base_url.rstrip("/") + "/embeddings"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout_s
        self._batch_size = batch_size
        self._query_prefix = query_prefix
        self._passage_prefix = passage_prefix
        self._dimension: int | None = None
        self._client: httpx.Client | None = None

    def load(self) -> None:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout, headers=self._headers, verify=tls_context())
        if self._dimension is None:
            self._dimension = int(self._request(["dimension probe"]).shape[1])

    @property
    def dimension(self) -> int:
        self.load()
        assert self._dimension is not None
        return self._dimension

    @property
    def device(self) -> str:
        return "remote"

    def _request(self, texts: list[str]) -> Vectors:
        assert self._client is not None
        try:
            response = self._client.post(self._url, json={"model": self.name, "input": texts})
        except httpx.HTTPError as exc:
            raise BackendError(
                f"embedding server {self._url} unreachable: {type(exc).__name__}",
                code="embedding_backend_unavailable",
            ) from exc
        if response.status_code != 200:
            raise BackendError(
                f"embedding server {self._url} answered {response.status_code}",
                code="embedding_backend_error",
            )
        try:
            items = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = np.asarray([item["embedding"] for item in items], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(
                f"embedding server {self._url} sent a malformed response", code="embedding_backend_error"
            ) from exc
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise BackendError(
                f"embedding server {self._url} returned {vectors.shape[0]} vectors for {len(texts)} inputs",
                code="embedding_backend_error",
            )
        return l2_normalise(vectors)

    def _encode(self, texts: list[str], prefix: str) -> Vectors:
        if self._client is None:
            self.load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        prefixed = [prefix + t for t in texts]
        return np.vstack(
            [
                self._request(prefixed[i : i + self._batch_size])
                for i in range(0, len(prefixed), self._batch_size)
            ]
        )

    def embed_queries(self, texts: list[str]) -> Vectors:
        return self._encode(texts, self._query_prefix)

    def embed_passages(self, texts: list[str]) -> Vectors:
        return self._encode(texts, self._passage_prefix)

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(self._passage_prefix + text)
