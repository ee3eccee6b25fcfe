"""A real ``hanrag serve`` in a subprocess for the benchmarks that measure a server:
a free port, the command line of this installation, start (until ``/readyz`` or
``/healthz`` answers), stop, and the resident memory of the server's process tree."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing, suppress
from typing import IO

import httpx
import psutil
from rich.console import Console


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hanrag(*args: str) -> list[str]:
    """The ``hanrag`` command line of this interpreter's installation."""
    return [sys.executable, "-c", "from hanrag.cli.main import app; app(prog_name='hanrag')", *args]


def rss_mib(process: psutil.Process) -> float:
    """Resident memory of a process and its children, in MiB."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        with suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


def start_server(
    port: int,
    env: dict[str, str],
    log: IO[bytes],
    err: Console,
    *,
    extra: tuple[str, ...] = (),
    ready_path: str = "/readyz",
    timeout_s: float = 180.0,
    preexec: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """``hanrag serve`` on 127.0.0.1:``port``, once ``ready_path`` answers 200 (its output
    goes to ``log``, which stays open for the server's lifetime)."""
    server = subprocess.Popen(
        hanrag("serve", "--host", "127.0.0.1", "--port", str(port), *extra),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec,  # e.g. a memory limit for a build that is measured unguarded
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise SystemExit(f"hanrag serve exited with {server.returncode}:\n{log.read().decode()[-2000:]}")
        with suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=30).status_code == 200:
                err.print(f"[dim]server ready on port {port} (pid {server.pid})[/dim]")
                return server
        time.sleep(0.5)
    stop_server(server)
    raise SystemExit(f"the server did not become ready in {timeout_s:.0f} s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
