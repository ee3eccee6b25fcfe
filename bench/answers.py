"""Answer quality and latency of hanrag's ask flow on a Korean QA dev set.

Usage::

    .venv/bin/python bench/answers.py CORPUS.jsonl QUERIES.jsonl \\
        [--data-dir DIR] [--limit N] [--json]

The corpus is ingested exactly as ``bench/retrieval.py`` does (same helper, so a
``--data-dir`` shared with it is reused without re-embedding). Every question
then goes through ``Engine.ask_result`` — planner, hybrid retrieval, context
packing, the configured generator (``HANRAG_LLM__BACKEND``, extractive by
default), citations, session storage — and is scored against the gold answers:

* exact match: normalised answer == a normalised gold answer;
* character F1: KorQuAD-style F1 over characters of the normalised strings;
* contained: a normalised gold answer appears inside the normalised answer;
* citation precision: share of cited passages that are the gold passage;
* gold cited: the gold passage is among the citations;
* latency: planning, retrieval, time to first token, generation, total, and the
  engine's own overhead (total − retrieval − generation: planning, packing,
  citation mapping, storing the turn).

Normalisation removes whitespace and punctuation and lower-cases, so Korean
spacing differences (띄어쓰기) do not count as errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import sys
import tempfile
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hanrag.auth.access import SYSTEM
from hanrag.engine import Engine
from hanrag.settings import load_settings
from retrieval import ingest_corpus, load_jsonl

_PUNCTUATION = re.compile(r"[\s\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    return _PUNCTUATION.sub("", unicodedata.normalize("NFKC", text)).lower()


def char_f1(prediction: str, gold: str) -> float:
    predicted, expected = Counter(normalise(prediction)), Counter(normalise(gold))
    common = sum((predicted & expected).values())
    if common == 0:
        return 0.0
    precision = common / sum(predicted.values())
    recall = common / sum(expected.values())
    return 2 * precision * recall / (precision + recall)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def run_queries(
    engine: Engine, queries: list[dict[str, Any]], doc_to_passage: dict[str, str], console: Console
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with Progress(
        TextColumn("[bold]asking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("ask", total=len(queries))
        for query in queries:
            result = await engine.ask_result(str(query["question"]), caller=SYSTEM)
            golds = [str(a) for a in query["answers"]]
            gold_ids = set(query["positive_ids"])
            cited = [doc_to_passage.get(c["document_id"]) for c in result.citations]
            timings = result.timings
            rows.append(
                {
                    "exact": any(normalise(result.answer) == normalise(g) for g in golds),
                    "f1": max(char_f1(result.answer, g) for g in golds),
                    "contained": any(
                        normalise(g) and normalise(g) in normalise(result.answer) for g in golds
                    ),
                    "citation_precision": (sum(1 for c in cited if c in gold_ids) / len(cited))
                    if cited
                    else 0.0,
                    "gold_cited": any(c in gold_ids for c in cited),
                    "planning_ms": timings.get("planning_ms", 0.0),
                    "retrieval_ms": timings.get("retrieval_ms", 0.0),
                    "ttft_ms": timings.get("time_to_first_token_ms", 0.0),
                    "generation_ms": timings.get("generation_ms", 0.0),
                    "total_ms": timings.get("total_ms", 0.0),
                    "overhead_ms": timings.get("total_ms", 0.0)
                    - timings.get("retrieval_ms", 0.0)
                    - timings.get("generation_ms", 0.0),
                }
            )
            progress.advance(task)
    return rows


def summarise(rows: list[dict[str, Any]], generator: str) -> dict[str, Any]:
    def mean(key: str) -> float:
        return round(statistics.fmean(float(r[key]) for r in rows), 4) if rows else float("nan")

    latency = {
        key: {
            "p50": round(percentile([r[key] for r in rows], 50), 2),
            "p95": round(percentile([r[key] for r in rows], 95), 2),
        }
        for key in ("planning_ms", "retrieval_ms", "ttft_ms", "generation_ms", "total_ms", "overhead_ms")
    }
    return {
        "generator": generator,
        "questions": len(rows),
        "exact_match": mean("exact"),
        "char_f1": mean("f1"),
        "contained": mean("contained"),
        "citation_precision": mean("citation_precision"),
        "gold_cited": mean("gold_cited"),
        "latency_ms": latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("queries", type=Path)
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse this data directory (kept)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    console = Console(stderr=True)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="hanrag-answers-"))
    engine = Engine(load_settings(data_dir=data_dir))
    try:
        passages = load_jsonl(args.corpus)
        queries = load_jsonl(args.queries)[: args.limit]
        doc_to_passage, _counts, _seconds = ingest_corpus(engine, passages, console)
        asyncio.run(
            engine.ask_result("워밍업 질문입니다", caller=SYSTEM)
        )  # load models and postings before timing
        rows = asyncio.run(run_queries(engine, queries, doc_to_passage, console))
        summary = summarise(rows, engine.generator.name)
    finally:
        engine.close()
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)

    if args.json:
        sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
        return
    table = Table(title=f"answers ({summary['generator']}, {summary['questions']} questions)")
    for column in ("exact match", "char F1", "contained", "citation precision", "gold cited"):
        table.add_column(column, justify="right")
    table.add_row(
        *(
            f"{summary[k]:.3f}"
            for k in ("exact_match", "char_f1", "contained", "citation_precision", "gold_cited")
        )
    )
    Console().print(table)
    latency = Table(title="latency (ms)")
    latency.add_column("stage")
    latency.add_column("p50", justify="right")
    latency.add_column("p95", justify="right")
    for stage, figures in summary["latency_ms"].items():
        latency.add_row(stage.removesuffix("_ms"), f"{figures['p50']:.1f}", f"{figures['p95']:.1f}")
    Console().print(latency)


if __name__ == "__main__":
    main()
