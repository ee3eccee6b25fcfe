"""The catalog on PostgreSQL, and the Alembic migrations on SQLite and PostgreSQL.

A real PostgreSQL server on 127.0.0.1:5432 (trust authentication): every test gets a
database of its own, ``hanrag_test_<random>``, dropped afterwards. Nothing here touches
any other database. Without a reachable server the PostgreSQL tests are skipped.

* ``hanrag db upgrade`` takes an empty database to the head revision and a second run
  changes nothing;
* the engine's operations work unchanged on PostgreSQL: ingest, documents list/show/delete,
  sessions through ``ask``, users/groups/API keys, the audit log, and the jobs table of
  the in-process queue;
* a SQLite catalog made by ``Base.metadata.create_all`` before migrations existed (by any
  earlier release, whichever tables it had) is stamped and upgraded;
* downgrade to base and upgrade to head again, on both databases, leave a schema equal
  to the models.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine as SqlEngine
from typer.testing import CliRunner

from conftest import EngineFactory  # (tests/ is on sys.path)
from hanrag.auth.access import SYSTEM
from hanrag.cli.main import app
from hanrag.engine import Engine
from hanrag.ingest.model import IngestRequest
from hanrag.jobs.base import FINAL_STATES, JobRecord
from hanrag.jobs.inprocess import InProcessQueue
from hanrag.store.catalog import Catalog
from hanrag.store.db import make_engine
from hanrag.store.migrate import alembic_config, current_revision, head_revision, upgrade
from hanrag.store.models import Base, DocumentRow

psycopg = pytest.importorskip("psycopg")

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PASSWORD = "correct-horse-battery"
# Tables of each release that created the catalog with create_all, before migrations existed.
RELEASE_TABLES = {
    "catalog only": ["documents"],
    "with sessions": ["documents", "chat_sessions", "chat_messages"],
    "everything": sorted(Base.metadata.tables),
}


def _server_up() -> bool:
    try:
        with psycopg.connect(ADMIN_DSN, connect_timeout=3):
            return True
    except Exception:
        return False


needs_postgres = pytest.mark.skipif(not _server_up(), reason="no PostgreSQL on 127.0.0.1:5432")


@pytest.fixture(scope="module")
def new_database() -> Iterator[Callable[[], str]]:
    """Creates ``hanrag_test_<random>`` databases (SQLAlchemy URLs); drops them all at the end."""
    created: list[str] = []

    def create() -> str:
        name = f"hanrag_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    yield create
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def tables(engine: SqlEngine) -> set[str]:
    return set(inspect(engine).get_table_names())


def schema_differences(engine: SqlEngine) -> list[Any]:
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


# --------------------------------------------------------------- db upgrade


@needs_postgres
def test_db_upgrade_takes_an_empty_database_to_head_and_is_idempotent(
    runner: CliRunner, new_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = new_database()
    monkeypatch.setenv("HANRAG_CATALOG_URL", url)
    monkeypatch.setenv("HANRAG_DATA_DIR", str(tmp_path / "data"))
    head = head_revision()
    assert head is not None

    first = runner.invoke(app, ["db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert f"migrated the catalog from empty to {head}" in first.output
    engine = create_engine(url)
    try:
        assert current_revision(engine) == head
        assert tables(engine) == {*Base.metadata.tables, "alembic_version"}
        assert schema_differences(engine) == []

        second = runner.invoke(app, ["db", "upgrade"])
        assert second.exit_code == 0, second.output
        assert f"the catalog is up to date (revision {head}, head {head})" in second.output
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        assert versions == [head]
    finally:
        engine.dispose()
    # The catalog is in PostgreSQL: no SQLite catalog appeared in the data directory.
    assert not (tmp_path / "data" / "catalog.db").exists()


def test_db_upgrade_of_an_unreachable_database_is_a_one_line_error(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANRAG_CATALOG_URL", "postgresql+psycopg://postgres:secret-pw@127.0.0.1:1/nothing")
    monkeypatch.setenv("HANRAG_DATA_DIR", str(tmp_path / "data"))
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 1
    assert "database_error" in result.output
    assert "secret-pw" not in result.output


# ------------------------------------------------------- engine on PostgreSQL

HR_TEXT = "# 연차 규정\n\n직원의 연차 휴가는 매년 15일이며 입사 1년 후부터 부여됩니다.\n"
SEC_TEXT = "# 보안 수칙\n\n사내 USB 저장장치 쓰기는 차단되며 비밀번호는 90일마다 바꿔야 합니다.\n"


@needs_postgres
def test_engine_operations_on_postgresql(
    make_engine: EngineFactory, new_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "연차규정.md").write_text(HR_TEXT, encoding="utf-8")
    (docs / "보안수칙.md").write_text(SEC_TEXT, encoding="utf-8")
    engine = make_engine(catalog_url=url)

    # Ingest: the first use of the catalog migrates the empty database itself.
    report = engine.ingest(IngestRequest(paths=[docs], metadata={"dept": "총무"}))
    assert sorted(o.status for o in report.outcomes) == ["added", "added"], report.outcomes
    sql = engine.catalog.engine
    assert sql.dialect.name == "postgresql"
    assert current_revision(sql) == head_revision()
    assert not (engine.settings.data_dir / "catalog.db").exists()

    # Documents: list, show (by id and by file name), chunks, metadata filter, delete.
    rows = engine.list_documents(caller=SYSTEM)
    assert [Path(r.source).name for r in rows] == sorted(["연차규정.md", "보안수칙.md"])
    assert all(r.status == "indexed" and r.chunk_count >= 1 for r in rows)
    hr = engine.get_document("연차규정.md", caller=SYSTEM)
    assert engine.get_document(hr.id, caller=SYSTEM).source == hr.source
    assert hr.meta["dept"] == "총무" and hr.acl == ["public"]
    assert engine.catalog.status_counts() == {"indexed": 2}
    assert engine.catalog.metadata_keys() >= {"dept", "format"}
    assert sorted(engine.catalog.documents_with_metadata({"dept": "총무"})) == sorted(r.id for r in rows)
    assert engine.document_chunks(hr.id, caller=SYSTEM)[0].document_id == hr.id
    hits = engine.search("연차 휴가는 며칠인가요?", caller=SYSTEM).hits
    assert hits[0].chunk.document_id == hr.id
    sec = engine.get_document("보안수칙.md", caller=SYSTEM)
    deleted, removed = engine.delete_document(sec.id, caller=SYSTEM)
    assert deleted.id == sec.id and removed >= 1
    assert engine.catalog.get(sec.id) is None and engine.catalog.count() == 1

    # Sessions through ask: the second question continues the first conversation.
    first = asyncio.run(engine.ask_result("연차 휴가는 며칠인가요?", caller=SYSTEM))
    assert first.session_id and first.citations
    second = asyncio.run(
        engine.ask_result("입사 첫해에도 받나요?", session_id=first.session_id, caller=SYSTEM)
    )
    assert second.session_id == first.session_id
    messages = engine.sessions.messages(first.session_id)
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0].content == "연차 휴가는 며칠인가요?"
    assert messages[1].cited_chunk_ids
    assert first.session_id in [s.id for s in engine.sessions.list_sessions()]

    # Users, groups, API keys.
    auth = engine.auth
    auth.create_user("Mina", PASSWORD, role="editor", groups=["hr"])
    auth.create_group("security")
    auth.add_member("security", "mina")
    info = auth.user_info("mina")
    assert (info["username"], info["role"], sorted(info["groups"])) == ("mina", "editor", ["hr", "security"])
    tokens = auth.login("mina", PASSWORD)
    assert auth.authenticate(tokens["access_token"]).username == "mina"
    key = auth.create_api_key("mina", "etl", role="viewer")
    identity = auth.authenticate(key["key"])
    assert (identity.username, identity.role) == ("mina", "viewer")
    assert set(identity.principals) >= {"public", "user:mina", "group:hr", "group:security"}
    assert [k["id"] for k in auth.list_api_keys("mina")] == [key["id"]]
    auth.remove_member("security", "mina")
    assert auth.user_info("mina")["groups"] == ["hr"]

    # The audit log.
    engine.audit.record("tester", "acl_change", target=hr.id, detail={"to": ["group:hr"]}, ip="127.0.0.1")
    entry = engine.audit.query(actor="tester")[0]
    assert (entry["action"], entry["target"], entry["detail"], entry["ip"]) == (
        "acl_change",
        hr.id,
        {"to": ["group:hr"]},
        "127.0.0.1",
    )
    assert engine.audit.query(since=datetime(2100, 1, 1, tzinfo=UTC)) == []

    # The jobs table, through the in-process queue.
    record = asyncio.run(_run_ask_job(engine, "보안 수칙이 있나요? 연차는 며칠인가요?"))
    assert record.state == "succeeded", record
    assert record.result is not None and record.result["answer"]
    with sql.connect() as connection:
        stored = connection.execute(text("SELECT state FROM jobs WHERE id = :id"), {"id": record.id}).scalar()
    assert stored == "succeeded"


async def _run_ask_job(engine: Engine, question: str, timeout: float = 60.0) -> JobRecord:
    queue = InProcessQueue(engine, grace_seconds=2)
    await queue.start()
    try:
        record = await queue.enqueue(JobRecord(kind="ask", payload={"question": question}))
        deadline = time.monotonic() + timeout
        while True:
            current = await asyncio.to_thread(queue.store.get, record.id)
            if current is not None and current.state in FINAL_STATES:
                return current
            if time.monotonic() > deadline:
                raise AssertionError(f"the job did not finish in {timeout} s: {current}")
            await asyncio.sleep(0.05)
    finally:
        await queue.stop()


# -------------------------------------------------- pre-migration catalogs


@pytest.mark.parametrize("release", list(RELEASE_TABLES))
def test_a_catalog_made_before_migrations_is_stamped_and_upgraded(tmp_path: Path, release: str) -> None:
    """Earlier releases made the schema with ``create_all`` (only the tables they knew)."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    legacy = create_engine(url)
    Base.metadata.create_all(legacy, tables=[Base.metadata.tables[name] for name in RELEASE_TABLES[release]])
    now = datetime.now(UTC)
    with legacy.begin() as connection:
        connection.execute(
            DocumentRow.__table__.insert().values(
                id="doc1",
                source="/docs/연차규정.md",
                source_type="file",
                title="연차 규정",
                status="indexed",
                chunk_count=1,
                acl=["public"],
                metadata={"dept": "인사"},
                created_at=now,
                updated_at=now,
            )
        )
    legacy.dispose()

    engine = make_engine(url)
    try:
        assert current_revision(engine) is None
        before, after = upgrade(engine)
        assert (before, after) == (None, head_revision())
        assert tables(engine) == {*Base.metadata.tables, "alembic_version"}
        assert schema_differences(engine) == []
        # The documents are still there, and the catalog (and everything else) works.
        catalog = Catalog(engine)
        row = catalog.get("doc1")
        assert row is not None and row.meta == {"dept": "인사"}
        assert catalog.metadata_keys() >= {"dept"}
        assert upgrade(engine) == (head_revision(), head_revision())
    finally:
        engine.dispose()


# ----------------------------------------------------- downgrade / upgrade


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    new_database: Callable[[], str] = request.getfixturevalue("new_database")
    return new_database()


def test_downgrade_and_upgrade_round_trip(database_url: str) -> None:
    engine = make_engine(database_url)
    config = alembic_config(database_url)
    head = head_revision()
    try:
        command.upgrade(config, "head")
        assert current_revision(engine) == head
        assert schema_differences(engine) == []
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO groups (id, name, created_at) VALUES ('g1', 'a', :at)"),
                {"at": datetime.now(UTC)},
            )

        command.downgrade(config, "base")
        assert current_revision(engine) is None
        assert tables(engine) <= {"alembic_version"}

        command.upgrade(config, "head")
        assert current_revision(engine) == head
        assert tables(engine) == {*Base.metadata.tables, "alembic_version"}
        assert schema_differences(engine) == []
        with engine.connect() as connection:
            assert connection.execute(text("SELECT COUNT(*) FROM groups")).scalar() == 0
        # The same steps through a connection handed over (as hanrag's own upgrade does).
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
            command.upgrade(config, "head")
        assert current_revision(engine) == head
        assert schema_differences(engine) == []
    finally:
        engine.dispose()
