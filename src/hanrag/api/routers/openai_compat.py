"""OpenAI-compatible endpoints backed by RAG: chat completions, embeddings, models.

The last user message is the question; earlier messages are the memory (the
client keeps the conversation, nothing is stored). Sources come back in an extra
``sources`` field of the response (and of the final stream chunk), and
optionally as footnotes appended to the answer text.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from hanrag.answer.engine import AskOptions
from hanrag.api.deps import (
    current_caller,
    get_engine,
    observe_done,
    primed,
    tracked_stream,
    with_timeout,
)
from hanrag.api.problems import stream_error
from hanrag.domain import AnswerEvent, AnswerResult, DeltaEvent, DoneEvent, ErrorEvent, fold_answer
from hanrag.errors import InvalidInputError
from hanrag.llm.base import Turn

router = APIRouter(tags=["openai-compatible"])


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class ChatCompletionIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI parameters are accepted and ignored
    model: str | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    rag: bool = Field(True, description="hanrag extension: false answers without retrieval.")


class EmbeddingsIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    input: str | list[str]
    input_type: Literal["query", "passage"] = Field(
        "passage", description="hanrag extension: e5-style prefix."
    )


def _split(messages: list[ChatMessage]) -> tuple[str, list[Turn]]:
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last_user is None:
        raise InvalidInputError("messages contain no user message", code="no_user_message", field="messages")
    history = [
        Turn("user" if m.role == "user" else "assistant", m.text())
        for m in messages[:last_user]
        if m.role in ("user", "assistant") and m.text().strip()
    ]
    return messages[last_user].text(), history


def _footnotes(citations: list[dict[str, Any]]) -> str:
    lines = [f"[{c['n']}] {c['title']} ({c['source'].rsplit('/', 1)[-1]})" for c in citations]
    return "\n\n" + "\n".join(lines) if lines else ""


def _events(request: Request, body: ChatCompletionIn) -> AsyncIterator[AnswerEvent]:
    question, history = _split(body.messages)
    engine = get_engine(request)
    generation = engine.generation_options()
    if body.max_tokens is not None:
        generation.max_tokens = body.max_tokens
    if body.temperature is not None:
        generation.temperature = body.temperature
    if body.top_p is not None:
        generation.top_p = body.top_p
    return engine.ask(
        question,
        caller=current_caller(request),
        options=AskOptions(rag=body.rag, history=history, stream_generation=generation),
    )


@router.post("/chat/completions", summary="Chat completion answered from the documents (RAG)")
async def chat_completions(body: ChatCompletionIn, request: Request) -> Any:
    settings = request.app.state.settings
    model = body.model or settings.api.model_name
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not body.stream:

        def observe(event: AnswerEvent) -> None:
            if isinstance(event, DoneEvent):
                observe_done(event.data)

        async def collect() -> AnswerResult:
            # Up to the answer's end within the request timeout, retrieval included.
            return await fold_answer(await primed(_events(request, body)), on_event=observe)

        done = await with_timeout(request, collect())
        answer = done.answer + (_footnotes(done.citations) if settings.api.openai_footnotes else "")
        usage = done.usage or {}
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": usage.get("prompt_tokens") or 0,
                    "completion_tokens": usage.get("completion_tokens") or 0,
                    "total_tokens": (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0),
                },
                "sources": done.citations,
            }
        )

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        import json

        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    def error_chunk(message: str, code: str) -> bytes:
        import json

        error = {"message": message, "type": "server_error", "code": code}
        return f"data: {json.dumps({'error': error}, ensure_ascii=False)}\n\n".encode()

    events = await with_timeout(request, primed(_events(request, body)))

    async def stream() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for event in events:
                if isinstance(event, DeltaEvent):
                    yield chunk({"content": event.text})
                elif isinstance(event, ErrorEvent):
                    yield error_chunk(event.message, event.code)
                    return
                elif isinstance(event, DoneEvent):
                    observe_done(event.data)
                    citations = event.result.citations
                    if settings.api.openai_footnotes and citations:
                        yield chunk({"content": _footnotes(citations)})
                    yield chunk({}, "stop", sources=citations)
        except Exception as exc:  # e.g. a full disk: said in the stream, not a cut connection
            error = stream_error(request, exc)
            yield error_chunk(error.message, error.code)
            return
        yield b"data: [DONE]\n\n"

    return StreamingResponse(tracked_stream(stream()), media_type="text/event-stream")


@router.post("/embeddings", summary="Embeddings from the configured embedding model")
async def embeddings(body: EmbeddingsIn, request: Request) -> Any:
    engine = get_engine(request)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts or any(not t.strip() for t in texts):
        raise InvalidInputError("input must be non-empty text", code="empty_input", field="input")
    if len(texts) > 256:
        raise InvalidInputError("at most 256 inputs per request", code="too_many_inputs", field="input")
    shared = engine.shared_embedder
    embed = shared.embed_queries if body.input_type == "query" else shared.embed_passages
    vectors = await with_timeout(request, asyncio.to_thread(embed, texts))
    tokens = sum(await asyncio.to_thread(lambda: [shared.count_tokens(t) for t in texts]))
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)],
        "model": body.model or shared.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.get("/models", summary="Models served here (the RAG chat model and the embedding model)")
async def models(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    engine = get_engine(request)
    created = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": settings.api.model_name, "object": "model", "created": created, "owned_by": "hanrag"},
            {"id": engine.shared_embedder.name, "object": "model", "created": created, "owned_by": "hanrag"},
        ],
    }
