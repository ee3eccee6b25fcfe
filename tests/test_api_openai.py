"""OpenAI-compatible endpoints through the official ``openai`` client, and LangChain's
``ChatOpenAI`` and ``OpenAIEmbeddings``, against a real server on loopback.

The engine has its own sessions over the session's sample index (read-only), so
nothing here embeds the samples again or writes to the shared corpus. The LangChain
tests run with every connection off loopback refused (nothing is downloaded).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from answer_fixtures import scripted_server, sse
from api_server import (
    LiveServer,
    close_engine_on_index,
    engine_on_index,
    parse_sse,
    start_server,
    with_api,
)
from conftest import SampleCorpus
from hanrag.answer.prompts import ANSWER_SYSTEM, INSTRUCTIONS_HEADER
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
    assert caught.value.code == "no_user_message" and caught.value.param == "messages"
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
    # Parameters that ask for nothing hanrag cannot do are accepted.
    ok = served.client.chat.completions.create(
        model="hanrag",
        messages=user,
        seed=7,
        n=1,
        user="kim",
        logprobs=False,
        tool_choice="none",
        response_format={"type": "text"},
        presence_penalty=0,
        max_completion_tokens=300,
        stop=["\n\n\n"],
    )
    assert "10자" in (ok.choices[0].message.content or "")


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("n", 2),
        ("tools", [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("response_format", {"type": "json_object"}),
        ("tool_choice", "required"),
        ("logit_bias", {"1234": 5}),
        ("frequency_penalty", 0.5),
        ("modalities", ["text", "audio"]),
    ],
)
def test_unsupported_parameters_are_refused_in_openais_shape(served: Served, param: str, value: Any) -> None:
    user: Any = [{"role": "user", "content": PASSWORD}]
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            served.client.chat.completions.create(
                model="hanrag", messages=user, stream=stream, extra_body={param: value}
            )
        assert caught.value.status_code == 400
        assert caught.value.code == "unsupported_parameter" and caught.value.param == param
        assert caught.value.type == "invalid_request_error" and param in caught.value.message


def test_unknown_models_are_404_model_not_found(served: Served) -> None:
    user: Any = [{"role": "user", "content": PASSWORD}]
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as caught:
            served.client.chat.completions.create(model="gpt-4o", messages=user, stream=stream)
        assert caught.value.status_code == 404
        assert caught.value.code == "model_not_found" and caught.value.param == "model"
        assert caught.value.type == "invalid_request_error" and "gpt-4o" in caught.value.message
    raw = httpx.post(
        f"{served.live.url}/v1/chat/completions", json={"model": "nope", "messages": user}, timeout=30
    )
    assert raw.status_code == 404
    assert raw.json()["error"] == {
        "message": raw.json()["error"]["message"],
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    with pytest.raises(openai.NotFoundError) as embedding:
        served.client.embeddings.create(model="text-embedding-3-small", input="안녕")
    assert embedding.value.code == "model_not_found" and embedding.value.param == "model"
    with pytest.raises(openai.NotFoundError):  # the chat model does not embed
        served.client.embeddings.create(model="hanrag", input="안녕")


def test_model_aliases_are_served_and_listed(served: Served) -> None:
    engine = served.engine
    live = start_server(engine, with_api(engine.settings, model_aliases=["gpt-4o-mini"]))
    try:
        client = _client(live)
        assert [m.id for m in client.models.list()] == ["hanrag", "gpt-4o-mini", "multilingual-e5-small-q4"]
        response = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": PASSWORD}]
        )
        assert response.model == "gpt-4o-mini" and "10자" in (response.choices[0].message.content or "")
        assert client.chat.completions.create(
            model="hanrag", messages=[{"role": "user", "content": PASSWORD}]
        )
    finally:
        live.stop()


def test_stream_options_include_usage(served: Served) -> None:
    messages: Any = [{"role": "user", "content": PASSWORD}]
    chunks = list(
        served.client.chat.completions.create(
            model="hanrag", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    *answer, last = chunks
    assert last.choices == [] and last.usage is not None
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in answer)
    assert answer[-1].choices[0].finish_reason == "stop"
    assert "10자" in "".join(c.choices[0].delta.content or "" for c in answer)
    # Without it no usage chunk (OpenAI's default).
    plain = list(served.client.chat.completions.create(model="hanrag", messages=messages, stream=True))
    assert plain[-1].choices[0].finish_reason == "stop" and plain[-1].usage is None


def test_the_end_user_is_recorded_in_the_audit_log(served: Served) -> None:
    messages: Any = [{"role": "user", "content": PASSWORD}]
    served.client.chat.completions.create(model="hanrag", messages=messages, user="employee-0042")
    [row] = served.engine.audit.query(action="question", limit=1)
    assert row["detail"]["end_user"] == "employee-0042" and row["detail"]["question"] == PASSWORD
    list(
        served.client.chat.completions.create(model="hanrag", messages=messages, user="u" * 1000, stream=True)
    )
    [row] = served.engine.audit.query(action="question", limit=1)
    assert row["detail"]["end_user"] == "u" * 256  # bounded
    served.client.chat.completions.create(model="hanrag", messages=messages)
    [row] = served.engine.audit.query(action="question", limit=1)
    assert "end_user" not in row["detail"]


def test_embedding_errors(served: Served) -> None:
    model = "multilingual-e5-small-q4"
    with pytest.raises(openai.BadRequestError) as empty:
        served.client.embeddings.create(model=model, input=["안녕", "  "])
    assert empty.value.code == "empty_input"
    with pytest.raises(openai.BadRequestError) as many:
        served.client.embeddings.create(model=model, input=["가"] * 257)
    assert many.value.code == "too_many_inputs"
    with pytest.raises(openai.UnprocessableEntityError):
        served.client.embeddings.create(model=model, input=["안녕"], extra_body={"input_type": "document"})
    with pytest.raises(openai.BadRequestError) as dimensions:
        served.client.embeddings.create(model=model, input="안녕", dimensions=256)
    assert dimensions.value.code == "unsupported_parameter" and dimensions.value.param == "dimensions"
    assert "384" in dimensions.value.message
    native = served.client.embeddings.create(model=model, input="안녕", dimensions=384)
    assert len(native.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as tokens:
        served.client.embeddings.create(model=model, input=[[101, 2023, 102]])
    assert tokens.value.code == "unsupported_parameter" and tokens.value.param == "input"


def test_embedding_encodings(served: Served) -> None:
    body = {"model": "multilingual-e5-small-q4", "input": ["연차휴가"]}
    floats = httpx.post(f"{served.live.url}/v1/embeddings", json=body, timeout=30).json()
    packed = httpx.post(
        f"{served.live.url}/v1/embeddings", json={**body, "encoding_format": "base64"}, timeout=30
    ).json()
    vector = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert vector.tolist() == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)
    bad = httpx.post(f"{served.live.url}/v1/embeddings", json={**body, "encoding_format": "hex"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "encoding_format"


def test_system_messages_are_operator_instructions_after_the_grounding_rules(
    samples_engine: SampleCorpus, shared_cache_path: Path, tmp_path: Path
) -> None:
    usage = {"prompt_tokens": 321, "completion_tokens": 7, "total_tokens": 328}
    with scripted_server(stream=[sse(["비밀번호는 ", "10자 이상 [1]."], usage=usage)]) as llm:
        llm_settings = {"backend": "openai", "base_url": llm.url, "fallback_to_extractive": False}
        engine = engine_on_index(samples_engine.engine, tmp_path / "llm", shared_cache_path, llm=llm_settings)
        live = start_server(engine)
        try:
            client = _client(live)
            response = client.chat.completions.create(
                model="hanrag",
                messages=[
                    {"role": "system", "content": "답은 반말로 한 문장만 쓰세요."},
                    {"role": "developer", "content": [{"type": "text", "text": "출처 번호를 꼭 붙이세요."}]},
                    {"role": "user", "content": PASSWORD},
                ],
            )
            assert response.choices[0].message.content == "비밀번호는 10자 이상 [1]."
            system, *_, user = llm.bodies(stream=True)[-1]["messages"]
            assert system["role"] == "system"
            assert system["content"] == (
                f"{ANSWER_SYSTEM}\n\n{INSTRUCTIONS_HEADER}\n답은 반말로 한 문장만 쓰세요.\n\n출처 번호를 꼭 붙이세요."
            )
            assert user["role"] == "user" and user["content"].endswith(PASSWORD)
            assert "반말" not in user["content"]  # never mistaken for the question or the memory

            client.chat.completions.create(model="hanrag", messages=[{"role": "user", "content": PASSWORD}])
            assert llm.bodies(stream=True)[-1]["messages"][0]["content"] == ANSWER_SYSTEM

            chunks = list(
                client.chat.completions.create(
                    model="hanrag",
                    messages=[{"role": "user", "content": PASSWORD}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            assert chunks[-1].usage is not None and chunks[-1].usage.model_dump() == {
                **usage,
                "completion_tokens_details": None,
                "prompt_tokens_details": None,
            }

            with pytest.raises(openai.BadRequestError) as long:
                client.chat.completions.create(
                    model="hanrag",
                    messages=[
                        {"role": "system", "content": "가" * 5000},
                        {"role": "user", "content": PASSWORD},
                    ],
                )
            assert long.value.code == "instructions_too_long" and long.value.param == "messages"
        finally:
            live.stop()
            close_engine_on_index(engine)


# ------------------------------------------------------------------ LangChain


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every connection or name lookup off loopback fails (so nothing is downloaded:
    no tiktoken encodings, no LangSmith traces)."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def loopback(host: Any) -> bool:
        try:
            return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
        except ValueError:
            return str(host) == "localhost"

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not loopback(address[0]):
            raise OSError(f"network access refused in this test: {address}")
        real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not loopback(host):
            raise socket.gaierror(f"name lookup refused in this test: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))  # empty: a lookup would download
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    monkeypatch.setenv("LANGCHAIN_TRACING_V2", "false")
    with pytest.raises(OSError):
        socket.create_connection(("192.0.2.1", 443), timeout=1)


@pytest.mark.usefixtures("loopback_only")
def test_langchain_chat_openai(served: Served) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        model="hanrag", base_url=f"{served.live.url}/v1", api_key="x", max_retries=0, timeout=60
    )
    messages = [SystemMessage("한국어로 답하세요."), HumanMessage(PASSWORD)]
    answer = chat.invoke(messages)
    assert isinstance(answer.content, str) and "10자" in answer.content
    assert answer.response_metadata["model_name"] == "hanrag"

    chunks = list(chat.stream(messages, stream_usage=True))
    assert "".join(str(c.content) for c in chunks) == answer.content
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert len(usage) == 1 and usage[0]["total_tokens"] >= 0

    with pytest.raises(openai.NotFoundError):
        ChatOpenAI(model="gpt-4o", base_url=f"{served.live.url}/v1", api_key="x", max_retries=0).invoke(
            PASSWORD
        )
    with pytest.raises(openai.BadRequestError):
        ChatOpenAI(model="hanrag", base_url=f"{served.live.url}/v1", api_key="x", max_retries=0, n=2).invoke(
            PASSWORD
        )


@pytest.mark.usefixtures("loopback_only")
def test_langchain_openai_embeddings(served: Served) -> None:
    from langchain_openai import OpenAIEmbeddings

    model = "multilingual-e5-small-q4"
    embeddings = OpenAIEmbeddings(
        model=model,
        base_url=f"{served.live.url}/v1",
        api_key="x",  # type: ignore[arg-type]
        check_embedding_ctx_length=False,  # send text, not tiktoken ids
        max_retries=0,
    )
    texts = ["연차휴가는 며칠인가요?", "비밀번호는 90일마다 변경한다."]
    documents = embeddings.embed_documents(texts)
    assert len(documents) == 2 and all(len(v) == 384 for v in documents)
    direct = served.client.embeddings.create(model=model, input=texts)
    for mine, theirs in zip(documents, direct.data, strict=True):
        assert mine == pytest.approx(theirs.embedding, abs=1e-5)
    query = embeddings.embed_query(texts[1])
    assert query == pytest.approx(documents[1], abs=1e-5)  # the same passage-form vector
