"""Extractive generator: answers with sentences taken from the retrieved passages.

The embedded default needs no language model. Each sentence of the top sources
is scored by how much of the question it covers (Kiwi morphemes and character
bigrams, weighted by their rarity among the candidate sentences), by whether it
holds the kind of thing the question asks for (a number for 몇/얼마, a date for
언제, a name for 누구 ...), by whether its numeric ranges hold the question's
quantities (``3년차`` meets ``3년 이상 5년 미만`` and not ``1년 미만``, see
:mod:`hanrag.llm.numeric_ranges`), and by its passage's rank. A table row
(``근속 연수: 3년 이상 5년 미만, 연차휴가 일수: 16일`` as the parsers render
rows) is a candidate like a sentence and is quoted with its headers, the cells
that meet the question first (``근속 연수 3년 이상 5년 미만 → 연차휴가 일수 16일``). The best sentences are
returned in document order, each cited as [n]; when no sentence shares a
content word with the question the answer says so plainly, in the words the request's
``replies`` give (the answer layer sets them).
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hanrag.korean.analyzer import (
    char_bigrams,
    dictionary_generation,
    morpheme_tokens,
    morpheme_tokens_many,
    sentences,
)
from hanrag.llm.base import GenerationChunk, GenerationOptions, GenerationRequest, Source, Turn
from hanrag.llm.numeric_ranges import Span, fit, spans
from hanrag.lru import LruCache

_NUMBER = re.compile(r"\d")
_DATE = re.compile(r"(?:\d{1,4}\s*(?:년|월|일|세기|시|분)|\d{4}[.\-/]\d{1,2})")
_AMOUNT = re.compile(r"\d[\d,.]*\s*(?:원|달러|만|억|조|%|퍼센트|명|개|대|건|회|일|시간|kg|km|m|cm|mm|배)")
# A short line that does not end like a sentence is a heading or a label, not an answer.
_SENTENCE_END = re.compile(r"(?:[.?!。]|다|요|음|함|임)[\"')\]]*$")
_HEADING_MAX_CHARS = 30
_QUOTED = re.compile(r"[\"'“”‘’「」『』《》〈〉]")
# A rendered table row: ``헤더: 값, 헤더: 값`` (``tabular.render_row``); cells split before ``, 헤더:``.
_ROW = re.compile(r"^[^:,\n]{1,40}: .+, [^:,\n]{1,40}: ")
_CELL_SPLIT = re.compile(r", (?=[^:,\n]{1,40}: )")
# Weight of a range that holds the question's quantity; a candidate whose ranges exclude it is scaled down.
_RANGE_BONUS = 0.15
_RANGE_EXCLUDED = 0.7

# Question cues -> a check on the candidate sentence.
_CUES: list[tuple[re.Pattern[str], re.Pattern[str]]] = [
    (re.compile(r"언제|몇\s*년|몇\s*월|며칠|날짜|연도|년도|시기|기간"), _DATE),
    (re.compile(r"얼마|몇|금액|가격|비용|수량|인원|횟수|비율|퍼센트"), _AMOUNT),
]
_WHO_WHERE = re.compile(
    r"누구|누가|누구의|어디|어느\s*(?:나라|곳|도시|회사|팀|부서|기관)|이름|명칭|무엇|무슨|어떤"
)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _selection_pool() -> ThreadPoolExecutor:
    """Sentence selection runs in its own pool, one thread per core, not in asyncio's
    default pool: a burst of answers then queues here instead of in front of the
    session checks and searches of newer questions (which share the default pool), so
    a busy server still sends every caller its references quickly."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=os.cpu_count() or 2, thread_name_prefix="hanrag-extractive"
            )
        return _pool


@dataclass(frozen=True, slots=True)
class _Sentence:
    """One sentence of a passage with its lexical analysis (depends on the text only)."""

    position: int
    text: str
    key: str  # whitespace-normalised, to skip sentences repeated by overlapping chunks
    morphemes: frozenset[str]
    bigrams: frozenset[str]
    spans: tuple[Span, ...] = ()


class _PassageAnalyses:
    """Sentence split and Kiwi analysis per passage text, least recently used dropped.

    Analysing the candidate sentences is most of the extractive generator's cost
    (about 75 ms for five passages on one core), and the same passages answer many
    questions (the popular manual, this month's notice), so it is done once per text.
    """

    def __init__(self, capacity: int) -> None:
        self._cache: LruCache[str, tuple[_Sentence, ...]] = LruCache(capacity)
        self._generation = dictionary_generation()

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._cache), "hits": self._cache.hits, "misses": self._cache.misses}

    def get_many(self, texts: list[str]) -> list[tuple[_Sentence, ...]]:
        found: dict[str, tuple[_Sentence, ...]] = {}
        missing: list[str] = []
        generation = dictionary_generation()
        if generation != self._generation:  # the company vocabulary changed: analyse anew
            self._cache.clear()
            self._generation = generation
        for text in dict.fromkeys(texts):
            entry = self._cache.get(text)
            if entry is None:
                missing.append(text)
            else:
                found[text] = entry
        if missing:
            analysed = self._analyse(missing)
            found.update(analysed)
            for text, entry in analysed.items():
                self._cache.put(text, entry)
        return [found[t] for t in texts]

    @staticmethod
    def _analyse(texts: list[str]) -> dict[str, tuple[_Sentence, ...]]:
        split: list[list[tuple[int, str]]] = []
        for text in texts:
            numbered: list[tuple[int, str]] = []
            # Lines first: headings and table rows are units of their own, never glued
            # to the sentence that follows them.
            for line in text.split("\n"):
                for sentence in sentences(line):
                    numbered.append((len(numbered) + 1, sentence))
            split.append([(p, t) for p, t in numbered if len(t) >= 4])
        # One Kiwi call for every sentence of every passage (batched is faster).
        tokens = iter(morpheme_tokens_many([t for numbered in split for _p, t in numbered]))
        return {
            text: tuple(
                _Sentence(
                    p,
                    t,
                    " ".join(t.split()),
                    frozenset(next(tokens)),
                    frozenset(char_bigrams(t)),
                    tuple(spans(t)),
                )
                for p, t in numbered
            )
            for text, numbered in zip(texts, split, strict=True)
        }


@dataclass(slots=True)
class _Candidate:
    source: Source
    position: int
    text: str
    morphemes: frozenset[str]
    bigrams: frozenset[str]
    spans: tuple[Span, ...] = ()
    row: bool = False  # a rendered table row of a table chunk
    score: float = 0.0


class ExtractiveGenerator:
    name = "extractive"
    is_llm = False
    can_see = False

    def __init__(
        self,
        *,
        max_sentences: int = 2,
        max_sources: int = 5,
        relative_cutoff: float = 0.6,
        analysis_cache_size: int = 4096,
    ) -> None:
        self.max_sentences = max_sentences
        self.max_sources = max_sources
        self.relative_cutoff = relative_cutoff
        self.analyses = _PassageAnalyses(analysis_cache_size)

    def status(self) -> dict[str, object]:
        return {
            "backend": "extractive",
            "name": self.name,
            "loaded": True,
            "device": "cpu",
            "analysis_cache": self.analyses.stats(),
        }

    async def complete(self, messages: list[Turn], options: GenerationOptions) -> str:
        raise NotImplementedError("the extractive generator is not a language model")

    # ------------------------------------------------------------- selection

    def _candidates(self, sources: list[Source]) -> list[_Candidate]:
        candidates: list[_Candidate] = []
        seen: set[str] = set()
        used = sources[: self.max_sources]
        for source, analysed in zip(used, self.analyses.get_many([s.text for s in used]), strict=True):
            table = source.hit.chunk.kind == "table"
            for sentence in analysed:
                if sentence.key not in seen:  # overlapping chunks repeat sentences
                    seen.add(sentence.key)
                    candidates.append(
                        _Candidate(
                            source,
                            sentence.position,
                            sentence.text,
                            sentence.morphemes,
                            sentence.bigrams,
                            sentence.spans,
                            row=table and bool(_ROW.match(sentence.text)),
                        )
                    )
        return candidates

    @staticmethod
    def _coverage(query: list[str], docs: list[frozenset[str]]) -> list[float]:
        """Share of the question's (rarity-weighted) terms each sentence contains."""
        if not query or not docs:
            return [0.0] * len(docs)
        frequency = Counter(term for doc in docs for term in set(query) & doc)
        n = len(docs)
        weights = {term: math.log(1 + (n + 1) / (frequency[term] + 0.5)) for term in set(query)}
        total = sum(weights.values()) or 1.0
        return [sum(w for term, w in weights.items() if term in doc) / total for doc in docs]

    def select(self, question: str, sources: list[Source]) -> list[_Candidate]:
        candidates = self._candidates(sources)
        if not candidates:
            return []
        query_morphemes = morpheme_tokens(question)
        query_bigrams = char_bigrams(question)
        morpheme_cover = self._coverage(query_morphemes, [c.morphemes for c in candidates])
        bigram_cover = self._coverage(query_bigrams, [c.bigrams for c in candidates])
        cues = [check for cue, check in _CUES if cue.search(question)]
        wants_name = bool(_WHO_WHERE.search(question))
        asked = spans(question)
        for candidate, m_cover, b_cover in zip(candidates, morpheme_cover, bigram_cover, strict=True):
            score = 0.6 * m_cover + 0.4 * b_cover
            if score == 0:
                candidate.score = 0.0
                continue
            if cues and any(check.search(candidate.text) for check in cues):
                score += 0.1
            if wants_name and (_QUOTED.search(candidate.text) or _NUMBER.search(candidate.text)):
                score += 0.03
            if asked:
                meets = fit(asked, list(candidate.spans))
                if meets > 0:
                    score += _RANGE_BONUS * meets
                elif meets < 0:
                    score *= _RANGE_EXCLUDED
            # Earlier-ranked passages are more likely to hold the answer.
            score += 0.12 / candidate.source.n
            if (
                not candidate.row
                and len(candidate.text) < _HEADING_MAX_CHARS
                and not _SENTENCE_END.search(candidate.text)
            ):
                score *= 0.5
            candidate.score = score
        ranked = sorted(candidates, key=lambda c: c.score, reverse=True)
        best = ranked[0]
        if not (best.morphemes & set(query_morphemes)) and best.score < 0.3:
            return []
        chosen = [best]
        for candidate in ranked[1:]:
            if len(chosen) >= self.max_sentences:
                break
            if candidate.score >= self.relative_cutoff * best.score and candidate.text not in {
                c.text for c in chosen
            }:
                chosen.append(candidate)
        return sorted(chosen, key=lambda c: (c.source.n, c.position))

    # ------------------------------------------------------------- streaming

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        if not request.rag:
            yield GenerationChunk(request.replies.no_rag, finish_reason="stop")
            return
        if not request.sources:
            yield GenerationChunk(request.replies.no_sources, finish_reason="stop")
            return
        import asyncio

        loop = asyncio.get_running_loop()
        chosen = await loop.run_in_executor(_selection_pool(), self.select, request.question, request.sources)
        if not chosen:
            yield GenerationChunk(request.replies.not_found, finish_reason="stop")
            return
        asked = spans(request.question)
        for i, candidate in enumerate(chosen):
            separator = " " if i else ""
            text = render_row(candidate.text, asked) if candidate.row else candidate.text
            yield GenerationChunk(f"{separator}{text} [{candidate.source.n}]")
        yield GenerationChunk("", finish_reason="stop")


def render_row(row: str, asked: list[Span]) -> str:
    """A rendered table row as an answer: the cells that meet the question (or the first
    cell) as the condition, then ``→`` and the other cells, each with its header.

    ``근속 연수: 3년 이상 5년 미만, 연차휴가 일수: 16일`` → ``근속 연수 3년 이상 5년 미만 →
    연차휴가 일수 16일``.
    """
    cells = _CELL_SPLIT.split(row)
    if len(cells) < 2:
        return row
    meeting = [i for i, cell in enumerate(cells) if asked and fit(asked, spans(cell)) > 0]
    keys = set(meeting or [0])
    if len(keys) == len(cells):
        keys = {0}

    def plain(cell: str) -> str:
        name, _, value = cell.partition(": ")
        return f"{name} {value}" if value else cell

    condition = ", ".join(plain(cells[i]) for i in sorted(keys))
    rest = ", ".join(plain(cell) for i, cell in enumerate(cells) if i not in keys)
    return f"{condition} → {rest}"
