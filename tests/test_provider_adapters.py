"""The native Anthropic and Gemini adapters, through their official SDKs, against local
servers speaking each provider's wire protocol (``provider_servers``).

What must hold for the router above them: every failure comes out as a stable code
with the right status, ``Retry-After`` and transience, and exactly one HTTP request is
made per call (the SDKs' own retries are off — retrying is the router's job); the
prompt reaches each provider in its own format (system prompt apart, images as base64
blocks or inline data, assistant turns as ``assistant`` / ``model``); Korean survives the
round trip; Gemini embeddings ask for the right task type per side.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("anthropic", reason="the providers extra is not installed")
pytest.importorskip("google.genai", reason="the providers extra is not installed")

from hanrag.embed.factory import GEMINI_DEFAULT_MODEL, _build
from hanrag.embed.gemini import GeminiEmbedder, OwnTimeoutsAsyncClient, split_base_url
from hanrag.errors import BackendError
from hanrag.llm.anthropic import AnthropicGenerator
from hanrag.llm.base import (
    GenerationChunk,
    GenerationOptions,
    GenerationRequest,
    GeneratorError,
    ImageInput,
    Turn,
)
from hanrag.llm.gemini import GeminiGenerator
from hanrag.settings import EmbedSettings, ProviderSettings
from provider_servers import (
    EMBED,
    STREAM,
    Reply,
    anthropic_error,
    anthropic_event,
    anthropic_frames,
    anthropic_message,
    anthropic_server,
    anthropic_sse,
    cut_after,
    down_url,
    gemini_chunk,
    gemini_content,
    gemini_embeddings,
    gemini_error,
    gemini_frame,
    gemini_frames,
    gemini_server,
    gemini_sse,
    raw_sse,
    stall,
    stall_after,
    status,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
SYSTEM = "당신은 사내 규정 도우미입니다. 출처 번호를 [1]처럼 붙이세요."
QUESTION = "USB 사용 승인은 며칠 동안 유효한가요?"
ANSWER = ["USB 사용 승인은 ", "최대 30일 동안 유효합니다", " [1]."]
KEY = "sk-secret-never-shown"


def _turns(image: bool = True) -> list[Turn]:
    return [
        Turn("system", SYSTEM),
        Turn("user", "이전 질문"),
        Turn("assistant", "이전 답변"),
        Turn("user", QUESTION, [ImageInput("image/png", PNG)] if image else []),
    ]


def _provider(kind: str, url: str, **extra: Any) -> ProviderSettings:
    return ProviderSettings(
        name=f"{kind}-test",
        kind=kind,
        base_url=url,
        model=f"{kind}-model",
        api_key=KEY,
        timeout_s=extra.pop("timeout_s", 5.0),
        connect_timeout_s=1.0,
        **extra,
    )


def _anthropic(url: str, **extra: Any) -> AnthropicGenerator:
    return AnthropicGenerator(_provider("anthropic", url, **extra), GenerationOptions())


def _gemini(url: str, **extra: Any) -> GeminiGenerator:
    return GeminiGenerator(_provider("gemini", url, **extra), GenerationOptions())


def _drain(
    generator: AnthropicGenerator | GeminiGenerator, turns: list[Turn] | None = None
) -> list[GenerationChunk]:
    request = GenerationRequest(
        question=QUESTION,
        sources=[],
        messages=turns or _turns(),
        options=GenerationOptions(max_tokens=64, stop=["\n\n질문:"]),
    )

    async def collect() -> list[GenerationChunk]:
        return [chunk async for chunk in generator.stream(request)]

    return asyncio.run(collect())


def _failure(generator: AnthropicGenerator | GeminiGenerator) -> GeneratorError:
    with pytest.raises(GeneratorError) as caught:
        _drain(generator)
    return caught.value


# ------------------------------------------------------------------- Anthropic


def test_anthropic_streams_korean_text_and_usage_in_its_own_format() -> None:
    with anthropic_server(stream=[anthropic_sse(ANSWER, input_tokens=42, output_tokens=17)]) as server:
        chunks = _drain(_anthropic(server.url))
        [request] = server.recorded()
    assert "".join(c.text for c in chunks) == "".join(ANSWER)
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.as_dict() == {
        "prompt_tokens": 42,
        "completion_tokens": 17,
    }
    assert request["path"] == "/v1/messages"
    # SDK 2.x sends the key as a bearer token, older ones as x-api-key.
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers.get("x-api-key") == KEY or headers.get("authorization") == f"Bearer {KEY}"
    assert request["headers"]["anthropic-version"]
    body = request["body"]
    assert body["stream"] is True and body["model"] == "anthropic-model" and body["max_tokens"] == 64
    assert body["stop_sequences"] == ["\n\n질문:"]
    # The system prompt is a parameter of its own, never a turn.
    assert body["system"] == SYSTEM
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == "이전 질문"
    # The image goes first as a base64 block, then the question's text.
    image, text = body["messages"][-1]["content"]
    assert image == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()},
    }
    assert text == {"type": "text", "text": QUESTION}


def test_anthropic_complete_and_base_url_with_version() -> None:
    with anthropic_server(complete=[anthropic_message("<route>documents</route> 한국어 답")]) as server:
        generator = _anthropic(server.url + "/v1/")
        text = asyncio.run(generator.complete(_turns(image=False), GenerationOptions(max_tokens=32)))
        [request] = server.recorded()
    assert text == "<route>documents</route> 한국어 답"
    assert request["path"] == "/v1/messages"
    assert "stream" not in request["body"] or request["body"]["stream"] is False
    assert request["body"]["messages"][-1] == {"role": "user", "content": QUESTION}


def test_anthropic_skips_pings_thinking_and_unknown_events() -> None:
    frames = anthropic_frames(["답"])
    extra = [
        anthropic_event(
            "content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "음..."}}
        ),
        anthropic_event("brand_new_event", {"anything": 1}),
    ]
    with anthropic_server(stream=[raw_sse(*frames[:3], *extra, *frames[3:])]) as server:
        chunks = _drain(_anthropic(server.url))
    assert "".join(c.text for c in chunks) == "답"


def _anthropic_cases() -> list[Any]:
    first = anthropic_frames(["부분"])
    return [
        pytest.param(
            anthropic_error(429, "rate_limit_error", retry_after="3"),
            "llm_http_error",
            429,
            3.0,
            True,
            id="429",
        ),
        pytest.param(anthropic_error(500, "api_error"), "llm_http_error", 500, None, True, id="500"),
        pytest.param(
            anthropic_error(529, "overloaded_error", retry_after="1"),
            "llm_http_error",
            529,
            1.0,
            True,
            id="529",
        ),
        pytest.param(
            anthropic_error(400, "invalid_request_error"), "llm_http_error", 400, None, False, id="400"
        ),
        pytest.param(
            raw_sse(first[0], "event: content_block_delta\ndata: {not json"),
            "llm_bad_response",
            None,
            None,
            False,
            id="malformed-json",
        ),
        pytest.param(
            raw_sse(
                first[0],
                anthropic_event(
                    "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": 5}}
                ),
            ),
            "llm_bad_response",
            None,
            None,
            False,
            id="non-text-delta",
        ),
        pytest.param(
            raw_sse(first[0], "event: content_block_delta\ndata: [1, 2]"),
            "llm_bad_response",
            None,
            None,
            False,
            id="not-an-event",
        ),
        pytest.param(raw_sse(*first[:-1]), "llm_stream_cut", None, None, True, id="no-message-stop"),
        pytest.param(cut_after(*first[:4]), "llm_stream_cut", None, None, True, id="cut-mid-way"),
        pytest.param(
            raw_sse(
                first[0], anthropic_event("error", {"error": {"type": "overloaded_error", "message": "busy"}})
            ),
            "llm_http_error",
            529,
            None,
            True,
            id="error-event-in-stream",
        ),
        pytest.param(stall(2.0), "llm_timeout", None, None, True, id="stall"),
        pytest.param(stall_after(2.0, *first[:4]), "llm_timeout", None, None, True, id="stall-mid-way"),
    ]


@pytest.mark.parametrize(("reply", "code", "status_code", "retry_after", "transient"), _anthropic_cases())
def test_anthropic_failures_map_to_stable_codes(
    reply: Reply, code: str, status_code: int | None, retry_after: float | None, transient: bool
) -> None:
    with anthropic_server(stream=[reply]) as server:
        error = _failure(_anthropic(server.url, timeout_s=0.5))
        # One request: the SDK's retries are off (the router retries).
        assert len(server.recorded()) == 1
    assert (error.code, error.status, error.retry_after_s, error.transient) == (
        code,
        status_code,
        retry_after,
        transient,
    )
    assert KEY not in str(error)


def test_anthropic_retry_after_ms_and_unreachable() -> None:
    reply = status(
        429,
        {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
        headers={"retry-after-ms": "1500", "retry-after": "2"},
    )
    with anthropic_server(complete=[reply]) as server, pytest.raises(GeneratorError) as caught:
        asyncio.run(_anthropic(server.url).complete(_turns(), GenerationOptions()))
    assert (caught.value.code, caught.value.status, caught.value.retry_after_s) == (
        "llm_http_error",
        429,
        1.5,
    )
    error = _failure(_anthropic(down_url()))
    assert (error.code, error.transient) == ("llm_unavailable", True)


def test_anthropic_malformed_completion() -> None:
    with (
        anthropic_server(complete=[status(200, "<html>proxy error</html>")]) as server,
        pytest.raises(GeneratorError) as caught,
    ):
        asyncio.run(_anthropic(server.url).complete(_turns(), GenerationOptions()))
    assert caught.value.code == "llm_bad_response"


# ---------------------------------------------------------------------- Gemini


def test_gemini_streams_korean_text_and_usage_in_its_own_format() -> None:
    reply = gemini_sse(ANSWER, prompt_tokens=40, output_tokens=15, thought="(생각 중)")
    with gemini_server(stream=[reply]) as server:
        chunks = _drain(_gemini(server.url))
        [request] = server.recorded()
    # Thought parts are not answer text.
    assert "".join(c.text for c in chunks) == "".join(ANSWER)
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.as_dict() == {
        "prompt_tokens": 40,
        "completion_tokens": 15,
    }
    # SDK 3.x asks for API v1 (v1beta before); streaming is SSE.
    assert request["path"] == "/v1/models/gemini-model:streamGenerateContent?alt=sse"
    assert request["headers"]["x-goog-api-key"] == KEY
    body = request["body"]
    assert body["systemInstruction"]["parts"] == [{"text": SYSTEM}]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    image, text = body["contents"][-1]["parts"]
    assert image["inlineData"]["data"] == base64.b64encode(PNG).decode()
    assert (image["inlineData"].get("mimeType") or image["inlineData"].get("mime_type")) == "image/png"
    assert text == {"text": QUESTION}
    config = body["generationConfig"]
    assert config["maxOutputTokens"] == 64 and config["stopSequences"] == ["\n\n질문:"]
    assert config["temperature"] == pytest.approx(0.2)


def test_gemini_complete_and_base_url_with_version() -> None:
    with gemini_server(complete=[gemini_content("<route>none</route> 네, 가능합니다.")]) as server:
        generator = _gemini(server.url + "/v1beta/")
        text = asyncio.run(generator.complete(_turns(image=False), GenerationOptions(max_tokens=32)))
        [request] = server.recorded()
    assert text == "<route>none</route> 네, 가능합니다."
    assert request["path"] == "/v1beta/models/gemini-model:generateContent"
    assert split_base_url("https://example.test/v1alpha") == ("https://example.test", "v1alpha")
    assert split_base_url("") == (None, None)
    assert split_base_url("https://gw.example.test/gemini") == ("https://gw.example.test/gemini", None)


def _gemini_cases() -> list[Any]:
    first = gemini_frames(["부분", "나머지"])[0]
    return [
        pytest.param(
            gemini_error(429, retry_delay="7s"), "llm_http_error", 429, 7.0, True, id="429-retryinfo"
        ),
        pytest.param(gemini_error(429, retry_after="3"), "llm_http_error", 429, 3.0, True, id="429-header"),
        pytest.param(gemini_error(500), "llm_http_error", 500, None, True, id="500"),
        pytest.param(gemini_error(400), "llm_http_error", 400, None, False, id="400"),
        pytest.param(
            raw_sse(first, "data: {not json"), "llm_bad_response", None, None, False, id="malformed"
        ),
        pytest.param(
            raw_sse(first, 'data: {"candidates": "x"}'),
            "llm_bad_response",
            None,
            None,
            False,
            id="wrong-shape",
        ),
        pytest.param(
            raw_sse(first, "data: [1, 2]"), "llm_bad_response", None, None, False, id="not-a-response"
        ),
        pytest.param(
            raw_sse(gemini_frame({"promptFeedback": {"blockReason": "SAFETY"}})),
            "llm_bad_response",
            None,
            None,
            False,
            id="blocked-prompt",
        ),
        pytest.param(raw_sse(first), "llm_stream_cut", None, None, True, id="no-finish-reason"),
        pytest.param(cut_after(first), "llm_stream_cut", None, None, True, id="cut-mid-way"),
        pytest.param(
            raw_sse(
                first, gemini_frame({"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}})
            ),
            "llm_http_error",
            503,
            None,
            True,
            id="error-chunk-in-stream",
        ),
        pytest.param(stall(2.0), "llm_timeout", None, None, True, id="stall"),
        pytest.param(stall_after(2.0, first), "llm_timeout", None, None, True, id="stall-mid-way"),
    ]


@pytest.mark.parametrize(("reply", "code", "status_code", "retry_after", "transient"), _gemini_cases())
def test_gemini_failures_map_to_stable_codes(
    reply: Reply, code: str, status_code: int | None, retry_after: float | None, transient: bool
) -> None:
    with gemini_server(stream=[reply]) as server:
        error = _failure(_gemini(server.url, timeout_s=0.5))
        assert len(server.recorded(STREAM)) == 1
    assert (error.code, error.status, error.retry_after_s, error.transient) == (
        code,
        status_code,
        retry_after,
        transient,
    )
    assert KEY not in str(error)


def test_gemini_unreachable_and_failed_completion() -> None:
    error = _failure(_gemini(down_url()))
    assert (error.code, error.transient) == ("llm_unavailable", True)
    with (
        gemini_server(complete=[gemini_error(429, retry_delay="2.5s")]) as server,
        pytest.raises(GeneratorError) as caught,
    ):
        asyncio.run(_gemini(server.url).complete(_turns(), GenerationOptions()))
    assert (caught.value.code, caught.value.status, caught.value.retry_after_s) == (
        "llm_http_error",
        429,
        2.5,
    )
    assert len(server.recorded()) == 1


def test_gemini_keeps_its_own_connect_and_read_timeouts() -> None:
    """The SDK passes one per-request timeout (or None: none at all); ours must win."""

    async def built() -> Any:
        async with OwnTimeoutsAsyncClient(timeout=httpx.Timeout(7.0, connect=1.5)) as client:
            return client.build_request("POST", "http://127.0.0.1/", timeout=None).extensions["timeout"]

    assert asyncio.run(built()) == {"connect": 1.5, "read": 7.0, "write": 7.0, "pool": 7.0}


# ---------------------------------------------------------------- both, status


@pytest.mark.parametrize("make", [_anthropic, _gemini], ids=["anthropic", "gemini"])
def test_status_and_vision_never_show_the_key(make: Any) -> None:
    seeing = make("http://127.0.0.1:9", roles=["answer", "vision"])
    blind = make("http://127.0.0.1:9", roles=["answer"])
    flagged = make("http://127.0.0.1:9", roles=["answer"], vision=True)
    assert (seeing.can_see, blind.can_see, flagged.can_see) == (True, False, True)
    assert seeing.is_llm and seeing.name.endswith("-test")
    shown = json.dumps(seeing.status())
    assert KEY not in shown and seeing.status()["device"] == "remote"


# ----------------------------------------------------------- Gemini embeddings


def test_gemini_embeddings_batch_and_task_types() -> None:
    with gemini_server(embed=[gemini_embeddings(dimension=12)]) as server:
        embedder = GeminiEmbedder(model="embed-model", base_url=server.url, api_key=KEY, batch_size=3)
        passages = embedder.embed_passages(["연차", "휴가", "출장", "보안", "USB"])
        queries = embedder.embed_queries(["연차"])
        requests = server.recorded(EMBED)
    assert passages.shape == (5, 12) and queries.shape == (1, 12) and embedder.dimension == 12
    assert passages.dtype == np.float32
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-5)
    # The fake embeds text alone: the same text, the same vector on either side (no prefixes).
    assert float(queries[0] @ passages[0]) == pytest.approx(1.0, abs=1e-5)
    assert all(r["path"] == "/v1/models/embed-model:batchEmbedContents" for r in requests)
    tasks = [(len(r["body"]["requests"]), {q["taskType"] for q in r["body"]["requests"]}) for r in requests]
    # The dimension probe (a query), two passage batches of at most 3, then the query.
    assert tasks == [
        (1, {"RETRIEVAL_QUERY"}),
        (3, {"RETRIEVAL_DOCUMENT"}),
        (2, {"RETRIEVAL_DOCUMENT"}),
        (1, {"RETRIEVAL_QUERY"}),
    ]
    assert requests[1]["body"]["requests"][0]["content"]["parts"] == [{"text": "연차"}]
    assert embedder.embed_passages([]).shape == (0, 12)


def test_gemini_embedder_from_settings() -> None:
    with gemini_server(embed=[gemini_embeddings(dimension=4)]) as server:
        embedder = _build(EmbedSettings(backend="gemini", base_url=server.url + "/v1beta", api_key=KEY))
        assert embedder.backend == "gemini" and embedder.name == GEMINI_DEFAULT_MODEL
        assert embedder.embed_queries(["질문"]).shape == (1, 4)
        assert server.recorded()[-1]["path"] == f"/v1beta/models/{GEMINI_DEFAULT_MODEL}:batchEmbedContents"
    named = _build(EmbedSettings(backend="gemini", model="text-embedding-004"))
    assert named.name == "text-embedding-004"


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (gemini_error(429, retry_delay="1s"), "embedding_backend_error"),
        (status(200, "not json"), "embedding_backend_error"),
        (status(200, {"embeddings": [{"values": [1.0, 2.0]}]}), "embedding_backend_error"),
        (status(200, {"embeddings": [{"values": None}, {"values": [1.0]}]}), "embedding_backend_error"),
    ],
    ids=["429", "not-json", "too-few-vectors", "ragged"],
)
def test_gemini_embedding_failures(reply: Reply, code: str) -> None:
    with gemini_server(embed=[gemini_embeddings(), reply]) as server:
        embedder = GeminiEmbedder(model="embed-model", base_url=server.url, api_key=KEY)
        embedder.load()
        with pytest.raises(BackendError) as caught:
            embedder.embed_passages(["하나", "둘"])
    assert caught.value.code == code
    with pytest.raises(BackendError) as down:
        GeminiEmbedder(model="embed-model", base_url=down_url(), api_key=KEY).embed_queries(["x"])
    assert down.value.code == "embedding_backend_unavailable"


def test_gemini_chunk_helpers_speak_the_api_shape() -> None:
    """The fake's chunks parse with the SDK's own types (guards the fake, not the adapter)."""
    from google.genai import types

    parsed = types.GenerateContentResponse.model_validate(
        gemini_chunk("텍스트", finish="STOP", usage={"promptTokenCount": 1, "candidatesTokenCount": 2})
    )
    assert parsed.candidates and parsed.candidates[0].finish_reason == types.FinishReason.STOP
    assert parsed.usage_metadata is not None and parsed.usage_metadata.candidates_token_count == 2


def test_missing_api_key_is_a_clear_permanent_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key anywhere (settings or the SDKs' own environment variables): a non-transient
    error naming the provider, before any request."""
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_PROFILE",
        "GOOGLE_API_KEY",
        "GEMINI_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", "/nonexistent-hanrag-test")
    with anthropic_server() as a_server, gemini_server() as g_server:
        for generator in (
            AnthropicGenerator(
                ProviderSettings(name="a", kind="anthropic", base_url=a_server.url), GenerationOptions()
            ),
            GeminiGenerator(
                ProviderSettings(name="g", kind="gemini", base_url=g_server.url), GenerationOptions()
            ),
        ):
            error = _failure(generator)
            assert (error.code, error.transient) == ("llm_unavailable", False)
            assert generator.name in error.message
        assert a_server.recorded() == [] and g_server.recorded() == []
        with pytest.raises(BackendError) as caught:
            GeminiEmbedder(model="embed-model", base_url=g_server.url).embed_queries(["x"])
        assert caught.value.code == "embedding_backend_error"
