"""Generators against real servers on loopback.

* ``OpenAICompatGenerator`` against a scripted server that speaks the OpenAI SSE
  protocol and misbehaves on purpose (down, HTTP 500, malformed JSON, cut
  streams, stalls) — each failure must come out as its stable code;
* the engine's fallback to the extractive generator (and when it must not happen);
* llama.cpp end to end: ``python -m llama_cpp.server`` with the bundled Gemma GGUF
  as a subprocess, driven through the Engine with streaming, and the in-process
  ``LlamaCppGenerator``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from answer_fixtures import (
    answer_engine,
    chunked_cut,
    close_answer_engine,
    completion,
    down_url,
    free_port,
    raw_sse,
    scripted_server,
    sse,
    stall,
    status,
)
from conftest import SampleCorpus
from hanrag.answer.engine import AskOptions
from hanrag.answer.planner import Planner
from hanrag.answer.prompts import ANSWER_SYSTEM, FALLBACK_NOTICE, answer_messages
from hanrag.auth.access import SYSTEM
from hanrag.domain import AnswerEvent, Chunk, Hit
from hanrag.engine import Engine
from hanrag.errors import HanragError
from hanrag.llm.base import GenerationChunk, GenerationOptions, GenerationRequest, Source, Turn
from hanrag.llm.extractive import ExtractiveGenerator
from hanrag.llm.openai_compat import GeneratorError, OpenAICompatGenerator

USB_QUESTION = "USB 사용 승인은 며칠 동안 유효한가요?"


def _source() -> Source:
    chunk = Chunk(
        chunk_id="doc-00001-abc",
        document_id="doc",
        position=1,
        text="USB 사용 승인은 최대 30일 동안 유효하며, 기간이 끝나면 다시 신청해야 한다.",
        title="정보보안정책",
        source="/docs/정보보안정책.txt",
        content_hash="abc",
        date=0,
        page=3,
    )
    return Source(n=1, hit=Hit(chunk=chunk, score=1.0), text=chunk.text)


def _request(**options: Any) -> GenerationRequest:
    sources = [_source()]
    history = [Turn("user", "이전 질문"), Turn("assistant", "이전 답변")]
    return GenerationRequest(
        question=USB_QUESTION,
        sources=sources,
        messages=answer_messages(USB_QUESTION, sources, history, True),
        options=GenerationOptions(max_tokens=64, **options),
    )


def _generator(url: str, **kwargs: Any) -> OpenAICompatGenerator:
    kwargs.setdefault("connect_timeout_s", 2.0)
    kwargs.setdefault("read_timeout_s", 5.0)
    return OpenAICompatGenerator(base_url=url, model="scripted-model", **kwargs)


async def _drain(generator: OpenAICompatGenerator, request: GenerationRequest) -> list[GenerationChunk]:
    return [chunk async for chunk in generator.stream(request)]


def _stream(
    generator: OpenAICompatGenerator, request: GenerationRequest | None = None
) -> list[GenerationChunk]:
    return asyncio.run(_drain(generator, request or _request()))


def _error_code(generator: OpenAICompatGenerator, request: GenerationRequest | None = None) -> str:
    with pytest.raises(GeneratorError) as info:
        _stream(generator, request)
    return info.value.code


# ------------------------------------------------------------ the wire protocol


def test_normal_stream_yields_deltas_usage_and_finishes() -> None:
    usage = {"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127}
    with scripted_server([sse(["USB 승인은 ", "최대 30일 ", "동안 유효합니다 [1]."], usage=usage)]) as server:
        chunks = _stream(_generator(server.url, api_key="sk-test"))
        request = server.requests[0]
    texts = [c.text for c in chunks if c.text]
    assert texts == ["USB 승인은 ", "최대 30일 ", "동안 유효합니다 [1]."]
    assert any(c.finish_reason == "stop" for c in chunks)
    # Usage comes in the final (choice-less) chunk.
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.as_dict() == {"prompt_tokens": 120, "completion_tokens": 7}
    # What went over the wire: the chat-completions endpoint, streaming, the bearer key,
    # the Korean system rules, memory, and the numbered sources with the question.
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "scripted-model"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 64
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == ANSWER_SYSTEM
    last = body["messages"][-1]["content"]
    assert "[1] 정보보안정책, 3쪽" in last
    assert "최대 30일 동안 유효" in last
    assert last.rstrip().endswith(USB_QUESTION)


def test_no_api_key_sends_no_authorization_header() -> None:
    with scripted_server([sse(["답"])]) as server:
        _stream(_generator(server.url))
        headers = server.requests[0]["headers"]
    assert "Authorization" not in headers


def test_sampling_parameters_are_sent_only_when_set() -> None:
    with scripted_server([sse(["답"])]) as server:
        generator = _generator(server.url)
        _stream(generator, _request())
        _stream(generator, _request(top_k=40, repetition_penalty=1.15, stop=["\n\n", "질문:"]))
        plain, tuned = server.bodies(stream=True)
    for key in ("top_k", "repetition_penalty", "repeat_penalty", "stop"):
        assert key not in plain
    assert tuned["top_k"] == 40
    assert tuned["repetition_penalty"] == pytest.approx(1.15)
    assert tuned["repeat_penalty"] == pytest.approx(1.15)
    assert tuned["stop"] == ["\n\n", "질문:"]
    assert plain["temperature"] == tuned["temperature"] == pytest.approx(0.2)
    assert plain["top_p"] == pytest.approx(0.95)


def test_server_down_is_llm_unavailable() -> None:
    assert _error_code(_generator(down_url())) == "llm_unavailable"


def test_http_500_is_llm_http_error() -> None:
    with scripted_server([status(500)]) as server:
        assert _error_code(_generator(server.url)) == "llm_http_error"


def test_http_404_is_llm_http_error() -> None:
    with scripted_server([status(404, '{"detail": "no such model"}')]) as server:
        assert _error_code(_generator(server.url)) == "llm_http_error"


def test_error_event_inside_the_stream_is_llm_http_error() -> None:
    with scripted_server([raw_sse('data: {"error": {"message": "out of memory"}}')]) as server:
        assert _error_code(_generator(server.url)) == "llm_http_error"


@pytest.mark.parametrize(
    "lines",
    [
        ('data: {"choices": [{"delta": {"content": "앞부분"}}]}', "data: {not json"),
        ("data: [1, 2, 3]",),
        ('data: {"object": "chat.completion.chunk"}',),
        ('data: {"choices": [{"delta": {"content": 42}}]}',),
    ],
    ids=["malformed-json", "not-an-object", "no-choices", "non-text-content"],
)
def test_malformed_events_are_llm_bad_response(lines: tuple[str, ...]) -> None:
    with scripted_server([raw_sse(*lines)]) as server:
        assert _error_code(_generator(server.url)) == "llm_bad_response"


def test_stream_that_ends_without_finish_or_done_is_llm_stream_cut() -> None:
    with scripted_server([sse(["USB 승인은 ", "최대"], finish=False, done=False)]) as server:
        generator = _generator(server.url)
        seen: list[str] = []

        async def consume() -> None:
            async for chunk in generator.stream(_request()):
                seen.append(chunk.text)

        with pytest.raises(GeneratorError) as info:
            asyncio.run(consume())
    assert info.value.code == "llm_stream_cut"
    # The text before the cut was delivered; the caller learns it is incomplete.
    assert "".join(seen) == "USB 승인은 최대"


def test_connection_dropped_mid_body_is_llm_stream_cut() -> None:
    with scripted_server([chunked_cut(["USB 승인은 "])]) as server:
        assert _error_code(_generator(server.url)) == "llm_stream_cut"


def test_a_finish_reason_without_done_still_completes() -> None:
    with scripted_server([sse(["완성된 답"], finish=True, done=False)]) as server:
        chunks = _stream(_generator(server.url))
    assert "".join(c.text for c in chunks) == "완성된 답"


def test_no_first_byte_within_the_read_timeout_is_llm_timeout() -> None:
    with scripted_server([stall(3.0, sse(["늦은 답"]))]) as server:
        started = time.perf_counter()
        assert _error_code(_generator(server.url, read_timeout_s=0.4)) == "llm_timeout"
        assert time.perf_counter() - started < 2.5


def test_a_stream_that_stalls_after_a_delta_is_llm_timeout() -> None:
    with scripted_server([sse(["첫 토큰", "다음 토큰"], delay_s=1.5)]) as server:
        assert _error_code(_generator(server.url, read_timeout_s=0.4)) == "llm_timeout"


def test_complete_returns_the_message_content_and_maps_failures() -> None:
    messages = [Turn("system", "규칙"), Turn("user", "질문")]
    options = GenerationOptions(max_tokens=20, temperature=0.0)
    with scripted_server(
        complete=[completion("<route>none</route>"), status(503), status(200, "{}")]
    ) as server:
        generator = _generator(server.url)
        assert asyncio.run(generator.complete(messages, options)) == "<route>none</route>"
        with pytest.raises(GeneratorError) as http_error:
            asyncio.run(generator.complete(messages, options))
        with pytest.raises(GeneratorError) as bad:
            asyncio.run(generator.complete(messages, options))
        body = server.bodies(stream=False)[0]
    assert http_error.value.code == "llm_http_error"
    assert bad.value.code == "llm_bad_response"
    assert body["stream"] is False and "stream_options" not in body
    assert body["temperature"] == 0.0 and body["max_tokens"] == 20
    with pytest.raises(GeneratorError) as down:
        asyncio.run(_generator(down_url()).complete(messages, options))
    assert down.value.code == "llm_unavailable"


# ------------------------------------------------------------------ engine level


@pytest.fixture
def llm_engine_factory(
    samples_engine: SampleCorpus, tmp_path: Path, shared_cache_path: Path
) -> Iterator[Any]:
    engines: list[Engine] = []

    def build(base_url: str, answer: dict[str, Any] | None = None, **llm: Any) -> Engine:
        settings = {"backend": "openai", "base_url": base_url, "model": "scripted-model", **llm}
        engine = answer_engine(
            samples_engine.engine,
            tmp_path / f"llm{len(engines)}",
            shared_cache_path,
            llm=settings,
            answer=answer or {},
        )
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        close_answer_engine(engine)


def _events(engine: Engine, question: str, **kwargs: Any) -> list[AnswerEvent]:
    async def collect() -> list[AnswerEvent]:
        return [event async for event in engine.ask(question, **kwargs, caller=SYSTEM)]

    return asyncio.run(collect())


def _stored_messages(engine: Engine) -> int:
    return sum(len(engine.sessions.messages(s.id)) for s in engine.sessions.list_sessions())


def test_engine_streams_the_llm_answer_with_its_citations(llm_engine_factory: Any) -> None:
    usage = {"prompt_tokens": 300, "completion_tokens": 9, "total_tokens": 309}
    with scripted_server(
        [sse(["USB 사용 승인은 ", "최대 30일 동안 ", "유효합니다 [1]."], usage=usage)]
    ) as server:
        engine = llm_engine_factory(server.url)
        events = _events(engine, USB_QUESTION)
        planner_bodies = server.bodies(stream=False)
    assert [e.type for e in events] == ["references", "delta", "delta", "delta", "done"]
    done = events[-1].data
    assert done["answer"] == "USB 사용 승인은 최대 30일 동안 유효합니다 [1]."
    assert done["answer"] == "".join(e.data["text"] for e in events if e.type == "delta")
    assert done["usage"] == {"prompt_tokens": 300, "completion_tokens": 9}
    assert done["fallback"] is None and done["generator"] == "scripted-model"
    # The LLM planned the question (the scripted planner echoes it back).
    assert done["plan"]["planner"] == "llm"
    assert len(planner_bodies) == 1
    references = events[0].data["references"]
    assert [c["chunk_id"] for c in done["citations"]] == [references[0]["chunk_id"]]
    assert _stored_messages(engine) == 2


def test_leading_and_trailing_whitespace_of_an_llm_stream_stays_out_of_the_answer(
    llm_engine_factory: Any,
) -> None:
    with scripted_server([sse(["\n\n", "  30일", " ", "입니다.", "\n"])]) as server:
        events = _events(llm_engine_factory(server.url), USB_QUESTION)
    deltas = [e.data["text"] for e in events if e.type == "delta"]
    done = events[-1].data
    assert done["answer"] == "30일 입니다."
    assert "".join(deltas) == done["answer"]
    assert all(deltas)


def test_server_down_falls_back_to_the_extractive_answer(llm_engine_factory: Any) -> None:
    engine = llm_engine_factory(down_url(), fallback_to_extractive=True)
    events = _events(engine, USB_QUESTION)
    assert events[0].type == "references"
    assert events[-1].type == "done"
    done = events[-1].data
    assert "30일" in done["answer"]
    assert done["generator"] == "extractive"
    assert done["fallback"] is not None
    assert done["fallback"].startswith("llm_unavailable")
    assert FALLBACK_NOTICE in done["fallback"]
    # The planner could not reach the server either and planned by rules.
    assert done["plan"]["planner"] == "rules"
    assert done["citations"] and _stored_messages(engine) == 2


def test_http_error_falls_back_and_names_the_code(llm_engine_factory: Any) -> None:
    with scripted_server([status(500)]) as server:
        done = _events(llm_engine_factory(server.url), USB_QUESTION)[-1]
    assert done.type == "done"
    assert done.data["fallback"].startswith("llm_http_error")
    assert "30일" in done.data["answer"]


def test_without_fallback_the_error_event_carries_the_code_and_nothing_is_stored(
    llm_engine_factory: Any,
) -> None:
    engine = llm_engine_factory(down_url(), fallback_to_extractive=False)
    session = "llm-down-session"
    engine.sessions.create(session)
    events = _events(engine, USB_QUESTION, session_id=session)
    assert [e.type for e in events] == ["references", "error"]
    error = events[-1]
    assert error.data["code"] == "llm_unavailable"
    assert isinstance(error.exception, HanragError)
    assert engine.sessions.messages(session) == []
    assert [s.id for s in engine.sessions.list_sessions()] == [session]
    with pytest.raises(HanragError) as info:
        asyncio.run(engine.ask_result(USB_QUESTION, caller=SYSTEM))
    assert info.value.code == "llm_unavailable"
    assert _stored_messages(engine) == 0


def test_a_stream_that_fails_after_deltas_is_an_error_without_fallback(llm_engine_factory: Any) -> None:
    with scripted_server([sse(["USB 사용 승인은 ", "최대"], finish=False, done=False)]) as server:
        engine = llm_engine_factory(server.url, fallback_to_extractive=True)
        events = _events(engine, USB_QUESTION)
    assert [e.type for e in events] == ["references", "delta", "delta", "error"]
    assert events[-1].data["code"] == "llm_stream_cut"
    # No session was created and no half answer stored.
    assert engine.sessions.list_sessions() == []


def test_a_stalled_stream_without_fallback_is_llm_timeout(llm_engine_factory: Any) -> None:
    with scripted_server([stall(2.0)]) as server:
        engine = llm_engine_factory(server.url, fallback_to_extractive=False, read_timeout_s=0.4)
        events = _events(engine, USB_QUESTION)
    assert events[-1].type == "error"
    assert events[-1].data["code"] == "llm_timeout"
    assert engine.sessions.list_sessions() == []


def test_no_rag_question_is_not_answered_extractively_on_failure(llm_engine_factory: Any) -> None:
    engine = llm_engine_factory(down_url(), fallback_to_extractive=True)
    events = _events(engine, "대한민국의 수도는 어디인가요?", options=AskOptions(rag=False))
    # Retrieval was skipped, so there is nothing for the extractive answer to quote.
    assert [e.type for e in events] == ["references", "error"]
    assert events[0].data["references"] == []
    assert events[-1].data["code"] == "llm_unavailable"


def test_the_llm_generator_gets_the_configured_sampling_options(llm_engine_factory: Any) -> None:
    with scripted_server([sse(["답 [1]"])]) as server:
        engine = llm_engine_factory(server.url, max_tokens=33, top_k=20, stop=["###"])
        _events(engine, USB_QUESTION)
        body = server.bodies(stream=True)[0]
    assert body["max_tokens"] == 33
    assert body["top_k"] == 20
    assert body["stop"] == ["###"]
    assert "repetition_penalty" not in body


def test_memory_reaches_the_llm_as_whole_turns(llm_engine_factory: Any) -> None:
    with scripted_server([sse(["첫 답 [1]"]), sse(["둘째 답 [1]"]), sse(["셋째 답"])]) as server:
        engine = llm_engine_factory(server.url, answer={"memory_messages": 3})
        session = "memory"
        engine.sessions.create(session)
        for question in (USB_QUESTION, "보안사고는 몇 시간 안에 신고하나요?", "그럼 신고 전화번호는?"):
            assert _events(engine, question, session_id=session)[-1].type == "done"
        bodies = server.bodies(stream=True)
    last = bodies[-1]["messages"]
    roles = [m["role"] for m in last]
    # A window of 3 messages would start with an answer; only whole turns are sent.
    assert roles == ["system", "user", "assistant", "user"]
    assert last[1]["content"] == "보안사고는 몇 시간 안에 신고하나요?"
    assert last[2]["content"] == "둘째 답 [1]"


# ------------------------------------------------------------------ llama.cpp

GEN_MAX_TOKENS = 48


def _llama_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


needs_llama = pytest.mark.skipif(
    not _llama_available(), reason="llama_cpp (llama-cpp-python) is not installed"
)


@dataclass
class LlamaServer:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def diagnosis(self) -> str:
        """Why the server may have failed: its exit status (-4 is SIGILL) and its last output."""
        code = self.process.poll()
        state = "running" if code is None else f"exited with {code}"
        return f"llama_cpp.server {state}; log tail:\n{self.log.read_text(errors='replace')[-1500:]}"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    if not _llama_available():
        pytest.skip("llama_cpp (llama-cpp-python) is not installed")
    from hanrag.llm.llama_cpp import bundled_gguf

    model = bundled_gguf()
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = LlamaServer(f"http://127.0.0.1:{port}/v1", process, log_path)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise AssertionError(server.diagnosis())
            try:
                if httpx.get(f"{server.base_url}/models", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready after 120 s: {server.diagnosis()}")
            time.sleep(0.25)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


def test_llama_cpp_server_end_to_end_through_the_engine(
    llama_server: LlamaServer, llm_engine_factory: Any
) -> None:
    models = httpx.get(f"{llama_server.base_url}/models", timeout=5).json()
    assert models["data"], models
    model = models["data"][0]["id"]
    engine = llm_engine_factory(
        llama_server.base_url,
        # Keep the prompt well inside the server's 2048-token window.
        answer={"k": 3, "context_tokens": 500},
        model=model,
        max_tokens=GEN_MAX_TOKENS,
        temperature=0.0,
        fallback_to_extractive=False,
        read_timeout_s=120,
    )
    # The LLM planner's retries against the scripted server are covered in test_planner; with a
    # 270M base model (no tags, ever) they would cost three 200-token generations on the CPU, so
    # this test plans by rules and spends the server's time on the streamed answer.
    engine.answers.planner = Planner(None)
    events = _events(engine, USB_QUESTION)
    types = [e.type for e in events]
    assert types[-1] == "done", f"{events[-1].data}; {llama_server.diagnosis()}"
    assert types[0] == "references" and events[0].data["references"]
    deltas = [e.data["text"] for e in events if e.type == "delta"]
    assert len(deltas) >= 3, deltas
    done = events[-1].data
    assert done["answer"].strip()
    assert done["answer"] == "".join(deltas)
    assert done["fallback"] is None
    assert done["generator"] == model
    if done["usage"] is not None:
        completion_tokens = done["usage"]["completion_tokens"]
        assert completion_tokens is None or 0 < completion_tokens <= GEN_MAX_TOKENS
    assert done["timings"]["time_to_first_token_ms"] <= done["timings"]["total_ms"]
    assert len(engine.sessions.messages(done["session_id"])) == 2


# Runs in a child process: native code that crashes (SIGILL, SIGSEGV) fails this test
# instead of killing the whole test run.
_IN_PROCESS_SCRIPT = """
import asyncio, json, sys
from hanrag.answer.prompts import answer_messages
from hanrag.domain import Chunk, Hit
from hanrag.llm.base import GenerationOptions, GenerationRequest, Source, Turn
from hanrag.llm.llama_cpp import LlamaCppGenerator

chunk = Chunk(chunk_id="c", document_id="d", position=1, title="정보보안정책", source="/정보보안정책.txt",
              text="USB 사용 승인은 최대 30일 동안 유효하며, 기간이 끝나면 다시 신청해야 한다.",
              content_hash="h", date=0)
generator = LlamaCppGenerator(n_ctx=1024)
before = generator.status()["loaded"]
sources = [Source(1, Hit(chunk, 1.0), chunk.text)]
request = GenerationRequest(question=sys.argv[1], sources=sources,
                            messages=answer_messages(sys.argv[1], sources, [], True),
                            options=GenerationOptions(max_tokens=24, temperature=0.0))

async def collect():
    return [c async for c in generator.stream(request)]

chunks = asyncio.run(collect())
completed = asyncio.run(generator.complete([Turn("user", "안녕하세요")], GenerationOptions(max_tokens=8)))
print(json.dumps({
    "loaded_before": before,
    "loaded_after": generator.status()["loaded"],
    "texts": [c.text for c in chunks if c.text],
    "finish": [[c.finish_reason, c.usage.completion_tokens if c.usage else None] for c in chunks if c.finish_reason],
    "complete": completed,
}, ensure_ascii=False))
"""


@needs_llama
def test_in_process_llama_cpp_generator_streams(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _IN_PROCESS_SCRIPT, USB_QUESTION],
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
    )
    stderr = result.stderr.decode(errors="replace")[-1500:]
    assert result.returncode == 0, f"exit {result.returncode} (-4 is SIGILL): {stderr}"
    data = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert data["loaded_before"] is False and data["loaded_after"] is True
    assert len(data["texts"]) >= 2
    assert "".join(data["texts"]).strip()
    # The last chunk carries the finish reason and the number of generated pieces.
    reason, completion_tokens = data["finish"][-1]
    assert reason in ("stop", "length")
    assert 0 < completion_tokens <= 24
    assert isinstance(data["complete"], str) and data["complete"]


def test_llama_cpp_generator_without_a_model_file_is_a_config_error(tmp_path: Path) -> None:
    from hanrag.llm.llama_cpp import LlamaCppGenerator

    generator = LlamaCppGenerator(str(tmp_path / "missing.gguf"))

    async def collect() -> None:
        async for _ in generator.stream(GenerationRequest(question="질문", sources=[])):
            pass

    with pytest.raises(HanragError) as info:
        asyncio.run(collect())
    assert info.value.code == "model_not_found"
    empty = tmp_path / "models"
    empty.mkdir()
    with pytest.raises(HanragError) as info:
        asyncio.run(LlamaCppGenerator(str(empty)).complete([Turn("user", "질문")], GenerationOptions()))
    assert info.value.code == "model_not_found"


def test_extractive_generator_is_not_a_language_model() -> None:
    generator = ExtractiveGenerator()
    assert generator.is_llm is False
    with pytest.raises(NotImplementedError):
        asyncio.run(generator.complete([Turn("user", "질문")], GenerationOptions()))
    assert json.loads(json.dumps(generator.status()))["backend"] == "extractive"


def _passage(n: int, text: str) -> Source:
    chunk = Chunk(
        chunk_id=f"doc{n}-00000-h",
        document_id=f"doc{n}",
        position=0,
        text=text,
        title=f"문서 {n}",
        source=f"/docs/{n}.txt",
        content_hash=f"h{n}",
        date=0,
    )
    return Source(n=n, hit=Hit(chunk=chunk, score=1.0), text=text)


def test_extractive_sentence_analysis_is_reused_and_bounded() -> None:
    passages = [
        _passage(1, "출장 숙박비는 1박에 10만 원까지 정산된다.\n영수증은 복귀 후 5일 안에 낸다."),
        _passage(2, "국외 출장은 사전에 대표이사의 승인을 받는다. 일비는 하루 5만 원이다."),
        _passage(3, "# 복리후생\n경조사 휴가는 결혼 5일, 출산 10일이다."),
    ]
    question = "출장 숙박비는 하루에 얼마까지 정산되나요?"
    uncached = ExtractiveGenerator(analysis_cache_size=0)
    cached = ExtractiveGenerator(analysis_cache_size=2)

    def chosen(generator: ExtractiveGenerator, sources: list[Source]) -> list[tuple[int, str]]:
        return [(c.source.n, c.text) for c in generator.select(question, sources)]

    expected = chosen(uncached, passages)
    assert expected[0] == (1, "출장 숙박비는 1박에 10만 원까지 정산된다.")
    assert chosen(cached, passages) == expected  # first call: analysed, 2 of 3 kept
    assert cached.status()["analysis_cache"] == {"entries": 2, "hits": 0, "misses": 3}
    assert chosen(cached, passages) == expected  # the same answer from the kept analyses
    stats = cached.status()["analysis_cache"]
    assert stats["entries"] == 2 and stats["hits"] >= 1 and stats["hits"] + stats["misses"] == 6
    assert uncached.status()["analysis_cache"]["entries"] == 0
    # The same text under another citation number is analysed once and cited by its own number.
    renumbered = [_passage(4, passages[0].text)]
    assert chosen(cached, renumbered)[0] == (4, "출장 숙박비는 1박에 10만 원까지 정산된다.")
