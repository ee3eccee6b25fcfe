"""Answer quality and latency of hanrag's ask flow on a Korean QA dev set.

Usage::

    .venv/bin/python bench/answers.py CORPUS.jsonl QUERIES.jsonl \\
        [--data-dir DIR] [--limit N] [--json] [--runs-dir DIR]

A thin wrapper over ``hanrag eval``. The corpus is ingested exactly as
``bench/retrieval.py`` does (same helper, so a ``--data-dir`` shared with it is
reused without re-embedding). The questions are then one run of the evaluation
runner (``hanrag.eval.runner.Runner``, the code of ``hanrag eval run``): every
question goes through ``Engine.ask_result`` — planner, hybrid retrieval, context
packing, the configured generator (``HANRAG_LLM__BACKEND``, extractive by
default), citations, session storage (as before: each question opens a session,
which ``hanrag eval run`` does not) — and the runner scores it
(``hanrag.eval.metrics``):

* exact match: normalised answer == a normalised gold answer;
* character F1: KorQuAD-style F1 over characters of the normalised strings;
* contained: a normalised gold answer appears inside the normalised answer;
* citation precision: share of cited passages that are the gold passage;
* gold cited: the gold passage is among the citations;
* latency: planning, retrieval, time to first token, generation, total, and the
  engine's own overhead (total − retrieval − generation: planning, packing,
  citation mapping, storing the turn).

The first table normalises as this script always has (``hanrag.eval.metrics.squash``:
whitespace and punctuation removed, lower case, so Korean spacing differences do
not count as errors), so its figures compare with earlier ones. The second table
is ``hanrag eval``'s Korean normalisation (trailing particles and copulas dropped
too; see README "Evaluation"), which is never lower. The run is stored in a
temporary directory, removed at the end (``--runs-dir DIR`` keeps it for
``hanrag eval show|report``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hanrag.auth.access import SYSTEM
from hanrag.domain import AnswerResult
from hanrag.engine import Engine
from hanrag.eval.metrics import squash
from hanrag.eval.runner import Runner, RunOptions
from hanrag.eval.runs import RunStore
from hanrag.eval.sweep import TunedEngine
from hanrag.settings import load_settings
from retrieval import bench_dataset, ingest_corpus, load_jsonl

# The runner's latency names -> this script's.
STAGES = {
    "planning": "planning_ms",
    "retrieval": "retrieval_ms",
    "first_token": "ttft_ms",
    "generation": "generation_ms",
    "total": "total_ms",
}


def char_f1(prediction: str, gold: str) -> float:
    predicted, expected = Counter(squash(prediction)), Counter(squash(gold))
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


class SessionEngine(TunedEngine):
    """Asks as this script always has: no given memory, so each question is stored in a
    session of its own (the runner asks with an empty memory and stores nothing)."""

    async def ask_result(self, question: str, **kwargs: Any) -> AnswerResult:
        kwargs.pop("options", None)
        return await self.engine.ask_result(question, **kwargs)


def bench_row(row: dict[str, Any]) -> dict[str, Any]:
    """One question's figures from the runner's row."""
    answer = (row.get("answer") or {}).get("text") or ""
    golds = list((row.get("gold") or {}).get("answers") or [])
    metrics = row.get("metrics") or {}
    latency = {short: float((row.get("latency_ms") or {}).get(name, 0.0)) for name, short in STAGES.items()}
    return {
        "exact": any(squash(answer) == squash(g) for g in golds),
        "f1": max((char_f1(answer, g) for g in golds), default=0.0),
        "contained": any(squash(g) and squash(g) in squash(answer) for g in golds),
        "citation_precision": float(metrics.get("citation_precision") or 0.0),
        "gold_cited": float(metrics.get("citation_hit") or 0.0),
        "korean": {name: float(metrics.get(name) or 0.0) for name in ("exact_match", "char_f1", "contained")},
        **latency,
        "overhead_ms": latency["total_ms"] - latency["retrieval_ms"] - latency["generation_ms"],
    }


def run_queries(
    engine: Engine, queries: list[dict[str, Any]], path: Path, runs_dir: Path, console: Console
) -> list[dict[str, Any]]:
    store = RunStore(runs_dir / "answers")
    with Progress(
        TextColumn("[bold]asking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("ask", total=len(queries))
        runner = Runner(
            SessionEngine(engine),
            bench_dataset(queries, path),
            store,
            options=RunOptions(k=10, warm_up=False),
            on_progress=lambda done, total, row: progress.update(task, completed=done),
        )
        asyncio.run(runner.run())
    rows = store.rows()
    errors = [row["error"] for row in rows if row.get("error")]
    if errors:
        raise SystemExit(f"{len(errors)} questions failed, e.g. {errors[0]}")
    return [bench_row(row) for row in rows]


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
    korean = {
        name: round(statistics.fmean(r["korean"][name] for r in rows), 4) if rows else float("nan")
        for name in ("exact_match", "char_f1", "contained")
    }
    return {
        "generator": generator,
        "questions": len(rows),
        "exact_match": mean("exact"),
        "char_f1": mean("f1"),
        "contained": mean("contained"),
        "citation_precision": mean("citation_precision"),
        "gold_cited": mean("gold_cited"),
        "korean": korean,
        "latency_ms": latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("queries", type=Path)
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse this data directory (kept)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs-dir", type=Path, help="keep the evaluation run here (default: removed)")
    args = parser.parse_args()
    if args.runs_dir is not None and (args.runs_dir / "answers" / "run.json").exists():
        parser.error(f"--runs-dir {args.runs_dir} already holds a run; give an empty or new directory")

    console = Console(stderr=True)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="hanrag-answers-"))
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="hanrag-answers-runs-"))
    engine = Engine(load_settings(data_dir=data_dir))
    try:
        passages = load_jsonl(args.corpus)
        queries = load_jsonl(args.queries)[: args.limit]
        ingest_corpus(engine, passages, console)
        asyncio.run(
            engine.ask_result("워밍업 질문입니다", caller=SYSTEM)
        )  # load models and postings before timing
        rows = run_queries(engine, queries, args.queries, runs_dir, console)
        summary = summarise(rows, engine.generator.name)
    finally:
        engine.close()
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
        if args.runs_dir is None:
            shutil.rmtree(runs_dir, ignore_errors=True)

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
    korean = Table(title="Korean normalisation (hanrag eval: particles and copulas dropped too)")
    for column in ("exact match", "char F1", "contained"):
        korean.add_column(column, justify="right")
    korean.add_row(*(f"{summary['korean'][k]:.3f}" for k in ("exact_match", "char_f1", "contained")))
    Console().print(korean)
    latency = Table(title="latency (ms)")
    latency.add_column("stage")
    latency.add_column("p50", justify="right")
    latency.add_column("p95", justify="right")
    for stage, figures in summary["latency_ms"].items():
        latency.add_row(stage.removesuffix("_ms"), f"{figures['p50']:.1f}", f"{figures['p95']:.1f}")
    Console().print(latency)


if __name__ == "__main__":
    main()
