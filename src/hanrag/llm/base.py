"""Generator port: a ready prompt (chat messages) and the numbered sources in, streamed
answer text out. The answer layer builds every text a generator is given; nothing here
knows the prompts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from hanrag.domain import Hit
from hanrag.errors import BackendError


class GeneratorError(BackendError):
    """A model provider failed. ``status``: the HTTP status it answered, if any;
    ``retry_after_s``: what a 429/503 asked the caller to wait; ``transient``: whether
    trying again (or another provider) may help — connect errors, timeouts, 429, 5xx and a
    stream cut before the first token are; a 4xx refusal or a malformed reply is not."""

    code = "llm_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after_s: float | None = None,
        transient: bool | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.retry_after_s = retry_after_s
        if transient is None:
            transient = self.code in ("llm_unavailable", "llm_timeout", "llm_stream_cut") or (
                status is not None and (status == 429 or status >= 500)
            )
        self.transient = transient


@dataclass(frozen=True, slots=True)
class ImageInput:
    """An image a question carries, already checked (type, size, dimensions): each
    provider adapter puts it into its own message format."""

    mime_type: str  # image/png | image/jpeg | image/webp | image/gif
    data: bytes


@dataclass(slots=True)
class Turn:
    role: str  # "system" | "user" | "assistant"
    content: str
    # Images for a model that can see (the user turn of an image question).
    images: list[ImageInput] = field(default_factory=list)


@dataclass(slots=True)
class Source:
    """A passage as the generator sees it, with its citation number."""

    n: int
    hit: Hit
    text: str  # possibly trimmed to whole sentences to fit the context budget


@dataclass(slots=True)
class GenerationOptions:
    max_tokens: int = 512
    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int | None = None
    repetition_penalty: float | None = None
    stop: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FixedReplies:
    """What a generator that cannot compose text (the extractive one) answers when it
    has nothing to quote; the answer layer sets them, like every other text."""

    not_found: str = ""  # no sentence of the sources answers the question
    no_sources: str = ""  # retrieval found nothing
    no_rag: str = ""  # asked to answer without retrieval


@dataclass(slots=True)
class GenerationRequest:
    question: str
    sources: list[Source]
    # The chat prompt for a language model (system rules, memory, sources + question).
    messages: list[Turn] = field(default_factory=list)
    rag: bool = True
    options: GenerationOptions = field(default_factory=GenerationOptions)
    replies: FixedReplies = field(default_factory=FixedReplies)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


@dataclass(slots=True)
class GenerationChunk:
    """One streamed increment; the last one may carry usage and a finish reason."""

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None


class Generator(Protocol):
    name: str
    # True when the generator is a language model that can also serve the planner.
    is_llm: bool
    # True when it accepts images in its messages (Turn.images).
    can_see: bool

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]: ...

    async def complete(self, messages: list[Turn], options: GenerationOptions) -> str:
        """One non-streamed chat completion (used by the LLM planner)."""
        ...

    def status(self) -> dict[str, object]: ...
