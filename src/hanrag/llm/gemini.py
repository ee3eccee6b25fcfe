"""Google's Gemini API through the official SDK (``google-genai``), streamed.

Why the SDK: it tracks the API's versions, URLs and response schema. What we keep:

* **Our own HTTP client.** The SDK is handed an ``httpx`` client of ours for every
  request (closed when the request ends), for three reasons. Its own async transport is
  aiohttp whenever aiohttp is installed, with other exception types and, on a connection
  error, a silent retry after a 1–10 s sleep; ours raises ``httpx`` errors that map to
  the stable codes as in the OpenAI-compatible adapter. The SDK applies one timeout to
  every phase of a request (and none when unset); ours keeps ``connect_timeout_s`` apart
  from ``timeout_s``, which bounds each read, so a stalled stream is caught and a long
  answer that keeps streaming is not cut. And a pool bound to one event loop must not
  outlive it.
* **No retries** (``HttpRetryOptions(attempts=1)``): retries, backoff and fallback are
  the router's, which must see every 429 and 5xx.
* **Errors**: cannot connect ``llm_unavailable``; timed out ``llm_timeout``; an HTTP error
  (or an ``{"error": ...}`` chunk inside the stream) ``llm_http_error`` with its status and
  the wait it asked for (a ``Retry-After`` header, or the ``google.rpc.RetryInfo`` detail
  Google sends on 429 instead); a malformed chunk or a blocked prompt ``llm_bad_response``;
  a stream that ends without a candidate's ``finishReason`` ``llm_stream_cut`` (the API has
  no end-of-stream event: the last chunk carries the finish reason). The SDK silently
  drops JSON that does not fit its schema, so a chunk with neither candidate content, a
  finish reason, usage nor prompt feedback counts as malformed.
* **The prompt**: system turns go to ``system_instruction``, assistant turns are role
  ``model``, images are ``inline_data`` parts placed before the turn's text. Thought
  parts (thinking models) are not answer text.
* **The URL**: the SDK builds ``{base_url}/{api_version}/models/{model}:{method}`` and
  chooses the version itself (``v1`` from SDK 3.x, ``v1beta`` before), so a base URL
  copied with its version (``.../v1beta``) is split into both.

The SDK plumbing (clients, HTTP options) is shared with the embedder in
:mod:`hanrag.embed.gemini`, which sits below this layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import httpx
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from hanrag.embed.gemini import (
    OwnTimeoutsAsyncClient,
    OwnTimeoutsClient,
    gemini_http_options,
    tls_context,
)
from hanrag.llm.base import GenerationChunk, GenerationOptions, GenerationRequest, GeneratorError, Turn, Usage
from hanrag.llm.openai_compat import retry_after
from hanrag.settings import ProviderSettings

__all__ = ["GeminiGenerator"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

# Gemini's finish reasons in the OpenAI vocabulary the rest of hanrag speaks.
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "LANGUAGE": "content_filter",
}


def retry_delay(details: Any) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"retryDelay": "37s"``)."""
    error = details.get("error", details) if isinstance(details, dict) else None
    items = error.get("details") if isinstance(error, dict) else None
    for item in items if isinstance(items, list) else []:
        delay = item.get("retryDelay") if isinstance(item, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


def _headers(exc: genai_errors.APIError) -> Any:
    headers = getattr(exc.response, "headers", None)
    return headers if headers is not None and hasattr(headers, "get") else {}


def _retry_after(exc: genai_errors.APIError) -> float | None:
    headers = _headers(exc)
    value = headers.get("retry-after") or headers.get("Retry-After")
    waited = retry_after(value) if isinstance(value, str) else None
    return waited if waited is not None else retry_delay(exc.details)


def _parts(turn: Turn) -> list[types.Part]:
    parts = [types.Part.from_bytes(data=image.data, mime_type=image.mime_type) for image in turn.images]
    if turn.content or not parts:
        parts.append(types.Part.from_text(text=turn.content))
    return parts


def _contents(turns: list[Turn]) -> tuple[str | None, list[types.Content]]:
    """(system instruction, contents): Gemini takes the system text apart from the turns."""
    system = "\n\n".join(t.content for t in turns if t.role == "system" and t.content)
    contents = [
        types.Content(role="model" if t.role == "assistant" else "user", parts=_parts(t))
        for t in turns
        if t.role != "system"
    ]
    return system or None, contents


def _text(response: types.GenerateContentResponse) -> str:
    """The answer text of the first candidate (thought parts left out)."""
    candidates = response.candidates or []
    content = candidates[0].content if candidates else None
    texts = []
    for part in (content.parts if content is not None else None) or []:
        if part.thought:
            continue
        if part.text is not None:
            if not isinstance(part.text, str):
                raise GeneratorError("Gemini sent non-text content", code="llm_bad_response")
            texts.append(part.text)
    return "".join(texts)


def _finish(response: types.GenerateContentResponse) -> str | None:
    candidates = response.candidates or []
    reason = candidates[0].finish_reason if candidates else None
    if reason is None:
        return None
    name = reason.value if isinstance(reason, types.FinishReason) else str(reason)
    if name in ("", "FINISH_REASON_UNSPECIFIED"):
        return None
    return _FINISH.get(name, name.lower())


def _blocked(response: types.GenerateContentResponse) -> str | None:
    feedback = response.prompt_feedback
    reason = feedback.block_reason if feedback is not None else None
    if reason is None:
        return None
    return reason.value if isinstance(reason, types.BlockedReason) else str(reason)


def _usage(response: types.GenerateContentResponse) -> Usage | None:
    meta = response.usage_metadata
    if meta is None:
        return None
    output = meta.candidates_token_count
    if meta.thoughts_token_count is not None:
        # Thinking tokens are billed as output.
        output = (output or 0) + meta.thoughts_token_count
    return Usage(meta.prompt_token_count, output)


class GeminiGenerator:
    """A ``kind: gemini`` provider of the registry (see the module docstring)."""

    is_llm = True

    def __init__(self, provider: ProviderSettings, defaults: GenerationOptions) -> None:
        self.name = provider.name
        self.model = provider.model
        self.base_url = provider.base_url.strip().rstrip("/")
        self.can_see = provider.vision or "vision" in provider.roles
        self.defaults = defaults
        self._api_key = provider.api_key.get_secret_value() if provider.api_key else None
        self._timeout = httpx.Timeout(provider.timeout_s, connect=provider.connect_timeout_s)
        # Never used for generation (all async), but given, the SDK does not build its own.
        self._sync = OwnTimeoutsClient(timeout=self._timeout, verify=tls_context())

    def status(self) -> dict[str, object]:
        return {
            "backend": "gemini",
            "name": self.name,
            "model": self.model,
            "base_url": self.base_url or DEFAULT_BASE_URL,
            "loaded": True,
            "device": "remote",
            "vision": self.can_see,
        }

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[genai.Client]:
        """A client for one request, on an HTTP client of ours closed when it ends."""
        async with OwnTimeoutsAsyncClient(timeout=self._timeout, verify=tls_context()) as http:
            try:
                client = genai.Client(
                    api_key=self._api_key,
                    http_options=gemini_http_options(
                        self.base_url, async_client=http, sync_client=self._sync
                    ),
                )
            except ValueError as exc:  # no api_key, and none in GOOGLE_API_KEY / GEMINI_API_KEY
                raise GeneratorError(
                    f"Gemini provider {self.name} cannot start: {exc}",
                    code="llm_unavailable",
                    transient=False,
                ) from exc
            yield client

    def _config(self, system: str | None, options: GenerationOptions) -> types.GenerateContentConfig:
        return types.GenerateContentConfig(
            system_instruction=system,
            max_output_tokens=options.max_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            top_k=float(options.top_k) if options.top_k is not None else None,
            stop_sequences=list(options.stop) or None,
        )

    def _error(self, exc: Exception) -> GeneratorError:
        where = f"Gemini provider {self.name}"
        if isinstance(exc, genai_errors.APIError):
            status = exc.code if isinstance(exc.code, int) and exc.code >= 400 else 500
            return GeneratorError(
                f"{where} answered HTTP {status} ({exc.status or 'error'})",
                code="llm_http_error",
                status=status,
                retry_after_s=_retry_after(exc),
            )
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return GeneratorError(f"{where} is unreachable", code="llm_unavailable")
        if isinstance(exc, httpx.TimeoutException):
            return GeneratorError(f"{where} timed out", code="llm_timeout")
        if isinstance(exc, httpx.RemoteProtocolError):
            return GeneratorError(f"{where} cut the stream", code="llm_stream_cut")
        if isinstance(exc, httpx.HTTPError):
            return GeneratorError(f"{where} failed: {type(exc).__name__}", code="llm_unavailable")
        # UnknownApiResponseError (not JSON), pydantic's ValidationError (JSON of the wrong
        # shape) and what the SDK's converters raise on a shape they do not expect.
        return GeneratorError(f"{where} sent a malformed response", code="llm_bad_response")

    async def _responses(
        self, messages: list[Turn], options: GenerationOptions
    ) -> AsyncGenerator[types.GenerateContentResponse, None]:
        """The SDK's stream, its exceptions mapped (only SDK code runs inside the ``try``)."""
        system, contents = _contents(messages)
        try:
            async with self._client() as client:
                responses = await client.aio.models.generate_content_stream(
                    model=self.model, contents=contents, config=self._config(system, options)
                )
                async for response in responses:
                    yield response
        except _SDK_ERRORS as exc:
            raise self._error(exc) from exc

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        async for chunk in self.chat_stream(request.messages, request.options):
            yield chunk

    async def chat_stream(
        self, messages: list[Turn], options: GenerationOptions
    ) -> AsyncIterator[GenerationChunk]:
        finish: str | None = None
        usage: Usage | None = None
        async with contextlib.aclosing(self._responses(messages, options)) as responses:
            async for response in responses:
                for chunk in self._read(response):
                    yield chunk
                usage = _usage(response) or usage
                finish = _finish(response) or finish
        if finish is None:
            raise GeneratorError(
                f"Gemini provider {self.name} ended the stream without a finish reason",
                code="llm_stream_cut",
            )
        yield GenerationChunk(usage=usage, finish_reason=finish)

    def _read(self, response: types.GenerateContentResponse) -> Iterator[GenerationChunk]:
        meaningful = any(
            c.content is not None or c.finish_reason is not None for c in response.candidates or []
        )
        if not meaningful and response.usage_metadata is None and response.prompt_feedback is None:
            # The SDK drops what does not fit its schema (a JSON list, ``"candidates": "x"``
            # becomes one empty candidate) and hands over an empty response.
            raise GeneratorError(
                f"Gemini provider {self.name} sent an unexpected chunk", code="llm_bad_response"
            )
        blocked = _blocked(response)
        if blocked is not None:
            raise GeneratorError(
                f"Gemini provider {self.name} blocked the prompt ({blocked})",
                code="llm_bad_response",
            )
        text = _text(response)
        if text:
            yield GenerationChunk(text=text)

    async def complete(self, messages: list[Turn], options: GenerationOptions) -> str:
        system, contents = _contents(messages)
        try:
            async with self._client() as client:
                response = await client.aio.models.generate_content(
                    model=self.model, contents=contents, config=self._config(system, options)
                )
        except _SDK_ERRORS as exc:
            raise self._error(exc) from exc
        for _ in self._read(response):
            pass
        if not response.candidates:
            raise GeneratorError(f"Gemini provider {self.name} sent no candidate", code="llm_bad_response")
        return _text(response)


_SDK_ERRORS: tuple[type[Exception], ...] = (
    genai_errors.APIError,
    httpx.HTTPError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
)
