"""Runs the engine over a dataset: answers, a retrieval measure, metrics, stored as it goes.

Per question (``concurrency`` at a time):

1. ``ask_result`` — the whole ask flow (planner, retrieval, packing, generator, citations),
   with an empty given memory (no session is stored) and the item's filters;
2. ``search`` — the question as asked, with the item's filters, for ``2·k`` chunks (at
   most 200): the retrieval measure. With gold documents the ranking keeps the first chunk
   of each document and is cut to ``k`` documents (exactly ``bench/retrieval.py``); with
   gold chunks or gold passage texts it is the first ``k`` chunks. The planner's time range
   is not applied here (as in ``bench/retrieval.py``); the answer's own sources are scored
   separately (``sources_hit``, ``sources_recall``), as are its citations;
3. the judge, when one is given (:mod:`hanrag.eval.judge`), on the answer and its sources;
4. the metrics (:mod:`hanrag.eval.metrics`), then one row appended to ``results.jsonl``.

The answer comes first so that its latency is what a user would see (the search after it
finds the query vector in the engine's cache). A run resumes: questions already in
``results.jsonl`` are skipped (errors too, unless ``retry_errors``); the manifest's
fingerprints must match (same dataset, same retrieval and model settings, same k), else
the run refuses with ``run_mismatch`` and a new name is needed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hanrag import __version__
from hanrag.answer.model import AskOptions
from hanrag.auth.access import SYSTEM, Caller
from hanrag.domain import AnswerResult, Hit, SearchFilters, SearchResult, epoch_bound
from hanrag.errors import HanragError, InvalidInputError, NotFoundError
from hanrag.eval import corpus as corpus_mod
from hanrag.eval.dataset import Dataset, Item
from hanrag.eval.judge import Judge
from hanrag.eval.metrics import (
    best_char_f1,
    citation_metrics,
    contained,
    exact_match,
    passage_matches,
    retrieval_metrics,
)
from hanrag.eval.port import EvalEngine
from hanrag.eval.runs import SCHEMA, RunStore, summarise

Progress = Callable[[int, int, dict[str, Any] | None], None]
# The settings whose change makes a stored run incomparable (a resume refuses it).
COMPARABLE_SETTINGS = ("embed", "chunk", "retrieval", "index", "llm", "answer", "prompts")
SNIPPET_CHARS = 400
END_USER = "hanrag-eval"


@dataclass(slots=True)
class RunOptions:
    k: int = 10
    concurrency: int = 1
    retrieval_only: bool = False
    retry_errors: bool = False
    caller: Caller = SYSTEM
    warm_up: bool = True


@dataclass(slots=True)
class _Session:
    """What one invocation spent (summed over the run's sessions in the summary)."""

    questions: int = 0
    ask_s: float = 0.0
    search_s: float = 0.0
    judge_s: float = 0.0
    eval_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)


def config_fingerprint(masked: dict[str, Any], options: RunOptions) -> str:
    shape = {name: masked.get(name) for name in COMPARABLE_SETTINGS}
    shape["_options"] = {"k": options.k, "retrieval_only": options.retrieval_only}
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()


def _providers_total(engine: EvalEngine) -> dict[str, float]:
    try:
        providers = engine.llm_registry.status().get("providers") or []
    except Exception:  # statistics are a nicety; a run never fails on them
        return {"cost": 0.0, "tokens_in": 0.0, "tokens_out": 0.0}
    return {
        key: float(sum(float(p.get(key) or 0) for p in providers if isinstance(p, dict)))
        for key in ("cost", "tokens_in", "tokens_out")
    }


class GoldResolver:
    """Gold document keys -> hanrag document ids: a corpus passage id (directory datasets),
    else a document id, source path or unique file name known to the catalog."""

    def __init__(self, engine: EvalEngine, caller: Caller, corpus_ids: set[str] | None) -> None:
        self.engine = engine
        self.caller = caller
        self.corpus_ids = corpus_ids
        self._known: dict[str, str | None] = {}

    def document(self, key: str) -> str | None:
        if key not in self._known:
            if self.corpus_ids is not None and key in self.corpus_ids:
                self._known[key] = corpus_mod.document_id(key)
            else:
                try:
                    self._known[key] = self.engine.get_document(key, caller=self.caller).id
                except (NotFoundError, InvalidInputError):
                    self._known[key] = None
        return self._known[key]


def search_filters(item: Item, resolver: GoldResolver) -> SearchFilters | None:
    data = item.filters
    if not data:
        return None
    ids = data.get("document_ids")
    return SearchFilters(
        date_from=epoch_bound(datetime.fromisoformat(data["date_from"]), end=False)
        if data.get("date_from")
        else None,
        date_to=epoch_bound(datetime.fromisoformat(data["date_to"]), end=True)
        if data.get("date_to")
        else None,
        document_ids=[resolver.document(i) or i for i in ids] if ids else None,
        metadata=dict(data.get("metadata") or {}),
    )


class _Gold:
    """An item's gold units and how a hit, reference or citation matches them."""

    def __init__(self, item: Item, resolver: GoldResolver) -> None:
        self.item = item
        self.unresolved: list[str] = []
        self.by_document: dict[str, set[str]] = {}
        if item.gold_chunk_ids:
            self.unit, self.count = "chunk", len(item.gold_chunk_ids)
            return
        for key in item.gold_document_ids:
            document = resolver.document(key)
            if document is None:
                self.unresolved.append(key)
            else:
                self.by_document.setdefault(document, set()).add(key)
        if item.gold_document_ids and (self.by_document or not item.gold_passages):
            self.unit, self.count = "document", len(item.gold_document_ids)
        elif item.gold_passages:
            self.unit, self.count = "passage", len(item.gold_passages)
        else:
            self.unit, self.count = "none", 0

    def units(self, chunk_id: str, document_id: str, text: str) -> set[str]:
        if self.unit == "chunk":
            return {chunk_id} & set(self.item.gold_chunk_ids)
        if self.unit == "document":
            return set(self.by_document.get(document_id, ()))
        if self.unit == "passage":
            return {f"passage:{i}" for i in passage_matches(text, self.item.gold_passages)}
        return set()

    def ranking(self, hits: list[Hit], k: int) -> list[Hit]:
        if self.unit != "document":
            return hits[:k]
        seen: set[str] = set()
        kept: list[Hit] = []
        for hit in hits:
            if hit.chunk.document_id not in seen:
                seen.add(hit.chunk.document_id)
                kept.append(hit)
        return kept[:k]


def _hit_row(rank: int, hit: Hit, units: set[str]) -> dict[str, Any]:
    c = hit.chunk

    def score(value: float | None) -> float | None:
        return None if value is None else round(value, 6)

    return {
        "rank": rank,
        "chunk_id": c.chunk_id,
        "document_id": c.document_id,
        "passage_id": corpus_mod.passage_of_source(c.source),
        "title": c.title,
        "source": c.source,
        "page": c.page,
        "score": score(hit.score),
        "dense": score(hit.dense_score),
        "bm25": score(hit.bm25_score),
        "bigram": score(hit.bigram_score),
        "relevant": sorted(units),
        "text": c.text[:SNIPPET_CHARS],
    }


def _latency(result: AnswerResult | None) -> dict[str, float]:
    if result is None:
        return {}
    t = result.timings
    names = {
        "planning_ms": "planning",
        "retrieval_ms": "retrieval",
        "time_to_first_token_ms": "first_token",
        "generation_ms": "generation",
        "total_ms": "total",
    }
    return {short: float(t[long]) for long, short in names.items() if long in t}


class Runner:
    def __init__(
        self,
        engine: EvalEngine,
        dataset: Dataset,
        store: RunStore,
        *,
        options: RunOptions | None = None,
        judge: Judge | None = None,
        on_progress: Progress | None = None,
    ) -> None:
        self.engine = engine
        self.dataset = dataset
        self.store = store
        self.options = options or RunOptions()
        self.judge = judge
        self.on_progress = on_progress
        corpus_ids = {p.id for p in dataset.corpus} if dataset.corpus is not None else None
        self.resolver = GoldResolver(engine, self.options.caller, corpus_ids)

    # ------------------------------------------------------------ manifest

    def _manifest(self, extra: dict[str, Any]) -> dict[str, Any]:
        settings = self.engine.settings
        masked = settings.masked()
        generator = self.engine.generators.get("answer")
        return {
            "schema": SCHEMA,
            "run_id": self.store.run_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "hanrag_version": __version__,
            "dataset": self.dataset.describe(),
            "question_ids": [item.id for item in self.dataset.items],
            "options": {
                "k": self.options.k,
                "concurrency": self.options.concurrency,
                "retrieval_only": self.options.retrieval_only,
            },
            "config": masked,
            "config_fingerprint": config_fingerprint(masked, self.options),
            "generator": None if generator is None else generator.name,
            "judge": None if self.judge is None else self.judge.model,
            "sessions": [],
            **extra,
        }

    def prepare(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create the run, or check that a stored one is this run resumed."""
        fresh = self._manifest(extra or {})
        if not self.store.exists:
            self.store.write_manifest(fresh)
            return fresh
        stored = self.store.manifest()
        problems = []
        if (stored.get("dataset") or {}).get("fingerprint") != fresh["dataset"]["fingerprint"]:
            problems.append("the dataset changed")
        if stored.get("config_fingerprint") != fresh["config_fingerprint"]:
            problems.append("the settings or k changed")
        if problems:
            raise InvalidInputError(
                f"run {self.store.run_id!r} exists and {' and '.join(problems)}; use another --name",
                code="run_mismatch",
                field="name",
            )
        self.store.repair()
        return stored

    # ----------------------------------------------------------------- run

    async def run(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        manifest = self.prepare(extra)
        rows = self.store.rows()
        done = {r["id"] for r in rows if not (self.options.retry_errors and r.get("error"))}
        pending = [item for item in self.dataset.items if item.id not in done]
        total = len(self.dataset.items)
        if self.on_progress is not None:
            self.on_progress(total - len(pending), total, None)
        if pending:
            await self._run_pending(pending, manifest, total, total - len(pending))
        summary = summarise(manifest, self.store.rows())
        self.store.write_summary(summary)
        return summary

    async def _run_pending(
        self, pending: list[Item], manifest: dict[str, Any], total: int, done: int
    ) -> None:
        if self.options.warm_up:
            await self._warm_up(pending[0])
        before = _providers_total(self.engine)
        judge_before = (self.judge.calls, self.judge.cache_hits) if self.judge else (0, 0)
        session = _Session()
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        queue: asyncio.Queue[Item] = asyncio.Queue()
        for item in pending:
            queue.put_nowait(item)
        writer = self.store.open_results()
        counter = done

        async def worker() -> None:
            nonlocal counter
            while True:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                row = await self.evaluate(item, session)
                started = time.perf_counter()
                writer.append(row)
                session.eval_s += time.perf_counter() - started
                session.questions += 1
                counter += 1
                if self.on_progress is not None:
                    self.on_progress(counter, total, row)

        try:
            await asyncio.gather(
                *(worker() for _ in range(max(1, min(self.options.concurrency, len(pending)))))
            )
        finally:
            writer.close()
            after = _providers_total(self.engine)
            judge_after = (self.judge.calls, self.judge.cache_hits) if self.judge else (0, 0)
            manifest.setdefault("sessions", []).append(
                {
                    "started_at": started_at,
                    "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "questions": session.questions,
                    "concurrency": self.options.concurrency,
                    "wall_s": round(time.perf_counter() - session.started, 4),
                    "engine_s": round(session.ask_s + session.search_s, 4),
                    "ask_s": round(session.ask_s, 4),
                    "search_s": round(session.search_s, 4),
                    "judge_s": round(session.judge_s, 4),
                    "eval_s": round(session.eval_s, 4),
                    "cost": round(after["cost"] - before["cost"], 6),
                    "tokens_in": int(after["tokens_in"] - before["tokens_in"]),
                    "tokens_out": int(after["tokens_out"] - before["tokens_out"]),
                    "judge_calls": judge_after[0] - judge_before[0],
                    "judge_cache_hits": judge_after[1] - judge_before[1],
                }
            )
            self.store.write_manifest(manifest)

    async def _warm_up(self, item: Item) -> None:
        """Load the models and build the BM25 postings outside the timings."""
        caller = self.options.caller
        try:
            await asyncio.to_thread(self.engine.search, "워밍업", caller=caller, k=1)
            if not self.options.retrieval_only:
                await self.engine.ask_result("워밍업 질문입니다", caller=caller, options=self._ask_options())
        except HanragError:
            pass  # the questions report what is wrong

    def _ask_options(self) -> AskOptions:
        # A given (empty) memory: the turn is not stored, so evaluation leaves no sessions.
        return AskOptions(history=[], end_user=END_USER)

    # ------------------------------------------------------------ question

    async def evaluate(self, item: Item, session: _Session) -> dict[str, Any]:
        options, caller = self.options, self.options.caller
        row: dict[str, Any] = {
            "schema": SCHEMA,
            "id": item.id,
            "question": item.question,
            "tags": list(item.tags),
            "gold": {
                "answers": list(item.answers),
                "document_ids": list(item.gold_document_ids),
                "chunk_ids": list(item.gold_chunk_ids),
                "passages": list(item.gold_passages),
            },
            "meta": item.meta or None,
            "error": None,
        }
        latency: dict[str, float] = {}
        result: AnswerResult | None = None
        found: SearchResult | None = None
        judged: dict[str, Any] | None = None
        try:
            filters = search_filters(item, self.resolver)
            if not options.retrieval_only:
                started = time.perf_counter()
                result = await self.engine.ask_result(
                    item.question, caller=caller, filters=filters, options=self._ask_options()
                )
                latency["ask_wall"] = (time.perf_counter() - started) * 1000
                session.ask_s += latency["ask_wall"] / 1000
            started = time.perf_counter()
            found = await asyncio.to_thread(
                self.engine.search, item.question, caller=caller, k=min(2 * options.k, 200), filters=filters
            )
            latency["search"] = (time.perf_counter() - started) * 1000
            session.search_s += latency["search"] / 1000
            if self.judge is not None and result is not None:
                started = time.perf_counter()
                judged = await self.judge.evaluate(
                    item.question,
                    result.answer,
                    [r.get("text") or "" for r in result.references],
                    list(item.answers),
                )
                latency["judge"] = (time.perf_counter() - started) * 1000
                session.judge_s += latency["judge"] / 1000
        except HanragError as exc:
            row["error"] = {"code": exc.code, "message": exc.message}
        started = time.perf_counter()
        self._score(row, item, result, found, judged)
        latency.update(_latency(result))
        row["latency_ms"] = {k: round(v, 3) for k, v in latency.items()}
        row["usage"] = result.usage if result is not None else None
        row["finished_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        elapsed = time.perf_counter() - started
        row["latency_ms"]["eval"] = round(elapsed * 1000, 3)
        session.eval_s += elapsed
        return row

    def _score(
        self,
        row: dict[str, Any],
        item: Item,
        result: AnswerResult | None,
        found: SearchResult | None,
        judged: dict[str, Any] | None,
    ) -> None:
        k = self.options.k
        gold = _Gold(item, self.resolver)
        row["unit"] = gold.unit
        if gold.unresolved:
            row["unresolved_gold"] = gold.unresolved
        metrics: dict[str, float | None] = {}
        if found is not None:
            ranking = gold.ranking(found.hits, k)
            ranked = [gold.units(h.chunk.chunk_id, h.chunk.document_id, h.chunk.text) for h in ranking]
            first = next((rank for rank, units in enumerate(ranked, start=1) if units), None)
            row["retrieval"] = {
                "k": k,
                "first_rank": first,
                "hits": [
                    _hit_row(n, h, u) for n, (h, u) in enumerate(zip(ranking, ranked, strict=True), start=1)
                ],
            }
            if gold.unit != "none":
                metrics.update(retrieval_metrics(ranked, gold.count, k))
        if result is not None:
            references: list[dict[str, Any]] = [
                {
                    **{
                        key: ref.get(key)
                        for key in ("n", "chunk_id", "document_id", "title", "source", "page", "score")
                    },
                    "relevant": sorted(
                        gold.units(
                            ref.get("chunk_id") or "", ref.get("document_id") or "", ref.get("text") or ""
                        )
                    ),
                }
                for ref in result.references
            ]
            by_n = {ref["n"]: ref for ref in references}
            citations = [
                {**c, "relevant": (by_n.get(c.get("n")) or {}).get("relevant", [])} for c in result.citations
            ]
            row["answer"] = {
                "text": result.answer,
                "citations": citations,
                "references": references,
                "generator": result.generator,
                "fallback": result.fallback,
                "plan": result.plan,
            }
            if gold.unit != "none":
                found_units = {u for ref in references for u in ref["relevant"]}
                metrics["sources_hit"] = float(bool(found_units))
                metrics["sources_recall"] = (
                    min(len(found_units), gold.count) / gold.count if gold.count else 0.0
                )
                metrics.update(citation_metrics([set(c["relevant"]) for c in citations], gold.count))
            if item.answers:
                metrics["exact_match"] = exact_match(result.answer, item.answers)
                metrics["char_f1"] = best_char_f1(result.answer, item.answers)
                metrics["contained"] = contained(result.answer, item.answers)
        if judged is not None:
            row["judge"] = judged
            for name, entry in judged.items():
                metrics[name] = entry.get("score")
        row["metrics"] = metrics


def run_dir(data_dir: Path, run_id: str) -> RunStore:
    from hanrag.eval.runs import check_run_id, runs_root

    return RunStore(runs_root(data_dir) / check_run_id(run_id))
