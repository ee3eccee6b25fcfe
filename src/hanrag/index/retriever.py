"""Hybrid Korean retrieval: query analysis, time-range widening, fusion settings.

The retriever turns a question into the index's three signals (the query
embedding, Kiwi morphemes, character bigrams) and asks the index for a fused
ranking; the index applies every filter inside the query.
"""

from __future__ import annotations

import calendar
import math
import time
from dataclasses import replace
from datetime import MAXYEAR, MINYEAR, datetime

from hanrag.cancellation import raise_if_cancelled
from hanrag.domain import SearchFilters, SearchResult, from_epoch, to_epoch
from hanrag.embed.manager import CachingEmbedder
from hanrag.errors import InvalidInputError
from hanrag.index.base import Index, IndexQuery
from hanrag.korean import vocabulary
from hanrag.korean.analyzer import char_bigrams, morpheme_tokens, require_text
from hanrag.settings import RetrievalSettings

FUSION_METHODS = ("weighted", "rrf")


def add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    year = moment.year + month_index // 12
    # Widening a range at the ends of the calendar stops there (no year 0 or 10000).
    if year < MINYEAR:
        return moment.replace(year=MINYEAR, month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if year > MAXYEAR:
        return moment.replace(year=MAXYEAR, month=12, day=31, hour=23, minute=59, second=59, microsecond=0)
    month = month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


class Retriever:
    def __init__(self, index: Index, embedder: CachingEmbedder, settings: RetrievalSettings) -> None:
        self.index = index
        self.embedder = embedder
        self.settings = settings

    def validate_query(self, query: str) -> str:
        return require_text(query, field="query", max_chars=self.settings.max_query_chars)

    def weights(self, overrides: dict[str, float] | None = None) -> dict[str, float]:
        weights = {
            "dense": self.settings.dense_weight,
            "bm25": self.settings.bm25_weight,
            "bigram": self.settings.bigram_weight,
        }
        for name, value in (overrides or {}).items():
            if name not in weights:
                raise InvalidInputError(
                    f"unknown retrieval signal {name!r} (known: dense, bm25, bigram)",
                    code="unknown_filter_field",
                    field=f"weights.{name}",
                )
            if not math.isfinite(value) or value < 0:
                raise InvalidInputError(
                    f"weight {name} must be a finite number that is not negative", field=f"weights.{name}"
                )
            weights[name] = value
        if not any(v > 0 for v in weights.values()):
            raise InvalidInputError("at least one retrieval weight must be positive", field="weights")
        return weights

    def _widen(self, filters: SearchFilters) -> tuple[SearchFilters, int | None]:
        """Widen a too-narrow time range step by step, then drop it.

        Returns the filters to use and how many months were added on each side
        (0: as asked, -1: the range was dropped, None: there was no range).
        """
        if filters.date_from is None and filters.date_to is None:
            return filters, None
        needed = self.settings.min_time_matches
        if self.index.count_matching(filters) >= needed:
            return filters, 0
        for months in self.settings.widen_months:
            widened = replace(
                filters,
                date_from=None
                if filters.date_from is None
                else to_epoch(add_months(from_epoch(filters.date_from), -months)),
                date_to=None
                if filters.date_to is None
                else to_epoch(add_months(from_epoch(filters.date_to), months)),
            )
            if self.index.count_matching(widened) >= needed:
                return widened, months
        return filters.without_dates(), -1

    def search(
        self,
        query: str,
        *,
        k: int | None = None,
        filters: SearchFilters | None = None,
        fusion: str | None = None,
        weights: dict[str, float] | None = None,
    ) -> SearchResult:
        started = time.perf_counter()
        text = self.validate_query(query)
        k = self.settings.k if k is None else k
        if k < 1 or k > 200:
            raise InvalidInputError(f"k must be between 1 and 200, not {k}", code="invalid_k", field="k")
        fusion = fusion or self.settings.fusion
        if fusion not in FUSION_METHODS:
            raise InvalidInputError(
                f"unknown fusion method {fusion!r} (known: {', '.join(FUSION_METHODS)})", field="fusion"
            )
        signal_weights = self.weights(weights)
        filters, widened = self._widen(filters or SearchFilters())
        analysed = time.perf_counter()
        raise_if_cancelled()  # a request that timed out starts no more work
        vector = self.embedder.embed_query(text) if signal_weights["dense"] > 0 else None
        embedded = time.perf_counter()
        raise_if_cancelled()
        # The company vocabulary: stop-words out, synonyms in (lexical tokens only).
        morphemes, bigrams = vocabulary.current().expand_query(
            text,
            morpheme_tokens(text) if signal_weights["bm25"] > 0 else [],
            char_bigrams(text) if signal_weights["bigram"] > 0 else [],
        )
        hits = self.index.search(
            IndexQuery(
                vector=vector,
                morphemes=morphemes if signal_weights["bm25"] > 0 else [],
                bigrams=bigrams if signal_weights["bigram"] > 0 else [],
                k=k,
                filters=filters,
                fusion=fusion,
                weights=signal_weights,
                rrf_k=self.settings.rrf_k,
                candidates=max(self.settings.candidates, k),
            )
        )
        finished = time.perf_counter()
        return SearchResult(
            query=text,
            hits=hits,
            applied_date_from=filters.date_from,
            applied_date_to=filters.date_to,
            widened_months=widened,
            timings_ms={
                "filters": round((analysed - started) * 1000, 2),
                "embed": round((embedded - analysed) * 1000, 2),
                "index": round((finished - embedded) * 1000, 2),
                "total": round((finished - started) * 1000, 2),
            },
        )
