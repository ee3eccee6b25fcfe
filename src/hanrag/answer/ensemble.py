"""Ensemble answers (issue P11): several providers answer from the same grounded prompt,
and the best-grounded answer is returned with a consensus score.

Each candidate is scored on four signals, each in [0, 1]:

* **grounding**: the share of its sentences whose content morphemes (Kiwi) are mostly found
  in the passages the sentence cites (a sentence without a citation is checked against all
  passages). Korean inflection makes raw word overlap unreliable; morphemes are not.
* **citations**: the share of its ``[n]`` markers that name a passage that exists. A model
  that invents ``[7]`` when there were 4 passages loses here.
* **agreement**: the mean overlap (Jaccard of content morphemes) with the other candidates:
  independent models that say the same thing are more likely right.
* **length**: 1 inside a sane band around the candidates' median length, less outside
  (an empty, one-word or runaway answer).

``score = 0.35·grounding + 0.25·citations + 0.3·agreement + 0.1·length``; the consensus
score of the answer is the mean pairwise agreement of the candidates that answered.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hanrag.errors import HanragError
from hanrag.korean.analyzer import morpheme_tokens, sentences
from hanrag.llm.base import GenerationRequest, Generator, Source, Usage

WEIGHTS = {"grounding": 0.35, "citations": 0.25, "agreement": 0.3, "length": 0.1}
# A sentence counts as supported when this share of its content morphemes is in its passages.
SUPPORT_SHARE = 0.6
_MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")

Tokenize = Callable[[str], list[str]]


@dataclass
class Candidate:
    provider: str
    text: str = ""
    error: str | None = None  # the stable code when the provider failed
    latency_ms: float = 0.0


@dataclass
class ScoredCandidate:
    candidate: Candidate
    signals: dict[str, float] = field(default_factory=dict)
    score: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.candidate.provider,
            "text": self.candidate.text,
            "error": self.candidate.error,
            "latency_ms": round(self.candidate.latency_ms, 1),
            "score": round(self.score, 4),
            "signals": {k: round(v, 4) for k, v in self.signals.items()},
        }


def _numbers(text: str) -> list[int]:
    return [int(n) for group in _MARKER.findall(text) for n in group.split(",")]


def _content(text: str, tokenize: Tokenize) -> set[str]:
    return {t for t in tokenize(_MARKER.sub(" ", text)) if len(t) > 1 or t.isdigit()}


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def grounding(text: str, sources: Sequence[Source], tokenize: Tokenize = morpheme_tokens) -> float:
    by_number = {s.n: _content(s.text, tokenize) for s in sources}
    everything = set().union(*by_number.values()) if by_number else set()
    checked = supported = 0
    for sentence in sentences(text):
        words = _content(sentence, tokenize)
        if not words:
            continue
        cited = [by_number[n] for n in _numbers(sentence) if n in by_number]
        pool = set().union(*cited) if cited else everything
        checked += 1
        supported += len(words & pool) / len(words) >= SUPPORT_SHARE
    return supported / checked if checked else 0.0


def citation_validity(text: str, sources: Sequence[Source]) -> float:
    numbers = _numbers(text)
    if not numbers:
        return 0.5 if sources else 1.0  # uncited: neither wrong nor checkable
    valid = {s.n for s in sources}
    return sum(n in valid for n in numbers) / len(numbers)


def _length(text: str, median: float) -> float:
    size = len(text.strip())
    if size < 10:
        return 0.0
    if median and size > 4 * median:
        return max(0.0, 1 - (size / median - 4) / 4)
    return 1.0


def score_candidates(
    candidates: Sequence[Candidate], sources: Sequence[Source], tokenize: Tokenize = morpheme_tokens
) -> list[ScoredCandidate]:
    """Every candidate scored (failed ones with 0), best first."""
    answered = [c for c in candidates if c.error is None and c.text.strip()]
    words = {id(c): _content(c.text, tokenize) for c in answered}
    median = statistics.median(len(c.text.strip()) for c in answered) if answered else 0.0
    scored: list[ScoredCandidate] = []
    answered_ids = set(words)
    for candidate in candidates:
        if id(candidate) not in answered_ids:
            scored.append(ScoredCandidate(candidate, {}, 0.0))
            continue
        others = [words[id(o)] for o in answered if o is not candidate]
        signals = {
            "grounding": grounding(candidate.text, sources, tokenize) if sources else 0.5,
            "citations": citation_validity(candidate.text, sources),
            "agreement": statistics.fmean(_jaccard(words[id(candidate)], o) for o in others)
            if others
            else 0.5,
            "length": _length(candidate.text, median),
        }
        total = sum(WEIGHTS[name] * value for name, value in signals.items())
        scored.append(ScoredCandidate(candidate, signals, total))
    scored.sort(key=lambda s: s.score, reverse=True)
    return scored


def consensus(scored: Sequence[ScoredCandidate], tokenize: Tokenize = morpheme_tokens) -> float:
    """Mean pairwise agreement of the candidates that answered (1.0 with one, 0 with none)."""
    texts = [
        _content(s.candidate.text, tokenize) for s in scored if s.candidate.error is None and s.candidate.text
    ]
    if len(texts) < 2:
        return 1.0 if texts else 0.0
    pairs = [_jaccard(a, b) for i, a in enumerate(texts) for b in texts[i + 1 :]]
    return statistics.fmean(pairs)


async def _collect(
    name: str, member: Generator, request: GenerationRequest, timeout_s: float
) -> tuple[Candidate, Usage | None]:
    started = time.perf_counter()
    parts: list[str] = []
    usage: Usage | None = None

    async def read() -> None:
        nonlocal usage
        async for chunk in member.stream(request):
            parts.append(chunk.text)
            usage = chunk.usage or usage

    try:
        await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        elapsed = (time.perf_counter() - started) * 1000
        return Candidate(name, "".join(parts), "llm_timeout", elapsed), None
    except HanragError as exc:
        return Candidate(name, "", exc.code, (time.perf_counter() - started) * 1000), None
    text = "".join(parts).strip()
    return Candidate(name, text, None, (time.perf_counter() - started) * 1000), usage


async def run_ensemble(
    members: Sequence[tuple[str, Generator]],
    request: GenerationRequest,
    sources: Sequence[Source],
    *,
    timeout_s: float,
) -> tuple[list[ScoredCandidate], dict[int, Usage | None]]:
    """Every member (provider name, generator) answers the same request at once (each within ``timeout_s``); the
    candidates scored, best first, and each candidate's usage by ``id``."""
    collected = await asyncio.gather(*(_collect(name, m, request, timeout_s) for name, m in members))
    usages = {id(candidate): usage for candidate, usage in collected}
    scored = score_candidates([candidate for candidate, _ in collected], sources)
    return scored, {id(s.candidate): usages.get(id(s.candidate)) for s in scored}


def ensemble_info(scored: Sequence[ScoredCandidate], *, with_candidates: bool) -> dict[str, Any]:
    """What the answer says about its ensemble: the chosen provider, the consensus score,
    every provider's score (and, when asked, every candidate's text and signals)."""
    best = scored[0]
    info: dict[str, Any] = {
        "mode": "ensemble",
        "chosen": best.candidate.provider,
        "consensus": round(consensus(scored), 4),
        "scores": {s.candidate.provider: round(s.score, 4) for s in scored},
        "errors": {s.candidate.provider: s.candidate.error for s in scored if s.candidate.error},
    }
    if with_candidates:
        info["candidates"] = [s.as_dict() for s in scored]
    return info
