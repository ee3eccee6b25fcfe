"""The ask flow's request and result shapes: the options of one question, the search it
calls, and how a source becomes a reference and a citation (shared by the answer engine
and its consumers)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from hanrag.domain import SearchFilters, SearchResult, from_epoch
from hanrag.llm.base import GenerationOptions, ImageInput, Source, Turn

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


class SearchFunction(Protocol):
    """Hybrid search within ``filters``, whose principals the answer engine sets itself
    (the retriever's search)."""

    def __call__(
        self, query: str, *, k: int | None = None, filters: SearchFilters | None = None
    ) -> SearchResult: ...


@dataclass(slots=True)
class AskOptions:
    rag: bool = True
    k: int | None = None
    stream_generation: GenerationOptions | None = None
    # Legacy clients name their own room ids: create the session instead of refusing it.
    create_missing_session: bool = False
    today: date | None = None
    # Memory given by the caller (OpenAI-style clients send the whole conversation);
    # such turns are not stored, the client keeps its own history.
    history: list[Turn] | None = None
    # The operator's instructions (an OpenAI-style system message): given to a language
    # model after the grounding rules, which they cannot lift; the extractive one ignores them.
    instructions: str | None = None
    # Who the end user is by the client's own account (OpenAI's "user"), for the audit log.
    end_user: str | None = None
    # Images the question carries (checked by hanrag.answer.images): a vision model describes
    # them for planning and retrieval, and the answering model sees them when it can.
    images: list[ImageInput] = field(default_factory=list)
    # "single" | "ensemble" (None: the llm.mode setting); candidates: return every
    # ensemble candidate with its scores, not only the chosen answer.
    mode: str | None = None
    candidates: bool = False


def reference_of(source: Source) -> dict[str, Any]:
    chunk = source.hit.chunk
    snippet = source.text if len(source.text) <= 300 else source.text[:300].rstrip() + "…"
    return {
        "n": source.n,
        "chunk_id": chunk.chunk_id,
        "document_id": chunk.document_id,
        "source": chunk.source,
        "file_name": Path(chunk.source).name,
        "title": chunk.title,
        "page": chunk.page,
        "sheet": chunk.sheet,
        "date": from_epoch(chunk.date).date().isoformat(),
        "score": round(source.hit.score, 6),
        "snippet": snippet,
        "text": source.text,
    }


def cited_numbers(answer: str) -> list[int]:
    numbers: list[int] = []
    for group in _CITATION.findall(answer):
        for part in group.split(","):
            n = int(part.strip())
            if n not in numbers:
                numbers.append(n)
    return numbers
