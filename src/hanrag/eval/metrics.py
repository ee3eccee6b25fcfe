"""Metric functions: retrieval, answers in Korean, citations, and a paired bootstrap.

Retrieval (binary relevance; ``ranked`` is the ranking, each entry the set of gold units
it matches — empty when irrelevant; a gold unit counts once, at its first rank):

* ``hit@k``: some gold unit in the first k;
* ``recall@k``: share of the gold units found in the first k;
* ``mrr@k``: 1 / rank of the first relevant entry (0 past k);
* ``ndcg@k``: DCG of the relevant ranks (1 / log2(rank + 1)) over the ideal DCG of
  min(#gold, k) relevant entries at the top. With one gold unit: 1 / log2(rank + 1).

A gold unit is a gold document (the ranking then holds distinct documents, the first
chunk of each), a gold chunk, or — when no id is known — a gold passage text: a chunk
matches it when, normalised (:func:`squash`), one contains the other (a chunk shorter than
:data:`MIN_CONTAINED_CHARS` must contain the passage).

Answers (Korean normalisation): NFKC and lower case, punctuation dropped, then a word may
lose one trailing particle or copula of :data:`PARTICLES` (longest first) when something
is left before it — after a topic/additive particle (은/는/도/만) one more case particle may
go (``서울에서는`` -> ``서울``); finally all spaces go, so 띄어쓰기 differences never count.
Each text is compared in three forms (:func:`answer_forms`): as written, without the last
word's particle, without every word's particle. Then:

* exact match: the answer and a gold answer share a form;
* character F1: KorQuAD-style F1 over the characters, best pair of forms and gold answers;
* contained: a form of a gold answer occurs in a form of the answer.

Every figure is at least the plain (no particle) comparison of ``bench/answers.py``.

Citations: precision = share of the answer's citations that are gold units (0 when it cites
nothing), recall = share of the gold units cited.

:func:`paired_bootstrap`: the mean difference of paired per-question values with a seeded
percentile confidence interval.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# Trailing particles (조사) and copula endings removed from each word, longest first.
PARTICLES: tuple[str, ...] = (
    "입니다",
    "이었다",
    "이에요",
    "에서",
    "에게",
    "으로",
    "까지",
    "부터",
    "처럼",
    "보다",
    "이다",
    "였다",
    "예요",
    "은",
    "는",
    "이",
    "가",
    "을",
    "를",
    "에",
    "의",
    "로",
    "와",
    "과",
    "도",
    "만",
)
# After one of these, a case particle may stand before it (에서+는, 에+도, 으로+만).
STACKING = ("은", "는", "도", "만")
MIN_CONTAINED_CHARS = 20

_PUNCTUATION = re.compile(r"[^\w\s]|_", re.UNICODE)
_SPACES = re.compile(r"\s+")


def squash(text: str) -> str:
    """NFKC, lower case, no punctuation, no whitespace (passage and id-free comparisons)."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACES.sub("", _PUNCTUATION.sub("", text))


def strip_particle(word: str) -> str:
    """``word`` without one trailing particle (two when a topic/additive one follows a case one)."""
    for _ in range(2):
        for particle in PARTICLES:
            if word.endswith(particle) and len(word) > len(particle):
                word = word[: -len(particle)]
                break
        else:
            return word
        if particle not in STACKING:
            return word
    return word


def _words(text: str) -> list[str]:
    # Punctuation goes without a trace, so a particle after a quote or bracket stays on its word.
    return _PUNCTUATION.sub("", unicodedata.normalize("NFKC", text).lower()).split()


def normalise_answer(text: str) -> str:
    """NFKC, lower case, no punctuation, every word without its trailing particle, no spaces."""
    return "".join(strip_particle(word) for word in _words(text))


def answer_forms(text: str) -> tuple[str, ...]:
    """The forms an answer is compared in: as written (:func:`squash`), without the last
    word's particle, and without every word's particle (:func:`normalise_answer`). A noun
    that ends like a particle (국가, 경기도) loses that syllable in the last form only, so
    "국가가" and "국가" still meet in the second."""
    words = _words(text)
    if not words:
        return ("",)
    forms = ("".join(words), "".join([*words[:-1], strip_particle(words[-1])]), normalise_answer(text))
    return tuple(dict.fromkeys(forms))


def _f1(predicted_text: str, gold_text: str) -> float:
    predicted, expected = Counter(predicted_text), Counter(gold_text)
    common = sum((predicted & expected).values())
    if common == 0:
        return 0.0
    precision = common / sum(predicted.values())
    recall = common / sum(expected.values())
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    """1.0 when the answer equals a gold answer in some of their :func:`answer_forms`."""
    predicted = set(answer_forms(prediction))
    return float(any(predicted & set(answer_forms(g)) - {""} for g in golds))


def char_f1(prediction: str, gold: str) -> float:
    """Character F1 of the best-matching pair of :func:`answer_forms` (1.0 on an exact match)."""
    return max(_f1(p, g) for p in answer_forms(prediction) for g in answer_forms(gold))


def best_char_f1(prediction: str, golds: Iterable[str]) -> float:
    return max((char_f1(prediction, g) for g in golds), default=0.0)


def contained(prediction: str, golds: Iterable[str]) -> float:
    """1.0 when a gold answer occurs in the answer (some forms of each; a gold form cut to
    one character by particle stripping does not count)."""
    predicted = answer_forms(prediction)
    for gold in golds:
        forms = answer_forms(gold)
        usable = [f for f in forms if f and (len(f) >= 2 or f == forms[0])]
        if any(f in p for f in usable for p in predicted):
            return 1.0
    return 0.0


# ---------------------------------------------------------------- retrieval


def passage_matches(chunk_text: str, passages: Sequence[str]) -> set[int]:
    """Indexes of the gold passages a chunk matches (containment either way, normalised)."""
    chunk = squash(chunk_text)
    if not chunk:
        return set()
    found: set[int] = set()
    for index, passage in enumerate(passages):
        gold = squash(passage)
        if not gold:
            continue
        if gold in chunk or (len(chunk) >= MIN_CONTAINED_CHARS and chunk in gold):
            found.add(index)
    return found


def first_ranks(ranked: Sequence[set[Any]], k: int) -> dict[Any, int]:
    """gold unit -> the 1-based rank where it first appears within the first ``k``."""
    ranks: dict[Any, int] = {}
    for rank, units in enumerate(ranked[:k], start=1):
        for unit in units:
            ranks.setdefault(unit, rank)
    return ranks


def hit_at(ranked: Sequence[set[Any]], k: int) -> float:
    return float(any(units for units in ranked[:k]))


def recall_at(ranked: Sequence[set[Any]], gold_count: int, k: int) -> float:
    if gold_count <= 0:
        return 0.0
    return min(len(first_ranks(ranked, k)), gold_count) / gold_count


def mrr_at(ranked: Sequence[set[Any]], k: int) -> float:
    for rank, units in enumerate(ranked[:k], start=1):
        if units:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranked: Sequence[set[Any]], gold_count: int, k: int) -> float:
    if gold_count <= 0:
        return 0.0
    # Each gold unit gains once, at its first rank; a rank matching only units already
    # found gains nothing.
    gains = sorted(set(first_ranks(ranked, k).values()))
    dcg = sum(1.0 / math.log2(rank + 1) for rank in gains)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(gold_count, k) + 1))
    return dcg / ideal


def cutoffs(k: int) -> list[int]:
    return sorted({c for c in (1, 5, k) if c <= k})


def retrieval_metrics(ranked: Sequence[set[Any]], gold_count: int, k: int) -> dict[str, float]:
    """hit@, recall@ (1, 5, k), mrr@k and ndcg@k of one ranking."""
    out: dict[str, float] = {}
    for c in cutoffs(k):
        out[f"hit@{c}"] = hit_at(ranked, c)
        out[f"recall@{c}"] = recall_at(ranked, gold_count, c)
    out[f"mrr@{k}"] = mrr_at(ranked, k)
    out[f"ndcg@{k}"] = ndcg_at(ranked, gold_count, k)
    return out


def citation_metrics(cited: Sequence[set[Any]], gold_count: int) -> dict[str, float]:
    """Precision (share of citations matching a gold unit), recall (share of gold units
    cited) and hit (some gold unit cited) of the answer's citations."""
    found: set[Any] = set().union(*cited) if cited else set()
    return {
        "citation_precision": sum(1 for units in cited if units) / len(cited) if cited else 0.0,
        "citation_recall": min(len(found), gold_count) / gold_count if gold_count else 0.0,
        "citation_hit": float(bool(found)),
    }


# ---------------------------------------------------------------- aggregates


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


def mean(values: Sequence[float]) -> float | None:
    return float(np.mean(np.asarray(values, dtype=np.float64))) if values else None


def paired_bootstrap(
    before: Sequence[float],
    after: Sequence[float],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 13,
) -> dict[str, float | int | None]:
    """Mean of ``after - before`` over paired questions with a percentile bootstrap CI
    (questions resampled with replacement, ``seed`` fixed: the same inputs give the same
    interval). ``p_worse``/``p_better``: share of resamples whose mean delta is < 0 / > 0."""
    if len(before) != len(after):
        raise ValueError("paired values must have the same length")
    n = len(before)
    if n == 0:
        return {"n": 0, "delta": None, "low": None, "high": None, "p_worse": None, "p_better": None}
    deltas = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, 256):  # bounded memory for large sets
        stop = min(start + 256, resamples)
        picks = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = deltas[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    return {
        "n": n,
        "delta": float(deltas.mean()),
        "low": float(np.percentile(means, tail)),
        "high": float(np.percentile(means, 100 - tail)),
        "p_worse": float((means < 0).mean()),
        "p_better": float((means > 0).mean()),
    }
