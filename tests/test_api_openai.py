"""OpenAI-compatible endpoints through the official ``openai`` client against a real server on loopback.

The engine has its own sessions over the session's sample index (read-only), so
nothing here embeds the samples again or writes to the shared corpus.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from api_server import (
    LiveServer,
    close_engine_on_index,
    engine_on_index,
    parse_sse,
    start_server,
    with_api,
)
from conftest import SampleCorpus
from hanrag.engine import Engine

PASSWORD = "비밀번호는 최소 몇 자 이상이어야 하나요?"
SOURCE_KEYS = {"n", "chunk_id", "document_id", "source", "title", "page"}


@dataclass
class Served:
    engine: Engine
    live: LiveServer  # default settings
    footnotes: LiveServer  # api.openai_footnotes = True
    client: openai.OpenAI
    footnotes_client: openai.OpenAI


def _client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def served(
    samples_engine: SampleCorpus, shared_cache_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    engine = engine_on_index(samples_engine.engine, tmp_path_factory.mktemp("api-openai"), shared_cache_path)
    live = start_server(engine)
    footnotes = start_server(engine, with_api(engine.settings, openai_footnotes=True))
    try:
        yield Served(engine, live, footnotes, _client(live), _client(footnotes))
    finally:
        live.stop()
        footnotes.stop()
        close_engine_on_index(engine)


def check_sources(sources: Any) -> list[dict[str, Any]]:
    assert isinstance(sources, list) and sources
    for source in sources:
        assert set(source) == SOURCE_KEYS
        assert isinstance(source["n"], int) and source["title"] and source["chunk_id"]
    return sources


def test_chat_completion(served: Served) -> None:
    response = served.client.chat.completions.create(
        model="hanrag", messages=[{"role": "user", "content": PASSWORD}]
    )
    assert response.object == "chat.completion" and response.id.startswith("chatcmpl-")
    assert response.model == "hanrag"
    choice = response.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    content = choice.message.content or ""
    assert "10자" in content
    assert response.model_extra is not None
    sources = check_sources(response.model_extra["sources"])
    assert sources[0]["title"] == "주식회사 한빛테크 정보보안정책"
    assert all(f"[{s['n']}]" in content for s in sources)
    assert "\n[1] " not in content  # footnotes are off by default
    assert response.usage is not None and response.usage.total_tokens >= 0


def test_raw_response_carries_sources_and_request_id(served: Served) -> None:
    raw = served.client.chat.completions.with_raw_response.create(
        model="hanrag",
        messages=[{"role": "system", "content": "한국어로 답하세요."}, {"role": "user", "content": PASSWORD}],
        extra_headers={"x-request-id": "openai-raw-1"},
    )
    assert raw.headers["x-request-id"] == "openai-raw-1"
    body = json.loads(raw.text)
    check_sources(body["sources"])
    assert body["choices"][0]["message"]["content"] == raw.parse().choices[0].message.content


def test_streaming_chat_completion(served: Served) -> None:
    messages: Any = [{"role": "user", "content": PASSWORD}]
    whole = (
        served.client.chat.completions.create(model="hanrag", messages=messages).choices[0].message.content
    )
    chunks = list(served.client.chat.completions.create(model="hanrag", messages=messages, stream=True))
    assert len(chunks) >= 3
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.model == "hanrag" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole and "10자" in text


def test_streaming_wire_format_and_sources(served: Served) -> None:
    body = {"model": "hanrag", "stream": True, "messages": [{"role": "user", "content": PASSWORD}]}
    response = httpx.post(f"{served.live.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert all(e.event is None for e in events)  # OpenAI streams use bare data: lines
    assert events[-1].data == "[DONE]"
    payloads = [e.json() for e in events[:-1]]
    final = payloads[-1]
    assert final["choices"][0]["finish_reason"] == "stop" and final["choices"][0]["delta"] == {}
    check_sources(final["sources"])
    assert all("sources" not in p for p in payloads[:-1])


def test_earlier_messages_are_memory(served: Served) -> None:
    follow_up = "그건 언제까지 써야 하나요?"
    alone = served.client.chat.completions.create(
        model="hanrag", messages=[{"role": "user", "content": follow_up}]
    )
    with_memory = served.client.chat.completions.create(
        model="hanrag",
        messages=[
            {"role": "user", "content": "이월한 연차휴가는 어떻게 되나요?"},
            {"role": "assistant", "content": "최대 5일까지 다음 해로 이월할 수 있습니다."},
            {"role": "user", "content": [{"type": "text", "text": follow_up}]},
        ],
    )
    content = with_memory.choices[0].message.content or ""
    assert "6월 30일" in content
    assert with_memory.model_extra is not None and alone.model_extra is not None
    titles = {s["title"] for s in check_sources(with_memory.model_extra["sources"])}
    assert titles == {"주식회사 한빛테크 인사규정"}
    # Without the earlier turns the same words are a different question.
    assert content != alone.choices[0].message.content
    # Nothing is stored: the client keeps the conversation.
    assert served.engine.sessions.list_sessions() == []


def test_footnotes(served: Served) -> None:
    messages: Any = [{"role": "user", "content": PASSWORD}]
    plain = served.client.chat.completions.create(model="hanrag", messages=messages)
    noted = served.footnotes_client.chat.completions.create(model="hanrag", messages=messages)
    plain_text = plain.choices[0].message.content or ""
    noted_text = noted.choices[0].message.content or ""
    assert noted.model_extra is not None
    sources = check_sources(noted.model_extra["sources"])
    expected = "\n".join(f"[{s['n']}] {s['title']} ({Path(s['source']).name})" for s in sources)
    assert noted_text == plain_text + "\n\n" + expected
    assert "[1] 주식회사 한빛테크 정보보안정책 (정보보안정책.txt)" in noted_text

    streamed = served.footnotes_client.chat.completions.create(model="hanrag", messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == noted_text


def test_embeddings(served: Served) -> None:
    texts = ["연차휴가는 며칠인가요?", "비밀번호는 90일마다 변경한다."]
    response = served.client.embeddings.create(model="multilingual-e5-small-q4", input=texts)
    assert response.object == "list" and response.model == "multilingual-e5-small-q4"
    assert [d.index for d in response.data] == [0, 1]
    vectors = [d.embedding for d in response.data]
    assert all(len(v) == 384 and all(isinstance(x, float) for x in v) for v in vectors)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-3) for v in vectors)
    assert vectors[0] != vectors[1]
    assert response.usage.prompt_tokens > 0 and response.usage.total_tokens == response.usage.prompt_tokens

    single = served.client.embeddings.create(model="multilingual-e5-small-q4", input=texts[1])
    assert len(single.data) == 1
    assert single.data[0].embedding == pytest.approx(vectors[1], abs=1e-5)
    queries = served.client.embeddings.create(
        model="multilingual-e5-small-q4", input=texts[1], extra_body={"input_type": "query"}
    )
    assert queries.data[0].embedding != pytest.approx(vectors[1], abs=1e-5)  # "query: " vs "passage: "


def test_models(served: Served) -> None:
    models = list(served.client.models.list())
    ids = [m.id for m in models]
    assert ids == ["hanrag", "multilingual-e5-small-q4"]
    assert all(m.owned_by == "hanrag" and m.object == "model" for m in models)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "당신은 도우미입니다."}],
        [{"role": "assistant", "content": "무엇을 도와드릴까요?"}],
    ],
)
def test_no_user_message(served: Served, messages: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        served.client.chat.completions.create(model="hanrag", messages=messages)
    assert caught.value.status_code == 400
    assert caught.value.code == "no_user_message"
    assert "user message" in caught.value.message
    assert caught.value.request_id


@pytest.mark.parametrize(
    "messages",
    [[], [{"role": "robot", "content": "안녕"}], [{"content": "안녕"}]],
)
def test_malformed_messages(served: Served, messages: Any) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        served.client.chat.completions.create(model="hanrag", messages=messages)
    assert caught.value.code == "invalid_request"
    assert "messages" in caught.value.message


def test_empty_user_message(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        served.client.chat.completions.create(model="hanrag", messages=[{"role": "user", "content": "  "}])
    assert caught.value.code == "empty_question"
    with pytest.raises(openai.BadRequestError) as streamed:
        served.client.chat.completions.create(
            model="hanrag", messages=[{"role": "user", "content": ""}], stream=True
        )
    assert streamed.value.code == "empty_question"


def test_bad_parameters(served: Served) -> None:
    user: Any = [{"role": "user", "content": PASSWORD}]
    with pytest.raises(openai.UnprocessableEntityError):
        served.client.chat.completions.create(model="hanrag", messages=user, temperature=5)
    with pytest.raises(openai.UnprocessableEntityError):
        served.client.chat.completions.create(model="hanrag", messages=user, max_tokens=0)
    # Unknown OpenAI parameters are accepted and ignored.
    ok = served.client.chat.completions.create(model="hanrag", messages=user, seed=7, n=1, user="kim")
    assert "10자" in (ok.choices[0].message.content or "")


def test_embedding_errors(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as empty:
        served.client.embeddings.create(model="e5", input=["안녕", "  "])
    assert empty.value.code == "empty_input"
    with pytest.raises(openai.BadRequestError) as many:
        served.client.embeddings.create(model="e5", input=["가"] * 257)
    assert many.value.code == "too_many_inputs"
    with pytest.raises(openai.UnprocessableEntityError):
        served.client.embeddings.create(model="e5", input=["안녕"], extra_body={"input_type": "document"})
