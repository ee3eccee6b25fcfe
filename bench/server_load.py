"""Load on the HTTP server: N concurrent streaming /api/v1/ask clients for a fixed time.

Usage::

    .venv/bin/python bench/server_load.py [--clients 64] [--seconds 60] [--data-dir DIR] [--json]

What it does:

1. ingests the bundled Korean samples into the data directory with ``hanrag ingest``
   (a temporary directory unless ``--data-dir`` is given; documents already there
   are skipped as unchanged);
2. starts ``hanrag serve`` on 127.0.0.1 (a free port) in a subprocess with the
   extractive generator, and waits for ``/readyz``;
3. runs ``--clients`` concurrent clients (httpx, asyncio) for ``--seconds``: each
   one asks a question from a pool of questions about the samples with
   ``stream: true`` and reads the Server-Sent Events to the end, then asks the
   next one. Every request is bounded by ``--request-timeout``; no request starts
   after the deadline, so the run stops by itself;
4. samples the server's resident memory (psutil on its pid and its children) at
   the start of the load, in the middle and at the end;
5. stops the server and reports: requests completed, errors (by kind), throughput,
   p50/p95/p99 time to the first SSE event, to the first answer text and to the
   ``done`` event, server RSS at start/middle/end and its growth, and the load
   average of the machine before and after.

Output: a Rich table on stdout (progress on stderr); ``--json`` prints one JSON
object instead. Exit status 1 when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.table import Table

import served
from served import free_port, hanrag, rss_mib, stop_server

QUESTIONS = [
    "신규 입사자의 수습 기간은 얼마인가요?",
    "연차휴가는 며칠 단위로 사용할 수 있나요?",
    "사용하지 못한 연차휴가는 다음 해로 이월할 수 있나요?",
    "재택근무는 주 며칠까지 할 수 있나요?",
    "기본 근무 시간은 어떻게 되나요?",
    "비밀번호는 최소 몇 자 이상이어야 하나요?",
    "비밀번호를 몇 번 틀리면 계정이 잠기나요?",
    "VPN은 어떤 PC에서 사용할 수 있나요?",
    "회사 정보 자산의 등급은 몇 개로 나뉘나요?",
    "국내 출장 숙박비 한도는 얼마인가요?",
    "해외 출장 숙박비 한도는 얼마인가요?",
    "법인카드 영수증은 언제까지 제출해야 하나요?",
    "스마트 공기청정기 AP-300의 할인가는 얼마인가요?",
    "필터 정기배송 가격은 얼마인가요?",
    "탈취 필터는 몇 개월마다 교체해야 하나요?",
    "필터 교체 표시등이 켜지면 어떻게 해야 하나요?",
    "복지포인트는 어디에서 쓸 수 있나요?",
    "복리후생 신청은 어디에서 하나요?",
    "건강검진 지원 내용은 무엇인가요?",
    "경조사 휴가는 며칠인가요?",
]


@dataclass
class Outcome:
    ok: bool
    error: str | None = None
    first_event_s: float | None = None
    first_text_s: float | None = None
    done_s: float | None = None


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    rss: dict[str, float] = field(default_factory=dict)  # label -> MiB
    rss_samples: list[float] = field(default_factory=list)


def server_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANRAG_")}
    env.update(
        {
            "HANRAG_DATA_DIR": str(data_dir),
            "HANRAG_LLM__BACKEND": "extractive",
            "HANRAG_LOG_LEVEL": "WARNING",
        }
    )
    return env


def ingest_samples(data_dir: Path, err: Console) -> None:
    samples = Path(str(files("hanrag") / "samples"))
    started = time.perf_counter()
    err.print(f"[dim]ingesting the bundled samples into {data_dir} …[/dim]")
    result = subprocess.run(
        hanrag("ingest", str(samples), "--json"),
        env=server_env(data_dir),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"hanrag ingest failed ({result.returncode}):\n{result.stderr[-2000:]}")
    err.print(f"[dim]ingested in {time.perf_counter() - started:.1f} s[/dim]")


def start_server(data_dir: Path, port: int, workers: int, err: Console) -> subprocess.Popen[bytes]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 (kept open for the server's lifetime)
    return served.start_server(port, server_env(data_dir), log, err, extra=("--workers", str(workers)))


async def ask_once(client: httpx.AsyncClient, question: str, timeout: float) -> Outcome:
    started = time.perf_counter()
    outcome = Outcome(ok=False)
    deltas: list[str] = []
    event_name: str | None = None
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(
                "POST", "/api/v1/ask", json={"question": question, "stream": True}
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    outcome.error = f"http_{response.status_code}"
                    return outcome
                async for line in response.aiter_lines():
                    if outcome.first_event_s is None and line:
                        outcome.first_event_s = time.perf_counter() - started
                    if line.startswith("event: "):
                        event_name = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        data = json.loads(line.removeprefix("data: "))
                        if event_name == "delta":
                            if outcome.first_text_s is None:
                                outcome.first_text_s = time.perf_counter() - started
                            deltas.append(data["text"])
                        elif event_name == "error":
                            outcome.error = f"error_event:{data.get('code')}"
                            return outcome
                        elif event_name == "done":
                            outcome.done_s = time.perf_counter() - started
                            if "".join(deltas) != data["answer"]:
                                outcome.error = "deltas_differ_from_answer"
                                return outcome
                            outcome.ok = True
        if outcome.done_s is None and outcome.error is None:
            outcome.error = "stream_ended_without_done"
    except TimeoutError:
        outcome.error = "timeout"
    except httpx.HTTPError as exc:
        outcome.error = type(exc).__name__
    except (ValueError, KeyError) as exc:
        outcome.error = f"bad_event:{type(exc).__name__}"
    return outcome


async def client_loop(
    number: int, client: httpx.AsyncClient, deadline: float, timeout: float, run: Run, done: list[int]
) -> None:
    turn = 0
    while time.monotonic() < deadline:
        question = QUESTIONS[(number * 7 + turn) % len(QUESTIONS)]
        turn += 1
        run.outcomes.append(await ask_once(client, question, timeout))
        done[0] += 1


async def memory_sampler(process: psutil.Process, started: float, seconds: float, run: Run) -> None:
    middle = started + seconds / 2
    while True:
        await asyncio.sleep(1.0)
        value = rss_mib(process)
        run.rss_samples.append(value)
        if "middle" not in run.rss and time.monotonic() >= middle:
            run.rss["middle"] = value


async def progress(started: float, seconds: float, done: list[int], err: Console) -> None:
    while True:
        await asyncio.sleep(5.0)
        elapsed = time.monotonic() - started
        err.print(f"[dim]{min(elapsed, seconds):5.0f}/{seconds:.0f} s  {done[0]} requests[/dim]")


async def load(url: str, process: psutil.Process, args: argparse.Namespace, err: Console) -> Run:
    run = Run()
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    timeout = httpx.Timeout(args.request_timeout, connect=10.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        # Models loaded and caches warm in every server process before memory is first
        # measured (the kernel spreads concurrent connections over the processes).
        warm_ups = await asyncio.gather(
            *(
                ask_once(client, QUESTIONS[i % len(QUESTIONS)], args.request_timeout)
                for i in range(8 * max(1, args.workers))
            )
        )
        failed = [w.error for w in warm_ups if not w.ok]
        if failed:
            raise SystemExit(f"a warm-up request failed: {failed[0]}")
        run.rss["start"] = rss_mib(process)
        started = time.monotonic()
        deadline = started + args.seconds
        done = [0]
        helpers = [
            asyncio.create_task(memory_sampler(process, started, args.seconds, run)),
            asyncio.create_task(progress(started, args.seconds, done, err)),
        ]
        await asyncio.gather(
            *(client_loop(i, client, deadline, args.request_timeout, run, done) for i in range(args.clients))
        )
        run.rss["elapsed_s"] = time.monotonic() - started
        for helper in helpers:
            helper.cancel()
        run.rss["end"] = rss_mib(process)
        run.rss.setdefault("middle", run.rss["end"])
    return run


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarise(run: Run, args: argparse.Namespace, loads: dict[str, list[float]]) -> dict[str, Any]:
    ok = [o for o in run.outcomes if o.ok]
    errors = Counter(o.error or "unknown" for o in run.outcomes if not o.ok)
    elapsed = run.rss.pop("elapsed_s")

    def stats(values: list[float]) -> dict[str, float | None]:
        ms = [v * 1000 for v in values]

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        return {
            "p50_ms": rounded(percentile(ms, 50)),
            "p95_ms": rounded(percentile(ms, 95)),
            "p99_ms": rounded(percentile(ms, 99)),
            "max_ms": rounded(max(ms) if ms else None),
        }

    start, end = run.rss["start"], run.rss["end"]
    return {
        "clients": args.clients,
        "seconds": args.seconds,
        "server_workers": args.workers,
        "elapsed_s": round(elapsed, 1),
        "requests": len(run.outcomes),
        "completed": len(ok),
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "throughput_rps": round(len(ok) / elapsed, 2) if elapsed else None,
        "first_event": stats([o.first_event_s for o in ok if o.first_event_s is not None]),
        "first_text": stats([o.first_text_s for o in ok if o.first_text_s is not None]),
        "done": stats([o.done_s for o in ok if o.done_s is not None]),
        "rss_mib": {
            "start": round(start, 1),
            "middle": round(run.rss["middle"], 1),
            "end": round(end, 1),
            "max": round(max(run.rss_samples or [end]), 1),
            "growth_pct": round((end - start) / start * 100, 1) if start else None,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": {when: [round(v, 2) for v in values] for when, values in loads.items()},
        },
    }


def render(report: dict[str, Any], console: Console) -> None:
    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:,.0f}"

    table = Table(
        title=f"hanrag serve --workers {report['server_workers']}: "
        f"{report['clients']} streaming clients for {report['seconds']} s"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("requests completed", f"{report['completed']:,}")
    table.add_row("errors", f"{report['errors']:,}")
    for kind, count in sorted(report["errors_by_kind"].items()):
        table.add_row(f"  {kind}", f"{count:,}")
    table.add_row("throughput (req/s)", f"{report['throughput_rps']}")
    for key, label in (
        ("first_event", "first SSE event"),
        ("first_text", "first answer text"),
        ("done", "done"),
    ):
        stats = report[key]
        table.add_row(
            f"{label} p50 / p95 / p99 / max (ms)",
            " / ".join(ms(stats[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")),
        )
    rss = report["rss_mib"]
    table.add_row("server RSS start / middle / end (MiB)", f"{rss['start']} / {rss['middle']} / {rss['end']}")
    table.add_row("server RSS max (MiB)", f"{rss['max']}")
    table.add_row("RSS growth start→end", f"{rss['growth_pct']} %")
    machine = report["machine"]
    table.add_row("CPUs", str(machine["cpus"]))
    for when, values in machine["load_average"].items():
        table.add_row(f"load average {when} (1/5/15 min)", " / ".join(f"{v:.2f}" for v in values))
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=64, help="concurrent streaming clients (default 64)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load lasts (default 60)")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: a temporary one)")
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=60.0,
        help="upper bound of one request in seconds (default 60)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (hanrag serve --workers; default 1). One process runs its Python on"
        " one core at a time (the GIL); one per core uses them all",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0:
        parser.error("--clients must be >= 1 and --seconds > 0")
    err = Console(stderr=True)
    temporary = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="hanrag-load-")) if temporary else args.data_dir
    server: subprocess.Popen[bytes] | None = None
    try:
        ingest_samples(data_dir, err)
        port = free_port()
        loads = {"before": list(os.getloadavg())}
        server = start_server(data_dir, port, args.workers, err)
        process = psutil.Process(server.pid)
        err.print(f"[dim]{args.clients} clients for {args.seconds:g} s …[/dim]")
        run = asyncio.run(load(f"http://127.0.0.1:{port}", process, args, err))
        loads["after"] = list(os.getloadavg())
        report = summarise(run, args, loads)
    finally:
        if server is not None:
            stop_server(server)
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        sys.stdout.write(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    else:
        render(report, Console())
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
