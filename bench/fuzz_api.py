"""Property-based fuzz run over every HTTP route of a real server: 0 server errors wanted.

Usage::

    .venv/bin/python bench/fuzz_api.py [--minutes 10] [--json]

What it does:

1. builds a data directory in a temporary folder: three small Korean documents in a
   server root (one per group ACL), an administrator, an editor and their API keys;
2. starts ``hanrag serve`` on 127.0.0.1 (a free port) in token mode, with rate limits
   off, server-side ingestion allowed under that root and the extractive generator;
3. runs Schemathesis (``st run``) against the server's own OpenAPI document for the
   time budget, with every phase (examples, coverage, fuzzing, and stateful sequences
   over the links Schemathesis infers from responses and ``Location`` headers), once
   as the editor and once as the administrator (two thirds of the time), with the
   ``not_a_server_error`` check;
4. reads the server's own request counters (``/metrics``) afterwards, so the figures
   are what the server answered, whatever the fuzzer counted, and scans its log for
   unhandled errors.

Output: a Rich table (``--json``: one JSON object). Exit status 1 when the server
answered any 5xx other than the 503/504/507 that describe a dependency or a limit,
or logged an unhandled error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
from rich.console import Console
from rich.table import Table

import served
from served import free_port, stop_server

PASSWORD = "fuzz-horse-battery-staple"
DOCS = {
    "a/인사규정.md": "# 인사 규정\n\n연차휴가는 입사 1년 후 15일이 주어집니다. 3년 이상 근속하면 16일입니다.\n",
    "b/보안정책.md": "# 보안 정책\n\n비밀번호는 90일마다 바꾸어야 하며 12자 이상이어야 합니다.\n",
    "p/공지.md": "# 사내 공지\n\n모든 공지는 매주 화요일 인트라넷에 게시됩니다.\n",
}
ACLS = {"a": "group:a", "b": "group:b", "p": "public"}
# Statuses that describe a limit or a dependency, not a bug: storage full, a backend
# (or the queue) unavailable, a request that ran out of time.
EXPECTED_5XX = {"503", "504", "507"}


def server_env(data_dir: Path, root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HANRAG_DATA_DIR": str(data_dir),
        "HANRAG_AUTH__MODE": "token",
        "HANRAG_AUTH__RATE_LIMIT_PER_MINUTE": "0",
        "HANRAG_INGEST__SERVER_ROOTS": json.dumps([str(root)]),
        "HANRAG_API__REQUEST_TIMEOUT_S": "30",
        "OMP_WAIT_POLICY": "PASSIVE",
    }


def prepare(base: Path, err: Console) -> tuple[Path, Path, dict[str, str]]:
    """The documents, the catalog with users and keys; returns (data dir, root, keys)."""
    root = base / "docs"
    for name, text in DOCS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        (path.parent / ".hanrag-acl").write_text(ACLS[path.parent.name] + "\n", encoding="utf-8")
    data_dir = base / "data"
    from hanrag.engine import Engine
    from hanrag.settings import Settings

    engine = Engine(Settings(data_dir=data_dir, auth={"mode": "token"}))
    try:
        engine.ingest([root])
        keys: dict[str, str] = {}
        for user, role, groups in (("fuzz-admin", "admin", []), ("fuzz-editor", "editor", ["a"])):
            engine.auth.create_user(user, PASSWORD, role=role, groups=groups)
            keys[role] = engine.auth.create_api_key(user, "fuzz")["key"]
    finally:
        engine.close()
    err.print(f"[dim]prepared {data_dir}[/dim]")
    return data_dir, root, keys


def start_server(
    data_dir: Path, root: Path, port: int, log: IO[bytes], err: Console
) -> subprocess.Popen[bytes]:
    return served.start_server(port, server_env(data_dir, root), log, err, ready_path="/healthz")


def statuses(url: str, key: str) -> dict[str, int]:
    """Requests the server answered, by status (from its own Prometheus counters)."""
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=30).text
    counts: dict[str, int] = {}
    for match in re.finditer(r"^hanrag_http_requests_total\{([^}]*)\} ([0-9.e+]+)$", text, re.M):
        status = re.search(r'status="(\d+)"', match.group(1))
        if status:
            counts[status.group(1)] = counts.get(status.group(1), 0) + int(float(match.group(2)))
    return counts


class Watchdog(threading.Thread):
    """Keeps the fuzzing identities usable: the fuzzer, as an administrator, may disable,
    demote or un-group them or revoke their keys (those routes are fuzzed too), which
    would turn the rest of the run into 401s. Every half second their state is put back."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(name="fuzz-watchdog", daemon=True)
        self.data_dir = data_dir
        self.stopped = threading.Event()
        self.repairs = 0

    def run(self) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(f"sqlite:///{self.data_dir / 'catalog.db'}")
        statements = [
            "UPDATE users SET disabled = 0 WHERE username IN ('fuzz-admin', 'fuzz-editor')",
            "UPDATE users SET role = 'admin' WHERE username = 'fuzz-admin' AND role != 'admin'",
            "UPDATE users SET role = 'editor' WHERE username = 'fuzz-editor' AND role != 'editor'",
            "UPDATE api_keys SET revoked_at = NULL WHERE name = 'fuzz' AND revoked_at IS NOT NULL",
        ]
        while not self.stopped.wait(0.5):
            try:
                with engine.begin() as connection:
                    self.repairs += sum(connection.execute(text(sql)).rowcount for sql in statements)
            except Exception:  # a locked database: try again at the next tick
                continue
        engine.dispose()


def fuzz(url: str, key: str, seconds: int, report: Path, err: Console) -> dict[str, Any]:
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "run",
        f"{url}/openapi.json",
        "--max-time",
        str(seconds),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--checks",
        "not_a_server_error",
        "--continue-on-failure",
        "--header",
        f"Authorization: Bearer {key}",
        "--request-timeout",
        "60",
        "--workers",
        "2",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        "--no-color",
    ]
    started = time.monotonic()
    # In the run's own folder: st keeps a cache directory where it runs.
    result = subprocess.run(command, capture_output=True, text=True, cwd=report.parent)
    tail = (result.stdout + result.stderr)[-3000:]
    err.print(f"[dim]st run exited {result.returncode} after {time.monotonic() - started:.0f} s[/dim]")
    return {"exit": result.returncode, "seconds": round(time.monotonic() - started), "tail": tail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    err = Console(stderr=True)
    base = Path(tempfile.mkdtemp(prefix="hanrag-fuzz-"))
    load_before = os.getloadavg()
    try:
        data_dir, root, keys = prepare(base, err)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (base / "server.log").open("w+b")
        server = start_server(data_dir, root, port, log, err)
        process = psutil.Process(server.pid)
        rss_start = process.memory_info().rss / 2**20
        watchdog = Watchdog(data_dir)
        watchdog.start()
        try:
            total = int(args.minutes * 60)
            runs = []
            for role, share in (("editor", 1 / 3), ("admin", 2 / 3)):
                err.print(f"[dim]fuzzing as the {role} for {total * share:.0f} s[/dim]")
                runs.append(
                    {"as": role, **fuzz(url, keys[role], int(total * share), base / f"{role}.ndjson", err)}
                )
            counts = statuses(url, keys["admin"])
            rss_end = process.memory_info().rss / 2**20
        finally:
            watchdog.stopped.set()
            stop_server(server)
            log.close()
        server_log = (base / "server.log").read_text(errors="replace")
        unhandled = server_log.count("unhandled error") + server_log.count("Exception in ASGI application")
        server_errors = {s: n for s, n in counts.items() if s.startswith("5")}
        unexpected = {s: n for s, n in server_errors.items() if s not in EXPECTED_5XX}
        summary = {
            "minutes": args.minutes,
            "requests": sum(counts.values()),
            "by_status": dict(sorted(counts.items())),
            "server_errors": server_errors,
            "unexpected_server_errors": sum(unexpected.values()),
            "unhandled_errors_logged": unhandled,
            "rss_mib": [round(rss_start), round(rss_end)],
            "identity_repairs": watchdog.repairs,
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "runs": [{k: v for k, v in run.items() if k != "tail"} for run in runs],
        }
        if args.json:
            print(json.dumps(summary, ensure_ascii=False, indent=2))
        else:
            table = Table(title=f"fuzz run over every route ({args.minutes:g} min)")
            table.add_column("figure")
            table.add_column("value", justify="right")
            table.add_row("requests answered", str(summary["requests"]))
            for status, count in summary["by_status"].items():
                table.add_row(f"  status {status}", str(count))
            table.add_row("5xx other than 503/504/507", str(summary["unexpected_server_errors"]))
            table.add_row("unhandled errors in the server log", str(unhandled))
            table.add_row("server RSS start → end (MiB)", f"{rss_start:.0f} → {rss_end:.0f}")
            table.add_row("load average before / after", f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
            Console().print(table)
            for run in runs:
                err.print(f"[dim]--- st run as the {run['as']} (exit {run['exit']}) ---[/dim]")
                err.print(run["tail"], markup=False, highlight=False)
            if unexpected or unhandled:
                err.print(re.findall(r".*(?:Error|Exception).*", server_log)[-20:])
        if unexpected or unhandled:
            raise SystemExit(1)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
