"""Generator port: a ready prompt (chat messages) and the numbered sources in, streamed
answer text out. The answer layer builds every text a generator is given; nothing here
knows the prompts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from hanrag.domain import Hit


@dataclass(slots=True)
class Turn:
    role: str  # "user" | "assistant"
    content: str


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

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]: ...

    async def complete(self, messages: list[Turn], options: GenerationOptions) -> str:
        """One non-streamed chat completion (used by the LLM planner)."""
        ...

    def status(self) -> dict[str, object]: ...
