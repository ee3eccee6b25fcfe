"""Decompression bombs against a real server: result, time and memory per bomb.

Usage::

    .venv/bin/python bench/parser_bombs.py [--only NAME ...] [--json] [--max-server-memory MB]

What it does:

1. builds each bomb of ``tests/test_parser_limits.py`` (:data:`BOMBS` there: a
   DOCX of 300 MB of ``<w:p/>``, an XLSX of a million empty rows declared
   A1:XFD1048576, rows 16,384 cells wide, a zip of 100,000 entries, an HWPX and
   an HWP of 300 MB of empty paragraphs/records, a DOCX with a lying zip header,
   a DOCX carrying a nested bomb, and 300 KB PDFs whose page content stream, the
   same with an indirect /Length, or object stream inflates to 300 MB), in memory;
2. starts ``hanrag serve`` on 127.0.0.1 (a free port, one process, a temporary
   data directory, the extractive generator) and waits for ``/readyz``;
3. warms it up by uploading every bundled sample (the parsing libraries and the
   embedding model are then loaded), and takes the resident memory of the
   server's process tree (psutil, the server and all its children) as "idle";
4. uploads each bomb (``POST /api/v1/documents``, multipart) while a thread
   samples that memory every 10 ms, checks ``/healthz`` after each, and uploads
   a normal sample at the end;
5. prints one row per bomb: size on disk, HTTP status, problem ``code``,
   seconds, and the peak resident memory above idle; plus the load average
   before and after (``uptime``). Exit status 1 if the server stopped answering.

``--max-server-memory`` puts an address-space limit (RLIMIT_AS) on the server,
a safety net for measuring a build without the limits on a shared machine: a
bomb then ends in ``MemoryError`` instead of taking the machine's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.table import Table

import served
from served import free_port, stop_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_parser_limits import BOMBS, Bomb  # noqa: E402  (the bombs are defined with their tests)

SAMPLES = Path(str(files("hanrag") / "samples"))
MB = 1024 * 1024


@dataclass
class Row:
    bomb: str
    filename: str
    size: int
    status: int | None
    code: str | None
    seconds: float
    peak_above_idle_mb: float
    healthy_after: bool


def tree_rss(process: psutil.Process) -> int:
    return int(served.rss_mib(process) * MB)


class Sampler:
    """Peak resident memory of a process tree, sampled every 10 ms while the block runs."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = tree_rss(process)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with suppress(psutil.Error):
                self.peak = max(self.peak, tree_rss(self.process))
            time.sleep(0.01)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with suppress(psutil.Error):
            self.peak = max(self.peak, tree_rss(self.process))


def start_server(data_dir: Path, port: int, memory_mb: int | None, err: Console) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANRAG_")}
    env.update(
        {
            "HANRAG_DATA_DIR": str(data_dir),
            "HANRAG_LLM__BACKEND": "extractive",
            "HANRAG_LOG_LEVEL": "WARNING",
            "OMP_WAIT_POLICY": "PASSIVE",
        }
    )

    def limit_memory() -> None:
        if memory_mb:
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb * MB, memory_mb * MB))

    log = tempfile.TemporaryFile()  # noqa: SIM115 (kept open for the server's lifetime)
    return served.start_server(port, env, log, err, extra=("--workers", "1"), preexec=limit_memory)


def upload(client: httpx.Client, filename: str, data: bytes) -> tuple[int | None, str | None]:
    try:
        response = client.post("/api/v1/documents", files={"file": (filename, data)})
    except httpx.HTTPError as exc:
        return None, type(exc).__name__
    try:
        body: Any = response.json()
    except ValueError:
        body = {}
    code = body.get("code") if isinstance(body, dict) else None
    return response.status_code, code or (body.get("status") if isinstance(body, dict) else None)


def healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def run(bombs: list[Bomb], memory_mb: int | None, err: Console) -> tuple[list[Row], float, bool]:
    built: list[tuple[Bomb, bytes]] = []
    for bomb in bombs:
        started = time.perf_counter()
        built.append((bomb, bomb.build()))
        err.print(f"[dim]built {bomb.filename} in {time.perf_counter() - started:.1f} s[/dim]")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="hanrag-bombs-") as tmp:
        server = start_server(Path(tmp) / "data", port := free_port(), memory_mb, err)
        try:
            process = psutil.Process(server.pid)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
                for sample in sorted(SAMPLES.iterdir()):
                    status, code = upload(client, sample.name, sample.read_bytes())
                    if status != 201:
                        raise SystemExit(f"warm-up upload of {sample.name} failed: {status} {code}")
                time.sleep(1.0)
                idle = tree_rss(process)
                err.print(f"[dim]idle server (after warm-up): {idle / MB:.0f} MB[/dim]")
                for bomb, data in built:
                    before = time.perf_counter()
                    with Sampler(process) as sampler:
                        status, code = upload(client, bomb.filename, data)
                    seconds = time.perf_counter() - before
                    rows.append(
                        Row(
                            bomb=bomb.name,
                            filename=bomb.filename,
                            size=len(data),
                            status=status,
                            code=code,
                            seconds=seconds,
                            peak_above_idle_mb=(sampler.peak - idle) / MB,
                            healthy_after=healthy(client),
                        )
                    )
                    err.print(f"[dim]{bomb.filename}: {status} {code} in {seconds:.2f} s[/dim]")
                sample = SAMPLES / "제품매뉴얼.docx"
                status, _ = upload(client, "다시-" + sample.name, sample.read_bytes())
                still_serving = healthy(client) and status == 201
        finally:
            stop_server(server)
    return rows, idle / MB, still_serving


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", help="file names of the bombs to run (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--max-server-memory", type=int, default=None, metavar="MB", help="RLIMIT_AS for the server process"
    )
    args = parser.parse_args()
    err = Console(stderr=True)
    bombs = [bomb for bomb in BOMBS if not args.only or bomb.filename in args.only]
    load_before = uptime()
    rows, idle_mb, still_serving = run(bombs, args.max_server_memory, err)
    load_after = uptime()
    if args.json:
        print(
            json.dumps(
                {
                    "idle_mb": round(idle_mb, 1),
                    "still_serving": still_serving,
                    "uptime_before": load_before,
                    "uptime_after": load_after,
                    "bombs": [row.__dict__ for row in rows],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        table = Table(title=f"Decompression bombs via POST /api/v1/documents (idle server {idle_mb:.0f} MB)")
        for column in (
            "bomb",
            "size on disk",
            "HTTP",
            "code",
            "seconds",
            "peak RSS above idle",
            "healthz after",
        ):
            table.add_column(column, justify="right" if column in ("size on disk", "seconds") else "left")
        for row in rows:
            table.add_row(
                row.bomb,
                f"{row.size / 1024:,.0f} KB",
                str(row.status),
                str(row.code),
                f"{row.seconds:.2f}",
                f"{row.peak_above_idle_mb:.0f} MB",
                "ok" if row.healthy_after else "DOWN",
            )
        Console(width=150).print(table)
        print(f"before: {load_before}\nafter:  {load_after}")
        print(f"server still serving (healthz and a normal upload after the bombs): {still_serving}")
    if not still_serving:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
