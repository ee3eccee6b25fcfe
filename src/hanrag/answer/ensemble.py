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
from hanrag.llm.base import GenerationOptions, GenerationRequest, Generator, Source, Turn, Usage

WEIGHTS = {"grounding": 0.35, "citations": 0.25, "agreement": 0.3, "length": 0.1}
# A sentence counts as supported when this share of its content morphemes is in its passages.
SUPPORT_SHARE = 0.6
_MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")

Tokenize = Callable[[str], list[str]]


@dataclass
class Analysis:
    """A text's content morphemes, whole and per sentence (with the sentence's citations)."""

    words: set[str]
    sentences: list[tuple[set[str], list[int]]]


@dataclass
class Candidate:
    provider: str
    text: str = ""
    error: str | None = None  # the stable code when the provider failed
    latency_ms: float = 0.0
    # Filled as soon as the candidate is complete (while slower ones still stream).
    analysis: Analysis | None = field(default=None, repr=False)


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


def analyse(text: str, tokenize: Tokenize = morpheme_tokens) -> Analysis:
    parts = [(_content(sentence, tokenize), _numbers(sentence)) for sentence in sentences(text)]
    words: set[str] = set().union(*(w for w, _ in parts)) if parts else set()
    return Analysis(words, [(w, n) for w, n in parts if w])


def source_words(sources: Sequence[Source], tokenize: Tokenize = morpheme_tokens) -> dict[int, set[str]]:
    return {s.n: _content(s.text, tokenize) for s in sources}


def grounding(
    text: str | Analysis,
    sources: Sequence[Source],
    tokenize: Tokenize = morpheme_tokens,
    *,
    passages: dict[int, set[str]] | None = None,
) -> float:
    """``passages``: the sources' content morphemes by number, when already analysed (the
    ensemble analyses each passage once, while the candidates are still streaming)."""
    by_number = passages if passages is not None else source_words(sources, tokenize)
    everything = set().union(*by_number.values()) if by_number else set()
    analysis = text if isinstance(text, Analysis) else analyse(text, tokenize)
    checked = supported = 0
    for words, numbers in analysis.sentences:
        cited = [by_number[n] for n in numbers if n in by_number]
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
    candidates: Sequence[Candidate],
    sources: Sequence[Source],
    tokenize: Tokenize = morpheme_tokens,
    *,
    passages: dict[int, set[str]] | None = None,
) -> list[ScoredCandidate]:
    """Every candidate scored (failed ones with 0), best first."""
    answered = [c for c in candidates if c.error is None and c.text.strip()]
    for candidate in answered:
        if candidate.analysis is None:
            candidate.analysis = analyse(candidate.text, tokenize)
    if answered and passages is None:
        passages = source_words(sources, tokenize)
    median = statistics.median(len(c.text.strip()) for c in answered) if answered else 0.0
    answered_ids = {id(c) for c in answered}
    scored: list[ScoredCandidate] = []
    for candidate in candidates:
        if id(candidate) not in answered_ids:
            scored.append(ScoredCandidate(candidate, {}, 0.0))
            continue
        assert candidate.analysis is not None
        words = candidate.analysis.words
        others = [o.analysis.words for o in answered if o is not candidate and o.analysis is not None]
        signals = {
            "grounding": grounding(candidate.analysis, sources, tokenize, passages=passages)
            if sources
            else 0.5,
            "citations": citation_validity(candidate.text, sources),
            "agreement": statistics.fmean(_jaccard(words, o) for o in others) if others else 0.5,
            "length": _length(candidate.text, median),
        }
        total = sum(WEIGHTS[name] * value for name, value in signals.items())
        scored.append(ScoredCandidate(candidate, signals, total))
    scored.sort(key=lambda s: s.score, reverse=True)
    return scored


def consensus(scored: Sequence[ScoredCandidate], tokenize: Tokenize = morpheme_tokens) -> float:
    """Mean pairwise agreement of the candidates that answered (1.0 with one, 0 with none)."""
    texts = [
        (s.candidate.analysis or analyse(s.candidate.text, tokenize)).words
        for s in scored
        if s.candidate.error is None and s.candidate.text
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
    candidate = Candidate(name, text, None, (time.perf_counter() - started) * 1000)
    if text:  # analysed now, while slower candidates still stream
        candidate.analysis = await asyncio.to_thread(analyse, text)
    return candidate, usage


async def run_ensemble(
    members: Sequence[tuple[str, Generator]],
    request: GenerationRequest,
    sources: Sequence[Source],
    *,
    timeout_s: float,
) -> tuple[list[ScoredCandidate], dict[int, Usage | None]]:
    """Every member (provider name, generator) answers the same request at once (each within ``timeout_s``); the
    candidates scored, best first, and each candidate's usage by ``id``."""
    # The passages are analysed while the candidates stream (in a thread: Kiwi releases the GIL).
    passages = asyncio.ensure_future(asyncio.to_thread(source_words, sources))
    try:
        collected = await asyncio.gather(*(_collect(name, m, request, timeout_s) for name, m in members))
    finally:
        analysed = await passages
    usages = {id(candidate): usage for candidate, usage in collected}
    scored = score_candidates([candidate for candidate, _ in collected], sources, passages=analysed)
    return scored, {id(s.candidate): usages.get(id(s.candidate)) for s in scored}


JUDGE_WEIGHT = 0.3


async def judge_candidates(
    scored: list[ScoredCandidate],
    judge: Generator,
    messages_for: Callable[[str], list[Turn]],
    read_score: Callable[[str], float | None],
    *,
    timeout_s: float,
) -> list[ScoredCandidate]:
    """With a ``judge`` provider: each answered candidate is also scored by it (all at once,
    within ``timeout_s``); its score weighs ``JUDGE_WEIGHT`` of the total. A judge that fails
    or replies without a score leaves that candidate's score as it was."""

    async def one(item: ScoredCandidate) -> float | None:
        try:
            reply = await asyncio.wait_for(
                judge.complete(
                    messages_for(item.candidate.text), GenerationOptions(max_tokens=300, temperature=0.0)
                ),
                timeout_s,
            )
        except (TimeoutError, HanragError):
            return None
        return read_score(reply)

    answered = [s for s in scored if s.candidate.error is None and s.candidate.text]
    verdicts = await asyncio.gather(*(one(s) for s in answered))
    for item, verdict in zip(answered, verdicts, strict=True):
        if verdict is not None:
            item.signals["judge"] = verdict
            item.score = (1 - JUDGE_WEIGHT) * item.score + JUDGE_WEIGHT * verdict
    return sorted(scored, key=lambda s: s.score, reverse=True)


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
