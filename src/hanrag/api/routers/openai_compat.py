"""OpenAI-compatible endpoints backed by RAG: chat completions, embeddings, models.

The last user message is the question; earlier messages are the memory (the
client keeps the conversation, nothing is stored); system (and developer) messages
are the operator's instructions, given to the model after the grounding rules.
Sources come back in an extra ``sources`` field of the response (and of the final
stream chunk), and optionally as footnotes appended to the answer text.

Images: the ``image_url`` content parts of the last user message (``data:`` URLs, or
http(s) URLs of hosts in ``images.url_allow``; ``detail`` has no effect), those of earlier
turns are not read. hanrag extensions of the body: ``rag``, ``mode`` (``single`` |
``ensemble``) and ``candidates``; in ensemble mode an extra ``ensemble`` field comes back.

``model`` must name a model served here (``/v1/models``), else 404 ``model_not_found``;
a parameter hanrag cannot honour (``n`` > 1, ``tools``, ``logprobs``, an embedding
``dimensions`` other than the model's ...) is a 400 ``unsupported_parameter`` naming it,
in OpenAI's error shape, rather than silently ignored.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from hanrag.answer.engine import AskOptions
from hanrag.answer.prompts import MAX_INSTRUCTIONS_CHARS
from hanrag.api.deps import (
    current_caller,
    get_engine,
    observe_done,
    primed,
    tracked_stream,
    with_timeout,
)
from hanrag.api.images_input import question_images
from hanrag.api.problems import problem, stream_error
from hanrag.domain import (
    AnswerEvent,
    AnswerResult,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    ReferencesEvent,
    fold_answer,
)
from hanrag.errors import InvalidInputError
from hanrag.llm.base import ImageInput, Turn

router = APIRouter(tags=["openai-compatible"])

# OpenAI parameters hanrag cannot honour, and when a value asks for what it cannot do
# (the default values, which ask for nothing, are accepted).
_UNSUPPORTED_CHAT: dict[str, Callable[[Any], bool]] = {
    "n": lambda v: v not in (None, 1),
    "tools": bool,
    "functions": bool,
    "tool_choice": lambda v: v not in (None, "none", "auto"),
    "function_call": lambda v: v not in (None, "none", "auto"),
    "logprobs": bool,
    "top_logprobs": bool,
    "logit_bias": bool,
    "response_format": lambda v: v is not None and (not isinstance(v, dict) or v.get("type") != "text"),
    "audio": lambda v: v is not None,
    "modalities": lambda v: v not in (None, ["text"]),
    "prediction": lambda v: v is not None,
    "web_search_options": lambda v: v is not None,
    "frequency_penalty": bool,
    "presence_penalty": bool,
}


def openai_error(request: Request, status: int, code: str, message: str, param: str | None) -> JSONResponse:
    """The problem+json response with OpenAI's ``error`` object, ``param`` included."""
    response = problem(status, code, message, request=request, extra={"field": param} if param else None)
    body = json.loads(bytes(response.body))
    body["error"]["param"] = param
    return JSONResponse(body, status_code=status, media_type=response.media_type)


def _model_not_found(request: Request, model: str) -> JSONResponse:
    return openai_error(
        request,
        404,
        "model_not_found",
        f"The model `{model[:200]}` does not exist; GET /v1/models lists the models served here.",
        "model",
    )


def _unsupported(request: Request, param: str, why: str = "") -> JSONResponse:
    message = f"hanrag does not support the parameter `{param}`{why}; leave it out."
    return openai_error(request, 400, "unsupported_parameter", message, param)


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str
    detail: str | None = None  # accepted, without effect


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    # {"type": "image_url", "image_url": {"url": "data:image/png;base64,..." | "https://..."}}
    image_url: ImageUrl | str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""

    def image_urls(self) -> list[str]:
        parts = self.content if isinstance(self.content, list) else []
        urls = [p.image_url for p in parts if p.type == "image_url" and p.image_url is not None]
        return [url if isinstance(url, str) else url.url for url in urls]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    # Other OpenAI parameters: refused when they ask for what hanrag cannot do
    # (_UNSUPPORTED_CHAT), else accepted and without effect (seed, metadata, store ...).
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    user: str | None = Field(None, description="The end user, recorded in the audit log.")
    rag: bool = Field(True, description="hanrag extension: false answers without retrieval.")
    mode: Literal["single", "ensemble"] | None = Field(
        None, description="hanrag extension: `ensemble` lets several models answer (default: `llm.mode`)."
    )
    candidates: bool = Field(
        False, description="hanrag extension: in ensemble mode, every candidate in the `ensemble` field."
    )


class EmbeddingsIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: str | None = None
    dimensions: int | None = None
    input_type: Literal["query", "passage"] = Field(
        "passage", description="hanrag extension: e5-style prefix."
    )


def _split(messages: list[ChatMessage]) -> tuple[str, list[Turn], str | None]:
    """The question (the last user message), the memory before it, and the operator's
    instructions (the system and developer messages)."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last_user is None:
        raise InvalidInputError("messages contain no user message", code="no_user_message", field="messages")
    history = [
        Turn("user" if m.role == "user" else "assistant", m.text())
        for m in messages[:last_user]
        if m.role in ("user", "assistant") and m.text().strip()
    ]
    instructions = "\n\n".join(
        m.text().strip() for m in messages if m.role in ("system", "developer") and m.text().strip()
    )
    if len(instructions) > MAX_INSTRUCTIONS_CHARS:
        raise InvalidInputError(
            f"the system messages take at most {MAX_INSTRUCTIONS_CHARS} characters together",
            code="instructions_too_long",
            field="messages",
        )
    return messages[last_user].text(), history, instructions or None


def _chat_models(request: Request) -> list[str]:
    api = request.app.state.settings.api
    return list(dict.fromkeys([api.model_name, *api.model_aliases]))


def _chat_refusal(request: Request, body: ChatCompletionIn) -> JSONResponse | None:
    """The 404 of an unknown model or the 400 of an unsupported parameter or of unusable
    messages, if any."""
    if body.model is not None and body.model not in _chat_models(request):
        return _model_not_found(request, body.model)
    for name, value in (body.model_extra or {}).items():
        refuses = _UNSUPPORTED_CHAT.get(name)
        if refuses is not None and refuses(value):
            return _unsupported(request, name)
    if isinstance(body.stop, list) and len(body.stop) > 4:
        return openai_error(request, 400, "invalid_value", "`stop` takes at most 4 sequences.", "stop")
    try:
        _split(body.messages)
    except InvalidInputError as exc:
        return openai_error(request, exc.http_status, exc.code, exc.message, exc.field)
    return None


def _usage(usage: dict[str, Any] | None) -> dict[str, int]:
    prompt = (usage or {}).get("prompt_tokens") or 0
    completion = (usage or {}).get("completion_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _footnotes(citations: list[dict[str, Any]]) -> str:
    lines = [f"[{c['n']}] {c['title']} ({c['source'].rsplit('/', 1)[-1]})" for c in citations]
    return "\n\n" + "\n".join(lines) if lines else ""


def _table_markdown(table: dict[str, Any] | None) -> str:
    """The table route's rows as a Markdown table, ahead of the answer text."""
    if table is None:
        return ""
    from hanrag.tables.execute import QueryResult
    from hanrag.tables.render import markdown_table

    result = QueryResult(
        columns=table["columns"], rows=table["rows"], truncated=table["truncated"], elapsed_ms=0.0
    )
    return f"**{table['title']}**\n\n{markdown_table(result)}\n\n"


async def _images(request: Request, body: ChatCompletionIn) -> list[ImageInput]:
    """The checked images of the last user message (those of earlier turns are not read)."""
    last_user = next(m for m in reversed(body.messages) if m.role == "user")
    settings = request.app.state.settings.images
    return await question_images(last_user.image_urls(), engine=get_engine(request), settings=settings)


def _events(request: Request, body: ChatCompletionIn, images: list[ImageInput]) -> AsyncIterator[AnswerEvent]:
    question, history, instructions = _split(body.messages)
    engine = get_engine(request)
    generation = engine.generation_options()
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None:
        generation.max_tokens = max_tokens
    if body.temperature is not None:
        generation.temperature = body.temperature
    if body.top_p is not None:
        generation.top_p = body.top_p
    if body.stop:
        generation.stop = [body.stop] if isinstance(body.stop, str) else list(body.stop)
    options = AskOptions(
        rag=body.rag,
        history=history,
        stream_generation=generation,
        instructions=instructions,
        end_user=body.user,
        images=images,
        mode=body.mode,
        candidates=body.candidates,
    )
    return engine.ask(question, caller=current_caller(request), options=options)


@router.post("/chat/completions", summary="Chat completion answered from the documents (RAG)")
async def chat_completions(body: ChatCompletionIn, request: Request) -> Any:
    settings = request.app.state.settings
    refusal = _chat_refusal(request, body)
    if refusal is not None:
        return refusal
    try:
        images = await _images(request, body)
    except InvalidInputError as exc:
        return openai_error(request, exc.http_status, exc.code, exc.message, "messages")
    model = body.model or settings.api.model_name
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not body.stream:

        def observe(event: AnswerEvent) -> None:
            if isinstance(event, DoneEvent):
                observe_done(event.data)

        async def collect() -> AnswerResult:
            # Up to the answer's end within the request timeout, retrieval included.
            return await fold_answer(await primed(_events(request, body, images)), on_event=observe)

        done = await with_timeout(request, collect())
        answer = _table_markdown(done.table) + done.answer
        answer += _footnotes(done.citations) if settings.api.openai_footnotes else ""
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                ],
                "usage": _usage(done.usage),
                "sources": done.citations,
                **({"table": done.table} if done.table is not None else {}),
                **({"ensemble": done.ensemble} if done.ensemble is not None else {}),
            }
        )

    # As OpenAI does: with stream_options.include_usage every chunk has "usage": null, and
    # a last chunk before [DONE] has the usage and no choices.
    include_usage = body.stream_options is not None and body.stream_options.include_usage

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
            **({"usage": None} if include_usage else {}),
            **extra,
        }
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    def error_chunk(message: str, code: str) -> bytes:
        error = {"message": message, "type": "server_error", "code": code}
        return f"data: {json.dumps({'error': error}, ensure_ascii=False)}\n\n".encode()

    events = await with_timeout(request, primed(_events(request, body, images)))

    async def stream() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for event in events:
                if isinstance(event, ReferencesEvent) and event.table is not None:
                    yield chunk({"content": _table_markdown(event.table)})
                elif isinstance(event, DeltaEvent):
                    yield chunk({"content": event.text})
                elif isinstance(event, ErrorEvent):
                    yield error_chunk(event.message, event.code)
                    return
                elif isinstance(event, DoneEvent):
                    observe_done(event.data)
                    citations = event.result.citations
                    if settings.api.openai_footnotes and citations:
                        yield chunk({"content": _footnotes(citations)})
                    ensemble = event.result.ensemble
                    yield chunk({}, "stop", sources=citations, **({"ensemble": ensemble} if ensemble else {}))
                    if include_usage:
                        yield chunk(None, usage=_usage(event.result.usage))
        except Exception as exc:  # e.g. a full disk: said in the stream, not a cut connection
            error = stream_error(request, exc)
            yield error_chunk(error.message, error.code)
            return
        yield b"data: [DONE]\n\n"

    return StreamingResponse(tracked_stream(stream()), media_type="text/event-stream")


@router.post("/embeddings", summary="Embeddings from the configured embedding model")
async def embeddings(body: EmbeddingsIn, request: Request) -> Any:
    engine = get_engine(request)
    shared = engine.shared_embedder
    if body.model is not None and body.model != shared.name:
        return _model_not_found(request, body.model)
    raw = [body.input] if isinstance(body.input, str) else list(body.input)
    texts = [t for t in raw if isinstance(t, str)]
    if len(texts) != len(raw):
        why = " with token arrays: send the text (LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))"
        return _unsupported(request, "input", why)
    if body.encoding_format not in (None, "float", "base64"):
        message = "`encoding_format` is `float` or `base64`."
        return openai_error(request, 400, "invalid_value", message, "encoding_format")
    if body.dimensions is not None:
        dimension = await asyncio.to_thread(lambda: shared.dimension)
        if body.dimensions != dimension:
            return _unsupported(request, "dimensions", f" other than the model's {dimension}")
    if not texts or any(not t.strip() for t in texts):
        raise InvalidInputError("input must be non-empty text", code="empty_input", field="input")
    if len(texts) > 256:
        raise InvalidInputError("at most 256 inputs per request", code="too_many_inputs", field="input")
    embed = shared.embed_queries if body.input_type == "query" else shared.embed_passages
    vectors = await with_timeout(request, asyncio.to_thread(embed, texts))
    tokens = sum(await asyncio.to_thread(lambda: [shared.count_tokens(t) for t in texts]))

    def encoded(vector: Any) -> Any:
        if body.encoding_format == "base64":  # little-endian float32, as OpenAI sends it
            return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        return vector.tolist()

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(vectors)],
        "model": shared.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.get("/models", summary="Models served here (the RAG chat model and the embedding model)")
async def models(request: Request) -> dict[str, Any]:
    engine = get_engine(request)
    created = int(time.time())
    names = [*_chat_models(request), engine.shared_embedder.name]
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": created, "owned_by": "hanrag"} for name in names],
    }
