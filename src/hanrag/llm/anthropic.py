"""Anthropic's Messages API through the official SDK (``anthropic``), streamed.

Why the SDK and not raw HTTP: it tracks the API's versions, headers and event types, so
a new field or event does not break us. What we keep for ourselves:

* **Retries** belong to the router (breaker, backoff, fallback to the next provider
  before the first token), so the client is built with ``max_retries=0``: the SDK's own
  retries would hide 429s and 5xx from the breaker and multiply the latency.
* **Errors** map to the stable codes of :mod:`hanrag.llm.openai_compat`: cannot connect
  ``llm_unavailable``; timed out (connect, or no byte for ``timeout_s`` — the API sends
  ``ping`` events, so a quiet stream is a stalled one) ``llm_timeout``; an HTTP error
  ``llm_http_error`` with its status and ``Retry-After``; a malformed or unexpected event
  ``llm_bad_response``; a stream that ends without ``message_stop`` ``llm_stream_cut``.
  An ``error`` event inside a 200 stream (``overloaded_error`` mid-answer) gets the
  status that error type stands for (529, 429, 500...), so the router treats it as the
  HTTP error it would have been before the first byte.
* **The prompt**: system turns go to the ``system`` parameter (the API has no system
  role); images become base64 ``image`` blocks placed before the turn's text, as the API
  documentation recommends.
* **Sampling**: the SDK mirrors the API, and the 2.x SDK tested here (2.15) has no
  sampling parameters in ``messages.create()`` (no ``temperature``/``top_p``/``top_k``),
  so they are sent only when the installed SDK still has them: temperature (and top_k
  when set), never top_p as well — the Claude models of that time refused a request
  setting both. ``repetition_penalty`` has no counterpart and is ignored.

Each request gets its own client, closed when it ends, like the OpenAI-compatible
adapter's: an async HTTP pool is bound to the event loop that opened its sockets, and a
client kept across loops (tests, the CLI's ``asyncio.run`` per command) fails on close.
Building one costs well under a millisecond once the TLS context — the expensive part,
loading the CA bundle — is shared by all of them.
"""

from __future__ import annotations

import base64
import functools
import inspect
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx
from anthropic.resources.messages import AsyncMessages

from hanrag.llm.base import GenerationChunk, GenerationOptions, GenerationRequest, GeneratorError, Turn, Usage
from hanrag.llm.openai_compat import retry_after
from hanrag.settings import ProviderSettings

__all__ = ["AnthropicGenerator"]

DEFAULT_BASE_URL = "https://api.anthropic.com"

# The HTTP status each error type of the API stands for (docs: "Errors"), for an ``error``
# event that arrives inside a stream that already answered 200.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# Anthropic's stop reasons in the OpenAI vocabulary the rest of hanrag speaks.
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter"}


def _transport_errors() -> tuple[type[Exception], type[Exception], type[Exception]]:
    """(timeout, stream cut, any transport error) of the HTTP library the SDK runs on:
    ``httpx2`` from SDK 2.x on, ``httpx`` before. Raised while a stream's body is read,
    where the SDK does not wrap them."""
    try:
        import httpx2
    except ImportError:  # an SDK before 2.x, on httpx
        return httpx.TimeoutException, httpx.RemoteProtocolError, httpx.HTTPError
    return (
        httpx2.TimeoutException,
        httpx2.RemoteProtocolError,
        httpx2.HTTPError,
    )


_TIMEOUT, _CUT, _TRANSPORT = _transport_errors()

# Whether this SDK (hence the API version it speaks) still takes sampling parameters.
_SAMPLING = "temperature" in inspect.signature(AsyncMessages.create).parameters


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every client (honours SSL_CERT_FILE / SSL_CERT_DIR)."""
    return httpx.create_ssl_context()


def _base_url(url: str) -> str | None:
    """The SDK appends ``/v1/messages`` itself: accept a base URL copied with ``/v1``."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url or None


def _content(turn: Turn) -> str | list[dict[str, Any]]:
    if not turn.images:
        return turn.content
    blocks: list[dict[str, Any]] = [
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": image.mime_type,
                "data": base64.b64encode(image.data).decode("ascii"),
            },
        }
        for image in turn.images
    ]
    if turn.content:
        blocks.append({"type": "text", "text": turn.content})
    return blocks


def _messages(turns: list[Turn]) -> tuple[str | None, list[dict[str, Any]]]:
    """(system prompt, messages): the API takes the system text apart from the turns."""
    system = "\n\n".join(t.content for t in turns if t.role == "system" and t.content)
    messages = [
        {"role": "assistant" if t.role == "assistant" else "user", "content": _content(t)}
        for t in turns
        if t.role != "system"
    ]
    return system or None, messages


def _status_of(exc: anthropic.APIStatusError) -> int:
    if exc.status_code >= 400:
        return exc.status_code
    # An ``error`` event in a 200 stream: the SDK reports the stream's own status.
    kind = exc.type if isinstance(exc.type, str) else None
    return _ERROR_STATUS.get(kind or "", 500)


def _retry_after(exc: anthropic.APIStatusError) -> float | None:
    headers = exc.response.headers
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    return retry_after(headers.get("retry-after"))


class AnthropicGenerator:
    """A ``kind: anthropic`` provider of the registry (see the module docstring)."""

    is_llm = True

    def __init__(self, provider: ProviderSettings, defaults: GenerationOptions) -> None:
        self.name = provider.name
        self.model = provider.model
        self.base_url = _base_url(provider.base_url)
        self.can_see = provider.vision or "vision" in provider.roles
        self.defaults = defaults
        self._api_key = provider.api_key.get_secret_value() if provider.api_key else None
        self._timeout = anthropic.Timeout(provider.timeout_s, connect=provider.connect_timeout_s)

    def status(self) -> dict[str, object]:
        return {
            "backend": "anthropic",
            "name": self.name,
            "model": self.model,
            "base_url": self.base_url or DEFAULT_BASE_URL,
            "loaded": True,
            "device": "remote",
            "vision": self.can_see,
        }

    def _client(self) -> anthropic.AsyncAnthropic:
        """A client for one request (close it: ``async with``)."""
        return anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=self.base_url,
            timeout=self._timeout,
            max_retries=0,
            http_client=anthropic.DefaultAsyncHttpxClient(verify=_tls()),
        )

    def _params(self, messages: list[Turn], options: GenerationOptions) -> dict[str, Any]:
        system, turns = _messages(messages)
        params: dict[str, Any] = {
            "model": self.model,
            "messages": turns,
            "max_tokens": options.max_tokens,
        }
        if system is not None:
            params["system"] = system
        if _SAMPLING:
            params["temperature"] = options.temperature
            if options.top_k is not None:
                params["top_k"] = options.top_k
        if options.stop:
            params["stop_sequences"] = list(options.stop)
        return params

    def _error(self, exc: Exception) -> GeneratorError:
        where = f"Anthropic provider {self.name}"
        if isinstance(exc, anthropic.APITimeoutError | _TIMEOUT):
            return GeneratorError(f"{where} timed out", code="llm_timeout")
        if isinstance(exc, anthropic.APIConnectionError):
            return GeneratorError(f"{where} is unreachable", code="llm_unavailable")
        if isinstance(exc, anthropic.APIStatusError):
            code = _status_of(exc)
            return GeneratorError(
                f"{where} answered HTTP {code} ({exc.type or 'error'})",
                code="llm_http_error",
                status=code,
                retry_after_s=_retry_after(exc),
            )
        if isinstance(exc, anthropic.APIResponseValidationError | ValueError):
            return GeneratorError(f"{where} sent a malformed response", code="llm_bad_response")
        if isinstance(exc, _CUT):
            return GeneratorError(f"{where} cut the stream", code="llm_stream_cut")
        if isinstance(exc, _TRANSPORT):
            return GeneratorError(f"{where} failed: {type(exc).__name__}", code="llm_unavailable")
        # No credentials (the SDK raises TypeError when neither api_key nor its environment
        # or profile gives one), or another AnthropicError without a response: trying
        # again will not help.
        return GeneratorError(f"{where} failed: {exc}", code="llm_unavailable", transient=False)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        async for chunk in self.chat_stream(request.messages, request.options):
            yield chunk

    async def chat_stream(
        self, messages: list[Turn], options: GenerationOptions
    ) -> AsyncIterator[GenerationChunk]:
        params = self._params(messages, options)
        state = _StreamState()
        try:
            async with (
                self._client() as client,
                await client.messages.create(**params, stream=True) as events,
            ):
                async for event in events:
                    for chunk in state.feed(event):
                        yield chunk
                    if state.stopped:
                        break
        except GeneratorError:
            raise
        except (anthropic.AnthropicError, ValueError, TypeError, _TRANSPORT) as exc:
            raise self._error(exc) from exc
        if not state.stopped:
            raise GeneratorError(
                f"Anthropic provider {self.name} ended the stream before message_stop",
                code="llm_stream_cut",
            )
        yield GenerationChunk(usage=state.usage(), finish_reason=state.finish_reason or "stop")

    async def complete(self, messages: list[Turn], options: GenerationOptions) -> str:
        params = self._params(messages, options)
        try:
            async with self._client() as client:
                message = await client.messages.create(**params)
        except (anthropic.AnthropicError, ValueError, TypeError, _TRANSPORT) as exc:
            raise self._error(exc) from exc
        content = getattr(message, "content", None)
        if not isinstance(content, list):
            raise GeneratorError(
                f"Anthropic provider {self.name} sent a malformed message", code="llm_bad_response"
            )
        return "".join(
            block.text
            for block in content
            if getattr(block, "type", None) == "text" and isinstance(getattr(block, "text", None), str)
        )


class _StreamState:
    """Reads the raw event stream: text deltas out, usage and the stop reason kept."""

    def __init__(self) -> None:
        self.stopped = False
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None

    def usage(self) -> Usage | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return Usage(self.prompt_tokens, self.completion_tokens)

    def _input_tokens(self, usage: Any) -> None:
        counts = [
            getattr(usage, name, None)
            for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        ]
        if isinstance(counts[0], int):
            # Cached prompt tokens are prompt tokens too (billed at another rate).
            self.prompt_tokens = sum(c for c in counts if isinstance(c, int))
        output = getattr(usage, "output_tokens", None)
        if isinstance(output, int):
            self.completion_tokens = output

    def feed(self, event: Any) -> Iterator[GenerationChunk]:
        kind = getattr(event, "type", None)
        if not isinstance(kind, str):
            raise GeneratorError("Anthropic stream sent an event without a type", code="llm_bad_response")
        if kind == "message_start":
            message = getattr(event, "message", None)
            if message is None:
                raise GeneratorError("Anthropic message_start without a message", code="llm_bad_response")
            self._input_tokens(getattr(message, "usage", None))
        elif kind == "content_block_start":
            block = getattr(event, "content_block", None)
            text = getattr(block, "text", None) if getattr(block, "type", None) == "text" else None
            if text:
                yield GenerationChunk(text=self._text(text))
        elif kind == "content_block_delta":
            delta = getattr(event, "delta", None)
            delta_kind = getattr(delta, "type", None)
            if delta_kind is None:
                raise GeneratorError("Anthropic content_block_delta without a delta", code="llm_bad_response")
            # thinking_delta, signature_delta, input_json_delta: not answer text.
            if delta_kind == "text_delta":
                text = self._text(getattr(delta, "text", None))
                if text:
                    yield GenerationChunk(text=text)
        elif kind == "message_delta":
            delta = getattr(event, "delta", None)
            reason = getattr(delta, "stop_reason", None)
            if isinstance(reason, str):
                self.finish_reason = _FINISH.get(reason, reason)
            # Cumulative counts: output always, input when the API repeats it.
            self._input_tokens(getattr(event, "usage", None))
        elif kind == "message_stop":
            self.stopped = True
        # content_block_stop, and event types added after this adapter: nothing to do.

    @staticmethod
    def _text(text: Any) -> str:
        if not isinstance(text, str):
            raise GeneratorError("Anthropic stream sent non-text content", code="llm_bad_response")
        return text
