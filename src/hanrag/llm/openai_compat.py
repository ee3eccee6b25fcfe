"""OpenAI-compatible chat completions with streaming (vLLM, llama.cpp server, Ollama /v1, OpenAI).

Failures map to stable codes: ``llm_unavailable`` (cannot connect),
``llm_timeout`` (no first token or a stalled stream), ``llm_http_error`` (non-200),
``llm_bad_response`` (malformed JSON or SSE), ``llm_stream_cut`` (the stream ended
without a finish reason or ``[DONE]``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from hanrag.llm.base import GenerationChunk, GenerationOptions, GenerationRequest, GeneratorError, Turn, Usage
from hanrag.netpolicy import tls_context

__all__ = ["GeneratorError", "OpenAICompatGenerator"]


def message_json(turn: Turn) -> dict[str, Any]:
    """A chat message; a turn with images becomes OpenAI's content parts (text, then each
    image as a base64 ``data:`` URL), which vLLM, Ollama and llama.cpp's server accept too."""
    if not turn.images:
        return {"role": turn.role, "content": turn.content}
    parts: list[dict[str, Any]] = [{"type": "text", "text": turn.content}]
    for image in turn.images:
        encoded = base64.b64encode(image.data).decode("ascii")
        parts.append({"type": "image_url", "image_url": {"url": f"data:{image.mime_type};base64,{encoded}"}})
    return {"role": turn.role, "content": parts}


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import time

    return max(0.0, moment.timestamp() - time.time())


def http_error(response: httpx.Response) -> GeneratorError:
    return GeneratorError(
        f"LLM server answered HTTP {response.status_code}",
        code="llm_http_error",
        status=response.status_code,
        retry_after_s=retry_after(response.headers.get("retry-after")),
    )


class OpenAICompatGenerator:
    is_llm = True
    # Whether the model sees images is the operator's word (ProviderSettings.vision / the
    # vision role), which the registry reads; the adapter itself sends them when given.
    can_see = False

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        defaults: GenerationOptions | None = None,
    ) -> None:
        self.name = model
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        self.defaults = defaults or GenerationOptions()

    def status(self) -> dict[str, object]:
        return {
            "backend": "openai",
            "name": self.name,
            "base_url": self.base_url,
            "loaded": True,
            "device": "remote",
        }

    @staticmethod
    def _body(messages: list[Turn], options: GenerationOptions, model: str, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": [message_json(m) for m in messages],
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        # Sampling knobs that vLLM and llama.cpp accept but OpenAI itself does not:
        # only sent when configured, so OpenAI proper never sees them.
        if options.top_k is not None:
            body["top_k"] = options.top_k
        if options.repetition_penalty is not None:
            body["repetition_penalty"] = options.repetition_penalty
            body["repeat_penalty"] = options.repetition_penalty
        if options.stop:
            body["stop"] = options.stop
        return body

    def _error(self, exc: httpx.HTTPError) -> GeneratorError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return GeneratorError(f"LLM server {self.base_url} is unreachable", code="llm_unavailable")
        if isinstance(exc, httpx.TimeoutException):
            return GeneratorError(f"LLM server {self.base_url} timed out", code="llm_timeout")
        if isinstance(exc, httpx.RemoteProtocolError):
            return GeneratorError(f"LLM server {self.base_url} cut the stream", code="llm_stream_cut")
        return GeneratorError(
            f"LLM server {self.base_url} failed: {type(exc).__name__}", code="llm_unavailable"
        )

    async def chat_stream(
        self, messages: list[Turn], options: GenerationOptions
    ) -> AsyncIterator[GenerationChunk]:
        body = self._body(messages, options, self.name, stream=True)
        finished = False
        try:
            async with (
                httpx.AsyncClient(
                    timeout=self._timeout, headers=self._headers, verify=tls_context()
                ) as client,
                client.stream("POST", f"{self.base_url}/chat/completions", json=body) as response,
            ):
                if response.status_code != 200:
                    await response.aread()
                    raise http_error(response)
                async for line in response.aiter_lines():
                    line = line.strip()
                    if not line or line.startswith(":") or not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        finished = True
                        break
                    try:
                        event = json.loads(payload)
                    except json.JSONDecodeError as exc:
                        raise GeneratorError(
                            "LLM server sent malformed JSON", code="llm_bad_response"
                        ) from exc
                    chunk = self._parse_event(event)
                    if chunk.finish_reason:
                        finished = True
                    if chunk.text or chunk.usage or chunk.finish_reason:
                        yield chunk
        except httpx.HTTPError as exc:
            raise self._error(exc) from exc
        if not finished:
            raise GeneratorError("LLM stream ended before the answer was complete", code="llm_stream_cut")

    @staticmethod
    def _parse_event(event: Any) -> GenerationChunk:
        if not isinstance(event, dict):
            raise GeneratorError("LLM server sent an unexpected event", code="llm_bad_response")
        if "error" in event:
            raise GeneratorError(f"LLM server reported an error: {event['error']}", code="llm_http_error")
        usage = None
        if isinstance(event.get("usage"), dict):
            usage = Usage(event["usage"].get("prompt_tokens"), event["usage"].get("completion_tokens"))
        choices = event.get("choices")
        if not isinstance(choices, list):
            raise GeneratorError("LLM server sent an event without choices", code="llm_bad_response")
        if not choices:
            return GenerationChunk(usage=usage)
        choice = choices[0]
        delta = choice.get("delta") or {}
        text = delta.get("content") or choice.get("text") or ""
        if not isinstance(text, str):
            raise GeneratorError("LLM server sent non-text content", code="llm_bad_response")
        return GenerationChunk(text=text, usage=usage, finish_reason=choice.get("finish_reason"))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        async for chunk in self.chat_stream(request.messages, request.options):
            yield chunk

    async def complete(self, messages: list[Turn], options: GenerationOptions) -> str:
        body = self._body(messages, options, self.name, stream=False)
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, headers=self._headers, verify=tls_context()
            ) as client:
                response = await client.post(f"{self.base_url}/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise self._error(exc) from exc
        if response.status_code != 200:
            raise http_error(response)
        try:
            return str(response.json()["choices"][0]["message"]["content"] or "")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise GeneratorError("LLM server sent a malformed completion", code="llm_bad_response") from exc
