"""A real Java client of the legacy protocol (tests/java/LegacyClient.java).

Written like the earlier Spring backend: typed Jackson records with ``LocalDateTime``
fields, dates sent as Jackson's ``[y, M, d, H, m, s, nanos]`` arrays, every reply read
as a ``RestTemplate`` would (anything but HTTP 200 is an exception), and an HTTP
receiver of its own for push mode. Compiled with plain ``javac`` against Debian's
Jackson jars (``libjackson2-databind-java``; ``.ci/run`` installs it) and run against a
real server on loopback. Skipped only where no JDK or no Jackson jar can be found.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_server import LiveServer, close_engine_on_index, engine_on_index, start_server, with_api
from conftest import SampleCorpus

SOURCE = Path(__file__).parent / "java" / "LegacyClient.java"
JAR_DIRS = [Path(p) for p in os.environ.get("HANRAG_JACKSON_DIRS", "/usr/share/java").split(os.pathsep)]
JARS = ("jackson-databind", "jackson-core", "jackson-annotations")
TIMING_RUNS = 30


def _jar(name: str) -> Path | None:
    for directory in JAR_DIRS:
        plain = directory / f"{name}.jar"
        if plain.is_file():
            return plain
        versioned = sorted(directory.glob(f"{name}-2.*.jar"))
        if versioned:
            return versioned[-1]
    return None


def _classpath() -> list[Path]:
    javac, java = shutil.which("javac"), shutil.which("java")
    if javac is None or java is None:
        pytest.skip("no JDK (javac/java) on PATH; install default-jdk-headless")
    jars = [_jar(name) for name in JARS]
    missing = [name for name, jar in zip(JARS, jars, strict=True) if jar is None]
    if missing:
        pytest.skip(
            f"no Jackson jar {', '.join(missing)} in {JAR_DIRS}; apt-get install libjackson2-databind-java"
        )
    return [jar for jar in jars if jar is not None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def java_server(
    samples_engine: SampleCorpus, shared_cache_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, int]]:
    engine = engine_on_index(samples_engine.engine, tmp_path_factory.mktemp("legacy-java"), shared_cache_path)
    receiver_port = _free_port()  # the Java client's own receiver listens here
    settings = with_api(
        engine.settings,
        legacy_response_url=f"http://127.0.0.1:{receiver_port}/receive",
        legacy_batch_seconds=0.2,
    )
    live = start_server(engine, settings)
    try:
        yield live, receiver_port
    finally:
        live.stop()
        close_engine_on_index(engine)


def test_java_client(java_server: tuple[LiveServer, int], tmp_path: Path) -> None:
    jars = _classpath()
    live, receiver_port = java_server
    classes = tmp_path / "classes"
    classpath = os.pathsep.join(str(p) for p in jars)
    compiled = subprocess.run(
        ["javac", "-encoding", "UTF-8", "-cp", classpath, "-d", str(classes), str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    ran = subprocess.run(
        [
            "java",
            "-Dfile.encoding=UTF-8",
            "-Dstdout.encoding=UTF-8",
            "-cp",
            os.pathsep.join([str(classes), classpath]),
            "LegacyClient",
            live.url,
            str(receiver_port),
            str(TIMING_RUNS),
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output
    for step in ("/query", "/history", "/reference", "/query_stream", "/queryToSLLM", "errors"):
        assert f"OK {step}\n" in ran.stdout, output
    assert ran.stdout.rstrip().endswith("ALL OK"), output
    timing = re.search(r"TIMING runs=(\d+) p50_ms=([\d.]+) p95_ms=([\d.]+)", ran.stdout)
    assert timing and int(timing.group(1)) == TIMING_RUNS, output
    print(timing.group(0))  # the time to the reference event (shown with -s)
