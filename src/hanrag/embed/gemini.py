"""Gemini embeddings through the official SDK (``google-genai``).

Gemini tells queries from passages by a *task type* (``RETRIEVAL_QUERY`` /
``RETRIEVAL_DOCUMENT``) instead of the e5-style text prefixes, so the configured
``query_prefix`` / ``passage_prefix`` are not applied: they would only add noise to the
text. Batches go to ``batchEmbedContents`` (the SDK uses it even for one text), at most
100 texts each (the API's limit); vectors are L2-normalised so inner product is cosine
similarity (Gemini normalises only its full-size vectors).

Also here, because ``hanrag.embed`` sits below ``hanrag.llm`` in the layering, is the
SDK plumbing the Gemini chat adapter shares: our own ``httpx`` clients (the SDK would
otherwise use aiohttp when installed, retry connection errors silently, and apply one
timeout to every phase of a request, or none), no SDK retries, one TLS context, and a
base URL split from its API version.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import numpy as np
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from hanrag.embed.base import Vectors, estimate_tokens, l2_normalise
from hanrag.errors import BackendError
from hanrag.netpolicy import tls_context

__all__ = [
    "GeminiEmbedder",
    "OwnTimeoutsAsyncClient",
    "OwnTimeoutsClient",
    "gemini_http_options",
    "split_base_url",
    "tls_context",
]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
# batchEmbedContents takes at most this many requests.
MAX_BATCH = 100

_VERSION = re.compile(r"^(?P<root>.*?)/(?P<version>v\d+(?:(?:alpha|beta)\d*)?)/?$")


class OwnTimeoutsAsyncClient(httpx.AsyncClient):
    """Ignores the per-request timeout the SDK passes (one float for every phase, or None
    for no timeout at all): this client's own ``httpx.Timeout`` applies instead."""

    def build_request(self, *args: Any, **kwargs: Any) -> httpx.Request:
        kwargs.pop("timeout", None)
        return super().build_request(*args, **kwargs)


class OwnTimeoutsClient(httpx.Client):
    """The synchronous twin of :class:`OwnTimeoutsAsyncClient`."""

    def build_request(self, *args: Any, **kwargs: Any) -> httpx.Request:
        kwargs.pop("timeout", None)
        return super().build_request(*args, **kwargs)


def split_base_url(url: str) -> tuple[str | None, str | None]:
    """(base URL, API version) from a configured URL. The SDK builds
    ``{base_url}/{api_version}/models/...`` and picks the version itself (``v1`` from SDK
    3.x, ``v1beta`` before), so ``https://host/v1beta`` gives ``("https://host", "v1beta")``
    and an empty URL the SDK's defaults."""
    url = url.strip().rstrip("/")
    if not url:
        return None, None
    match = _VERSION.match(url)
    if match is None:
        return url, None
    return match.group("root") or None, match.group("version")


def gemini_http_options(
    base_url: str, *, async_client: httpx.AsyncClient, sync_client: httpx.Client
) -> types.HttpOptions:
    """The SDK's HTTP options: our clients, no retries (the caller's job), the URL split."""
    root, version = split_base_url(base_url)
    return types.HttpOptions(
        base_url=root,
        api_version=version,
        httpx_async_client=async_client,
        httpx_client=sync_client,
        # Read by the SDK even with our clients; given, it skips loading a CA bundle.
        async_client_args={"ssl": tls_context()},
        retry_options=types.HttpRetryOptions(attempts=1),
    )


class GeminiEmbedder:
    backend = "gemini"
    serial = False

    def __init__(
        self,
        *,
        model: str,
        base_url: str = "",
        api_key: str | None = None,
        timeout_s: float = 60.0,
        batch_size: int = 32,
    ) -> None:
        self.name = model
        self._base_url = base_url
        self._where = base_url.strip().rstrip("/") or DEFAULT_BASE_URL
        self._api_key = api_key
        self._timeout = httpx.Timeout(timeout_s)
        self._batch_size = max(1, min(batch_size, MAX_BATCH))
        self._dimension: int | None = None
        self._client: genai.Client | None = None

    def load(self) -> None:
        if self._client is None:
            try:
                self._client = genai.Client(
                    api_key=self._api_key,
                    http_options=gemini_http_options(
                        self._base_url,
                        sync_client=OwnTimeoutsClient(timeout=self._timeout, verify=tls_context()),
                        # Never used (all calls here are synchronous); given, the SDK builds none.
                        async_client=OwnTimeoutsAsyncClient(timeout=self._timeout, verify=tls_context()),
                    ),
                )
            except ValueError as exc:  # no api_key, and none in GOOGLE_API_KEY / GEMINI_API_KEY
                raise BackendError(
                    f"Gemini embeddings cannot start: {exc}", code="embedding_backend_error"
                ) from exc
        if self._dimension is None:
            self._dimension = int(self._request(["dimension probe"], "RETRIEVAL_QUERY").shape[1])

    @property
    def dimension(self) -> int:
        self.load()
        assert self._dimension is not None
        return self._dimension

    @property
    def device(self) -> str:
        return "remote"

    def _request(self, texts: list[str], task_type: str) -> Vectors:
        assert self._client is not None
        where = f"Gemini embedding server {self._where}"
        try:
            response = self._client.models.embed_content(
                model=self.name,
                contents=[types.Content(role="user", parts=[types.Part.from_text(text=t)]) for t in texts],
                config=types.EmbedContentConfig(task_type=task_type),
            )
        except genai_errors.APIError as exc:
            raise BackendError(f"{where} answered {exc.code}", code="embedding_backend_error") from exc
        except httpx.HTTPError as exc:
            raise BackendError(
                f"{where} unreachable: {type(exc).__name__}", code="embedding_backend_unavailable"
            ) from exc
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BackendError(f"{where} sent a malformed response", code="embedding_backend_error") from exc
        try:
            vectors = np.asarray([e.values for e in response.embeddings or []], dtype=np.float32)
        except (ValueError, TypeError) as exc:
            raise BackendError(f"{where} sent a malformed response", code="embedding_backend_error") from exc
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise BackendError(
                f"{where} returned {len(response.embeddings or [])} vectors for {len(texts)} inputs",
                code="embedding_backend_error",
            )
        return l2_normalise(vectors)

    def _encode(self, texts: list[str], task_type: str) -> Vectors:
        if self._client is None:
            self.load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.vstack(
            [
                self._request(texts[i : i + self._batch_size], task_type)
                for i in range(0, len(texts), self._batch_size)
            ]
        )

    def embed_queries(self, texts: list[str]) -> Vectors:
        return self._encode(texts, "RETRIEVAL_QUERY")

    def embed_passages(self, texts: list[str]) -> Vectors:
        return self._encode(texts, "RETRIEVAL_DOCUMENT")

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)
